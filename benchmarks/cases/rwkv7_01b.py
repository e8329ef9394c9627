"""RWKV-7 at the 0.1B shape: L=12, C=768, head size 64, vocab 65536 (random weights,
BlinkDL .pth, bf16 as released). Oracle: the `rwkv` pip package, "cpu fp32"."""

from __future__ import annotations

from pathlib import Path

from cases import make_checkpoint, oracle as arch_oracle

NAME = "rwkv7-0.1B"
SHAPE = "L=12, C=768, H=12x64, vocab 65536"
CONFIG = dict(vocab_size=65536, n_embd=768, n_layer=12, head_size=64)


def make(d: Path) -> Path:
    return make_checkpoint("rwkv7", Path(d) / "rwkv7-0.1b.pth", seed=1, **CONFIG)


def oracle(path: Path):
    return arch_oracle("rwkv7", path)


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, 65536, n)]
