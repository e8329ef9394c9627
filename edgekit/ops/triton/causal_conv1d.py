"""Triton kernel of `edgekit::causal_conv1d` and `edgekit::causal_conv1d_silu`
(edgekit/ops/causal_conv1d.py): the depthwise causal conv over time whose state is the
last K inputs (newest in column K-1), then SiLU for the `_silu` op.

Dimensions: B batch, T time, C channels, K taps (KP rounded up to a power of two), BC
channels per program. A program owns BC channels of one batch row for all T steps; it
reads the conv window of step t from x (times >= 0) or the state (times < 0), and writes
the new state (the last K inputs) after every read, so a state updated in place is safe
(channels are independent). x may be a column slice (Mamba's split of in_proj's output).
"""

from __future__ import annotations

import triton
import triton.language as tl

NAMES = ("causal_conv1d", "causal_conv1d_silu")


@triton.jit
def _window(x, s, bb, taus, ch, m2, C, sx_b, sx_t, K: tl.constexpr):
    """Inputs at times taus (rows) of channels ch (columns): x[bb, tau] for tau >= 0, else the
    state's column K + tau (the state's newest column, K-1, is time -1)."""
    tt = taus[:, None]
    xv = tl.load(x + bb * sx_b + tt * sx_t + ch[None, :], mask=m2 & (tt >= 0), other=0.0).to(tl.float32)
    sv = tl.load(s + (bb * C + ch[None, :]) * K + (tt + K), mask=m2 & (tt < 0), other=0.0).to(tl.float32)
    return xv + sv


@triton.jit
def _conv_kernel(x, w, b, s_in, y, s_out, T, C, sx_b, sx_t,
                 K: tl.constexpr, KP: tl.constexpr, BC: tl.constexpr, SILU: tl.constexpr):
    bb = tl.program_id(0)
    ch = tl.program_id(1) * BC + tl.arange(0, BC)
    kk = tl.arange(0, KP)
    mc = ch < C
    m2 = (kk < K)[:, None] & mc[None, :]
    wt = tl.load(w + ch[None, :] * K + kk[:, None], mask=m2, other=0.0).to(tl.float32)     # (KP, BC) taps
    bv = tl.load(b + ch, mask=mc, other=0.0).to(tl.float32)
    for t in range(T):
        win = _window(x, s_in, bb, t - (K - 1) + kk, ch, m2, C, sx_b, sx_t, K)
        yv = tl.sum(win * wt, axis=0) + bv
        if SILU:
            yv = yv * tl.sigmoid(yv)
        tl.store(y + (bb * T + t) * C + ch, yv, mask=mc)
    last = _window(x, s_in, bb, T - K + kk, ch, m2, C, sx_b, sx_t, K)     # the last K inputs
    tl.store(s_out + (bb * C + ch[None, :]) * K + kk[:, None], last, mask=m2)


def launcher(name: str):
    silu = name == "causal_conv1d_silu"

    def launch(args, outs) -> None:
        x, w, b, state = args
        y, s_out = outs
        if x.stride(-1) != 1:
            x = x.contiguous()
        B, T, C = x.shape
        K = w.shape[1]
        BC = 128
        _conv_kernel[(B, triton.cdiv(C, BC))](x, w.contiguous(), b.contiguous(), state.contiguous(), y, s_out,
                                              T, C, x.stride(0), x.stride(1),
                                              K=K, KP=triton.next_power_of_2(K), BC=BC, SILU=silu, num_warps=4)
    return launch
