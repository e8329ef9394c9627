#!/usr/bin/env python
"""Read bandwidth against buffer size: what the floor's probe measures, and why it moves.

    python benchmarks/read_bandwidth.py [--sizes 32,64,128,256,512,1024,2048] [--rounds 5] [--threads 2]

The floor in step_latency.py and quant.py divides a token's weight bytes by the read bandwidth
of a 256 MiB `torch.sum` (best of 2) taken right before each timed block. This script times
the same `torch.sum` over buffers of several sizes (MiB), `--rounds` interleaved rounds of
best-of-3, and prints the median and range per size. Where a buffer fits in the last-level
cache (this machine's L3 is reported as 300 MB, shared with the host's other tenants) the sum
reads from cache; past it, from DRAM. A 256 MiB buffer sits at that edge, so its reading
depends on how much of the L3 the neighbours hold at that moment. `--plot PATH.png` draws the
curve.
"""

from __future__ import annotations

import argparse
import statistics
import time


def gbs(x, repeats: int = 3) -> float:
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def main(argv=None):
    import torch
    from rich.console import Console
    from rich.table import Table
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="32,64,128,256,512,1024,2048", help="buffer sizes, MiB")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    bufs = {m: torch.ones(m * 2**20 // 4) for m in sizes}
    runs = {m: [] for m in sizes}
    for _ in range(args.rounds):
        for m in sizes:
            runs[m].append(gbs(bufs[m]))
    t = Table(title=f"torch.sum read bandwidth by buffer size, {args.threads} threads, "
                    f"{args.rounds} interleaved rounds of best-of-3")
    for c in ("buffer", "GB/s median", "range"):
        t.add_column(c, justify="right")
    for m in sizes:
        t.add_row(f"{m} MiB", f"{statistics.median(runs[m]):.1f}", f"{min(runs[m]):.1f}-{max(runs[m]):.1f}")
    Console().print(t)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(sizes, [statistics.median(runs[m]) for m in sizes], marker="o")
        ax.fill_between(sizes, [min(runs[m]) for m in sizes], [max(runs[m]) for m in sizes], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("buffer (MiB)")
        ax.set_ylabel("GB/s")
        ax.set_title("read bandwidth vs buffer size")
        fig.tight_layout()
        fig.savefig(args.plot)
    return runs


if __name__ == "__main__":
    main()
