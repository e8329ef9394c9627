"""`edgekit quantize SRC --ternary --steps N -o DIR`: quantization-aware fine-tuning."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.errors import EdgekitError


def quantize_cmd(
    src: Path = typer.Argument(..., help="a Hugging Face Mamba / Mamba-2 / RecurrentGemma (Hawk) folder, or an "
                               "RWKV-7 BlinkDL .pth (or a folder holding one)",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="new folder for the fine-tuned ternary checkpoint",
                             show_default=False),
    ternary: bool = typer.Option(False, "--ternary", metavar="", help="fine-tune to BitNet b1.58 ternary (the one "
                                 "scheme that needs it: int8 and int4 lose little post-training)"),
    steps: int = typer.Option(None, "--steps", help="optimizer steps, required (about a quarter of the model's "
                              "own training; the quantization ramps in over the first half)", show_default=False),
    batch: int = typer.Option(16, "--batch", help="sequences per step"),
    seq: int = typer.Option(256, "--seq", help="tokens per sequence"),
    lr: float = typer.Option(2e-3, "--lr", help="peak learning rate (cosine to a tenth)"),
    seed: int = typer.Option(0, "--seed", help="seed of the batch sampling and initialization"),
    quant_head: str = typer.Option("int4", "--quant-head", help="the output head's (and a tied embedding's) "
                                   "scheme: int4 (measured as good as int8) | int8 | ternary; export with the "
                                   "same --quant-head"),
    bitnet_packing: bool = typer.Option(False, "--bitnet-packing", metavar="", help="store the ternary Linear "
                                        "weights in transformers' BitNet packing (2 bits, uint8 (out/4, in), "
                                        "weight_scale; quant_method bitnet)"),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="the model's tokenizer.json, if SRC has none",
                                   show_default=False),
) -> None:
    """Fine-tune a model to ternary weights on the standard-library corpus, distilling the
    original; write it in its own format. Then: edgekit export OUT --quant ternary."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgekit.quant.qat import finetune
    if not ternary:
        raise EdgekitError("edgekit quantize needs a scheme", expected="--ternary",
                           fix="pass --ternary (int8 and int4 need no fine-tuning: edgekit export --quant int8|int4)")
    if steps is None:
        raise EdgekitError("edgekit quantize needs --steps N",
                           fix="pass --steps N, about a quarter of the steps the model was trained for "
                               "(the bundled Hawk: 87 of 350)")
    for name, v in (("--batch", batch), ("--seq", seq)):
        if v < 1:
            raise EdgekitError(f"{name} {v} is not positive", fix=f"pass {name} 16")
    from edgekit.quant import check_scheme
    check_scheme(quant_head, None)
    if not lr > 0:
        raise EdgekitError(f"--lr {lr} is not a positive number", fix="pass --lr 1e-3")
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]fine-tuning"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("qat", total=steps)
        rec = finetune(src, out, steps=steps, batch=batch, seq=seq, lr=lr, seed=seed, tokenizer=tokenizer, head=quant_head,
                       bitnet_packing=bitnet_packing,
                       log=lambda m: console.print(m), progress=lambda i: bar.update(task, completed=i))
    typer.echo(f"wrote {out} (ternary, {len(rec['quantized'])} layers, {rec['minutes']} min); "
               f"next: {rec['export'].replace('OUT', str(out), 1)} -o OUTDIR")
