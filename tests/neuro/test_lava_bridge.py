"""The Lava bridge is bounded in time and leaves no process behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.neuro import lava_bridge
from edgekit.neuro.lava_bridge import _run_bounded, run_lava
from tests.neuro.conftest import random_network


def _procs_with(marker: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and int(d.name) != os.getpid():
                out.append(int(d.name))
    return out


def test_hung_process_group_is_killed():
    marker = "317.25"       # a sleeping grandchild that would outlive a naive kill
    code = f"import subprocess, time; subprocess.Popen(['sleep', '{marker}']); time.sleep(600)"
    t0 = time.perf_counter()
    with pytest.raises(EdgekitError, match="did not finish within 2 s and was killed"):
        _run_bounded([sys.executable, "-c", code], timeout_s=2)
    assert time.perf_counter() - t0 < 10
    time.sleep(0.2)
    assert _procs_with(f"sleep {marker}") == []


def test_lava_run_times_out_and_is_cleaned_up(rng):
    net = random_network(rng, [30, 20, 10])
    x = rng.random((1, 20000, 30)) < 0.1            # far more steps than 3 s allow
    before = set(_procs_with(lava_bridge.WORKER.name))
    with pytest.raises(EdgekitError, match="was killed"):
        run_lava(net, x, timeout_s=3)
    time.sleep(0.5)
    assert set(_procs_with(lava_bridge.WORKER.name)) - before == set()
