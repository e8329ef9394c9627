"""Triton kernel of `edgekit::gated_rms_norm` (edgekit/ops/gated_rms_norm.py), Mamba-2's
gated RMSNorm: g = y · silu(z) in groups of S = D / G channels, out = g / sqrt(mean(g²) + eps)
· w[group], one program per (row, group). Replaces the reference's ~9 kernels by one."""

from __future__ import annotations

import triton
import triton.language as tl

from edgekit.ops.triton._rows import rows

NAME = "gated_rms_norm"


@triton.jit
def _gated_rms_norm_kernel(y, z, w, eps, out, G, S, sy, sz, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    gg = tl.program_id(1)
    c = tl.arange(0, BLOCK)
    m = c < S
    col = gg * S + c
    yv = tl.load(y + row * sy + col, mask=m, other=0.0).to(tl.float32)
    zv = tl.load(z + row * sz + col, mask=m, other=0.0).to(tl.float32)
    g = yv * (zv * tl.sigmoid(zv))
    ms = tl.sum(g * g, axis=0) / S
    e = tl.load(eps).to(tl.float32)
    wv = tl.load(w + col, mask=m, other=0.0).to(tl.float32)
    tl.store(out + row * G * S + col, g / tl.sqrt(ms + e) * wv, mask=m)


def launch(args, outs) -> None:
    y, z, w, eps = args
    (out,) = outs
    G, S = w.shape
    y, R, sy = rows(y)
    z, _, sz = rows(z)
    if R:
        _gated_rms_norm_kernel[(R, G)](y, z, w.contiguous(), eps, out, G, S, sy, sz,
                                       BLOCK=triton.next_power_of_2(S), num_warps=4)
