"""`edgekit::mamba_step` — the Mamba (S6) selective state-space recurrence.

Dimensions: B batch, T time, D channels (d_inner), N state size (d_state).

Per step t and channel d, with the state h (D x N), the paper's eq. (2a, 2b) with the
zero-order hold of A and the Euler step of B (A. Gu, T. Dao, "Mamba: Linear-Time
Sequence Modeling with Selective State Spaces", arXiv:2312.00752, §2 and §3.5):

    h_t[d, n] = exp(Δ_t[d] · A[d, n]) · h_{t-1}[d, n] + Δ_t[d] · x_t[d] · B_t[n]
    y_t[d]    = Σ_n h_t[d, n] · C_t[n] + D[d] · x_t[d]

Δ is the step size AFTER softplus(dt_proj(·) + dt_bias) (the caller applies it), A the
negative real diagonal -exp(A_log) (computed once at conversion), D the skip. The gate
y · silu(z) stays outside the op, in stock ops.

Inputs: x, dt (B, T, D); A (D, N); Bm, C (B, T, N); D (D,); state (B, D, N); float32.
Outputs: y (B, T, D), state_out (B, D, N), float32.

The `.out` overload may update the state in place (state_out is state): channel d's new
row depends only on its own old row. Any other overlap of outputs and inputs is rejected.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "mamba_step"


def reference(x, dt, A, Bm, C, D, state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
    B_, T, D_ = x.shape
    if T == 1:   # decode: straight-line, reshapes instead of per-t indexing (fewer graph nodes)
        d = dt.reshape(B_, D_, 1)
        h = torch.exp(d * A) * state + (d * x.reshape(B_, D_, 1)) * Bm.reshape(B_, 1, -1)
        return (h @ C.reshape(B_, -1, 1)).reshape(B_, 1, D_) + D * x, h
    h = state
    ys = []
    for t in range(x.shape[1]):
        d = dt[:, t, :, None]                                          # (B, D, 1)
        h = torch.exp(d * A) * h + (d * x[:, t, :, None]) * Bm[:, t, None, :]   # (B, D, N)
        ys.append((h @ C[:, t, :, None]).squeeze(-1) + D * x[:, t])   # (B, D)
    return torch.stack(ys, dim=1), h


def ssm_sample(seed: int, x, dt, A, bc, D, state, dt_shift: float):
    """Sample arguments of a selective SSM op (the shapes given): inputs shaped as Mamba and
    Mamba-2 make them, Δ = softplus(· + dt_shift) > 0 and A = -exp(A_log) < 0."""
    g = torch.Generator().manual_seed(seed)
    r = lambda shape: torch.randn(*shape, generator=g)  # noqa: E731
    return (r(x), torch.nn.functional.softplus(r(dt) + dt_shift), -torch.exp(torch.rand(*A, generator=g) * 2),
            r(bc), r(bc), r(D), r(state) * 0.5)


def sample_inputs(T: int, seed: int = 0, B: int = 2, D: int = 24, N: int = 19):
    """N = 19 reaches the kernel's scalar tail after two 8-wide vectors."""
    return ssm_sample(seed, (B, T, D), (B, T, D), (D, N), (B, T, N), (D,), (B, D, N), dt_shift=-2)


# ---- ONNX: a node `edgekit::MambaStep` whose model-local function body stock ORT inlines ----
@onnx_body
def MambaStep(x: FLOAT, dt: FLOAT, A: FLOAT, Bm: FLOAT, C: FLOAT, D: FLOAT,
              state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """Any T: the update in an ONNX Loop over t."""
    ax1 = op.Constant(value_ints=[1])
    axl = op.Constant(value_ints=[-1])
    T = op.Shape(x, start=1, end=2)
    S = state
    y = op.Slice(x, op.Constant(value_ints=[0]), op.Constant(value_ints=[0]), ax1)  # (B, 0, D)
    for t in range(op.Squeeze(T)):
        t1 = op.Unsqueeze(t, op.Constant(value_ints=[0]))
        t2 = op.Add(t1, op.Constant(value_ints=[1]))
        xt = op.Squeeze(op.Slice(x, t1, t2, ax1), ax1)
        dtt = op.Unsqueeze(op.Squeeze(op.Slice(dt, t1, t2, ax1), ax1), axl)
        bt = op.Slice(Bm, t1, t2, ax1)
        ct = op.Unsqueeze(op.Squeeze(op.Slice(C, t1, t2, ax1), ax1), axl)
        S = op.Add(op.Mul(op.Exp(op.Mul(dtt, A)), S), op.Mul(op.Mul(dtt, op.Unsqueeze(xt, axl)), bt))
        yt = op.Add(op.Squeeze(op.MatMul(S, ct), axl), op.Mul(D, xt))
        y = op.Concat(y, op.Unsqueeze(yt, ax1), axis=1)
    return y, S


@onnx_body
def MambaStepT1(x: FLOAT, dt: FLOAT, A: FLOAT, Bm: FLOAT, C: FLOAT, D: FLOAT,
                state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """T = 1 (the step graph): straight-line, channels as rows (B, D, 1), so the outer
    product with Bm (B, 1, N) is a broadcast and the contraction with C a MatMul."""
    xc = op.Transpose(x, perm=[0, 2, 1])
    dc = op.Transpose(dt, perm=[0, 2, 1])
    S = op.Add(op.Mul(op.Exp(op.Mul(dc, A)), state), op.Mul(op.Mul(dc, xc), Bm))
    yc = op.Add(op.MatMul(S, op.Transpose(C, perm=[0, 2, 1])),
                op.Mul(op.Unsqueeze(D, op.Constant(value_ints=[-1])), xc))
    y = op.Transpose(yc, perm=[0, 2, 1])
    return y, S


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "B T D"), Arg("dt", "B T D"), Arg("A", "D N"), Arg("Bm", "B T N"), Arg("C", "B T N"),
            Arg("D", "D"), Arg("state", "B D N")),
    outputs=(Arg("y", "B T D"), Arg("state_out", "B D N")),
    state_args=(6,), reference=reference, sample_inputs=sample_inputs,
    onnx_function=MambaStep, onnx_step_function=MambaStepT1))
