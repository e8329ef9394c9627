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


def rss_while_streaming(argv, *, stdin_chunks=None, env=None, timeout: float = 900, every: float = 0.1) -> dict:
    """Run `edgekit *argv` in a fresh process and sample its resident memory (VmRSS, /proc)
    every `every` seconds until it exits; stdout is read and counted, not kept. stdin_chunks:
    an iterable of bytes fed to the child's stdin from a thread (a stream of any length,
    never held whole). Returns {"samples": [(seconds, kB)], "stdout_bytes", "newlines",
    "returncode", "stderr"}."""
    import threading
    import time
    e = {**os.environ, **(env or {})}
    p = subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, argv)], cwd=REPO, env=e,
                         stdin=subprocess.PIPE if stdin_chunks is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed():
        try:
            for chunk in stdin_chunks:
                p.stdin.write(chunk)
            p.stdin.close()
        except BrokenPipeError:
            pass
    if stdin_chunks is not None:
        threading.Thread(target=feed, daemon=True).start()
    err: list[bytes] = []
    counts = {"bytes": 0, "newlines": 0}

    def drain():
        while block := p.stdout.read1(1 << 16):
            counts["bytes"] += len(block)
            counts["newlines"] += block.count(b"\n")
    threads = [threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True),
               threading.Thread(target=drain, daemon=True)]
    for t in threads:
        t.start()
    samples, t0 = [], time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                kb = next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")), None)
        except OSError:
            kb = None
        if kb is not None:
            samples.append((time.time() - t0, kb))
        time.sleep(every)
    p.wait(timeout=60)
    for t in threads:
        t.join(timeout=60)
    return {"samples": samples, "stdout_bytes": counts["bytes"], "newlines": counts["newlines"],
            "returncode": p.returncode, "stderr": b"".join(err).decode(errors="replace")}


def rss_growth_kb(samples, skip: float = 0.2) -> tuple[int, int]:
    """(growth in kB from the first sample past `skip` of the run's duration to the largest
    after it, number of samples used): start-up allocations are not growth."""
    end = samples[-1][0]
    later = [kb for t, kb in samples if t >= skip * end]
    return max(later) - later[0], len(later)


_PEAK = ("import resource, subprocess, sys\n"
         "code = subprocess.call(sys.argv[3:], timeout=float(sys.argv[2]))\n"
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
         "sys.exit(code)\n")


def run_cli_peak(*args, input: bytes | None = None, timeout: float = 600):
    """run_cli, plus that `edgekit` process's own peak resident memory in bytes.

    Measured through a small wrapper process: a child forked from pytest itself starts with
    pytest's resident pages, and its ru_maxrss would report pytest's size (over 1 GB late in
    a full run), not the child's."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        peak = Path(d) / "peak"
        r = subprocess.run([sys.executable, "-c", _PEAK, str(peak), str(timeout), sys.executable, "-m", "edgekit",
                            *map(str, args)], input=input, capture_output=True, text=input is None, cwd=REPO,
                           timeout=timeout + 30)
        return r, int(peak.read_text()) * 1024             # Linux: KiB
