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

NAME = "hawk-100M"
SHAPE = "L=11 recurrent, C=D=768, 12x64 gate blocks, MLP 2304, vocab 32000 (~104M params)"
CONFIG = dict(vocab_size=32000, hidden_size=768, lru_width=768, num_attention_heads=12, num_key_value_heads=1,
              intermediate_size=6 * 768, num_hidden_layers=11, block_types=["recurrent"], conv1d_width=4,
              tie_word_embeddings=True)


def make(d: Path) -> Path:
    import torch
    from edgekit.models.hawk import write_random_hf_dir
    p = Path(d) / "hawk-100m"
    if not (p / "config.json").exists():
        write_random_hf_dir(p, seed=1, dtype=torch.bfloat16, **CONFIG)
    return p


def oracle(path: Path):
    import torch
    from transformers import RecurrentGemmaForCausalLM
    from transformers.cache_utils import DynamicCache
    model = RecurrentGemmaForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
    # The model keeps its state on its modules: set the cache up once, then pass position_ids
    # and a cache object every step. With no attention layer (Hawk), transformers' mask
    # creation fails on the cache; a prepared (empty) mask dict skips it (unused by RG-LRU).
    model._setup_cache(model.config, 1, "cpu", torch.float32)
    cache, pos = DynamicCache(config=model.config), [0]

    @torch.inference_mode()
    def step(tok):
        out = model(input_ids=torch.tensor([[int(tok)]]), position_ids=torch.tensor([[pos[0]]]),
                    past_key_values=cache, use_cache=True, attention_mask={"sliding_attention": None})
        pos[0] += 1
        return out.logits[0, 0]
    return "transformers RecurrentGemmaForCausalLM (eager, fp32, own cache)", step


def inputs(n, rng):
    return [int(t) for t in rng.integers(0, CONFIG["vocab_size"], n)]
