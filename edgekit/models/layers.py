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


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, target: str = "torch") -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) · weight over the last dim. Exactly this order of operations
    (Pow, ReduceMean, Add, Sqrt, Div, Mul) is what ORT's SimplifiedLayerNormFusion matches.
    For ExecuTorch the mean is taken as a 4-D global average pool over (1, D), the only
    mean XNNPACK takes (4-D, the two innermost dims): as a plain mean it runs as a portable
    op that splits the norm into two XNNPACK calls."""
    if target == "executorch":
        ms = x.pow(2).reshape(-1, 1, 1, x.shape[-1]).mean((2, 3), keepdim=True).reshape(*x.shape[:-1], 1)
        return x / torch.sqrt(ms + eps) * weight
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def softplus(x: torch.Tensor, target: str = "torch") -> torch.Tensor:
    """log(1 + e^x). For ExecuTorch, in ops XNNPACK runs vectorized: torch decomposes
    F.softplus into log1p / gt / where, which only ExecuTorch's scalar portable kernels run
    (Mamba-130m: 0.6 ms per token for 24 x 1536 elements). The written-out form is
    max(x, 0) + log1p(e^-|x|), with log1p(u) from log by Goldberg's correction
    log(1 + u) · u / ((1 + u) - 1), and log1p(u) = u where 1 + u rounds to 1 (the
    indicator max(0, 1 - d · 2^23) is 1 exactly when d = (1 + u) - 1 is 0, else 0: d is
    0 or at least 2^-23). Within 3 ulp of the float64 softplus for every float32 x (torch's
    own float32 softplus: 1 ulp); inf -> inf, -inf -> 0, NaN -> NaN."""
    if target != "executorch":
        return torch.nn.functional.softplus(x)
    u = torch.exp(-x.abs())
    w = 1.0 + u
    d = w - 1.0
    log1p_u = torch.log(w) * u / torch.clamp(d, min=2.0 ** -30) + u * torch.clamp(1.0 - d * 2.0 ** 23, min=0.0)
    return torch.clamp(x, min=0.0) + log1p_u


class RMSNorm(nn.Module):
    target: str = "torch"       # the runtime being exported for (RecurrentModel.lowering_for)

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        # eps as the (1,) tensor `edgekit::add_rms_norm` takes; not in the state_dict
        self.register_buffer("eps_tensor", torch.tensor([eps], dtype=torch.float32), persistent=False)

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps, self.target)


def add_rms_norm(h: torch.Tensor, y: torch.Tensor | None, norm: RMSNorm, kernel: bool):
    """A pre-norm residual stream: (h + y, norm(h + y)); y None (the first block): (h, norm(h)).
    kernel: as one `edgekit::add_rms_norm` call (RecurrentModel.glue_kernels), else in stock
    ops, the forms ORT fuses."""
    if y is None:
        return h, norm(h)
    if kernel:
        return torch.ops.edgekit.add_rms_norm(h, y, norm.weight, norm.eps_tensor)
    h = h + y
    return h, norm(h)


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
