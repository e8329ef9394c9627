#!/usr/bin/env python
"""Per-token latency of every edgekit backend vs the memory-bandwidth floor, side by side.

    python benchmarks/step_latency.py [--cases rwkv7-0.1B,...] [--steps 64] [--rounds 5]
                                      [--json out.json] [--plot out.png]

For each case (benchmarks/cases/*.py) it writes a random-weight model at the real shape in
its real on-disk format, exports it (ONNX and .pte; fused and decomposed ops; .pte with
state in buffers and as I/O), and times single steps of: torch eager, ONNX Runtime,
ExecuTorch, and the reference implementation with its own cache, each called from Python
one step at a time (`StreamingSession.step`). Rows ending "C loop" step the same .pte from
C++ (runtime/edgekit_runner.cpp's `edgekit_runner_run`, as `edgekit run --input` and an app calling
the C API do): still one step per input row, with no Python between steps. Backends are timed in
interleaved rounds (round-robin, `--steps` each per round) so machine noise hits all of
them alike; the figure is the median over every timed step.

Floor: decode at batch 1 reads every weight once per token, so
    floor_ms = fp32 weight bytes read per token / read bandwidth.
Embedding tables count one row (a gather), not the whole table. The bandwidth is measured
in the same run, right before every timed block (`ReadProbe`: 50 ms of rest, so no pool is
still spinning, then a 256 MiB torch.sum on every core, best of 2; then 20 ms of rest and 8 untimed steps, so the block is timed in steady state): the memory system of
these shared machines drifts by ±30% within seconds, so "x floor" is the median over rounds
of each block's time over the floor measured next to it. The table
header shows the median and the range of all bandwidth samples.

Stability and memory (`--processes N`, default 5): the fused `.pte` (state in buffers) and
the fused `.onnx` are each stepped in N fresh processes, one after another on the otherwise
idle machine; each reports its median time per token and its resident memory after decoding.
The table gives the median, the range and the spread (slowest / fastest - 1) over the
processes, and decode RSS next to the artifact's weight bytes (the file's size).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


# The probe's buffer. benchmarks/read_bandwidth.py, 2 threads, 2026-12-06: 32-128 MiB read
# 61-62 GB/s (this machine's 300 MB L3), 512 MiB-2 GiB 31.5-32 (DRAM), 256 MiB 39-43 in that
# run and 30-60 across runs: at the L3's edge, it depends on what the host's other tenants
# hold there. It stays 256 MiB, the size every earlier table and every issue's goal was
# measured against; docs/benchmarks.md ("What the floor's probe reads") gives the curve.
PROBE_BYTES = 256 * 2**20
SETTLE_S = 0.05


class ReadProbe:
    """The read bandwidth (GB/s) of a plain `torch.sum` over `nbytes` (PROBE_BYTES), best of
    `repeats`, on every core, after SETTLE_S of rest."""

    def __init__(self, nbytes: int = PROBE_BYTES, repeats: int = 2, threads: int | None = None):
        import torch
        self.torch = torch
        self.threads = threads or os.cpu_count() or 1     # every core, whatever a session left set
        self.nbytes = int(nbytes) // 4 * 4
        self.x = torch.ones(self.nbytes // 4, dtype=torch.float32)
        self.repeats = repeats
        self.x.sum()

    def __call__(self) -> float:
        # Probes right after some backends' blocks read 15-17 GB/s against 30-31 in one run
        # (2026-12-06): half the floor's bandwidth. Two ways a backend leaves the probe half
        # the machine, not isolated which: a thread pool still spinning after its run, or
        # torch left at one thread by a session. Rest first, and set every core.
        time.sleep(SETTLE_S)
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            best = float("inf")
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                self.x.sum()
                best = min(best, time.perf_counter() - t0)
        finally:
            self.torch.set_num_threads(before)
        return self.nbytes / best / 1e9


def weight_bytes_per_token(model) -> int:
    """fp32 bytes of every parameter/buffer read per step; an Embedding reads one row (the
    models here are loaded in fp32: edgekit.models.base.bytes_read_per_token)."""
    from edgekit.models.base import bytes_read_per_token
    return bytes_read_per_token(model)


def load_cases(names: list[str] | None):
    import cases
    mods = [importlib.import_module(f"cases.{m.name}") for m in pkgutil.iter_modules(cases.__path__)]
    mods = [m for m in mods if hasattr(m, "NAME")]
    if names:
        mods = [m for m in mods if m.NAME in names or m.__name__.split(".")[-1] in names]
    return mods


def variants(model_path: Path, work: Path, console, styles=("buffers", "io")):
    """(label, artifact) for every export variant, exporting what is missing."""
    from edgekit.cli.export import export_to_dir
    out = []
    for ops in ("fused", "decomposed"):
        for style in styles:
            d = work / f"{ops}-{style}"
            fmts = ("onnx", "pte") if style == "buffers" else ("pte",)
            if not (d / "edgekit.json").exists():
                console.print(f"  exporting {ops}/{style} ...")
                export_to_dir(model_path, d, fmts, ops, style, 1, console=console)
            if style == "buffers":
                out.append((f"onnxruntime {ops}", d / "model.onnx"))
            out.append((f"executorch {ops} state={style}", d / "model.pte"))
    return out


def time_case(case, steps: int, rounds: int, work: Path, console, skip_oracle=False,
              styles=("buffers", "io"), c_loop=True) -> dict:
    from edgekit.models import load_model
    from edgekit.runtimes.session import StreamingSession
    work.mkdir(parents=True, exist_ok=True)
    path = case.make(work)
    model = load_model(path)
    wbytes = weight_bytes_per_token(model)
    del model
    gc.collect()
    probe = ReadProbe()
    runners = [("torch eager (edgekit model)", StreamingSession(path))]
    for label, art in variants(path, work, console, styles):
        runners.append((label, StreamingSession(art)))
        if art.suffix == ".pte" and c_loop:
            loop = _CLoop(StreamingSession(art))
            if loop.native:
                runners.append((f"{label}, C loop", loop))
    if not skip_oracle and (o := case.oracle(path)) is not None:
        label, fn = o

        class _Oracle:
            def step(self, x):
                return fn(x)
        runners.append((f"oracle: {label}", _Oracle()))
    rng = np.random.default_rng(0)
    times = {label: [] for label, _ in runners}
    ratios = {label: [] for label, _ in runners}
    for label, r in runners:                                   # warm-up
        for x in case.inputs(8, rng):
            r.step(x)
    bw = []
    for rnd in range(rounds):
        xs = case.inputs(steps, rng)
        for label, r in runners:
            # the bandwidth right before this backend's block: the machine's memory system is
            # shared and drifts by ±30% over seconds, so each block gets its own floor
            gbs = probe()
            bw.append(gbs)
            # Steady state, as in a stream: the probe's read just evicted the caches and left
            # ATen's OpenMP worker spinning on the second core; a 64-step block of a small
            # model (~0.2 ms) would otherwise be timed entirely inside that. Settle, then 8
            # untimed steps (the state moves on; nothing is compared).
            time.sleep(0.02)
            for x in xs[:8]:
                r.step(x)
            if isinstance(r, _CLoop):          # one C call for the block: its mean per step
                run = r.prepare(xs)
                t0 = time.perf_counter()
                run()
                block = [(time.perf_counter() - t0) / len(xs)] * len(xs)
            else:
                block = []
                for x in xs:
                    t0 = time.perf_counter()
                    r.step(x)
                    block.append(time.perf_counter() - t0)
            times[label] += block
            ratios[label].append(statistics.median(block) / (wbytes / (gbs * 1e9)))
    gbs = statistics.median(bw)
    floor_ms = wbytes / (gbs * 1e9) * 1e3
    rows = []
    oracle_ms = next((statistics.median(v) * 1e3 for k, v in times.items() if k.startswith("oracle")), None)
    for label, v in times.items():
        ms = statistics.median(v) * 1e3
        rows.append({"backend": label, "ms_per_token": ms, "x_floor": statistics.median(ratios[label]),
                     "x_floor_per_round": ratios[label],
                     "x_vs_oracle": (ms / oracle_ms) if oracle_ms else None})
    ours = [r for r in rows if not r["backend"].startswith(("oracle", "torch"))]
    best = min(ours, key=lambda r: r["ms_per_token"])
    best_py = min((r for r in ours if not r["backend"].endswith("C loop")), key=lambda r: r["ms_per_token"])
    return {"case": case.NAME, "shape": case.SHAPE, "weight_mb_per_token": wbytes / 1e6,
            "bandwidth_gbs": gbs, "bandwidth_gbs_samples": bw, "bandwidth_gbs_range": [min(bw), max(bw)],
            "floor_ms": floor_ms, "rows": rows,
            "best": best["backend"], "best_x_floor": best["x_floor"],
            "best_python_step": best_py["backend"], "best_python_step_x_floor": best_py["x_floor"],
            "best_vs_oracle": best["x_vs_oracle"], "threads": os.cpu_count(),
            "steps_per_backend": steps * rounds}


class _CLoop:
    """A .pte stepped by edgekit's native runner in C++ (`edgekit_runner_run`, what
    `edgekit run --input` and an app calling runtime/edgekit_runner.cpp's C API do): a block of
    single steps in one call, no Python between them. Step t still reads input t and writes
    output t; the figure is the block's time over its steps."""

    def __init__(self, sess):
        self.sess = sess
        eng = getattr(sess.backend, "engine", None)      # the native runner, state in buffers
        self.native = eng is not None and hasattr(eng, "run_sequence") and getattr(eng, "_state_io", 1) is None

    def step(self, x):
        return self.sess.step(x)

    def prepare(self, xs):
        specs = self.sess._input_facts()
        cols = [np.stack([np.asarray(x if len(specs) == 1 else x[k], dtype=f.dtype).reshape(f.shape)
                          for x in xs]) for k, f in enumerate(specs)]
        return lambda: self.sess.backend.run_sequence(cols)


_FRESH = r"""
import json, os, statistics, sys, time
import numpy as np
from edgekit.runtimes.session import StreamingSession
art, steps = sys.argv[1], int(sys.argv[2])
sess = StreamingSession(art)
rng = np.random.default_rng(0)
specs = sess._input_facts()
def x():
    cols = [rng.integers(0, max(f.vocab, 2), f.shape) if f.vocab else
            (rng.uniform(0.5, 1.5, f.shape) if f.name == "dt" else rng.standard_normal(f.shape)).astype(f.dtype)
            for f in specs]
    return cols[0] if len(cols) == 1 else tuple(cols)
for _ in range(32):
    sess.step(x())
t = []
for _ in range(steps):
    xi = x()
    t0 = time.perf_counter()
    sess.step(xi)
    t.append(time.perf_counter() - t0)
with open("/proc/self/statm") as f:
    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
print(json.dumps({"ms": statistics.median(t) * 1e3, "rss_mb": rss / 2**20}))
"""


# Steps timed in each fresh process (after 32 warm-up steps). 64 steps (~1 s) let one burst
# of host noise move a process's median: Mamba-2's .pte read 13.1-16.3 ms over 5 processes in
# one run and 14.3-14.9 ms in six processes right after. 256 (~4 s) is a decode, not a blip.
FRESH_STEPS = 256


def fresh_processes(art: Path, n: int, steps: int) -> dict:
    """Median ms/token and decode RSS of `art` in n fresh processes, one at a time."""
    import subprocess
    runs = []
    for _ in range(n):
        r = subprocess.run([sys.executable, "-c", _FRESH, str(art), str(steps)], capture_output=True, text=True,
                           cwd=REPO, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"fresh process on {art} failed: {r.stderr[-1500:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ms = [r["ms"] for r in runs]
    weights = sum((art.parent / f).stat().st_size for f in (art.name, art.name + ".data")
                  if (art.parent / f).exists())
    return {"artifact": str(art), "ms_per_process": ms, "ms_median": statistics.median(ms),
            "spread": max(ms) / min(ms) - 1, "rss_mb_per_process": [r["rss_mb"] for r in runs],
            "rss_mb_median": statistics.median(r["rss_mb"] for r in runs), "artifact_mb": weights / 2**20}


def print_fresh(res, console):
    from rich.table import Table
    t = Table(title=f"{res['case']}: {len(res['fresh'][0]['ms_per_process'])} fresh processes each "
                    "(stability) and decode RSS vs the artifact's size")
    for c in ("artifact", "ms/token median", "x floor", "range", "spread", "decode RSS", "artifact size", "RSS / size"):
        t.add_column(c, justify="left" if c == "artifact" else "right")
    for f in res["fresh"]:
        f["x_floor"] = f["ms_median"] / res["floor_ms"]     # the case's floor, same run
        t.add_row(Path(f["artifact"]).parent.name + "/" + Path(f["artifact"]).name, _fmt_time(f["ms_median"]),
                  f"{f['x_floor']:.2f}x",
                  f"{_fmt_time(min(f['ms_per_process']))} - {_fmt_time(max(f['ms_per_process']))}",
                  f"{f['spread'] * 100:.1f}%", f"{f['rss_mb_median']:.0f} MB", f"{f['artifact_mb']:.0f} MB",
                  f"{f['rss_mb_median'] / f['artifact_mb']:.2f}x")
    console.print(t)


def _fmt_time(ms: float) -> str:
    return f"{ms * 1e3:.1f} us" if ms < 0.1 else f"{ms:.2f} ms"


def print_case(res, console):
    from rich.table import Table
    lo, hi = res["bandwidth_gbs_range"]
    mb = res["weight_mb_per_token"]
    t = Table(title=f"{res['case']} ({res['shape']}): "
                    f"{f'{mb:.0f} MB' if mb >= 10 else f'{mb * 1e3:.1f} KB'} fp32 weights/token, "
                    f"read bandwidth {res['bandwidth_gbs']:.1f} GB/s (median; {lo:.1f}-{hi:.1f}) "
                    f"-> floor {_fmt_time(res['floor_ms'])}/token",
              caption="x floor: median over rounds of (block median ms) / (floor from the bandwidth "
                      "measured right before that block)")
    for c in ("backend", "time/token (median)", "x floor", "vs oracle"):
        t.add_column(c, justify="left" if c == "backend" else "right")
    for r in sorted(res["rows"], key=lambda r: r["ms_per_token"]):
        star = " *" if r["backend"] == res["best"] else ""
        t.add_row(r["backend"] + star, _fmt_time(r["ms_per_token"]), f"{r['x_floor']:.2f}x",
                  f"{r['x_vs_oracle']:.2f}x" if r["x_vs_oracle"] else "-")
    console.print(t)
    warn_noisy_probe(res["bandwidth_gbs_samples"], console)


# Probes of one run on a quiet host span up to ~1.3x (2026-12-06: 30.4-36.1 GB/s); a wider
# span came with a neighbour loading the memory system (16.5-32.1, every backend 30-40% slower).
NOISY_PROBE_SPAN = 1.35


def warn_noisy_probe(samples, console) -> None:
    """A line under the table when this run's bandwidth probes spread past NOISY_PROBE_SPAN:
    the host was busy, and absolute times (and the fresh-process spread) moved with it."""
    lo, hi = min(samples), max(samples)
    if lo > 0 and hi / lo > NOISY_PROBE_SPAN:
        console.print(f"[yellow]note: the bandwidth probes of this run span {lo:.1f}-{hi:.1f} GB/s "
                      f"({hi / lo:.2f}x): the host's memory system was busy; ms/token moved with it, "
                      "x floor less so. Re-run on a quiet host for absolute figures.[/yellow]")


def main(argv=None):
    from rich.console import Console
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--steps", type=int, default=64, help="steps per backend per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="bar chart of x floor per backend and case (.png)")
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--buffers-only", action="store_true",
                    help="skip the .pte state=io exports (halves export time)")
    ap.add_argument("--processes", type=int, default=5,
                    help="fresh processes per artifact for the stability / decode-RSS table (0: skip)")
    ap.add_argument("--no-c-loop", action="store_true",
                    help="skip the rows of .pte files stepped in C++ (edgekit_runner_run)")
    args = ap.parse_args(argv)
    console = Console()
    os.environ.setdefault("RWKV_V7_ON", "1")
    results = []
    for case in load_cases(args.cases.split(",") if args.cases else None):
        console.rule(case.NAME)
        # a block must last long enough to be timed in steady state: a small model's case sets
        # MIN_STEPS (cfc-64: 64-step blocks of ~0.2 ms read 4.3 us/step where 512-step blocks
        # read 2.7-3.0, the rest being the wake-up of caches and thread pools after the
        # bandwidth sample)
        res = time_case(case, max(args.steps, getattr(case, "MIN_STEPS", 0)), args.rounds, args.work / case.NAME, console, args.no_oracle,
                        ("buffers",) if args.buffers_only else ("buffers", "io"), not args.no_c_loop)
        print_case(res, console)
        if args.processes:
            work = args.work / case.NAME / "fused-buffers"
            res["fresh"] = [fresh_processes(work / f, args.processes, max(args.steps, FRESH_STEPS))
                            for f in ("model.pte", "model.onnx")]
            print_fresh(res, console)
        results.append(res)
        gc.collect()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
        console.print(f"wrote {args.plot}")
    return results


def plot(results, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.2 + 0.35 * max(len(r["rows"]) for r in results) * len(results)),
                             squeeze=False)
    for ax, res in zip(axes[:, 0], results):
        rows = sorted(res["rows"], key=lambda r: r["x_floor"])
        ax.barh([r["backend"] for r in rows], [r["x_floor"] for r in rows], color="tab:blue")
        ax.axvline(1.0, color="k", lw=1)
        ax.axvline(1.2, color="tab:red", lw=1, ls="--")
        ax.set_title(f"{res['case']}: floor {_fmt_time(res['floor_ms'])}/token at {res['bandwidth_gbs']:.1f} GB/s",
                     fontsize=9)
        ax.set_xlabel("x floor (1.0 = weight bytes / read bandwidth)")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
