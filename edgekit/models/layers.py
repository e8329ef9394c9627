"""Layers shared by the architectures, written in the forms that export to few nodes.

Decode at batch 1 is bound by reading the weights once per token; everything else in a
step is per-node overhead in the runtime. So the step path (T = 1) is written for short
graphs: an RMSNorm that ONNX Runtime fuses into one `SimplifiedLayerNormalization`
node (the division form with an explicit weight; the rsqrt form or a weight folded into
the next matmul is left as six nodes).
"""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim. Exactly this order of operations
    (Pow, ReduceMean, Add, Sqrt, Div, Mul) is what ORT's SimplifiedLayerNormFusion matches."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Linear(nn.Module):
    """y = x @ W (+ b), W stored (in, out): the checkpoint's (out, in) weight transposed once
    at load. torch's CPU GEMV is several times faster this way at batch 1, and the exported
    graphs get a plain MatMul.

    In the kernel layout (`set_kernel_layout(True)`, used by `.pte` exports with fused ops;
    see RecurrentModel.lowering_for) W is stored packed in `edgekit::dense`'s 4x8 tiles and
    the layer is one `edgekit::dense` call; a layer without bias passes zeros (N floats,
    read once per step)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.zeros(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.kernel_layout = False

    def forward(self, x):
        if self.kernel_layout:
            return torch.ops.edgekit.dense(x, self.weight, self.bias if self.bias is not None else self.zero_bias)
        y = x @ self.weight
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def set_kernel_layout(self, on: bool) -> None:
        """Store W packed for `edgekit::dense` (on) or (in, out) (off); the math is the same."""
        from edgekit.ops.dense import pack, unpack
        if on == self.kernel_layout:
            return
        # compute first, then swap: a failure leaves the layer as it was
        w = pack(self.weight.data.t()) if on else unpack(self.weight.data, self.d_out, self.d_in).t().contiguous()
        if on and self.bias is None:
            self.register_buffer("zero_bias", self.weight.new_zeros(self.d_out), persistent=False)
        elif not on and self.bias is None:
            del self.zero_bias
        self.weight.data = w
        self.kernel_layout = on

    @torch.no_grad()
    def load(self, w_out_in: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        if self.kernel_layout:
            raise RuntimeError("Linear.load: the weight is packed for export; load before lowering_for")
        self.weight.copy_(w_out_in.t())
        if self.bias is not None:
            self.bias.copy_(bias)

    def load_from(self, sd: dict, prefix: str) -> None:
        """From `prefix.weight` (and `prefix.bias`) of a state dict."""
        self.load(sd[prefix + ".weight"].float(), sd[prefix + ".bias"].float() if self.bias is not None else None)
