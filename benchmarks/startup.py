"""Time to first token from process start: `edgekit run ARTIFACT --tokens 1 --steps 8` in
fresh processes, timed from spawn to the first byte of stdout (the first generated token,
which `run` prints and flushes as it comes). Median and range over --runs processes, the
artifacts interleaved.

    python benchmarks/startup.py out/model.onnx out/model.pte --runs 7
    PYTHONPATH=/path/to/older/checkout python benchmarks/startup.py ...   # another version
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def first_token_seconds(artifact: str, extra: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "run", artifact, "--tokens", "1", "--steps", "8", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=os.environ)
    first = p.stdout.read(1)
    t = time.perf_counter() - t0
    p.stdout.read()
    p.wait()
    if not first or p.returncode != 0:
        raise SystemExit(f"startup: edgekit run {artifact} failed (exit {p.returncode})")
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--extra", default="", help="more `edgekit run` options, space-separated")
    a = ap.parse_args(argv)
    extra = a.extra.split()
    for art in a.artifacts:                     # warm the page cache and the checksum cache
        first_token_seconds(art, extra)
    times = {art: [] for art in a.artifacts}
    for _ in range(a.runs):
        for art in a.artifacts:
            times[art].append(first_token_seconds(art, extra))
    print(f"{'artifact':<40} {'first token (median)':>20} {'min':>8} {'max':>8}")
    for art, ts in times.items():
        print(f"{art:<40} {statistics.median(ts):>18.3f} s {min(ts):>7.3f}s {max(ts):>7.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
