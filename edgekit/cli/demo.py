"""`edgekit demo`: the whole path on bundled small models.

1. writes the demo RWKV-7 (scripts/make_demo_model.py: deterministic, BlinkDL format),
2. exports it to ONNX and ExecuTorch with the fused op (progress bar),
3. streams 64 tokens through torch, ONNX Runtime and ExecuTorch, and shows per-token
   latency, state bytes and whether the backends agree,
4. runs the neuromorphic demo (digits, LIF, Loihi-style fixed point, Lava) if built.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


PROMPT = "The Eiffel Tower is in"


# The demo RWKV-7: World vocabulary size, C=256, 2 layers, head size 64; random weights
# from a fixed seed, written in BlinkDL's .pth format (scripts/make_demo_model.py wraps this).
DEMO_RWKV7 = dict(vocab_size=65536, n_embd=256, n_layer=2, head_size=64, seed=20261122)


def make_demo_model(path: Path) -> Path:
    from edgekit.models.rwkv7 import write_random_checkpoint
    return write_random_checkpoint(path, **DEMO_RWKV7)


def _stream(sess, prompt_ids, n):
    sess.reset()
    sess.feed(prompt_ids)
    times, out = [], []
    y = sess.last_y[0]
    for _ in range(n):
        tok = int(y.argmax())
        out.append(tok)
        t0 = time.perf_counter()
        y = sess.step(tok)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times) * 1e3


def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="where the demo writes its files"),
    tokens: int = typer.Option(64, "--tokens", help="tokens to stream per backend"),
    neuro: bool = typer.Option(True, "--neuro/--no-neuro", metavar="", help="also run the spiking-network demo"),
) -> None:
    """Run everything on bundled small models."""
    from edgekit.cli.export import export_to_dir
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.session import StreamingSession
    if tokens < 1:
        raise EdgekitError(f"--tokens {tokens} is not positive", fix="pass --tokens 64")

    from edgekit.units import human_bytes
    con = Console()
    con.rule("[bold]edgekit demo: RWKV-7 → ONNX + ExecuTorch, streamed")
    ckpt = make_demo_model(out / "rwkv7-demo.pth")
    con.print(f"demo model: {ckpt} (random weights, BlinkDL format, vocab 65536, C=256, L=2)")
    manifest = export_to_dir(ckpt, out / "rwkv7", ("onnx", "pte"), "fused", "buffers", 1, con)
    for fmt, e in manifest.artifacts.items():
        con.print(f"exported {out / 'rwkv7' / e.file}: {human_bytes(e.bytes)}, "
                  f"edgekit ops {', '.join(e.ops_used.get('edgekit', ()))}")

    table = Table(title=f"{tokens} tokens streamed after the prompt {PROMPT!r}")
    for col in ("backend", "artifact", "ms / token (median)", "state bytes", "same tokens as torch"):
        table.add_column(col, justify="right" if "ms" in col or "bytes" in col else "left")
    ref_tokens = None
    text = ""
    for label, art in (("torch (eager)", ckpt), ("onnxruntime", out / "rwkv7" / "model.onnx"),
                       ("executorch", out / "rwkv7" / "model.pte")):
        sess = StreamingSession(art)
        ids = sess.tokenizer.encode(PROMPT)
        toks, ms = _stream(sess, ids, tokens)
        if ref_tokens is None:
            ref_tokens, text = toks, sess.tokenizer.decode(toks)
        table.add_row(label, Path(art).name, f"{ms:.2f}", f"{sess.state_bytes:,}",
                      "[green]yes[/green]" if toks == ref_tokens else "[red]NO[/red]")
    con.print(table)
    shown = "".join(c if c.isprintable() else " " for c in text[:120])   # no Python repr, no control chars
    con.print(f"generated (random weights, so not English): {shown}", markup=False)

    if neuro:
        from edgekit.neuro.demo import run_digits_demo
        con.rule("[bold]edgekit demo: LIF spiking network → Loihi-2 fixed point")
        run_digits_demo(con, out / "neuro")
