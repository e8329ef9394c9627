"""Mamba-2 at the 130m shape: L=24, d_model 768 (d_inner 1536 = 24 heads x 64), d_state 128,
n_groups 1, d_conv 4, vocab 50288, tied head (random weights, HF save_pretrained directory
with safetensors).
Oracle: transformers Mamba2ForCausalLM, eager torch path, stepping with its own cache."""

from __future__ import annotations

from pathlib import Path

from cases import make_checkpoint, oracle as arch_oracle

NAME = "mamba2-130m"
SHAPE = "L=24, D=768, H=24x64, G=1, N=128, K=4, vocab 50288"
CONFIG = dict(vocab_size=50288, hidden_size=768, state_size=128, num_hidden_layers=24, expand=2,
              num_heads=24, head_dim=64, n_groups=1, conv_kernel=4, tie_word_embeddings=True)


def make(d: Path) -> Path:
    return make_checkpoint("mamba2", Path(d) / "mamba2-130m", seed=1, **CONFIG)


def oracle(path: Path):
    return arch_oracle("mamba2", path)


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, 50288, n)]
