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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, overlaps, register

NAME = "mamba_step"

LIB.define(f"{NAME}(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state) "
           "-> (Tensor, Tensor)")
LIB.define(f"{NAME}.out(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state, *, "
           "Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")

_INPUTS = ("x", "dt", "A", "Bm", "C", "D")


def _bad(name, want, shape, t):
    return ValueError(f"{NAME}: {name} must be {want} = {shape} float32; got {tuple(t.shape)} {t.dtype}")


def validate(x, dt, A, Bm, C, D, state) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/mamba_step.cpp) uses the same words."""
    if x.dim() != 3:
        raise ValueError(f"{NAME}: x must be (B, T, D); got {x.dim()} dims")
    B_, T, D_ = x.shape
    if A.dim() != 2:
        raise ValueError(f"{NAME}: A must be (D, N); got {A.dim()} dims")
    N = A.shape[1]
    for name, want, shape, t in (("x", "(B, T, D)", (B_, T, D_), x), ("dt", "(B, T, D)", (B_, T, D_), dt),
                                 ("A", "(D, N)", (D_, N), A), ("Bm", "(B, T, N)", (B_, T, N), Bm),
                                 ("C", "(B, T, N)", (B_, T, N), C), ("D", "(D,)", (D_,), D),
                                 ("state", "(B, D, N)", (B_, D_, N), state)):
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            raise _bad(name, want, shape, t)


def reference(x, dt, A, Bm, C, D, state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
    validate(x, dt, A, Bm, C, D, state)
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


def check_out(name, y, state_out, inputs, input_names, state) -> None:
    """Aliasing contract of a `.out` call (shared by the Mamba ops; same words in C++)."""
    for n, t in zip(input_names + ("state",), inputs + (state,)):
        if overlaps(y, t):
            raise ValueError(f"{name}: y must not alias input {n}")
    for n, t in zip(input_names, inputs):
        if overlaps(state_out, t):
            raise ValueError(f"{name}: state_out must not alias input {n}")
    if overlaps(state_out, state) and state_out.data_ptr() != state.data_ptr():
        raise ValueError(f"{name}: state_out must be state itself or not overlap it")
    if overlaps(y, state_out):
        raise ValueError(f"{name}: y must not alias state_out")


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(x, dt, A, Bm, C, D, state):
    y, s = reference(x, dt, A, Bm, C, D, state)
    return y.contiguous(), s.contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(x, dt, A, Bm, C, D, state, *, y, state_out):
    check_out(NAME, y, state_out, (x, dt, A, Bm, C, D), _INPUTS, state)
    y_, s_ = reference(x, dt, A, Bm, C, D, state)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(x, dt, A, Bm, C, D, state):
    return torch.empty_like(x), torch.empty_like(state)


# ---- ONNX: a node `edgekit::MambaStep` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
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


@onnxscript.script(_opset, default_opset=op)
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



INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=MambaStep, onnx_step_function=MambaStepT1,
                       cpp_kernel=f"{NAME}.out", state_args=(6,), validate=validate))
