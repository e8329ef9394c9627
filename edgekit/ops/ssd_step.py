"""`edgekit::ssd_step` — the Mamba-2 state-space-duality (SSD) recurrence, scalar A per head.

Dimensions: B batch, T time, H heads, P head dim, G groups (n_groups; G divides H),
N state size.

Per step t and head h, with the state S_h (P x N) and g = h // (H / G) the group whose
B and C the head reads (T. Dao, A. Gu, "Transformers are SSMs", arXiv:2405.21060, §3 and
eq. (2) with the scalar-times-identity A of §3.1; the recurrent form of SSD):

    S_t[h] = exp(Δ_t[h] · A[h]) · S_{t-1}[h] + Δ_t[h] · x_t[h] ⊗ B_t[g]     (P x N)
    y_t[h] = S_t[h] · C_t[g] + D[h] · x_t[h]                                  (P)

Δ is the step size AFTER softplus(dt + dt_bias) and the time_step_limit clamp (the caller
applies them), A = -exp(A_log) (once, at conversion), D the skip. The gated RMSNorm stays
outside the op.

Inputs: x (B, T, H, P); dt (B, T, H); A (H,); Bm, C (B, T, G, N); D (H,);
state (B, H, P, N); all float32. Outputs: y (B, T, H, P), state_out (B, H, P, N).

The `.out` overload may update the state in place (state_out is state): each head's new
state depends only on its own old state. Any other overlap is rejected.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.mamba_step import ssm_sample
from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "ssd_step"

def reference(x, dt, A, Bm, C, D, state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
    B_, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    if T == 1:
        # decode: heads grouped as (B, G, H/G, ...) so each group's B and C broadcast over
        # its heads, with no repeat; reshapes only (fewer graph nodes than the loop form)
        R = H // G
        d = dt.reshape(B_, G, R, 1, 1)
        xg = x.reshape(B_, G, R, P, 1)
        S = (torch.exp(d * A.reshape(G, R, 1, 1)) * state.reshape(B_, G, R, P, N)
             + (d * xg) * Bm.reshape(B_, G, 1, 1, N))
        y = S @ C.reshape(B_, G, 1, N, 1) + D.reshape(G, R, 1, 1) * xg            # (B, G, R, P, 1)
        return y.reshape(B_, 1, H, P), S.reshape(B_, H, P, N)
    rep = H // G
    Bh = Bm.repeat_interleave(rep, dim=2)                               # (B, T, H, N)
    Ch = C.repeat_interleave(rep, dim=2)
    S = state
    ys = []
    for t in range(x.shape[1]):
        d = dt[:, t, :, None, None]                                     # (B, H, 1, 1)
        S = torch.exp(d * A[:, None, None]) * S + (d * x[:, t, :, :, None]) * Bh[:, t, :, None, :]
        ys.append((S @ Ch[:, t, :, :, None]).squeeze(-1) + D[:, None] * x[:, t])   # (B, H, P)
    return torch.stack(ys, dim=1), S


def sample_inputs(T: int, seed: int = 0, B: int = 2, G: int = 2, H: int = 6, P: int = 5, N: int = 11):
    """Three heads per group; N = 11 reaches the kernel's scalar tail."""
    return ssm_sample(seed, (B, T, H, P), (B, T, H), (H,), (B, T, G, N), (H,), (B, H, P, N), dt_shift=-1)


# ---- ONNX: a node `edgekit::SsdStep` whose model-local function body stock ORT inlines ----
@onnx_body
def SsdStep(x: FLOAT, dt: FLOAT, A: FLOAT, Bm: FLOAT, C: FLOAT, D: FLOAT,
            state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """Any T: the update in an ONNX Loop over t."""
    ax1 = op.Constant(value_ints=[1])
    ax3 = op.Constant(value_ints=[3])
    axl = op.Constant(value_ints=[-1])
    # Each group's B, C repeated over its H / G heads: (B, T, G, N) -> (B, T, H, N).
    rep = op.Div(op.Shape(x, start=2, end=3), op.Shape(Bm, start=2, end=3))
    exp_shape = op.Concat(op.Shape(Bm, start=0, end=3), rep, op.Shape(Bm, start=3, end=4), axis=0)
    hn_shape = op.Concat(op.Shape(x, start=0, end=3), op.Shape(Bm, start=3, end=4), axis=0)
    Bh = op.Reshape(op.Expand(op.Unsqueeze(Bm, ax3), exp_shape), hn_shape)
    Ch = op.Reshape(op.Expand(op.Unsqueeze(C, ax3), exp_shape), hn_shape)
    Ahh = op.Unsqueeze(A, op.Constant(value_ints=[-1, -2]))              # (H, 1, 1)
    Dh = op.Unsqueeze(D, axl)                                            # (H, 1)
    T = op.Shape(x, start=1, end=2)
    S = state
    y = op.Slice(x, op.Constant(value_ints=[0]), op.Constant(value_ints=[0]), ax1)  # (B, 0, H, P)
    for t in range(op.Squeeze(T)):
        t1 = op.Unsqueeze(t, op.Constant(value_ints=[0]))
        t2 = op.Add(t1, op.Constant(value_ints=[1]))
        xt = op.Squeeze(op.Slice(x, t1, t2, ax1), ax1)
        dtt = op.Unsqueeze(op.Squeeze(op.Slice(dt, t1, t2, ax1), ax1), op.Constant(value_ints=[-1, -2]))
        bt = op.Unsqueeze(op.Squeeze(op.Slice(Bh, t1, t2, ax1), ax1), op.Constant(value_ints=[2]))
        ct = op.Unsqueeze(op.Squeeze(op.Slice(Ch, t1, t2, ax1), ax1), axl)
        S = op.Add(op.Mul(op.Exp(op.Mul(dtt, Ahh)), S), op.Mul(op.Mul(dtt, op.Unsqueeze(xt, axl)), bt))
        yt = op.Add(op.Squeeze(op.MatMul(S, ct), axl), op.Mul(Dh, xt))
        y = op.Concat(y, op.Unsqueeze(yt, ax1), axis=1)
    return y, S


@onnx_body
def SsdStepT1(x: FLOAT, dt: FLOAT, A: FLOAT, Bm: FLOAT, C: FLOAT, D: FLOAT,
              state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """T = 1 (the step graph): heads grouped as (B, G, H/G, ...) so each group's B and C
    broadcast over its heads (no repeat); the shapes are static, ORT folds their arithmetic."""
    one = op.Constant(value_ints=[1])
    Bsz = op.Shape(x, start=0, end=1)
    H = op.Shape(x, start=2, end=3)
    P = op.Shape(x, start=3, end=4)
    G = op.Shape(Bm, start=2, end=3)
    N = op.Shape(Bm, start=3, end=4)
    R = op.Div(H, G)
    d = op.Reshape(dt, op.Concat(Bsz, G, R, one, one, axis=0))              # (B, G, R, 1, 1)
    xg = op.Reshape(x, op.Concat(Bsz, G, R, P, one, axis=0))                # (B, G, R, P, 1)
    Sg = op.Reshape(state, op.Concat(Bsz, G, R, P, N, axis=0))
    Ag = op.Reshape(A, op.Concat(G, R, one, one, axis=0))
    Dg = op.Reshape(D, op.Concat(G, R, one, one, axis=0))
    Bg = op.Reshape(Bm, op.Concat(Bsz, G, one, one, N, axis=0))            # (B, G, 1, 1, N)
    Cg = op.Reshape(C, op.Concat(Bsz, G, one, N, one, axis=0))             # (B, G, 1, N, 1)
    Sn = op.Add(op.Mul(op.Exp(op.Mul(d, Ag)), Sg), op.Mul(op.Mul(d, xg), Bg))
    yg = op.Add(op.MatMul(Sn, Cg), op.Mul(Dg, xg))                          # (B, G, R, P, 1)
    y = op.Reshape(yg, op.Shape(x))
    S = op.Reshape(Sn, op.Shape(state))
    return y, S


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "B T H P"), Arg("dt", "B T H"), Arg("A", "H"), Arg("Bm", "B T G N"), Arg("C", "B T G N"),
            Arg("D", "H"), Arg("state", "B H P N")),
    outputs=(Arg("y", "B T H P"), Arg("state_out", "B H P N")),
    constraints=(("G >= 1 and H % G == 0", "groups G = {G} must divide heads H = {H}"),),
    state_args=(6,), reference=reference, sample_inputs=sample_inputs,
    onnx_function=SsdStep, onnx_step_function=SsdStepT1))
