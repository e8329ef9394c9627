#!/usr/bin/env python
"""Write the demo's small RWKV-7, deterministically, as a BlinkDL-format bf16 .pth.

    python scripts/make_demo_model.py [OUT]     (default build/models/rwkv7-demo.pth)

Random weights (model hubs are unreachable here), real on-disk format and key names,
World vocabulary size (65536), C=256, 2 layers, head size 64. The same seed gives the
same file, byte for byte.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgekit.cli.demo import DEMO_RWKV7, make_demo_model  # noqa: E402,F401

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "models" / "rwkv7-demo.pth"


def main(out: Path = DEFAULT_OUT) -> Path:
    return make_demo_model(out)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
