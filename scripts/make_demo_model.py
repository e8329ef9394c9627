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

from edgekit.models.rwkv7 import write_random_checkpoint  # noqa: E402

DEMO = dict(vocab_size=65536, n_embd=256, n_layer=2, head_size=64, seed=20261122)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "models" / "rwkv7-demo.pth"


def main(out: Path = DEFAULT_OUT) -> Path:
    return write_random_checkpoint(out, **DEMO)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
