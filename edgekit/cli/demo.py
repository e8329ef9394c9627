"""`edgekit demo`: the whole path on bundled small models.

0. the bundled trained model (edgekit/bundled/hawk-stdlib: a byte-level Hawk trained on the
   Python standard library by scripts/train_tiny.py) continues a Python prompt in ONNX
   Runtime and ExecuTorch, with its held-out bits per byte beside gzip/xz/zstd, and a plot
   of resident memory against tokens next to a transformer's growing KV cache,
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
CODE_PROMPT = 'def fibonacci(n):\n    """'
# greedy decoding of a 2M-parameter byte model repeats indentation; sampled text shows
# what it learned (fixed seed: both runtimes must give the same bytes)
SAMPLING = dict(top_p=0.8, temperature=0.7, seed=1)
BUNDLED = Path(__file__).resolve().parents[1] / "bundled" / "hawk-stdlib"


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
    memory_tokens: int = typer.Option(4000, "--memory-tokens", help="tokens of the memory plot (0: skip it; the "
                                      "transformer's cache grows by a copy per token: 20,000 take ~25 min)"),
) -> None:
    """Run everything on bundled small models."""
    from edgekit.cli.export import export_to_dir
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.session import StreamingSession
    if tokens < 1:
        raise EdgekitError(f"--tokens {tokens} is not positive", fix="pass --tokens 64")

    from edgekit.units import human_bytes
    con = Console()
    if BUNDLED.is_dir():
        _bundled_demo(con, out, tokens, memory_tokens)
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


def _bundled_demo(con: Console, out: Path, tokens: int, memory_tokens: int) -> None:
    """The bundled trained model, exported and continuing a Python prompt in both runtimes."""
    import json

    from edgekit.cli.export import export_to_dir
    from edgekit.runtimes.session import StreamingSession
    from edgekit.units import human_bytes
    train = json.loads((BUNDLED / "train.json").read_text())
    quality = json.loads((BUNDLED / "eval.json").read_text())
    con.rule("[bold]edgekit demo: a trained byte-level Hawk → ONNX + ExecuTorch")
    con.print(f"bundled model: {BUNDLED.name}, {train['parameters']:,} parameters, trained "
              f"{train['train_minutes']:.0f} min on this CPU on the Python standard library (scripts/train_tiny.py)",
              markup=False)
    manifest = export_to_dir(BUNDLED, out / "hawk", ("onnx", "pte"), "fused", "buffers", 1, con)
    table = Table(title=f"{4 * tokens} bytes sampled (top-p {SAMPLING['top_p']}, temperature "
                        f"{SAMPLING['temperature']}, seed {SAMPLING['seed']}) after the prompt below")
    for col in ("backend", "ms / byte (mean)", "state", "file", "same bytes as ONNX Runtime"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    ref, text = None, ""
    for label, fmt in (("onnxruntime", "onnx"), ("executorch", "pte")):
        entry = manifest.artifacts[fmt]
        sess = StreamingSession(out / "hawk" / entry.file)
        t0 = time.perf_counter()
        toks = sess.generate(4 * tokens, prompt=sess.tokenizer.encode(CODE_PROMPT), **SAMPLING)
        ms = (time.perf_counter() - t0) * 1e3 / (4 * tokens + len(CODE_PROMPT))
        if ref is None:
            ref, text = toks, sess.tokenizer.decode(toks)
        table.add_row(label, f"{ms:.2f}", human_bytes(sess.state_bytes), human_bytes(entry.bytes),
                      "[green]yes[/green]" if toks == ref else "[red]NO[/red]")
    con.print(table)
    con.print(CODE_PROMPT + text, markup=False, highlight=False)
    q = Table(title=f"held-out bits per byte ({quality['files']} stdlib files, {quality['bytes']:,} bytes; "
                    "edgekit eval)")
    q.add_column("model / compressor")
    q.add_column("bits per byte", justify="right")
    q.add_row(f"hawk-stdlib ({quality['backend']})", f"{quality['bits_per_byte']:.3f}")
    for name, v in quality["compressors"].items():
        q.add_row(name, f"{v:.3f}")
    con.print(q)
    if memory_tokens > 0:
        import sys
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
        try:
            import memory_vs_kv
        finally:
            sys.path.pop(0)
        con.print(f"resident memory over {memory_tokens:,} tokens: edgekit vs a transformer's KV cache …")
        res = memory_vs_kv.run(out / "hawk" / "model.onnx", memory_tokens, max(memory_tokens // 40, 1))
        memory_vs_kv.plot(res, out / "memory_vs_kv.png", f"resident memory over {memory_tokens:,} tokens")
        for name, samples in res.items():
            con.print(f"  {name}: {samples[0][1]:.0f} → {samples[-1][1]:.0f} MB, "
                      f"{memory_vs_kv.slope_mb_per_1k(samples):+.3f} MB per 1,000 tokens", markup=False)
        con.print(f"  plot: {out / 'memory_vs_kv.png'}")

