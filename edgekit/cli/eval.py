"""`edgekit eval ARTIFACT --corpus stdlib-heldout [--json]`: held-out bits per byte, beside
gzip, xz and zstd on the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def eval_cmd(
    artifact: Path = typer.Argument(..., help="model.onnx, model.pte, their export folder, or a checkpoint",
                                    show_default=False),
    corpus: str = typer.Option("stdlib-heldout", "--corpus", help="stdlib-heldout (the Python standard "
                               "library's held-out files; edgekit/data/stdlib_heldout.json) | stdlib-train"),
    max_bytes: int = typer.Option(None, "--max-bytes", help="score only the first N bytes of the corpus "
                                  "(default: all)", show_default=False),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object"),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="a tokenizer.json, for models exported without one",
                                   show_default=False),
    backend: str = typer.Option(None, "--backend", help="onnxruntime | executorch | torch | cuda (default: from the file)",
                                show_default=False),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: the runtime's choice)",
                                show_default=False),
) -> None:
    """Bits per byte of a token model on a held-out corpus, with gzip -9, xz -9e and zstd -19."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from edgekit.errors import EdgekitError
    from edgekit.evaluate import bits_per_byte, compressor_bits_per_byte, corpus_bytes
    from edgekit.runtimes.session import StreamingSession
    if max_bytes is not None and max_bytes < 1:
        raise EdgekitError(f"--max-bytes {max_bytes} is not positive", fix="pass e.g. --max-bytes 65536")
    files = corpus_bytes(corpus, max_bytes)
    sess = StreamingSession(artifact, backend=backend, threads=threads, tokenizer=tokenizer)
    if sess.manifest.input_kind != "tokens":
        raise EdgekitError(f"'{artifact}' is a {sess.manifest.arch} model of feature inputs, not a language model",
                           fix="evaluate a token model (RWKV-7, Mamba, Mamba-2, Hawk, Griffin)")
    total = sum(len(d) for _, d in files)
    err = Console(stderr=True)
    with Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} bytes"),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("eval", total=total)
        lm = bits_per_byte(sess, files, progress=lambda n: bar.advance(task, n))
    comp = compressor_bits_per_byte(files)
    result = {"artifact": str(artifact), "arch": sess.manifest.arch, "backend": sess.backend.name,
              "corpus": corpus, "files": len(files), "bytes": total, **lm, "compressors": comp}
    if as_json:
        print(json.dumps(result))
        return
    t = Table(title=f"{corpus}: {len(files)} files, {total:,} bytes")
    t.add_column("model / compressor")
    t.add_column("bits per byte", justify="right")
    t.add_row(f"{sess.manifest.arch} ({Path(artifact).name}, {sess.backend.name})", f"{lm['bits_per_byte']:.4f}")
    for name, v in comp.items():
        t.add_row(name, f"{v:.4f}")
    Console().print(t)
    print(f"{lm['tokens']:,} tokens scored, {lm['ms_per_token']:.2f} ms/token")
