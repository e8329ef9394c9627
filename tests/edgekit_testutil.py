"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `edgekit ...` in a fresh process (as a user would)."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=timeout, cwd=REPO)


def assert_clean_failure(r, *needles):
    """A user mistake's CLI run: one `edgekit: error:` line naming each needle, a non-zero
    exit, no traceback."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edgekit: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def assert_no_output(outdir: Path):
    """Nothing (not even an empty half-written file) was left in outdir."""
    assert not outdir.exists() or not any(outdir.iterdir()), list(outdir.iterdir())


def eager(model, ops: str):
    """Run model in torch eager as an export with --ops `ops` would compute it: "fused" calls
    the edgekit ops (their torch impls), "decomposed" runs the decompose pass over them."""
    from edgekit.export.passes import lowered
    return lowered(model, ["decompose"] if ops == "decomposed" else [])
