#!/usr/bin/env python
"""Build and run benchmarks/gemv_layout.cpp: which fp32 weight layout lets a 2-thread GEMV
read Mamba-130m's 517 MB of decode matrices at the memory floor (why `edgekit::dense`
packs its weights in 4x8 tiles). Prints a markdown table.

    python benchmarks/gemv_layout.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    exe = REPO / "build" / "bench" / "gemv_layout"
    exe.parent.mkdir(parents=True, exist_ok=True)
    src = [REPO / "benchmarks" / "gemv_layout.cpp", REPO / "kernels" / "threadpool.cpp"]
    subprocess.run(["g++", "-std=c++17", "-O3", "-march=x86-64-v2", "-mavx2", "-mfma", "-pthread",
                    *map(str, src), "-o", str(exe)], check=True)
    return subprocess.run([str(exe), str(args.rounds)]).returncode


if __name__ == "__main__":
    sys.exit(main())
