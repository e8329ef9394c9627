"""Triton kernel of `edgekit::rwkv7_wkv` (edgekit/ops/rwkv7_wkv.py has the equation).

Dimensions: B batch, T time, H heads, N head size (64); BI rows of S per program, NP = N
rounded up to a power of two.

Each program owns BI rows (value channels i) of one head's state S (N x N) and keeps them
in registers for all T steps: row i's update reads only row i (S[i, :]·a, then the decay,
the rank-one terms, and y[i] = S[i, :]·r), so programs never share data, and a state
updated in place (state_out is state) is safe: a program reads its rows before it writes
them. Grid: (B·H, ceil(N / BI)) — 48 programs for RWKV-7 0.1B (H = 12) at B = 1.

Arithmetic is fp32 whatever the inputs' dtype (fp16/bf16/fp32 loads are widened); y and
the state are fp32, as the op's spec says.
"""

from __future__ import annotations

import triton
import triton.language as tl

NAME = "rwkv7_wkv"


@triton.jit
def _wkv_kernel(r, w, k, v, a, b, s_in, y, s_out,
                T, H, N,
                s_b, s_t, s_h,            # strides (elements) of r, w, k, v, a, b (all the same layout)
                BI: tl.constexpr, NP: tl.constexpr):
    pid_bh = tl.program_id(0)
    bb = pid_bh // H
    hh = pid_bh % H
    ii = tl.program_id(1) * BI + tl.arange(0, BI)          # rows (value channels)
    jj = tl.arange(0, NP)                                   # columns (key channels)
    mi = ii < N
    mj = jj < N
    m2 = mi[:, None] & mj[None, :]
    s_off = pid_bh * N * N + ii[:, None] * N + jj[None, :]
    S = tl.load(s_in + s_off, mask=m2, other=0.0)           # (BI, NP) fp32
    for t in range(T):
        off = bb * s_b + t * s_t + hh * s_h
        wj = tl.load(w + off + jj, mask=mj, other=0.0).to(tl.float32)
        kj = tl.load(k + off + jj, mask=mj, other=0.0).to(tl.float32)
        aj = tl.load(a + off + jj, mask=mj, other=0.0).to(tl.float32)
        bj = tl.load(b + off + jj, mask=mj, other=0.0).to(tl.float32)
        rj = tl.load(r + off + jj, mask=mj, other=0.0).to(tl.float32)
        vi = tl.load(v + off + ii, mask=mi, other=0.0).to(tl.float32)
        sa = tl.sum(S * aj[None, :], axis=1)                             # (BI,)  S a
        S = S * wj[None, :] + sa[:, None] * bj[None, :] + vi[:, None] * kj[None, :]
        yi = tl.sum(S * rj[None, :], axis=1)                             # (BI,)  S r
        tl.store(y + ((bb * T + t) * H + hh) * N + ii, yi, mask=mi)
    tl.store(s_out + s_off, S, mask=m2)


def launch(args, outs) -> None:
    """outs = (y, state_out), preallocated fp32 and contiguous; state_out may be state."""
    r, w, k, v, a, b, state = args
    y, s_out = outs
    B, T, H, N = r.shape
    acts = [t if t.is_contiguous() else t.contiguous() for t in (r, w, k, v, a, b)]
    NP = triton.next_power_of_2(N)
    BI = min(16, NP)
    grid = (B * H, triton.cdiv(N, BI))
    _wkv_kernel[grid](*acts, state, y, s_out, T, H, N, T * H * N, H * N, N, BI=BI, NP=NP, num_warps=4)
