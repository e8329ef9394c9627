"""Triton kernel of `edgekit::rglru_step` (edgekit/ops/rglru_step.py has eqs. (1)-(4)).

Dimensions: B batch, T time, D lru width, K conv width, H gate blocks, W = D / H block
width; WP = W rounded up to a power of two, BC output channels per program.

A program owns BC channels of one gate block of one batch row. The block-diagonal gate
mixes all W channels of the block, so the program computes the conv output u for all of
them (K multiply-adds each, from x and the conv history) and reads the gate columns of its
BC channels; h of its channels stays in registers for all T steps. It reads the conv
history of its whole block and writes only its own channels', so when the history is
updated in place and a block spans several programs the launcher hands the kernel a copy
of the old history (K-1 floats per channel). Grid: (B, H, ceil(W / BC)) — 12 programs for
Hawk-100M (H = 12, W = 64) at B = 1.

fp32 arithmetic; inputs may be fp16/bf16/fp32; y and both states are fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

NAME = "rglru_step"


@triton.jit
def _window(x, hist, bb, taus, ch, m2, D, sx_b, sx_t, KM1: tl.constexpr):
    """The conv inputs at times taus (rows) of channels ch (columns): x[bb, tau] where
    tau >= 0, else the history's column tau + K-1 (oldest first). m2: (rows, channels) mask."""
    tt = taus[:, None]
    xv = tl.load(x + bb * sx_b + tt * sx_t + ch[None, :], mask=m2 & (tt >= 0), other=0.0).to(tl.float32)
    hv = tl.load(hist + (bb * D + ch[None, :]) * KM1 + (tt + KM1), mask=m2 & (tt < 0), other=0.0)
    return xv + hv


@triton.jit
def _rglru_kernel(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, hist, h_in,
                  y, hist_out, h_out,
                  T, D, W, sx_b, sx_t, sr_b, sr_t,
                  K: tl.constexpr, KP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr,
                  ONE_BLOCK: tl.constexpr):
    KM1: tl.constexpr = K - 1
    bb = tl.program_id(0)
    hh = tl.program_id(1)
    ci = tl.arange(0, WP)                          # input channels of the block
    co = tl.program_id(2) * BC + tl.arange(0, BC)  # this program's output channels
    kk = tl.arange(0, KP)                          # conv taps, oldest first
    mi = ci < W
    mo = co < W
    mk = kk < K
    cin = hh * W + ci
    cout = hh * W + co
    gw = gate_w + hh * W * 2 * W
    m2 = mi[:, None] & mo[None, :]
    Wi = tl.load(gw + ci[:, None] * (2 * W) + co[None, :], mask=m2, other=0.0).to(tl.float32)      # input gate
    Wr = tl.load(gw + ci[:, None] * (2 * W) + W + co[None, :], mask=m2, other=0.0).to(tl.float32)  # recurrence gate
    gbi = tl.load(gate_b + hh * 2 * W + co, mask=mo, other=0.0).to(tl.float32)
    gbr = tl.load(gate_b + hh * 2 * W + W + co, mask=mo, other=0.0).to(tl.float32)
    mki = mk[:, None] & mi[None, :]
    mko = mk[:, None] & mo[None, :]
    cw_in = tl.load(conv_w + kk[:, None] * D + cin[None, :], mask=mki, other=0.0).to(tl.float32)   # (KP, WP)
    cw_out = tl.load(conv_w + kk[:, None] * D + cout[None, :], mask=mko, other=0.0).to(tl.float32)
    cb_in = tl.load(conv_b + cin, mask=mi, other=0.0).to(tl.float32)
    cb_out = tl.load(conv_b + cout, mask=mo, other=0.0).to(tl.float32)
    la = tl.load(log_a + cout, mask=mo, other=0.0).to(tl.float32)
    h = tl.load(h_in + bb * D + cout, mask=mo, other=0.0)
    for t in range(T):
        taus = t - KM1 + kk
        u_in = tl.sum(cw_in * _window(x, hist, bb, taus, cin, mki, D, sx_b, sx_t, KM1), axis=0) + cb_in
        if ONE_BLOCK:                              # the program's channels are the block's
            u_out = u_in
        else:
            u_out = tl.sum(cw_out * _window(x, hist, bb, taus, cout, mko, D, sx_b, sx_t, KM1), axis=0) + cb_out
        gi = tl.sigmoid(tl.sum(u_in[:, None] * Wi, axis=0) + gbi)            # (1)
        gr = tl.sigmoid(tl.sum(u_in[:, None] * Wr, axis=0) + gbr)            # (2)
        lat = la * gr                                                        # (3) log a_t
        at = tl.exp(lat)
        rs = tl.load(reset + bb * sr_b + t * sr_t).to(tl.float32)
        mult = rs + (1.0 - rs) * tl.sqrt(1.0 - tl.exp(2.0 * lat))
        h = at * (1.0 - rs) * h + u_out * gi * mult                          # (4)
        tl.store(y + (bb * T + t) * D + cout, h, mask=mo)
    tl.store(h_out + bb * D + cout, h, mask=mo)
    # the last K-1 inputs, oldest first: rows j < K-1 of the window ending at T + j - (K-1)
    mj = (kk < KM1)[:, None] & mo[None, :]
    last = _window(x, hist, bb, T - KM1 + kk, cout, mj, D, sx_b, sx_t, KM1)
    tl.store(hist_out + (bb * D + cout[None, :]) * KM1 + kk[:, None], last, mask=mj)


def _unit_last(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def launch(args, outs) -> None:
    """outs = (y, conv_state_out, h_state_out), preallocated fp32 and contiguous; the two
    states may be the state arguments themselves (in place)."""
    from edgekit.ops.registry import overlaps
    x, reset, conv_w, conv_b, gate_w, gate_b, log_a, hist, h = args
    x, reset = _unit_last(x), _unit_last(reset)
    conv_w, conv_b, gate_w, gate_b, log_a, hist, h = (
        t.contiguous() for t in (conv_w, conv_b, gate_w, gate_b, log_a, hist, h))
    y, hist_out, h_out = outs
    B, T, D = x.shape
    K = conv_w.shape[0]
    H, W = gate_w.shape[0], gate_w.shape[1]
    WP = triton.next_power_of_2(W)
    BC = min(WP, 64)
    blocks = triton.cdiv(W, BC)
    if blocks > 1 and hist.numel() and overlaps(hist, hist_out):
        hist = hist.clone()             # other programs of the block read the old history
    _rglru_kernel[(B, H, blocks)](x, reset, conv_w, conv_b, gate_w, gate_b, log_a, hist, h, y, hist_out, h_out,
                                  T, D, W, x.stride(0), x.stride(1), reset.stride(0), reset.stride(1),
                                  K=K, KP=triton.next_power_of_2(K), WP=WP, BC=BC, ONE_BLOCK=blocks == 1 and BC == WP,
                                  num_warps=4)
