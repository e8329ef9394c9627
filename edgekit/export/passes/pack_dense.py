"""pack_dense: every `layers.Linear` of the model runs as `edgekit::dense`, its weight packed
at export into the 4x8 tiles the kernel streams (edgekit/ops/dense.py); a layer without a
bias passes zeros (N floats, read once per step).

Why: decode at batch 1 reads every weight once per token. This layout reads Mamba-130m's
517 MB at 1.07-1.15x the time of a plain 2-thread read of memory, against 1.16-1.53x for a
row-major GEMV and ~1.4x for XNNPACK's (benchmarks/gemv_layout.py, docs/benchmarks.md).
Since the kernel streams two row groups per thread at once (kernels/dense.cpp, tile_dot2),
the Mamba-130m .pte decodes in 15.5-15.9 ms a token against 17.0-17.4 before (RWKV-7 0.1B
18.4-18.7 against 19.9-20.1; ETDump runs of the same files alternated, 2 threads).
A module rewrite: the packed layer replaces the Linear for the trace and the model gets its
own layer back afterwards, even after an error.

A tied embedding (`Linear.rows`, models/layers.py) reads the packed tiles too
(`DenseLinear.rows`), so the head's packed buffer is the .pte's one copy of the matrix:
Mamba-130m's .pte lost the 154 MB second copy (671 -> 517 MB).
"""

from contextlib import contextmanager

import torch
from torch import nn

from edgekit.export.passes import Pass
from edgekit.models.layers import Linear
from edgekit.ops.dense import TILE_ROWS, pack


class DenseLinear(nn.Module):
    """y = x Wᵀ + b as one `edgekit::dense` call, W packed (N4, K8, 4, 8)."""

    def __init__(self, linear: Linear):
        super().__init__()
        self.d_in, self.d_out = linear.d_in, linear.d_out
        with torch.no_grad():
            self.register_buffer("weight", pack(linear.weight.t()))           # (in, out) -> tiles
            self.register_buffer("bias", linear.bias.detach() if linear.bias is not None
                                 else linear.weight.new_zeros(linear.d_out))

    def forward(self, x):
        return torch.ops.edgekit.dense(x, self.weight, self.bias)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """`Linear.rows` read from the tiles: W[n] is w[n // 4, :, n % 4, :] flattened, less the
        padding. Stock ops (index_select, gather, view, slice) the portable kernels run; they read
        the 4 rows of n's tile row group (4 x K floats per token), not the matrix."""
        N4, K8, R, C = self.weight.shape
        flat = idx.reshape(-1)                                                 # (n,)
        group = self.weight.index_select(0, torch.div(flat, TILE_ROWS, rounding_mode="floor"))  # (n, K8, 4, 8)
        r = torch.remainder(flat, TILE_ROWS).view(-1, 1, 1, 1).expand(-1, K8, 1, C)         # (n, K8, 1, 8)
        rows = group.gather(2, r).reshape(flat.shape[0], K8 * C)              # (n, K8 * 8)
        K = self.d_in
        return rows[:, :K].reshape(*idx.shape, K)                              # (..., K)


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
