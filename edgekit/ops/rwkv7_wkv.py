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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, register

NAME = "rwkv7_wkv"

LIB.define(f"{NAME}(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state) "
           "-> (Tensor, Tensor)")
LIB.define(f"{NAME}.out(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, *, "
           "Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))")

_INPUTS = ("r", "w", "k", "v", "a", "b")


def validate(r, w, k, v, a, b, state) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/rwkv7_wkv.cpp) uses the same words."""
    if r.dim() != 4:
        raise ValueError(f"rwkv7_wkv: r must be (B, T, H, N); got {r.dim()} dims")
    B, T, H, N = r.shape
    for name, t in zip(_INPUTS, (r, w, k, v, a, b)):
        if tuple(t.shape) != (B, T, H, N) or t.dtype != torch.float32:
            raise ValueError(f"rwkv7_wkv: {name} must be (B, T, H, N) = {(B, T, H, N)} float32; "
                             f"got {tuple(t.shape)} {t.dtype}")
    if tuple(state.shape) != (B, H, N, N) or state.dtype != torch.float32:
        raise ValueError(f"rwkv7_wkv: state must be (B, H, N, N) = {(B, H, N, N)} float32; "
                         f"got {tuple(state.shape)} {state.dtype}")


def reference(r, w, k, v, a, b, state):
    """Plain loop over T, straight from the equation above. Also the decomposed export path."""
    validate(r, w, k, v, a, b, state)
    S = state
    ys = []
    for t in range(r.shape[1]):
        sa = S @ a[:, t, :, :, None]                                   # (B, H, N, 1)
        S = (S * w[:, t, :, None, :]                                   # decay columns j
             + sa * b[:, t, :, None, :]                                # (S a) b
             + v[:, t, :, :, None] * k[:, t, :, None, :])              # v^T k
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))               # (B, H, N)
    return torch.stack(ys, dim=1), S


def _check_out(y, state_out, inputs, state) -> None:
    def overlaps(x, z):
        xs, xe = x.data_ptr(), x.data_ptr() + x.numel() * x.element_size()
        zs, ze = z.data_ptr(), z.data_ptr() + z.numel() * z.element_size()
        return xs < ze and zs < xe
    for name, t in zip(_INPUTS + ("state",), inputs + (state,)):
        if overlaps(y, t):
            raise ValueError(f"rwkv7_wkv: y must not alias input {name}")
    for name, t in zip(_INPUTS, inputs):
        if overlaps(state_out, t):
            raise ValueError(f"rwkv7_wkv: state_out must not alias input {name}")
    if overlaps(state_out, state) and state_out.data_ptr() != state.data_ptr():
        raise ValueError("rwkv7_wkv: state_out must be state itself or not overlap it")
    if overlaps(y, state_out):
        raise ValueError("rwkv7_wkv: y must not alias state_out")


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(r, w, k, v, a, b, state):
    y, s = reference(r, w, k, v, a, b, state)
    return y.contiguous(), s.contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(r, w, k, v, a, b, state, *, y, state_out):
    _check_out(y, state_out, (r, w, k, v, a, b), state)
    y_, s_ = reference(r, w, k, v, a, b, state)
    y.resize_(y_.shape).copy_(y_)
    state_out.resize_(s_.shape).copy_(s_)
    return y, state_out


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(r, w, k, v, a, b, state):
    return torch.empty_like(r), torch.empty_like(state)


# ---- ONNX: a node `edgekit::Rwkv7Wkv` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
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


INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=Rwkv7Wkv,
                       cpp_kernel=f"{NAME}.out", state_args=(6,), validate=validate))
