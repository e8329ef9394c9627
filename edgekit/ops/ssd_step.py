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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops import DOMAIN, LIB, ONNX_OPSET, OpInfo, register
from edgekit.ops.mamba_step import check_out

NAME = "ssd_step"

LIB.define(f"{NAME}(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state) "
           "-> (Tensor, Tensor)")
LIB.define(f"{NAME}.out(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state, *, "
           "Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")

_INPUTS = ("x", "dt", "A", "Bm", "C", "D")


def validate(x, dt, A, Bm, C, D, state) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/ssd_step.cpp) uses the same words."""
    if x.dim() != 4:
        raise ValueError(f"{NAME}: x must be (B, T, H, P); got {x.dim()} dims")
    if Bm.dim() != 4:
        raise ValueError(f"{NAME}: Bm must be (B, T, G, N); got {Bm.dim()} dims")
    B_, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    if G < 1 or H % G != 0:
        raise ValueError(f"{NAME}: groups G = {G} must divide heads H = {H}")
    for name, want, shape, t in (("x", "(B, T, H, P)", (B_, T, H, P), x), ("dt", "(B, T, H)", (B_, T, H), dt),
                                 ("A", "(H,)", (H,), A), ("Bm", "(B, T, G, N)", (B_, T, G, N), Bm),
                                 ("C", "(B, T, G, N)", (B_, T, G, N), C), ("D", "(H,)", (H,), D),
                                 ("state", "(B, H, P, N)", (B_, H, P, N), state)):
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            raise ValueError(f"{NAME}: {name} must be {want} = {shape} float32; "
                             f"got {tuple(t.shape)} {t.dtype}")


def reference(x, dt, A, Bm, C, D, state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
    validate(x, dt, A, Bm, C, D, state)
    rep = x.shape[2] // Bm.shape[2]
    Bh = Bm.repeat_interleave(rep, dim=2)                               # (B, T, H, N)
    Ch = C.repeat_interleave(rep, dim=2)
    S = state
    ys = []
    for t in range(x.shape[1]):
        d = dt[:, t, :, None, None]                                     # (B, H, 1, 1)
        S = torch.exp(d * A[:, None, None]) * S + (d * x[:, t, :, :, None]) * Bh[:, t, :, None, :]
        ys.append((S @ Ch[:, t, :, :, None]).squeeze(-1) + D[:, None] * x[:, t])   # (B, H, P)
    return torch.stack(ys, dim=1), S


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


# ---- ONNX: a node `edgekit::SsdStep` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def SsdStep(x: FLOAT, dt: FLOAT, A: FLOAT, Bm: FLOAT, C: FLOAT, D: FLOAT,
            state: FLOAT) -> tuple[FLOAT, FLOAT]:
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
    if op.Equal(T, op.Constant(value_ints=[1])):
        # Single step (decode): straight-line body, no loop.
        x1 = op.Squeeze(x, ax1)                                         # (B, H, P)
        d1 = op.Unsqueeze(op.Squeeze(dt, ax1), op.Constant(value_ints=[-1, -2]))   # (B, H, 1, 1)
        b1 = op.Unsqueeze(op.Squeeze(Bh, ax1), op.Constant(value_ints=[2]))        # (B, H, 1, N)
        c1 = op.Unsqueeze(op.Squeeze(Ch, ax1), axl)                     # (B, H, N, 1)
        S = op.Add(op.Mul(op.Exp(op.Mul(d1, Ahh)), state),
                   op.Mul(op.Mul(d1, op.Unsqueeze(x1, axl)), b1))      # (B, H, P, N)
        y1 = op.Add(op.Squeeze(op.MatMul(S, c1), axl), op.Mul(Dh, x1))  # (B, H, P)
        y = op.Unsqueeze(y1, ax1)                                       # (B, 1, H, P)
    else:
        # T > 1 (prefill): the same update in an ONNX Loop over t.
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


INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=SsdStep,
                       cpp_kernel=f"{NAME}.out", validate=validate))
