"""`edgekit export SRC --format onnx|pte|both -o OUTDIR`"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgekit.cli import app
from edgekit.errors import EdgekitError

FORMAT_CHOICES = {"onnx": ("onnx",), "pte": ("pte",), "both": ("onnx", "pte")}


def export_to_dir(src, outdir: Path, formats, ops, state_style, batch, console: Console | None = None,
                  quiet: bool = False) -> dict:
    """Export into a temp folder beside OUTDIR, then move the files in: a failed export
    never leaves a half-written artifact, and never clobbers a good one."""
    from edgekit.export import FORMATS, export
    from edgekit.export.manifest import FILENAME
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise EdgekitError(f"output '{outdir}' is a file", expected="a directory", fix="pass -o with a directory path")
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgekit-export-", dir=outdir))
    try:
        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                      console=console or Console(stderr=True), transient=True, disable=quiet) as bar:
            task = bar.add_task(f"export {Path(str(src)).name}", total=None)
            manifest = export(src, tmp, formats=formats, ops=ops, batch=batch, state_style=state_style,
                              progress=lambda msg: bar.update(task, description=f"{msg} ({Path(str(src)).name})"))
        for fmt in formats:
            entry = manifest["artifacts"][fmt]
            for name in (entry["file"], entry.get("external_data")):
                if name:
                    (tmp / name).replace(outdir / name)
        if manifest.get("tokenizer_file"):
            (tmp / manifest["tokenizer_file"]).replace(outdir / manifest["tokenizer_file"])
        (tmp / FILENAME).replace(outdir / FILENAME)       # the manifest goes last
        for fmt in set(FORMATS) - set(formats):            # a stale artifact of another export
            stale = outdir / FORMATS[fmt]
            if stale.exists():
                stale.unlink()
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@app.command("export")
def export_cmd(
    src: Path = typer.Argument(..., help="checkpoint: BlinkDL .pth (RWKV-7)"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory"),
    format: str = typer.Option("both", "--format", help="onnx | pte | both"),
    ops: str = typer.Option("fused", "--ops", help="fused (edgekit custom ops) | decomposed (stock ops only)"),
    state_style: str = typer.Option("buffers", "--state-style",
                                    help="pte only: buffers (state kept in place, default) | io"),
    batch: int = typer.Option(1, "--batch", help="batch size of the exported step graph"),
    quant: str = typer.Option("none", "--quant", help="none (bitnet|int8|int4 are not built yet)"),
) -> None:
    """Export a model as a single-step stateful graph, plus edgekit.json."""
    if format not in FORMAT_CHOICES:
        raise EdgekitError(f"unknown --format '{format}'", expected="onnx, pte or both", fix="pass --format both")
    if quant != "none":
        raise EdgekitError(f"--quant {quant} is not available yet", expected="none",
                           fix="export without --quant; quantized export is on the roadmap")
    console = Console(stderr=True)
    manifest = export_to_dir(src, out, FORMAT_CHOICES[format], ops, state_style, batch, console)
    for fmt, entry in manifest["artifacts"].items():
        typer.echo(f"wrote {out / entry['file']} ({entry['bytes'] / 1e6:.1f} MB, ops: {manifest['ops']}"
                   + (f", state: {entry['state_style']}" if fmt == "pte" else "") + ")")
    typer.echo(f"wrote {out / 'edgekit.json'} (state {manifest['state_bytes']} bytes)")
