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

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "rglru_step"

def reference(x, reset, conv_w, conv_b, gate_w, gate_b, log_a, conv_state, h_state):
    """Plain loop over T, straight from the equations above. Also the decomposed export path."""
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


def sample_inputs(T: int, seed: int = 0, B: int = 2, D: int = 20, H: int = 4, K: int = 4,
                  reset_first: bool = True):
    """Inputs shaped like Griffin makes them: log a = -8·softplus(Λ) = 8·log(a0) with a0 in
    (0.9, 0.999) as the reference initializes Λ; a reset at the first step of batch row 0.
    W = 5 and D = 20 reach the kernel's scalar tails."""
    g = torch.Generator().manual_seed(seed)
    W = D // H
    x = torch.randn(B, T, D, generator=g)
    reset = torch.zeros(B, T)
    if reset_first:
        reset[0, 0] = 1.0
    a = 0.9 + 0.099 * torch.rand(D, generator=g)
    log_a = 8 * torch.log(a)
    return (x, reset, torch.randn(K, D, generator=g) * 0.5, torch.randn(D, generator=g) * 0.1,
            torch.randn(H, W, 2 * W, generator=g) / W ** 0.5, torch.randn(H, 2 * W, generator=g) * 0.3,
            log_a, torch.randn(B, D, K - 1, generator=g), torch.randn(B, D, generator=g))


# ---- ONNX: a node `edgekit::RglruStep` whose model-local function body stock ORT inlines ----
@onnx_body
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


@onnx_body
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


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "B T D"), Arg("reset", "B T"), Arg("conv_w", "K D"), Arg("conv_b", "D"),
            Arg("gate_w", "H W 2*W", form="(H, W, 2W)"), Arg("gate_b", "H 2*W", form="(H, 2W)"), Arg("log_a", "D"),
            Arg("conv_state", "B D K-1", form="(B, D, K-1)"), Arg("h_state", "B D")),
    outputs=(Arg("y", "B T D"), Arg("conv_state_out", "B D K-1", form="(B, D, K-1)"), Arg("h_state_out", "B D")),
    constraints=(("K >= 1", "conv_w must have K >= 1 taps; got K = {K}"),
                 ("H * W == D", "gate_w must be (H, W, 2W) with H*W = D = {D}; got H = {H}, W = {W}")),
    state_args=(7, 8), reference=reference, sample_inputs=sample_inputs,
    onnx_function=RglruStep, onnx_step_function=RglruStepT1))
