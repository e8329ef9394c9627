"""`edgekit export SRC --format onnx|pte|both -o OUTDIR`"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgekit.errors import EdgekitError

from edgekit.formats import ARTIFACT_FORMATS

# every artifact format by name, and "both" for all of them (from the format registry)
FORMAT_CHOICES = {**{f: (f,) for f in ARTIFACT_FORMATS}, "both": ARTIFACT_FORMATS}


def export_to_dir(src, outdir: Path, formats, ops, state_style, batch, console: Console | None = None,
                  quiet: bool = False, prefill: int = 0):
    """`edgekit.export.export` with a progress bar (export itself is atomic per OUTDIR)."""
    from edgekit.export import export
    name = Path(str(src)).name if isinstance(src, (str, Path)) else type(src).__name__
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  console=console or Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task(f"export {name}", total=None)
        return export(src, outdir, formats=formats, ops=ops, batch=batch, state_style=state_style, prefill=prefill,
                      progress=lambda msg: bar.update(task, description=f"{msg} ({name})"))


def export_cmd(
    src: Path = typer.Argument(..., help="checkpoint: BlinkDL .pth (RWKV-7)"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory"),
    format: str = typer.Option("both", "--format", help="onnx | pte | both"),
    ops: str = typer.Option("fused", "--ops", help="fused (edgekit custom ops) | decomposed (stock ops only)"),
    state_style: str = typer.Option("buffers", "--state-style",
                                    help="pte only: buffers (state kept in place, default) | io"),
    batch: int = typer.Option(1, "--batch", help="batch size of the exported step graph"),
    prefill: int = typer.Option(0, "--prefill", help="also export the sequence form over chunks of T "
                                "tokens (prefill.onnx / prefill.pte) for fast prompt ingestion; 0 = none"),
    quant: str = typer.Option("none", "--quant", help="none (bitnet|int8|int4 are not built yet)"),
) -> None:
    """Export a model as a single-step stateful graph, plus edgekit.json."""
    if format not in FORMAT_CHOICES:
        raise EdgekitError(f"unknown --format '{format}'", expected=", ".join(FORMAT_CHOICES),
                           fix="pass --format both")
    if quant != "none":
        raise EdgekitError(f"--quant {quant} is not available yet", expected="none",
                           fix="export without --quant; quantized export is on the roadmap")
    console = Console(stderr=True)
    manifest = export_to_dir(src, out, FORMAT_CHOICES[format], ops, state_style, batch, console, prefill=prefill)
    for fmt, entry in manifest.artifacts.items():
        typer.echo(f"wrote {out / entry.file} ({entry.bytes / 1e6:.1f} MB, ops: {manifest.ops}"
                   + (f", state: {entry.state_style}" if fmt == "pte" else "") + ")")
    typer.echo(f"wrote {out / 'edgekit.json'} (state {manifest.state_bytes} bytes)")
