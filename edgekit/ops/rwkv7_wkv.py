"""`edgekit::rwkv7_wkv` — the RWKV-7 "Goose" generalized delta-rule state update.

Dimensions: B batch, T time, H heads, N head size (64 in every released RWKV-7).

For each step t and head h, with the state S (N x N; row i = value channel, column
j = key channel), the paper's eq. (RWKV-7, arXiv:2503.14456, §4 "wkv state evolution"):

    S_t = S_{t-1} · (diag(w_t) + a_t^T b_t) + v_t^T k_t
    y_t = S_t · r_t^T

i.e. S[i, j] <- S[i, j]·w[j] + (Σ_l S[i, l]·a[l])·b[j] + v[i]·k[j],  y[i] = Σ_j S[i, j]·r[j].
RWKV-7 calls it with a = -κ̂ and b = κ̂·α (the normalized "removal key" and the in-context
learning rate); w is the per-channel decay in (0, 1), already exp(-exp(·))'d by the caller.

Inputs r, w, k, v, a, b: (B, T, H, N) float32; state: (B, H, N, N) float32.
Outputs y: (B, T, H, N) float32, state_out: (B, H, N, N) float32.

The `.out` overload may update the state in place (state_out is state): each row of S
depends only on its own previous values, so the kernel reads a row before writing it.
Any other overlap between outputs and inputs is rejected. (ExecuTorch's memory planning
in 1.5 never aliases them today: with mutable-buffer state it writes a fresh state_out
and copies it back, one 16 KB copy per head per step.)
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "rwkv7_wkv"

def reference(r, w, k, v, a, b, state):
    """Plain loop over T, straight from the equation above. Also the decomposed export path."""
    S = state
    ys = []
    for t in range(r.shape[1]):
        sa = S @ a[:, t, :, :, None]                                   # (B, H, N, 1)
        S = (S * w[:, t, :, None, :]                                   # decay columns j
             + sa * b[:, t, :, None, :]                                # (S a) b
             + v[:, t, :, :, None] * k[:, t, :, None, :])              # v^T k
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))               # (B, H, N)
    return torch.stack(ys, dim=1), S


def sample_inputs(T: int, seed: int = 0, B: int = 2, H: int = 3, N: int = 20):
    """Inputs shaped like RWKV-7 makes them: decays in (0.5, 1), a = -κ̂, b = κ̂·α.
    N = 20 (not 64, the released head size) reaches the kernel's general path and its tails."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) * 0.5 for _ in range(3))
    w = 0.5 + 0.5 * torch.rand(B, T, H, N, generator=g)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=g)
    state = torch.randn(B, H, N, N, generator=g) * 0.1
    return r, w, k, v, -kk, kk * alpha, state


# ---- ONNX: a node `edgekit::Rwkv7Wkv` whose model-local function body stock ORT inlines ----
@onnx_body
def Rwkv7Wkv(r: FLOAT, w: FLOAT, k: FLOAT, v: FLOAT, a: FLOAT, b: FLOAT,
             state: FLOAT) -> tuple[FLOAT, FLOAT]:
    ax1 = op.Constant(value_ints=[1])
    ax2 = op.Constant(value_ints=[2])
    axl = op.Constant(value_ints=[-1])
    T = op.Shape(r, start=1, end=2)
    if op.Equal(T, op.Constant(value_ints=[1])):
        # Single step (decode): straight-line body, no loop.
        # Gather(t=0), not Squeeze: ORT infers both If branches at the graph's static T,
        # and Squeeze of a T=16 axis fails inference even though that branch never runs.
        t0 = op.Constant(value_int=0)
        r1 = op.Gather(r, t0, axis=1)                                   # (B, H, N)
        w1 = op.Unsqueeze(op.Gather(w, t0, axis=1), ax2)                # (B, H, 1, N)
        k1 = op.Unsqueeze(op.Gather(k, t0, axis=1), ax2)
        b1 = op.Unsqueeze(op.Gather(b, t0, axis=1), ax2)
        v1 = op.Unsqueeze(op.Gather(v, t0, axis=1), axl)                # (B, H, N, 1)
        a1 = op.Unsqueeze(op.Gather(a, t0, axis=1), axl)
        sa = op.MatMul(state, a1)                                       # (B, H, N, 1)
        S = op.Add(op.Add(op.Mul(state, w1), op.Mul(sa, b1)), op.Mul(v1, k1))
        y1 = op.MatMul(S, op.Unsqueeze(r1, axl))                        # (B, H, N, 1)
        y = op.Unsqueeze(op.Squeeze(y1, axl), ax1)                      # (B, 1, H, N)
    else:
        # T > 1 (prefill): the same update in an ONNX Loop over t.
        S = state
        y = op.Slice(r, op.Constant(value_ints=[0]), op.Constant(value_ints=[0]), ax1)  # (B, 0, H, N)
        for t in range(op.Squeeze(T)):
            t1 = op.Unsqueeze(t, op.Constant(value_ints=[0]))
            t2 = op.Add(t1, op.Constant(value_ints=[1]))
            rt = op.Squeeze(op.Slice(r, t1, t2, ax1), ax1)
            wt = op.Unsqueeze(op.Squeeze(op.Slice(w, t1, t2, ax1), ax1), ax2)
            kt = op.Unsqueeze(op.Squeeze(op.Slice(k, t1, t2, ax1), ax1), ax2)
            bt = op.Unsqueeze(op.Squeeze(op.Slice(b, t1, t2, ax1), ax1), ax2)
            vt = op.Unsqueeze(op.Squeeze(op.Slice(v, t1, t2, ax1), ax1), axl)
            at = op.Unsqueeze(op.Squeeze(op.Slice(a, t1, t2, ax1), ax1), axl)
            sa = op.MatMul(S, at)
            S = op.Add(op.Add(op.Mul(S, wt), op.Mul(sa, bt)), op.Mul(vt, kt))
            yt = op.MatMul(S, op.Unsqueeze(rt, axl))
            y = op.Concat(y, op.Unsqueeze(op.Squeeze(yt, axl), ax1), axis=1)
    return y, S


INFO = register(OpInfo(
    name=NAME,
    inputs=(*(Arg(n, "B T H N") for n in ("r", "w", "k", "v", "a", "b")), Arg("state", "B H N N")),
    outputs=(Arg("y", "B T H N"), Arg("state_out", "B H N N")),
    state_args=(6,), reference=reference, sample_inputs=sample_inputs, onnx_function=Rwkv7Wkv))
