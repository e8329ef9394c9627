#!/usr/bin/env python
"""What a .pte executes per step: its execution plan's instructions, counted per operator
(kernel calls by name, delegate calls, moves), and its size. Two exports with the same
counts run the same program; this is how a lowering change is checked to leave a target's
program alone (docs/benchmarks.md, 2026-12-05).

    python benchmarks/pte_instructions.py A.pte [B.pte]     # B: print what differs from A
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path


def instructions(pte: Path) -> collections.Counter:
    from executorch.exir._serialize._program import deserialize_pte_binary
    prog = deserialize_pte_binary(Path(pte).read_bytes())
    prog = getattr(prog, "program", prog)
    plan = prog.execution_plan[0]
    names = [f"{o.name}.{o.overload}" for o in plan.operators]
    count = collections.Counter()
    for chain in plan.chains:
        for ins in chain.instructions:
            a = ins.instr_args
            count[names[a.op_index] if hasattr(a, "op_index") else type(a).__name__] += 1
    return count


def main(argv=None):
    args = [Path(a) for a in (argv or sys.argv[1:])]
    if not 1 <= len(args) <= 2:
        raise SystemExit(__doc__)
    counts = [instructions(a) for a in args]
    for a, c in zip(args, counts):
        print(f"{a}: {a.stat().st_size} bytes, {sum(c.values())} instructions")
    if len(counts) == 1:
        for k, v in sorted(counts[0].items()):
            print(f"  {v:6d}  {k}")
        return
    diff = {k: (counts[0].get(k, 0), counts[1].get(k, 0)) for k in set(counts[0]) | set(counts[1])
            if counts[0].get(k, 0) != counts[1].get(k, 0)}
    print("identical instructions" if not diff else "differ:")
    for k, (x, y) in sorted(diff.items()):
        print(f"  {k}: {x} -> {y}")


if __name__ == "__main__":
    main()
