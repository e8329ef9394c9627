#!/usr/bin/env python
"""An export's size and its decode memory next to the checkpoint's weights, and its speed's
stability over fresh processes.

    python benchmarks/export_memory.py [--case mamba-130m] [--processes 5] [--json out.json]

Exports the case (benchmarks/cases/*.py, real shape, random weights) with fused ops to ONNX
and .pte (state in buffers), then steps each artifact in N fresh processes, one after another
(`step_latency.fresh_processes`): median ms/token per process, the spread (slowest / fastest
- 1), and resident memory after decoding. Weights = the checkpoint's fp32 tensors, each once
(a tied head counts once), from its safetensors header.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def checkpoint_weight_bytes(src: Path) -> int:
    from safetensors import safe_open
    total = 0
    for f in sorted(Path(src).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) * 4 for k in fh.keys())
    return total


def main(argv=None):
    from rich.console import Console
    from rich.table import Table
    from step_latency import fresh_processes, load_cases
    from edgekit.export import export
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="mamba-130m")
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    (case,) = load_cases([args.case])
    work = args.work / case.NAME
    src = case.make(work)
    out = work / "fused-buffers"
    if not (out / "edgekit.json").exists():
        export(src, out, formats=("onnx", "pte"), ops="fused")
    wbytes = checkpoint_weight_bytes(src)
    rows = []
    for name in ("model.pte", "model.onnx"):
        r = fresh_processes(out / name, args.processes, args.steps)
        size = sum(p.stat().st_size for p in out.glob(name + "*"))
        rows.append({**r, "file_bytes": size, "weight_bytes": wbytes, "file_x_weights": size / wbytes,
                     "rss_x_weights": r["rss_mb_median"] * 2**20 / wbytes})
    t = Table(title=f"{case.NAME}: fp32 weights {wbytes / 1e6:.0f} MB (each tensor once); "
                    f"{args.processes} fresh processes per artifact")
    for c in ("artifact", "ms/token", "range", "spread", "decode RSS", "RSS / weights", "file", "file / weights"):
        t.add_column(c, justify="left" if c == "artifact" else "right")
    for r in rows:
        t.add_row(Path(r["artifact"]).name, f"{r['ms_median']:.2f}",
                  f"{min(r['ms_per_process']):.2f}-{max(r['ms_per_process']):.2f}", f"{r['spread'] * 100:.1f}%",
                  f"{r['rss_mb_median']:.0f} MB", f"{r['rss_x_weights']:.2f}x", f"{r['file_bytes'] / 1e6:.0f} MB",
                  f"{r['file_x_weights']:.2f}x")
    Console().print(t)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
