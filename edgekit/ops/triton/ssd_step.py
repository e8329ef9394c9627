"""Triton kernel of `edgekit::ssd_step` (edgekit/ops/ssd_step.py has the equations).

Dimensions: B batch, T time, H heads, P head dim, G groups, N state size; BP rows of a
head's state per program, NP = N rounded up to a power of two.

Each program owns BP rows (of P) of one head's state S (P x N) in registers for all T
steps and reads its group's B and C (g = h // (H / G)); row p's update reads only row p,
so a state updated in place is safe. x, dt, Bm and C may be views into Mamba-2's in_proj
output: their batch, time (and head/group) strides are passed; the last stride must be 1.
Grid: (B·H, ceil(P / BP)) — 96 programs for Mamba2-130m (H = 24, P = 64, BP = 16).

fp32 arithmetic; inputs may be fp16/bf16/fp32; y and the state are fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

NAME = "ssd_step"


@triton.jit
def _ssd_kernel(x, dt, A, Bm, C, Dskip, s_in, y, s_out,
                T, H, P, G, N,
                sx_b, sx_t, sx_h, sdt_b, sdt_t, sB_b, sB_t, sB_g, sC_b, sC_t, sC_g,
                BP: tl.constexpr, NP: tl.constexpr):
    pid_bh = tl.program_id(0)
    bb = pid_bh // H
    hh = pid_bh % H
    gg = hh // (H // G)
    pp = tl.program_id(1) * BP + tl.arange(0, BP)
    nn = tl.arange(0, NP)
    mp = pp < P
    mn = nn < N
    m2 = mp[:, None] & mn[None, :]
    Ah = tl.load(A + hh).to(tl.float32)
    Dh = tl.load(Dskip + hh).to(tl.float32)
    s_off = pid_bh * P * N + pp[:, None] * N + nn[None, :]
    S = tl.load(s_in + s_off, mask=m2, other=0.0)                        # (BP, NP) fp32
    for t in range(T):
        dv = tl.load(dt + bb * sdt_b + t * sdt_t + hh).to(tl.float32)
        xv = tl.load(x + bb * sx_b + t * sx_t + hh * sx_h + pp, mask=mp, other=0.0).to(tl.float32)
        Bv = tl.load(Bm + bb * sB_b + t * sB_t + gg * sB_g + nn, mask=mn, other=0.0).to(tl.float32)
        Cv = tl.load(C + bb * sC_b + t * sC_t + gg * sC_g + nn, mask=mn, other=0.0).to(tl.float32)
        S = tl.exp(dv * Ah) * S + (dv * xv)[:, None] * Bv[None, :]
        yv = tl.sum(S * Cv[None, :], axis=1) + Dh * xv
        tl.store(y + ((bb * T + t) * H + hh) * P + pp, yv, mask=mp)
    tl.store(s_out + s_off, S, mask=m2)


def _unit_last(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def launch(args, outs) -> None:
    """outs = (y, state_out), preallocated fp32 and contiguous; state_out may be state."""
    x, dt, A, Bm, C, Dskip, state = (_unit_last(t) for t in args)
    y, s_out = outs
    B, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    NP = triton.next_power_of_2(N)
    BP = max(1, min(triton.next_power_of_2(P), 16, 4096 // NP))
    grid = (B * H, triton.cdiv(P, BP))
    _ssd_kernel[grid](x, dt, A, Bm, C, Dskip, state, y, s_out, T, H, P, G, N,
                      x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1),
                      Bm.stride(0), Bm.stride(1), Bm.stride(2), C.stride(0), C.stride(1), C.stride(2),
                      BP=BP, NP=NP, num_warps=4)
