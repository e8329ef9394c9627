"""Triton kernel of `edgekit::mamba_step` (edgekit/ops/mamba_step.py has the equations).

Dimensions: B batch, T time, D channels (d_inner), N state size; BD channels per program,
NP = N rounded up to a power of two.

Each program owns BD channels of one batch row: their rows of h (BD x N) and of A stay in
registers for all T steps; channel d's update reads only its own row, so a state updated
in place (state_out is state) is safe. x and dt may be column slices of a wider tensor
(Mamba splits in_proj's output): their batch and time strides are passed, the channel
stride must be 1. Grid: (B, ceil(D / BD)) — 48 programs for Mamba-130m (D = 1536).

fp32 arithmetic; inputs may be fp16/bf16/fp32; y and the state are fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

NAME = "mamba_step"


@triton.jit
def _mamba_kernel(x, dt, A, Bm, C, Dskip, s_in, y, s_out,
                  T, D, N,
                  sx_b, sx_t, sdt_b, sdt_t, sB_b, sB_t, sC_b, sC_t,
                  BD: tl.constexpr, NP: tl.constexpr):
    bb = tl.program_id(0)
    dd = tl.program_id(1) * BD + tl.arange(0, BD)
    nn = tl.arange(0, NP)
    md = dd < D
    mn = nn < N
    m2 = md[:, None] & mn[None, :]
    A2 = tl.load(A + dd[:, None] * N + nn[None, :], mask=m2, other=0.0).to(tl.float32)   # (BD, NP)
    Dv = tl.load(Dskip + dd, mask=md, other=0.0).to(tl.float32)
    s_off = bb * D * N + dd[:, None] * N + nn[None, :]
    h = tl.load(s_in + s_off, mask=m2, other=0.0)
    for t in range(T):
        xv = tl.load(x + bb * sx_b + t * sx_t + dd, mask=md, other=0.0).to(tl.float32)
        dv = tl.load(dt + bb * sdt_b + t * sdt_t + dd, mask=md, other=0.0).to(tl.float32)
        Bv = tl.load(Bm + bb * sB_b + t * sB_t + nn, mask=mn, other=0.0).to(tl.float32)
        Cv = tl.load(C + bb * sC_b + t * sC_t + nn, mask=mn, other=0.0).to(tl.float32)
        h = tl.exp(dv[:, None] * A2) * h + (dv * xv)[:, None] * Bv[None, :]     # eq. (2a)
        yv = tl.sum(h * Cv[None, :], axis=1) + Dv * xv                          # eq. (2b) + skip
        tl.store(y + (bb * T + t) * D + dd, yv, mask=md)
    tl.store(s_out + s_off, h, mask=m2)


def _unit_last(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def launch(args, outs) -> None:
    """outs = (y, state_out), preallocated fp32 and contiguous; state_out may be state."""
    x, dt, A, Bm, C, Dskip, state = (_unit_last(t) for t in args)
    A, Dskip = A.contiguous(), Dskip.contiguous()
    y, s_out = outs
    B, T, D = x.shape
    N = A.shape[1]
    NP = triton.next_power_of_2(N)
    BD = max(1, min(32, 2048 // NP))          # BD x NP fp32 of h in registers per program
    grid = (B, triton.cdiv(D, BD))
    _mamba_kernel[grid](x, dt, A, Bm, C, Dskip, state, y, s_out, T, D, N,
                        x.stride(0), x.stride(1), dt.stride(0), dt.stride(1),
                        Bm.stride(0), Bm.stride(1), C.stride(0), C.stride(1), BD=BD, NP=NP, num_warps=4)
