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

from edgekit_testutil import REPO

CHILD = r"""
import json, sys
import numpy as np
from edgekit.runtimes import executorch as et
from edgekit.runtimes.session import StreamingSession
fused, decomposed = sys.argv[1], sys.argv[2]
order = [(fused, 2), (decomposed, 2), (fused, 1), (decomposed, 1)]
sessions = [StreamingSession(p, threads=t) for p, t in order]
pools = [et.thread_count() for _ in sessions]
logits = [[] for _ in sessions]
for tok in (3, 1, 4, 1, 5):              # the sessions' steps interleaved: every program's XNNPACK calls in turn
    for out, s in zip(logits, sessions):
        out.append(np.asarray(s.step(tok)).ravel().tolist())
# the same program in two sessions of the same process gives the same logits
same = [np.allclose(logits[0], logits[2], atol=0), np.allclose(logits[1], logits[3], atol=0)]
print(json.dumps({"fixed": et._ET_POOL, "pools": pools, "threads": [s.backend.threads for s in sessions],
                  "same": same}))
"""


def test_sessions_of_both_kinds_in_one_process_keep_one_et_pool(export_once, tmp_path):
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["mamba"].write_random(tmp_path / "mamba", seed=2)
    fused = export_once(src, "fused") / "model.pte"
    decomposed = export_once(src, "decomposed") / "model.pte"
    r = subprocess.run([sys.executable, "-c", CHILD, str(fused), str(decomposed)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # the first program (fused: edgekit's kernels) fixed XNNPACK's pool at 1 thread, and the
    # decomposed sessions that asked for 2 and 1 left it there
    assert got["fixed"] == 1 and got["pools"] == [1, 1, 1, 1], got
    # edgekit's own pool follows each fused session's threads; a decomposed one reports the fixed pool
    assert got["threads"] == [2, 1, 1, 1], got
    assert got["same"] == [True, True], got
