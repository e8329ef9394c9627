"""`edgekit bench ARTIFACT --steps N --json`: per-step latency and resident memory."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import typer

from edgekit.errors import EdgekitError


def rss_mb() -> float:
    """Current resident set size (not the peak), from /proc/self/statm."""
    import os
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_inputs(manifest, n: int, seed: int = 0) -> list:
    """n steps of pseudo-random inputs in the manifest's order, one step's inputs per item
    (a tuple when there are several): token ids, features, dt > 0 (parity checks)."""
    rng = np.random.default_rng(seed)
    V = manifest.config.get("vocab_size")
    cols = []
    for s in manifest.inputs:
        if s.dtype == "int64":
            cols.append(rng.integers(0, V if isinstance(V, int) else 256, (n, *s.shape)))
        elif s.name == "dt":
            cols.append(rng.uniform(0.5, 1.5, (n, *s.shape)).astype(np.float32))
        else:
            cols.append(rng.standard_normal((n, *s.shape)).astype(np.float32))
    rows = [tuple(c[t] for c in cols) for t in range(n)]
    return [r[0] for r in rows] if len(cols) == 1 else rows


def bench_session(sess, steps: int, warmup: int = 16, seed: int = 0) -> dict:
    """Step a session through pseudo-random inputs; time each step after warm-up."""
    rng = np.random.default_rng(seed)
    m = sess.manifest

    def draw(spec, n):
        if spec.dtype == "int64":
            return rng.integers(0, m.config["vocab_size"], size=(n, *spec.shape))
        if spec.name == "dt":                             # irregular sampling intervals
            return rng.uniform(0.5, 1.5, size=(n, *spec.shape)).astype(np.float32)
        return rng.standard_normal((n, *spec.shape)).astype(np.float32)

    def xs(n):
        cols = [draw(s, n) for s in m.inputs]
        return cols[0] if len(cols) == 1 else list(zip(*cols))
    for x in xs(warmup):
        sess.step(x)
    # Everything the harness itself holds is allocated before the first reading: the
    # timing array and one chunk of inputs (the previous chunk is freed before the next
    # is drawn), so rss_mb_end - rss_mb_start measures the session, not the harness.
    times = np.zeros(steps)
    chunk = 4096
    batch = xs(min(chunk, steps))
    rss_start = rss_mb()
    finite = True
    done = 0
    while True:
        for x in batch:
            t0 = time.perf_counter()
            y = sess.step(x)
            times[done] = time.perf_counter() - t0
            done += 1
        finite &= bool(np.isfinite(y).all())
        if done >= steps:
            break
        del batch
        batch = xs(min(chunk, steps - done))
    rss_end = rss_mb()
    # The same steps from C++ (ExecuTorch's native runner: `edgekit run --input`, the C API),
    # one call for a chunk of single steps: the mean per step. None on other backends.
    c_loop = None
    run = getattr(sess.backend, "run_sequence", None)
    if run is not None:
        cols = [draw(s, min(256, steps)) for s in m.inputs]    # 256 steps of y: 51 MB of LM logits
        run([c[:16] for c in cols])                                   # warm
        t0 = time.perf_counter()
        ys = run(cols)
        if ys is not None:
            c_loop = (time.perf_counter() - t0) / len(ys) * 1e3
            finite &= bool(np.isfinite(ys).all())
        del ys, cols
    state = sess.backend.get_state()
    finite &= all(bool(np.isfinite(v).all()) for v in state.values())
    return {"backend": sess.backend.name, "format": sess.format, "threads": sess.backend.threads,
            "steps": steps, "ms_per_step": statistics.median(times) * 1e3,
            "ms_per_step_mean": float(times.mean() * 1e3), "ms_per_step_c_loop": c_loop,
            "rss_mb_start": round(rss_start, 2),
            "rss_mb_end": round(rss_end, 2), "state_bytes": m.state_bytes, "finite": finite}


def bench_cmd(
    artifact: Path = typer.Argument(..., help="model.onnx, model.pte, their export folder, or a checkpoint",
                                    show_default=False),
    steps: int = typer.Option(256, "--steps", help="timed steps"),
    warmup: int = typer.Option(16, "--warmup", help="steps run before timing starts"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object"),
    backend: str = typer.Option(None, "--backend", help="onnxruntime | executorch | torch | cuda (default: from the file)",
                                show_default=False),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: the runtime's choice)",
                                show_default=False),
) -> None:
    """Time single steps (median after warm-up) and watch resident memory."""
    from edgekit.runtimes.session import StreamingSession
    if steps < 1:
        raise EdgekitError(f"--steps {steps} is not positive", fix="pass --steps 256")
    if warmup < 0:
        raise EdgekitError(f"--warmup {warmup} is negative", fix="pass --warmup 16")
    sess = StreamingSession(artifact, backend=backend, threads=threads)
    r = bench_session(sess, steps, warmup)
    if as_json:
        print(json.dumps(r))
        return
    from edgekit.units import human_bytes
    for k, v in r.items():
        if v is None:
            v = "-"
        elif isinstance(v, bool):
            v = "yes" if v else "no"
        elif k.startswith("ms_"):
            v = f"{v:.4f} ms"
        elif k.startswith("rss_mb"):
            v = f"{v:,.1f} MB"
        elif k.endswith("bytes") and isinstance(v, int):
            v = human_bytes(v)
        elif isinstance(v, float):
            v = f"{v:.4f}"
        typer.echo(f"{k:>18}: {v}")
