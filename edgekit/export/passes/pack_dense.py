"""pack_dense: every `layers.Linear` of the model runs as `edgekit::dense`, its weight packed
at export into the 4x8 tiles the kernel streams (edgekit/ops/dense.py); a layer without a
bias passes zeros (N floats, read once per step).

Why: decode at batch 1 reads every weight once per token. This layout reads Mamba-130m's
517 MB at 1.07-1.15x the time of a plain 2-thread read of memory, against 1.16-1.53x for a
row-major GEMV and ~1.4x for XNNPACK's (benchmarks/gemv_layout.py, docs/benchmarks.md).
A module rewrite: the packed layer replaces the Linear for the trace and the model gets its
own layer back afterwards, even after an error.
"""

from contextlib import contextmanager

import torch
from torch import nn

from edgekit.export.passes import Pass
from edgekit.models.layers import Linear
from edgekit.ops.dense import pack


class DenseLinear(nn.Module):
    """y = x Wᵀ + b as one `edgekit::dense` call, W packed (N4, K8, 4, 8)."""

    def __init__(self, linear: Linear):
        super().__init__()
        with torch.no_grad():
            self.register_buffer("weight", pack(linear.weight.t()))           # (in, out) -> tiles
            self.register_buffer("bias", linear.bias.detach() if linear.bias is not None
                                 else linear.weight.new_zeros(linear.d_out))

    def forward(self, x):
        return torch.ops.edgekit.dense(x, self.weight, self.bias)


class PackDense(Pass):
    name = "pack_dense"

    @contextmanager
    def modules(self, model, ctx):
        swapped = []
        try:
            for name, m in list(model.named_modules()):
                if isinstance(m, Linear):
                    parent, _, attr = name.rpartition(".")
                    owner = model.get_submodule(parent) if parent else model
                    setattr(owner, attr, DenseLinear(m))
                    swapped.append((owner, attr, m))
            self.fired = len(swapped)
            yield
        finally:
            for owner, attr, m in reversed(swapped):
                setattr(owner, attr, m)


PASS = PackDense
