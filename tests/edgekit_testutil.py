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


def eager(model, ops: str):
    """Run model in torch eager as an export with --ops `ops` would compute it: "fused" calls
    the edgekit ops (their torch impls), "decomposed" runs the decompose pass over them."""
    from edgekit.export.passes import lowered
    return lowered(model, ["decompose"] if ops == "decomposed" else [])
