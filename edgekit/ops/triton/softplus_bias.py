"""Triton kernel of `edgekit::softplus_bias` (edgekit/ops/softplus_bias.py): y = softplus(x + b)
as torch computes it (beta 1, threshold 20: x + b itself above 20), Mamba's step size Δ."""

from __future__ import annotations

import triton
import triton.language as tl

from edgekit.ops.triton._rows import rows

NAME = "softplus_bias"


@triton.jit
def _softplus_bias_kernel(x, b, y, C, sx, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < C
    v = tl.load(x + row * sx + c, mask=m, other=0.0).to(tl.float32) + tl.load(b + c, mask=m, other=0.0).to(tl.float32)
    sp = tl.maximum(v, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(v)))       # log(1 + e^v), no overflow
    tl.store(y + row * C + c, tl.where(v > 20.0, v, sp), mask=m)


def launch(args, outs) -> None:
    x, b = args
    (y,) = outs
    C = b.shape[0]
    x, R, sx = rows(x)
    BLOCK = min(triton.next_power_of_2(C), 1024)
    if R:
        _softplus_bias_kernel[(R, triton.cdiv(C, BLOCK))](x, b.contiguous(), y, C, sx, BLOCK=BLOCK, num_warps=4)
