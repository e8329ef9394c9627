"""Training edgekit's RWKV-7 (scripts/train_tiny.py, and `edgekit quantize` on a BlinkDL .pth).

`RWKV7Train` is edgekit's RWKV7 with two changes for training: BlinkDL's first LayerNorm
(`ln0`) stays a module after the embedding table (the loader folds it into the table, which
is right for inference but loses the raw table a checkpoint must hold), and the WKV
recurrence runs its differentiable reference (edgekit/ops/rwkv7_wkv.py) instead of the
fused kernel. `blink_state_dict` writes such a model back in BlinkDL's x070 key names and
shapes, the inverse of `RWKV7.load_blink_state_dict` (tests/test_corpus_train_eval.py).
Nothing here is needed to load or export a model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgekit.models.rwkv7 import MIX_NAMES, RWKV7, RWKV7Config, check_state_dict


class RWKV7Train(torch.nn.Module):
    """RWKV7 with ln0 explicit and the WKV recurrence's differentiable reference; tokens
    (B, T) -> logits (B, T, V)."""

    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        from edgekit.ops import rwkv7_wkv
        self.model = RWKV7(cfg)
        self.model._wkv = staticmethod(rwkv7_wkv.reference).__func__
        self.ln0 = torch.nn.LayerNorm(cfg.n_embd)

    @classmethod
    def from_blink(cls, sd: dict[str, torch.Tensor]) -> "RWKV7Train":
        """From a BlinkDL x070 state dict (raw embedding table and ln0 kept apart)."""
        m = cls(RWKV7Config.from_state_dict(sd, "state dict"))
        with torch.no_grad():
            m.model.load_blink_state_dict(sd)
            m.model.emb.weight.copy_(sd["emb.weight"].float())     # raw table: ln0 follows it
            m.ln0.weight.copy_(sd["blocks.0.ln0.weight"].float())
            m.ln0.bias.copy_(sd["blocks.0.ln0.bias"].float())
        m.model.emb = torch.nn.Sequential(m.model.emb, m.ln0)
        return m

    @classmethod
    def from_checkpoint(cls, path: Path) -> "RWKV7Train":
        """A BlinkDL .pth, read and checked as `RWKV7.from_pretrained` reads it."""
        from edgekit.models import _checkpoint
        sd = _checkpoint.read_tensors(Path(path))
        check_state_dict(sd, RWKV7Config.from_state_dict(sd, str(path)).expected_shapes(), str(path))
        return cls.from_blink(sd)

    def forward(self, x):
        return self.model(x)[0]


def blink_state_dict(m: RWKV7Train) -> dict[str, torch.Tensor]:
    """The inverse of RWKV7.load_blink_state_dict (BlinkDL x070 key names)."""
    model, C = m.model, m.model.cfg.n_embd
    sd = {"emb.weight": model.emb[0].weight, "blocks.0.ln0.weight": m.ln0.weight, "blocks.0.ln0.bias": m.ln0.bias,
          "ln_out.weight": model.ln_out.weight, "ln_out.bias": model.ln_out.bias,
          "head.weight": model.head.weight.t()}     # edgekit's Linear stores (in, out)
    for i, blk in enumerate(model.blocks):
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for ln in ("ln1", "ln2"):
            sd[f"{b}{ln}.weight"], sd[f"{b}{ln}.bias"] = getattr(blk, ln).weight, getattr(blk, ln).bias
        att = blk.att
        for j, n in enumerate(MIX_NAMES):
            sd[a + n] = att.maa[j].reshape(1, 1, C)
        names = ["w0", "a0", "k_k", "k_a", "w1", "w2", "a1", "a2", "g1", "g2", "r_k"] + (["v0", "v1", "v2"] if i else [])
        shapes = model.cfg.expected_shapes()
        for n in names:
            t = getattr(att, n)
            sd[a + n] = (t.weight if isinstance(t, nn.Module) else t).reshape(shapes[a + n])
        for n in ("receptance", "key", "value", "output"):
            sd[f"{a}{n}.weight"] = getattr(att, n).weight.t()
        sd[a + "ln_x.weight"], sd[a + "ln_x.bias"] = att.ln_x_weight, att.ln_x_bias
        sd[f + "x_k"] = blk.ffn.x_k.reshape(shapes[f + "x_k"])
        sd[f + "key.weight"], sd[f + "value.weight"] = blk.ffn.key.weight.t(), blk.ffn.value.weight.t()
    return {k: v.detach().clone() for k, v in sd.items()}


def save_blink(m: RWKV7Train, path: Path) -> Path:
    """The model as a BlinkDL x070 .pth in bf16 at path (written to a temp file, then renamed)."""
    from edgekit._io import atomic_path
    with atomic_path(path) as tmp:
        torch.save({k: v.to(torch.bfloat16).contiguous() for k, v in blink_state_dict(m).items()}, tmp)
    return path
