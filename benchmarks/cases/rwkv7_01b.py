"""RWKV-7 at the 0.1B shape: L=12, C=768, head size 64, vocab 65536 (random weights,
BlinkDL .pth, bf16 as released). Oracle: the `rwkv` pip package, "cpu fp32"."""

from __future__ import annotations

import os
from pathlib import Path

import torch

NAME = "rwkv7-0.1B"
SHAPE = "L=12, C=768, H=12x64, vocab 65536"


def make(d: Path) -> Path:
    from edgekit.models.rwkv7 import write_random_checkpoint
    p = Path(d) / "rwkv7-0.1b.pth"
    if not p.exists():
        write_random_checkpoint(p, vocab_size=65536, n_embd=768, n_layer=12, head_size=64, seed=1)
    return p


def oracle(path: Path):
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    from rwkv.model import RWKV
    model = RWKV(model=str(Path(path).with_suffix("")), strategy="cpu fp32")
    state = [None]

    def step(tok):
        logits, state[0] = model.forward([int(tok)], state[0])
        return logits
    return "rwkv pip package (cpu fp32)", step


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, 65536, n)]
