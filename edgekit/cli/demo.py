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
CFC = Path(__file__).resolve().parents[1] / "bundled" / "cfc-pendulum"


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
    if CFC.is_dir():
        _cfc_demo(con, out)
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


def bundled_lms() -> list[Path]:
    """The bundled trained byte-level LMs: the folders whose eval.json holds held-out bits
    per byte (the CfC's holds RMSE; a QAT output has none)."""
    import json
    root = BUNDLED.parent
    return sorted(p for p in root.iterdir() if (p / "eval.json").is_file() and (p / "train.json").is_file()
                  and "bits_per_byte" in json.loads((p / "eval.json").read_text()))


def bundled_source(folder: Path) -> Path:
    """What to load from a bundled model's folder: RWKV-7's BlinkDL .pth inside it, or the
    save_pretrained folder itself."""
    return folder / "rwkv7.pth" if (folder / "rwkv7.pth").is_file() else folder


def _bundled_demo(con: Console, out: Path, tokens: int, memory_tokens: int) -> None:
    """The bundled trained models, exported and continuing a Python prompt in both runtimes."""
    import json

    from edgekit.cli.export import export_to_dir
    from edgekit.runtimes.session import StreamingSession
    from edgekit.units import human_bytes
    models = bundled_lms()
    con.rule("[bold]edgekit demo: trained byte-level models → ONNX + ExecuTorch")
    q = None
    for src in models:
        train = json.loads((src / "train.json").read_text())
        quality = json.loads((src / "eval.json").read_text())
        con.print(f"bundled model: {src.name} ({train['arch']}), {train['parameters']:,} parameters, trained "
                  f"{train['train_minutes']:.0f} min on the Python standard library (scripts/train_tiny.py; "
                  f"{train.get('device', 'cpu')})", markup=False)
        manifest = export_to_dir(bundled_source(src), out / src.name, ("onnx", "pte"), "fused", "buffers", 1, con)
        table = Table(title=f"{src.name}: {4 * tokens} bytes sampled (top-p {SAMPLING['top_p']}, temperature "
                            f"{SAMPLING['temperature']}, seed {SAMPLING['seed']}) after the prompt below")
        for col in ("backend", "ms / byte (mean)", "state", "file", "same bytes as ONNX Runtime"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        ref, text = None, ""
        for label, fmt in (("onnxruntime", "onnx"), ("executorch", "pte")):
            entry = manifest.artifacts[fmt]
            sess = StreamingSession(out / src.name / entry.file)
            t0 = time.perf_counter()
            toks = sess.generate(4 * tokens, prompt=sess.tokenizer.encode(CODE_PROMPT), **SAMPLING)
            ms = (time.perf_counter() - t0) * 1e3 / (4 * tokens + len(CODE_PROMPT))
            if ref is None:
                ref, text = toks, sess.tokenizer.decode(toks)
            table.add_row(label, f"{ms:.2f}", human_bytes(sess.state_bytes), human_bytes(entry.bytes),
                          "[green]yes[/green]" if toks == ref else "[red]NO[/red]")
        con.print(table)
        con.print(CODE_PROMPT + text, markup=False, highlight=False)
        if q is None:
            q = Table(title=f"held-out bits per byte ({quality['files']} stdlib files, {quality['bytes']:,} bytes; "
                            "edgekit eval)")
            q.add_column("model / compressor")
            q.add_column("bits per byte", justify="right")
            compressors = quality["compressors"]
        q.add_row(f"{src.name} ({quality['backend']})", f"{quality['bits_per_byte']:.3f}")
    for name, v in compressors.items():
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
        res = memory_vs_kv.run(out / BUNDLED.name / "model.onnx", memory_tokens, max(memory_tokens // 40, 1))
        memory_vs_kv.plot(res, out / "memory_vs_kv.png", f"resident memory over {memory_tokens:,} tokens")
        for name, samples in res.items():
            con.print(f"  {name}: {samples[0][1]:.0f} → {samples[-1][1]:.0f} MB, "
                      f"{memory_vs_kv.slope_mb_per_1k(samples):+.3f} MB per 1,000 tokens", markup=False)
        con.print(f"  plot: {out / 'memory_vs_kv.png'}")


def _cfc_demo(con: Console, out: Path) -> None:
    """The bundled CfC predicting an irregularly sampled pendulum, in ONNX Runtime and
    ExecuTorch: the held-out RMSE table and a plot of prediction against truth."""
    import json

    import numpy as np

    from edgekit.cli.export import export_to_dir
    from edgekit.data import pendulum
    from edgekit.runtimes.session import StreamingSession
    train = json.loads((CFC / "train.json").read_text())
    committed = json.loads((CFC / "eval.json").read_text())["rmse"]
    con.rule("[bold]edgekit demo: a trained CfC (liquid network) on an irregularly sampled pendulum")
    con.print(f"bundled model: {CFC.name}, ncps CfC, {train['parameters']:,} parameters, trained "
              f"{train['train_minutes']:.0f} min on this CPU (scripts/train_cfc.py); inputs (sin θ, cos θ, θ', Δt), "
              "Δt random in [0.05, 0.25]", markup=False)
    manifest = export_to_dir(CFC, out / "cfc", ("onnx", "pte"), "fused", "buffers", 1, con)
    hx, hdt = pendulum.heldout()
    h = pendulum.HORIZON
    table = Table(title=f"held-out RMSE ({len(hx)} trajectories; {h}-step: closed loop after "
                        f"{pendulum.WARMUP} observed steps)")
    for col in ("predictor", "one-step RMSE", f"{h}-step RMSE"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    sessions = {}
    for label, fmt in (("CfC, onnxruntime", "onnx"), ("CfC, executorch", "pte")):
        sessions[fmt] = StreamingSession(out / "cfc" / manifest.artifacts[fmt].file)
        r = pendulum.evaluate(pendulum.session_stepper(sessions[fmt]), hx, hdt)
        table.add_row(label, f"{r['one_step_rmse']:.4f}", f"{r[f'{h}_step_rmse']:.4f}")
    for name in ("persistence", "linear regression"):
        table.add_row(f"{name} (eval.json)", f"{committed[name]['one_step_rmse']:.4f}",
                      f"{committed[name][f'{h}_step_rmse']:.4f}")
    con.print(table)
    x, dt = hx[0], hdt[0]
    step = pendulum.session_stepper(sessions["onnx"])()
    feats, pred = pendulum.inputs(x, dt), [x[0]]
    for t in range(pendulum.WARMUP):
        pred.append(x[t] + step(feats[t], float(dt[t])))
    cur = x[pendulum.WARMUP].astype(np.float64)
    for t in range(pendulum.WARMUP, pendulum.WARMUP + h):
        cur = cur + step(np.concatenate([cur, [dt[t]]]).astype(np.float32), float(dt[t]))
        pred.append(cur)
    pred = np.asarray(pred)
    n = len(pred)
    times = np.concatenate([[0.0], np.cumsum(dt[:n - 1])])
    path = _plot_pendulum(out / "cfc_pendulum.png", times, x[:n], pred, pendulum.WARMUP)
    con.print(f"  plot of prediction against truth: {path}")


def _plot_pendulum(path: Path, times, truth, pred, warmup: int) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgekit._io import atomic_path
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    angle = lambda a: np.arctan2(a[:, 0], a[:, 1])  # noqa: E731
    for ax, f, label in ((axes[0], angle, "θ (rad)"), (axes[1], lambda a: a[:, 2], "θ' (rad/s)")):
        ax.plot(times, f(truth), "k.", ms=3, label="truth (irregular samples)")
        ax.plot(times[:warmup + 1], f(pred[:warmup + 1]), "-", color="tab:blue", lw=1, label="CfC, one step ahead")
        ax.plot(times[warmup:], f(pred[warmup:]), "-", color="tab:red", lw=1.5, label="CfC, closed loop")
        ax.axvline(times[warmup], color="gray", lw=0.5)
        ax.set_ylabel(label)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].set_xlabel("time (s)")
    fig.suptitle("bundled CfC on a held-out damped, driven pendulum (ONNX Runtime)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
