#!/usr/bin/env python
"""Where a `.pte` decode step spends its time: ETDump events per op, per token.

    python benchmarks/etdump_profile.py ARTIFACT.pte [--steps 64] [--warmup 8] [--threads 2]

Runs the program with ExecuTorch's event tracer for `--steps` single steps (token inputs
drawn at random) and prints, per event name, the instructions of that name and their milliseconds per token, and the
share of `Method::execute`; "outside events" is execute time that no event covers (the
interpreter's own work between kernel calls). The wall time per step
seen from Python is printed beside it. Every edgekit kernel call is an event named
`edgekit::<op>` (kernels/edgekit_kernel.h); XNNPACK delegate calls and portable kernels
carry ExecuTorch's own names.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def profile(pte: Path, steps: int, warmup: int, threads: int | None) -> dict:
    import numpy as np
    import torch
    from edgekit._io import native_stderr_captured
    from edgekit.kernels import load_kernels
    from edgekit.runtimes.executorch import fix_et_threadpool, set_threads
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    manifest = json.loads((pte.parent / "edgekit.json").read_text())
    entry = next((a for a in manifest["artifacts"].values() if a["file"] == pte.name), None)
    if entry is None or entry.get("state_style") != "buffers":
        raise SystemExit(f"etdump_profile: {pte} is not a .pte with its state in buffers in "
                         f"{pte.parent / 'edgekit.json'}; export with --format pte --state-style buffers")
    load_kernels()
    # as the session sets them: XNNPACK's pool at 1 beside edgekit's ops
    if threads:
        set_threads(threads, et=1 if entry.get("kernel_library") else None)
    elif entry.get("kernel_library"):
        fix_et_threadpool(1)
    with native_stderr_captured():
        module = _load_for_executorch(str(pte), enable_etdump=True)
    rng = np.random.default_rng(0)
    vocab = manifest.get("config", {}).get("vocab_size", 2)

    def inputs():   # random tokens, or feature rows with a positive elapsed time dt
        xs = []
        for spec in entry["inputs"]:
            if spec["dtype"] == "int64":
                xs.append(torch.tensor(rng.integers(0, vocab, spec["shape"]), dtype=torch.int64))
            else:
                v = rng.standard_normal(spec["shape"]).astype(np.float32)
                xs.append(torch.from_numpy(np.abs(v) if spec["name"] == "dt" else v))
        return xs

    for _ in range(warmup):
        module.forward(inputs())
    # The warm-up steps are in the same dump; keep only the last `steps` execute blocks.
    wall = []
    torch.set_num_threads(1)                       # as the session does while a program runs
    for _ in range(steps):
        xs = inputs()
        t0 = time.perf_counter()
        module.forward(xs)
        wall.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        with native_stderr_captured():
            insp = Inspector(etdump_path=str(dump))
    # One "Execute" block; each event is one instruction (or one op inside a delegate),
    # its perf_data.raw one duration (ms) per execute call: keep the timed calls only.
    block = next(b for b in insp.event_blocks if b.name == "Execute")
    per_name = defaultdict(lambda: [0, 0.0])       # name -> [instructions, ms per token]
    execute_ms = 0.0
    for e in block.events:
        if e.perf_data is None:
            continue
        ms = statistics.mean(e.perf_data.raw[-steps:])
        if e.name == "Method::execute":
            execute_ms += ms
        elif e.name == "OPERATOR_CALL":            # wraps each kernel call: would count it twice
            continue
        elif not e.is_delegated_op:                # ops inside a delegate are in its DELEGATE_CALL
            per_name[e.name][0] += 1
            per_name[e.name][1] += ms
    rows = sorted(((k, c, ms) for k, (c, ms) in per_name.items()), key=lambda r: -r[2])
    return {"artifact": str(pte), "steps": steps, "wall_ms": statistics.mean(wall) * 1e3,
            "execute_ms": execute_ms, "rows": rows}


def main(argv=None):
    from rich.console import Console
    from rich.table import Table
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    res = profile(args.artifact, args.steps, args.warmup, args.threads)
    t = Table(title=f"{res['artifact']}: {res['steps']} steps, wall {res['wall_ms']:.4f} ms/token "
                    f"(mean, with the event tracer on), Method::execute {res['execute_ms']:.4f} ms")
    for c in ("event", "instructions", "ms/token", "% of execute"):
        t.add_column(c, justify="left" if c == "event" else "right")
    in_events = 0.0
    for name, calls, ms in res["rows"]:
        in_events += ms
        t.add_row(name, f"{calls:.0f}", f"{ms:.4f}", f"{100 * ms / res['execute_ms']:.1f}")
    t.add_row("outside events (interpreter)", "", f"{res['execute_ms'] - in_events:.4f}",
              f"{100 * (res['execute_ms'] - in_events) / res['execute_ms']:.1f}")
    t.add_row("outside execute (Python call, copies)", "", f"{res['wall_ms'] - res['execute_ms']:.4f}", "")
    Console().print(t)
    return res


if __name__ == "__main__":
    main()
