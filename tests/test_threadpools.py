"""ExecuTorch's threadpool (XNNPACK's) is sized once per process; edgekit's own pool follows
`threads` per session.

Resizing ExecuTorch's pool replaces the pthreadpool that every XNNPACK runtime already
created holds a raw pointer to: a process that opened a fused `.pte` (XNNPACK's pool wants 1
thread beside edgekit's kernels) and then a decomposed one (it wants `threads`) hung in its
next XNNPACK call (benchmarks/quant.py, eight sessions in one process). The sessions run in a
child process with a time limit, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit_testutil import REPO

CHILD = r"""
import json, sys, warnings
import numpy as np
from edgekit.runtimes import executorch as et
from edgekit.runtimes.session import StreamingSession
fused, decomposed, order = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sessions = [StreamingSession(fused if kind == "fused" else decomposed, threads=t) for kind, t in order]
pools = [et.thread_count() for _ in sessions]
threads_now = [s.backend.threads for s in sessions]
logits = [[] for _ in sessions]
for tok in (3, 1, 4, 1, 5):              # the sessions' steps interleaved: every program's XNNPACK calls in turn
    for out, s in zip(logits, sessions):
        out.append(np.asarray(s.step(tok)).ravel().tolist())
kinds = [k for k, _ in order]
same = [bool(np.array_equal(logits[i], logits[j])) for i in range(len(order)) for j in range(i)
        if kinds[i] == kinds[j]]
print(json.dumps({"fixed": et._ET_POOL, "pools": pools, "threads": threads_now, "same": same,
                  "warned": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
"""


def _child(fused, decomposed, order):
    r = subprocess.run([sys.executable, "-c", CHILD, str(fused), str(decomposed), json.dumps(order)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def programs(export_once, tmp_path_factory):
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["mamba"].write_random(tmp_path_factory.mktemp("pools") / "mamba", seed=2)
    return export_once(src, "fused") / "model.pte", export_once(src, "decomposed") / "model.pte"


def test_a_fused_program_first_fixes_xnnpack_at_one_thread(programs):
    got = _child(*programs, [["fused", 2], ["decomposed", 2], ["fused", 1], ["decomposed", None]])
    # the first program (edgekit's kernels) fixed XNNPACK's pool at 1 thread; the decomposed
    # session that asked for 2 left it there, with a warning that says so
    assert got["fixed"] == 1 and got["pools"] == [1, 1, 1, 1], got
    assert len(got["warned"]) == 1 and "stays at 1 thread(s)" in got["warned"][0], got
    # edgekit's pool is one per process: the last count asked for (1) is what every fused session runs on
    assert got["threads"] == [1, 1, 1, 1], got
    # the same program in two sessions of one process gives the same logits, bit for bit
    assert got["same"] == [True, True], got


def test_a_decomposed_program_first_fixes_the_pool_at_its_size(programs):
    """threads=None still fixes the pool (at the size it has), so a fused program opened
    later does not resize it under the first one's XNNPACK runtime."""
    got = _child(*programs, [["decomposed", None], ["fused", None], ["decomposed", None]])
    assert got["fixed"] is not None and got["pools"] == [got["fixed"]] * 3, got
    assert got["same"] == [True], got
