"""`edgekit export SRC --format onnx|pte|both|ort-genai -o OUTDIR`"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgekit.errors import EdgekitError

from edgekit.formats import ARTIFACT_FORMATS, RUNNABLE_FORMATS

# every artifact format by name, and "both" for the two edgekit runs (from the format registry)
FORMAT_CHOICES = {**{f: (f,) for f in ARTIFACT_FORMATS}, "both": RUNNABLE_FORMATS}


def export_to_dir(src, outdir: Path, formats, ops, state_style, batch, console: Console | None = None,
                  quiet: bool = False, prefill: int = 0, tokenizer: Path | None = None,
                  quant: str | None = None, group_size: int | None = None, quant_head: str | None = None,
                  device: str | None = None, dtype: str | None = None, force: bool = False,
                  quantizer: str = "auto"):
    """`edgekit.export.export` with a progress bar (export itself is atomic per OUTDIR)."""
    from edgekit.export import export
    name = Path(str(src)).name if isinstance(src, (str, Path)) else type(src).__name__
    console = console or Console(stderr=True)
    # not a terminal (a log, a pipe): no progress at all, not even the newline rich ends with
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task(f"export {name}", total=None)
        return export(src, outdir, formats=formats, ops=ops, batch=batch, state_style=state_style, prefill=prefill,
                      tokenizer=tokenizer, quant=quant, group_size=group_size, quant_head=quant_head,
                      device=device, dtype=dtype, force=force, quantizer=quantizer, progress=lambda msg: bar.update(task, description=f"{msg} ({name})"))


def export_cmd(
    src: Path = typer.Argument(..., help="a checkpoint: RWKV-7 BlinkDL .pth, a Hugging Face Mamba / Mamba-2 / "
                               "RecurrentGemma folder, or an ncps CfC/LTC folder (`edgekit archs` lists them)",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="output folder (new, empty, or an earlier export)",
                             show_default=False),
    format: str = typer.Option(None, "--format", help="onnx | pte | both | ort-genai (a folder for ONNX Runtime GenAI)  [default: both, or the --device's]",
                               show_default=False),
    ops: str = typer.Option(None, "--ops", help="fused (edgekit custom ops) | decomposed (stock ops only)  "
                            "[default: fused, or the --device's]", show_default=False),
    state_style: str = typer.Option("buffers", "--state-style",
                                    help="pte only: buffers (state kept in place) | io"),
    batch: int = typer.Option(1, "--batch", help="batch size of the exported step graph"),
    prefill: int = typer.Option(0, "--prefill", help="also export the sequence form over chunks of T "
                                "tokens (prefill.onnx / prefill.pte) for fast prompt ingestion; 0 = none"),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="a Hugging Face tokenizer.json to ship with the "
                                   "export (save_pretrained folders have none)", show_default=False),
    quant: str = typer.Option(None, "--quant", help="none | ternary (BitNet b1.58, 2 bits) | int8 | int4: "
                              "every Linear layer, head included; activations int8 per block  "
                              "[default: none, or the --device's]", show_default=False),
    group_size: int = typer.Option(None, "--group-size", help="weights per scale block (power of 2, >= 16); "
                                   "default: ternary 128, int8 128, int4 32, halved where a layer's width "
                                   "needs it", show_default=False),
    quant_head: str = typer.Option(None, "--quant-head", help="the output head's (and a tied embedding's) "
                                   "scheme, if not --quant's (ternary's default: int4)",
                                   show_default=False),
    quantizer: str = typer.Option("auto", "--quantizer", help="what makes int4 codes: nncf (nncf.compress_weights) "
                                  "| edgekit (its copy of NNCF's rule: the same bytes, no NNCF needed) | auto "
                                  "(nncf where installed)"),
    device: str = typer.Option(None, "--device", help="a device profile (`edgekit devices`): its format, "
                               "dtype, quantization and passes unless a flag says otherwise; the model must "
                               "fit its RAM budget", show_default=False),
    dtype: str = typer.Option(None, "--dtype", help="fp32 | fp16 (ONNX only: fp16 weights and compute, the state "
                              "and reductions fp32)  [default: fp32, or the --device's]", show_default=False),
    force: bool = typer.Option(False, "--force", metavar="", help="export even if the model does not fit the "
                               "--device's RAM budget"),
) -> None:
    """Export a model as a single-step stateful graph, plus edgekit.json."""
    from edgekit.units import human_bytes
    if format is not None and format not in FORMAT_CHOICES:
        raise EdgekitError(f"unknown --format '{format}'", expected=", ".join(FORMAT_CHOICES),
                           fix="pass --format both")
    if dtype is not None and dtype not in ("fp32", "fp16"):
        raise EdgekitError(f"unknown --dtype '{dtype}'", expected="fp32 or fp16", fix="pass --dtype fp32")
    if quant is not None and quant != "none":
        from edgekit.quant import QUANTIZERS, check_scheme
        check_scheme(quant, group_size)
        if quantizer not in QUANTIZERS:
            raise EdgekitError(f"unknown --quantizer '{quantizer}'", expected=" | ".join(QUANTIZERS),
                               fix="pass --quantizer auto (the default), nncf or edgekit")
    for name, v in (("--group-size", group_size), ("--quant-head", quant_head)):
        if v is not None and quant in (None, "none") and device is None:
            raise EdgekitError(f"{name} needs --quant", fix=f"add --quant ternary, int8 or int4, or drop {name}")
    if force and device is None:
        raise EdgekitError("--force needs --device", fix="drop --force; it overrides a device's RAM budget")
    console = Console(stderr=True)
    manifest = export_to_dir(src, out, FORMAT_CHOICES[format] if format else None, ops, state_style, batch, console,
                             prefill=prefill, tokenizer=tokenizer, quant=quant, group_size=group_size,
                             quant_head=quant_head, device=device, dtype=dtype, force=force, quantizer=quantizer)
    for fmt, entry in manifest.artifacts.items():
        typer.echo(f"wrote {out / entry.file} ({human_bytes(entry.bytes)}, ops: {manifest.ops}"
                   + (f", state: {entry.state_style}" if fmt == "pte" else "") + ")")
    typer.echo(f"wrote {out / 'edgekit.json'} (state {human_bytes(manifest.state_bytes)})")
    if manifest.device_choices:
        c = manifest.device_choices
        p, fit = c["profile"], c["fit"]
        over = "; flags kept: " + ", ".join(f"{k} {v['flag']} (profile: {v['profile']})"
                                            for k, v in c["overridden"].items()) if c["overridden"] else ""
        typer.echo(f"device {manifest.device}: {p['format']}, {p['dtype']}, quantization {p['quant']}, "
                   f"{p['threads']} threads{over}; needs {human_bytes(fit['weights'] + fit['state'] + fit['working'])} "
                   f"of its {human_bytes(fit['budget'])} RAM budget" + ("" if fit["fits"] else " (over: --force)"))
    q = manifest.quantization
    if isinstance(q, dict):
        kept = q["kept_float32"]
        typer.echo(f"quantized {len(q['layers'])} layers {q['scheme']} ({q['bits_per_weight']} bits per weight)"
                   + (f"; kept float32: {_kept_summary(kept)}" if kept else ""))


def _kept_summary(kept) -> str:
    """The manifest's kept_float32 for one line: names sharing a reason listed together, and a
    long list (RWKV-7's 94 LoRA matrices) counted, its first name shown."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in kept.items():
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in by_reason.items():
        shown = ", ".join(names) if len(names) <= 3 else f"{len(names)} layers ({names[0]}, ...)"
        parts.append(f"{shown} ({reason})")
    return "; ".join(parts)
