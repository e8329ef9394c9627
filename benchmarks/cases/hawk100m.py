"""Hawk (RecurrentGemma with every block recurrent) at ~100M parameters, random weights,
written by transformers' save_pretrained in bf16 as RecurrentGemma is released.

Shape, in recurrentgemma-2b's proportions (lru_width = hidden, MLP width 3·hidden, gate
blocks of 64, conv width 4, tied embeddings):
    hidden C = 768, lru_width D = 768, 12 gate blocks (W = 64), intermediate_size 4608
    (MLP width 2304), L = 11 recurrent layers, vocab 32000.
    per layer: linear_x/y/out 3·C·D = 1.77M, gates 2·D·W = 98k, conv 4·D, MLP 3·C·2304 = 5.31M
    -> 7.18M; x 11 = 79.0M; + embedding/head 32000·768 = 24.6M (tied) -> ~103.6M parameters.
Oracle: transformers' RecurrentGemmaForCausalLM (eager, fp32) stepping with its own cache.
"""

from __future__ import annotations

from pathlib import Path

from cases import make_checkpoint, oracle as arch_oracle

NAME = "hawk-100M"
SHAPE = "L=11 recurrent, C=D=768, 12x64 gate blocks, MLP 2304, vocab 32000 (~104M params)"
CONFIG = dict(vocab_size=32000, hidden_size=768, lru_width=768, num_attention_heads=12, num_key_value_heads=1,
              intermediate_size=6 * 768, num_hidden_layers=11, block_types=["recurrent"], conv1d_width=4,
              tie_word_embeddings=True)


def make(d: Path) -> Path:
    import torch
    return make_checkpoint("recurrent_gemma", Path(d) / "hawk-100m", seed=1, dtype=torch.bfloat16, **CONFIG)


def oracle(path: Path):
    return arch_oracle("recurrent_gemma", path)


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, CONFIG["vocab_size"], n)]
