"""`edgekit::rglru_step` — Griffin/Hawk's temporal Conv1D + Real-Gated Linear Recurrent Unit.

Paper: S. De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for
Efficient Language Models", arXiv:2402.19427, §2.4 eqs. (1)-(4). Reference code:
google-deepmind/recurrentgemma and transformers' `RecurrentGemmaRecurrentBlock` /
`RecurrentGemmaRglru` (our parity oracle).

Dimensions: B batch, T time, D lru width, K conv width (4), H gate blocks (= attention
heads), W = D / H block width.

Per step t (x_t is the recurrent branch's input, linear_x(norm(h))):

    u_t  = b_conv + Σ_{k<K} w_conv[k] ⊙ x_{t-K+1+k}         temporal depthwise Conv1D
    g_t  = u_t · blockdiag(W_g) + b_g;  i_t = σ(g_t[:W]), r_t = σ(g_t[W:])   per block  (1)(2)
    log a_t = log_a ⊙ r_t        with log_a = -8 · softplus(Λ), folded at conversion   (3)
    h_t  = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ u_t)                                 (4)
    y_t  = h_t

`reset` (B, T) is 1.0 where a step starts a new sequence (segment position 0): there the
recurrence forgets h (a_t is taken as 0) and the input is not normalized (multiplier 1),
as the reference does at position 0. The conv history is not reset.

Inputs (all float32):
    x (B, T, D); reset (B, T); conv_w (K, D) taps, oldest first; conv_b (D,);
    gate_w (H, W, 2W) = [input gate | recurrence gate] per block, (in, out);
    gate_b (H, 2W); log_a (D,); conv_state (B, D, K-1), oldest first; h_state (B, D).
Outputs: y (B, T, D), conv_state_out (B, D, K-1), h_state_out (B, D).

The `.out` overload may update conv_state and h_state in place (state_out is state):
the kernel reads a channel's history before writing it. Any other overlap is rejected.
"""

from __future__ import annotations

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, register

NAME = "rglru_step"

LIB.define(f"{NAME}(Tensor x, Tensor reset, Tensor conv_w, Tensor conv_b, Tensor gate_w, Tensor gate_b, "
           "Tensor log_a, Tensor conv_state, Tensor h_state) -> (Tensor, Tensor, Tensor)")
LIB.define(f"{NAME}.out(Tensor x, Tensor reset, Tensor conv_w, Tensor conv_b, Tensor gate_w, Tensor gate_b, "
           "Tensor log_a, Tensor conv_state, Tensor h_state, *, Tensor(a!) y, Tensor(b!) conv_state_out, "
           "Tensor(c!) h_state_out) -> (Tensor(a!), Tensor(b!), Tensor(c!))")

_INPUTS = ("x", "reset", "conv_w", "conv_b", "gate_w", "gate_b", "log_a", "conv_state", "h_state")


def validate(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/rglru_step.cpp) uses the same words."""
    if x.dim() != 3:
        raise ValueError(f"rglru_step: x must be (B, T, D); got {x.dim()} dims")
    B, T, D = x.shape
    if conv_w.dim() != 2 or conv_w.shape[0] < 1:
        raise ValueError(f"rglru_step: conv_w must be (K, D) with K >= 1; got {tuple(conv_w.shape)}")
    K = conv_w.shape[0]
    if gate_w.dim() != 3 or gate_w.shape[0] < 1:
        raise ValueError(f"rglru_step: gate_w must be (H, W, 2W); got {tuple(gate_w.shape)}")
    H, W = gate_w.shape[0], gate_w.shape[1]
    expect = {"x": (B, T, D), "reset": (B, T), "conv_w": (K, D), "conv_b": (D,), "gate_w": (H, W, 2 * W),
              "gate_b": (H, 2 * W), "log_a": (D,), "conv_state": (B, D, K - 1), "h_state": (B, D)}
    legend = {"x": "(B, T, D)", "reset": "(B, T)", "conv_w": "(K, D)", "conv_b": "(D,)",
              "gate_w": "(H, W, 2W)", "gate_b": "(H, 2W)", "log_a": "(D,)",
              "conv_state": "(B, D, K-1)", "h_state": "(B, D)"}
    if H * W != D:
        raise ValueError(f"rglru_step: gate_w must be (H, W, 2W) with H*W = D = {D}; got {tuple(gate_w.shape)}")
    for name, t in zip(_INPUTS, (x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state)):
        if tuple(t.shape) != expect[name] or t.dtype != torch.float32:
            raise ValueError(f"rglru_step: {name} must be {legend[name]} = {expect[name]} float32; "
                             f"got {tuple(t.shape)} {t.dtype}")


def reference(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
    validate(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state)
    B, T, D = x.shape
    H, W = gate_w.shape[0], gate_w.shape[1]
    taps = conv_w.t()                                                   # (D, K)
    hist, h = conv_state, h_state
    ys = []
    for t in range(T):
        win = torch.cat([hist, x[:, t, :, None]], dim=-1)               # (B, D, K)
        u = (win * taps).sum(-1) + conv_b                               # (B, D)
        hist = win[:, :, 1:]
        g = (u.view(B, H, 1, W) @ gate_w).squeeze(2) + gate_b           # (B, H, 2W)
        gi = torch.sigmoid(g[..., :W]).reshape(B, D)
        gr = torch.sigmoid(g[..., W:]).reshape(B, D)
        la = log_a * gr
        a, a2 = torch.exp(la), torch.exp(2 * la)
        rs = reset[:, t, None]                                          # (B, 1)
        mult = rs + (1 - rs) * torch.sqrt(1 - a2)
        h = a * (1 - rs) * h + u * gi * mult
        ys.append(h)
    return torch.stack(ys, dim=1), hist, h


def _check_out(outs, inputs) -> None:
    def overlaps(p, q):
        ps, pe = p.data_ptr(), p.data_ptr() + p.numel() * p.element_size()
        qs, qe = q.data_ptr(), q.data_ptr() + q.numel() * q.element_size()
        return ps < qe and qs < pe
    y, cs_out, h_out = outs
    own = {"conv_state_out": "conv_state", "h_state_out": "h_state"}
    for oname, o in (("y", y), ("conv_state_out", cs_out), ("h_state_out", h_out)):
        for iname, t in zip(_INPUTS, inputs):
            if own.get(oname) == iname:
                if overlaps(o, t) and o.data_ptr() != t.data_ptr():
                    raise ValueError(f"rglru_step: {oname} must be {iname} itself or not overlap it")
            elif overlaps(o, t):
                raise ValueError(f"rglru_step: {oname} must not alias input {iname}")
    if overlaps(y, cs_out) or overlaps(y, h_out) or overlaps(cs_out, h_out):
        raise ValueError("rglru_step: outputs y, conv_state_out, h_state_out must not alias each other")


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(*args):
    y, c, h = reference(*args)
    return y.contiguous(), c.contiguous(), h.contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state, *, y, conv_state_out,
         h_state_out):
    args = (x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state)
    _check_out((y, conv_state_out, h_state_out), args)
    y_, c_, h_ = reference(*args)
    y.resize_(y_.shape).copy_(y_)
    conv_state_out.resize_(c_.shape).copy_(c_)
    h_state_out.resize_(h_.shape).copy_(h_)
    return y, conv_state_out, h_state_out


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state):
    return torch.empty_like(x), torch.empty_like(conv_state), torch.empty_like(h_state)


# ---- ONNX: a node `edgekit::RglruStep` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def RglruStep(x: FLOAT, reset: FLOAT, conv_w: FLOAT, conv_b: FLOAT, gate_w: FLOAT, gate_b: FLOAT,
              log_a: FLOAT, conv_state: FLOAT, h_state: FLOAT) -> tuple[FLOAT, FLOAT, FLOAT]:
    """Any T: the update in an ONNX Loop over t."""
    ax1 = op.Constant(value_ints=[1])
    ax2 = op.Constant(value_ints=[2])
    axl = op.Constant(value_ints=[-1])
    zero = op.Constant(value_ints=[0])
    big = op.Constant(value_ints=[9223372036854775807])
    one = op.Constant(value_float=1.0)
    two = op.Constant(value_float=2.0)
    taps = op.Transpose(conv_w, perm=[1, 0])                            # (D, K)
    Hs = op.Shape(gate_w, start=0, end=1)
    Ws = op.Shape(gate_w, start=1, end=2)
    W2 = op.Shape(gate_w, start=2, end=3)
    Bs = op.Shape(x, start=0, end=1)
    gshape = op.Concat(Bs, Hs, ax1, Ws, axis=0)                         # (B, H, 1, W)
    T = op.Shape(x, start=1, end=2)
    hist = conv_state
    h = h_state
    y = op.Slice(x, zero, zero, ax1)                                    # (B, 0, D)
    for t in range(op.Squeeze(T)):
        t1 = op.Unsqueeze(t, zero)
        t2 = op.Add(t1, op.Constant(value_ints=[1]))
        xt = op.Squeeze(op.Slice(x, t1, t2, ax1), ax1)                  # (B, D)
        win = op.Concat(hist, op.Unsqueeze(xt, axl), axis=-1)           # (B, D, K)
        u = op.Add(op.ReduceSum(op.Mul(win, taps), axl, keepdims=0), conv_b)
        hist = op.Slice(win, ax1, big, ax2)
        g = op.Add(op.Squeeze(op.MatMul(op.Reshape(u, gshape), gate_w), ax2), gate_b)
        gi = op.Reshape(op.Sigmoid(op.Slice(g, zero, Ws, axl)), op.Shape(u))
        gr = op.Reshape(op.Sigmoid(op.Slice(g, Ws, W2, axl)), op.Shape(u))
        la = op.Mul(log_a, gr)
        a = op.Exp(la)
        mult0 = op.Sqrt(op.Sub(one, op.Exp(op.Mul(two, la))))
        rs = op.Slice(reset, t1, t2, ax1)                               # (B, 1)
        keep = op.Sub(one, rs)
        mult = op.Add(rs, op.Mul(keep, mult0))
        h = op.Add(op.Mul(op.Mul(a, keep), h), op.Mul(op.Mul(u, gi), mult))
        y = op.Concat(y, op.Unsqueeze(h, ax1), axis=1)
    return y, hist, h


@onnxscript.script(_opset, default_opset=op)
def RglruStepT1(x: FLOAT, reset: FLOAT, conv_w: FLOAT, conv_b: FLOAT, gate_w: FLOAT, gate_b: FLOAT,
                log_a: FLOAT, conv_state: FLOAT, h_state: FLOAT) -> tuple[FLOAT, FLOAT, FLOAT]:
    """T = 1 (the step graph): straight-line, no loop."""
    ax1 = op.Constant(value_ints=[1])
    ax2 = op.Constant(value_ints=[2])
    axl = op.Constant(value_ints=[-1])
    zero = op.Constant(value_ints=[0])
    big = op.Constant(value_ints=[9223372036854775807])
    one = op.Constant(value_float=1.0)
    two = op.Constant(value_float=2.0)
    taps = op.Transpose(conv_w, perm=[1, 0])                            # (D, K)
    Hs = op.Shape(gate_w, start=0, end=1)
    Ws = op.Shape(gate_w, start=1, end=2)
    W2 = op.Shape(gate_w, start=2, end=3)
    Bs = op.Shape(x, start=0, end=1)
    gshape = op.Concat(Bs, Hs, ax1, Ws, axis=0)                         # (B, H, 1, W)
    x1 = op.Squeeze(x, ax1)                                             # (B, D)
    win = op.Concat(conv_state, op.Unsqueeze(x1, axl), axis=-1)         # (B, D, K)
    u = op.Add(op.ReduceSum(op.Mul(win, taps), axl, keepdims=0), conv_b)
    hist = op.Slice(win, ax1, big, ax2)
    g = op.Add(op.Squeeze(op.MatMul(op.Reshape(u, gshape), gate_w), ax2), gate_b)  # (B, H, 2W)
    gi = op.Reshape(op.Sigmoid(op.Slice(g, zero, Ws, axl)), op.Shape(u))
    gr = op.Reshape(op.Sigmoid(op.Slice(g, Ws, W2, axl)), op.Shape(u))
    la = op.Mul(log_a, gr)
    a = op.Exp(la)
    mult0 = op.Sqrt(op.Sub(one, op.Exp(op.Mul(two, la))))
    rs = reset                                                          # (B, 1)
    keep = op.Sub(one, rs)
    mult = op.Add(rs, op.Mul(keep, mult0))
    h = op.Add(op.Mul(op.Mul(a, keep), h_state), op.Mul(op.Mul(u, gi), mult))
    y = op.Unsqueeze(h, ax1)                                            # (B, 1, D)
    return y, hist, h


INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=RglruStep,
                       onnx_step_function=RglruStepT1,
                       cpp_kernel=f"{NAME}.out", state_args=(7, 8), validate=validate))
