"""Layers shared by the architectures, written in the forms that export to few nodes.

Decode at batch 1 is bound by reading the weights once per token; everything else in a
step is per-node overhead in the runtime. So the step path (T = 1) is written for short
graphs: an RMSNorm that ONNX Runtime fuses into one `SimplifiedLayerNormalization`
node (the division form with an explicit weight; the rsqrt form or a weight folded into
the next matmul is left as six nodes). What differs per target is done by the lowering
passes (edgekit/export/passes/), never here.
"""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim. Exactly this order of operations
    (Pow, ReduceMean, Add, Sqrt, Div, Mul) is what ORT's SimplifiedLayerNormFusion matches;
    a `.pte` export rewrites the mean into the form XNNPACK runs (passes/xnnpack_forms.py)."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        # eps as the (1,) tensor `edgekit::add_rms_norm` takes; not in the state_dict
        self.register_buffer("eps_tensor", torch.tensor([eps], dtype=torch.float32), persistent=False)

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def add_rms_norm(h: torch.Tensor, y: torch.Tensor | None, norm: RMSNorm):
    """A pre-norm residual stream: (h + y, norm(h + y)) as the `edgekit::add_rms_norm` glue op;
    y None (the first block): (h, norm(h))."""
    if y is None:
        return h, norm(h)
    return torch.ops.edgekit.add_rms_norm(h, y, norm.weight, norm.eps_tensor)


class Linear(nn.Module):
    """y = x @ W (+ b), W stored (in, out): the checkpoint's (out, in) weight transposed once
    at load. torch's CPU GEMV is several times faster this way at batch 1, and the exported
    graphs get a plain MatMul. (A `.pte` export swaps each Linear for the packed
    `edgekit::dense` layer: edgekit/export/passes/pack_dense.py.)"""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.zeros(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y if self.bias is None else y + self.bias

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The weight rows of output units idx (rows of the (out, in) matrix), idx.shape + (d_in,):
        a tied embedding read from the head, so the matrix is stored once.

        A gather of columns of the stored (in, out) weight, which exports to one ONNX
        `Gather(axis=1)` on the very initializer the head's MatMul reads. Only the gathered
        (d_in, n) block is transposed: a transpose of the whole matrix would be a constant the
        exporters fold, i.e. a second copy of it (+154 MB at Mamba-130m's 50280 x 768)."""
        cols = self.weight.index_select(1, idx.reshape(-1))                  # (in, n)
        return cols.t().reshape(*idx.shape, self.d_in)                        # (..., in)

    @torch.no_grad()
    def load(self, w_out_in: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight.copy_(w_out_in.t())
        if self.bias is not None:
            self.bias.copy_(bias)

    def load_from(self, sd: dict, prefix: str) -> None:
        """From `prefix.weight` (and `prefix.bias`) of a state dict."""
        self.load(sd[prefix + ".weight"].float(), sd[prefix + ".bias"].float() if self.bias is not None else None)


class LowRank(Linear):
    """A low-rank projection inside a block's math (RWKV-7's decay, in-context learning rate,
    value and gate paths: x @ A, rank 32-128, then a nonlinearity, then @ B), stored (in, out)
    as the checkpoint stores it. A Linear to every export pass (a `.pte` packs it for
    `edgekit::dense` like any other, instead of leaving ~100 small GEMMs a token to XNNPACK);
    quantization keeps it float32 (`KEPT`): small, and the decay path is where a ternary
    error compounds over a whole stream."""

    KEPT = "a low-rank (LoRA) projection of RWKV-7's time mixing, inside the block's math"

    @torch.no_grad()
    def load_in_out(self, w_in_out: torch.Tensor) -> None:
        self.weight.copy_(w_in_out.reshape(self.weight.shape))
