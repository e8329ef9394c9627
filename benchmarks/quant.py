#!/usr/bin/env python
"""Quantized decode speed and size: fp32, int8, int4 and ternary exports of the real-size
cases, side by side in one run, each against the floor of its OWN bytes per token.

    python benchmarks/quant.py [--cases mamba-130m,rwkv7-0.1B,hawk-100M] [--schemes fp32,int8,int4,ternary]
                               [--formats onnx,pte] [--steps 32] [--rounds 5] [--threads 2] [--json out.json]

Every case (benchmarks/cases/) is written once with random weights at its real shape (speed
does not depend on the values) and exported with `--quant` per scheme (ops fused, state in
buffers for the .pte). Backends are stepped from Python one token at a time
(`StreamingSession.step`), in interleaved rounds so machine noise hits all alike; the figure
is the median over every timed step.

Floor = bytes read per token / read bandwidth, the bandwidth measured in this run right before
every timed block (step_latency.ReadProbe: a 256 MiB torch.sum, best of 3, after 50 ms of
rest). Every quantized model here fits this machine's 300 MB L3 (benchmarks/read_bandwidth.py:
61-62 GB/s up to 128 MiB, ~32 from DRAM), so "x own floor" under 1.3 is a compute and
per-call-overhead question as much as a bandwidth one. Bytes read per token: every weight the step reads,
at its stored size (codes + scales + zero points of a quantized layer, 4 bytes per float),
an untied embedding one row. Columns: ms/token, x its own floor, speed-up over the same
format's fp32 export, and the artifact's size on disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from step_latency import ReadProbe, load_cases, warn_noisy_probe  # noqa: E402

SCHEMES = ("fp32", "int8", "int4", "ternary")


def bytes_per_token(model) -> int:
    """Stored bytes of every parameter and buffer a step reads; an untied nn.Embedding one row
    (a tied embedding is the head's matrix, read whole by the head)."""
    import torch
    emb = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        per = t.element_size()
        total += t.shape[-1] * per if id(t) in emb else t.numel() * per
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="mamba-130m,rwkv7-0.1B,hawk-100M")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--formats", default="onnx,pte")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench-quant")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgekit.export import export
    from edgekit.models import load_model
    from edgekit.quant import quantize_model
    from edgekit.runtimes.session import StreamingSession
    from edgekit.units import human_bytes

    console = Console()
    schemes = [s for s in args.schemes.split(",") if s]
    formats = tuple(f for f in args.formats.split(",") if f)
    rows = []
    for case in load_cases(args.cases.split(",")):
        work = args.work / case.NAME
        work.mkdir(parents=True, exist_ok=True)
        path = case.make(work)
        runners, info = [], {}
        for scheme in schemes:
            m = load_model(path).eval().requires_grad_(False)
            if scheme != "fp32":
                quantize_model(m, scheme)
            info[scheme] = bytes_per_token(m)
            del m
            out = work / scheme
            if not (out / "edgekit.json").exists():
                with console.status(f"{case.NAME}: export {scheme}"):
                    export(path, out, formats=formats, quant=None if scheme == "fp32" else scheme)
            for fmt in formats:
                art = out / f"model.{'onnx' if fmt == 'onnx' else 'pte'}"
                runners.append((scheme, fmt, art.stat().st_size, StreamingSession(art, threads=args.threads)))
        probe = ReadProbe(repeats=3, threads=args.threads)
        rng = np.random.default_rng(0)
        xs = case.inputs(args.steps, rng)
        times = {(s, f): [] for s, f, _, _ in runners}
        ratios = {(s, f): [] for s, f, _, _ in runners}
        bws = []
        for _ in range(8):
            for _, _, _, sess in runners:
                sess.step(xs[0])
        for r in range(args.rounds):
            for scheme, fmt, _, sess in runners:
                bw = probe()
                bws.append(bw)
                time.sleep(0.02)
                for x in xs[:4]:
                    sess.step(x)
                block = []
                for x in xs:
                    t0 = time.perf_counter()
                    sess.step(x)
                    block.append(time.perf_counter() - t0)
                times[scheme, fmt] += block
                floor_s = info[scheme] / (bw * 1e9)
                ratios[scheme, fmt].append(statistics.median(block) / floor_s)
            console.print(f"  {case.NAME}: round {r + 1}/{args.rounds}")
        bw_med = statistics.median(bws)
        t = Table(title=f"{case.NAME} ({case.SHAPE}), {args.threads} threads, read bandwidth "
                        f"{bw_med:.1f} GB/s (range {min(bws):.1f}-{max(bws):.1f})")
        for c in ("scheme", "format", "bytes/token", "ms/token", "x own floor", "vs fp32", "file"):
            t.add_column(c, justify="right")
        for scheme, fmt, size, _ in runners:
            ms = 1e3 * statistics.median(times[scheme, fmt])
            base = 1e3 * statistics.median(times.get(("fp32", fmt), times[scheme, fmt]))
            row = {"case": case.NAME, "scheme": scheme, "format": fmt, "bytes_per_token": info[scheme],
                   "ms_per_token": ms, "x_floor": statistics.median(ratios[scheme, fmt]),
                   "speedup_vs_fp32": base / ms, "file_bytes": size, "bandwidth_gbs": bw_med}
            rows.append(row)
            t.add_row(scheme, fmt, human_bytes(info[scheme]), f"{ms:.2f}", f"{row['x_floor']:.2f}",
                      f"{row['speedup_vs_fp32']:.2f}x", human_bytes(size))
        console.print(t)
        warn_noisy_probe(bws, console)
        del runners
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
