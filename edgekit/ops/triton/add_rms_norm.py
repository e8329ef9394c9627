"""Triton kernel of `edgekit::add_rms_norm` (edgekit/ops/add_rms_norm.py): h = x + r,
y = h / sqrt(mean(h²) + eps) · w, one program per row (D ≤ a few thousand: the row sits in
registers), in the reference's order of operations. Replaces seven kernels of the torch
reference on CUDA (add, pow, mean, add, sqrt, div, mul) by one."""

from __future__ import annotations

import triton
import triton.language as tl

from edgekit.ops.triton._rows import rows

NAME = "add_rms_norm"


@triton.jit
def _add_rms_norm_kernel(x, r, w, eps, h, y, D, sx, sr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK)
    m = c < D
    hv = (tl.load(x + row * sx + c, mask=m, other=0.0).to(tl.float32)
          + tl.load(r + row * sr + c, mask=m, other=0.0).to(tl.float32))
    ms = tl.sum(hv * hv, axis=0) / D
    e = tl.load(eps).to(tl.float32)
    wv = tl.load(w + c, mask=m, other=0.0).to(tl.float32)
    tl.store(h + row * D + c, hv, mask=m)
    tl.store(y + row * D + c, hv / tl.sqrt(ms + e) * wv, mask=m)


def launch(args, outs) -> None:
    x, r, w, eps = args
    h, y = outs
    x, R, sx = rows(x)
    r, _, sr = rows(r)
    D = w.shape[0]
    if R:
        _add_rms_norm_kernel[(R,)](x, r, w.contiguous(), eps, h, y, D, sx, sr,
                                   BLOCK=triton.next_power_of_2(D), num_warps=4 if D <= 4096 else 8)
