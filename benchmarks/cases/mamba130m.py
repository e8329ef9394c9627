"""Mamba at the 130m shape: L=24, d_model 768 (d_inner 1536), d_state 16, d_conv 4,
dt_rank 48, vocab 50280 (random weights, HF save_pretrained directory with safetensors).
Oracle: transformers MambaForCausalLM, eager torch path, stepping with its own cache."""

from __future__ import annotations

from pathlib import Path

from cases import make_checkpoint, oracle as arch_oracle

NAME = "mamba-130m"
SHAPE = "L=24, D=768, E=1536, N=16, K=4, vocab 50280"
CONFIG = dict(vocab_size=50280, hidden_size=768, state_size=16, num_hidden_layers=24, expand=2,
              conv_kernel=4, time_step_rank=48, tie_word_embeddings=True)


def make(d: Path) -> Path:
    return make_checkpoint("mamba", Path(d) / "mamba-130m", seed=1, **CONFIG)


def oracle(path: Path):
    return arch_oracle("mamba", path)


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, 50280, n)]
