"""Write edgekit_op_checks.h, the C++ argument checks of every registered op, generated from
the op specs (edgekit/ops/cpp_checks.py says how). kernels/build.sh runs it:

    python kernels/gen_checks.py OUT.h
"""

import sys

from edgekit.ops import REGISTRY
from edgekit.ops.cpp_checks import write

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python kernels/gen_checks.py OUT.h")
    write(sys.argv[1], REGISTRY)
