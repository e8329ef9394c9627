"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


PREFILL = 16   # exports carry a prefill graph over chunks of 16 tokens (sequence form)
# The decomposed .pte's prefill graph is the reference's loop unrolled over the chunk, which
# XNNPACK cuts into ~70 partitions: 16 tokens took 130 s to export on 2 cores (half of
# `make test`'s slowest test), 4 tokens take a quarter. Still a chunk > 1 and a remainder.
PREFILL_BY_OPS = {"fused": PREFILL, "decomposed": 4}


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


def tiny_checkpoints(root: Path, seed: int = 0):
    """arch -> a tiny random checkpoint of it in its real format (write_random), written
    under root on first use. RWKV-7 is detected by its .pth suffix."""
    from edgekit.models import ARCHITECTURES
    made = {}

    def get(arch: str) -> Path:
        if arch not in made:
            name = arch + (".pth" if arch == "rwkv7" else "")
            made[arch] = ARCHITECTURES[arch].write_random(root / name, seed=seed)
        return made[arch]
    return get


_PEAK = ("import resource, subprocess, sys\n"
         "code = subprocess.call(sys.argv[3:], timeout=float(sys.argv[2]))\n"
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
         "sys.exit(code)\n")


def run_cli_peak(*args, input: bytes | None = None, timeout: float = 600, stdout=None):
    """run_cli, plus that `edgekit` process's own peak resident memory in bytes. stdout: an
    open file to send the child's stdout to instead of capturing it (long streams).

    Measured through a small wrapper process: a child forked from pytest itself starts with
    pytest's resident pages, and its ru_maxrss would report pytest's size (over 1 GB late in
    a full run), not the child's."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        peak = Path(d) / "peak"
        r = subprocess.run([sys.executable, "-c", _PEAK, str(peak), str(timeout), sys.executable, "-m", "edgekit",
                            *map(str, args)], input=input, text=input is None, cwd=REPO, timeout=timeout + 30,
                           stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE)
        return r, int(peak.read_text()) * 1024             # Linux: KiB


def assert_same_lm(ref, other, text: list[int], prompt: list[int], tol: float) -> float:
    """Two sessions of one token model agree: logits over `text` (teacher-forced) within tol
    of the reference's std, and the 64 greedy tokens after `prompt` equal, or the first
    difference at a reference logit margin (top-1 minus top-2) within that tolerance.
    Returns the max |diff| / std."""
    import numpy as np
    want = np.stack([np.array(ref.step(t)) for t in text])
    got = np.stack([np.array(other.step(t)) for t in text])
    err = float(np.abs(got - want).max() / want.std())
    assert err <= tol, f"max|diff|/std {err:.2e}"
    ref.reset()
    other.reset()
    a, b = ref.generate(64, prompt=prompt), other.generate(64, prompt=prompt)
    if a != b:
        i = next(k for k in range(64) if a[k] != b[k])
        ref.reset()
        y = np.sort(np.array(ref.feed([*prompt, *a[:i]])))
        assert y[-1] - y[-2] <= tol * want.std(), f"greedy tokens differ at {i}, margin {y[-1] - y[-2]:.3g}"
    return err
