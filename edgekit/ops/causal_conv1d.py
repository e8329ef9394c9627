"""`edgekit::causal_conv1d` — a depthwise causal convolution over time that carries its
last K inputs as state: the short conv in front of Mamba's and Mamba-2's SSM.

Dimensions: B batch, T time, C channels, K taps.

With u the inputs preceded by the state's K-1 newest columns (u_{-K+1} .. u_{-1}),

    y_t[c] = b[c] + Σ_k w[c, k] · u_{t-K+1+k}[c]          (k = 0 .. K-1, oldest tap first)

and the new state is the last K inputs (newest in column K-1): transformers' conv-cache
layout, so a state moves to and from its cache as is.

`edgekit::causal_conv1d_silu` is the same op followed by SiLU, y_t ← y_t · σ(y_t) (what
mamba_ssm's `causal_conv1d_update(..., activation="silu")` computes): Mamba's and Mamba-2's
conv is always followed by it, and in an ExecuTorch step a separate SiLU is one XNNPACK
delegate call of ~20 µs (edgekit/ops/add_rms_norm.py). Same inputs, outputs and state.

Inputs: x (B, T, C); w (C, K); b (C,); state (B, C, K); float32.
Outputs: y (B, T, C), state_out (B, C, K), float32.

The `.out` overload may update the state in place (state_out is state). Any other overlap
of outputs and inputs is rejected.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "causal_conv1d"
NAME_SILU = "causal_conv1d_silu"

MAX_TAPS = 64   # the C++ kernel keeps a window in registers (kMaxTaps)


def reference(x, w, b, state):
    """The decomposed export path. T = 1 (decode) is one shift-in and one multiply-reduce;
    T > 1 is K shifted multiply-adds over the inputs with the state in front."""
    return _conv(x, w, b, state)


def composite_silu(x, w, b, state):
    """`causal_conv1d_silu` as the `causal_conv1d` op, then SiLU (a graph without the conv+SiLU
    fusion keeps the conv as its own op: ONNX, ExecuTorch with decomposed glue)."""
    y, s = torch.ops.edgekit.causal_conv1d(x, w, b, state)
    return torch.nn.functional.silu(y), s


def reference_silu(x, w, b, state):
    """`causal_conv1d_silu`: the conv, then y · σ(y)."""
    y, s = _conv(x, w, b, state)
    return torch.nn.functional.silu(y), s


def _conv(x, w, b, state):
    B_, T, C = x.shape
    K = w.shape[1]
    if T == 1:
        window = torch.cat([state[:, :, 1:], x.reshape(B_, C, 1)], dim=-1)          # (B, C, K)
        return ((window * w).sum(-1) + b).reshape(B_, 1, C), window
    u = torch.cat([state.transpose(1, 2)[:, 1:], x], dim=1)                        # (B, K-1+T, C)
    y = u[:, 0:T] * w[:, 0]
    for k in range(1, K):
        y = y + u[:, k:k + T] * w[:, k]
    return y + b, u[:, T - 1:].transpose(1, 2)


def sample_inputs(T: int, seed: int = 0, B: int = 2, C: int = 21, K: int = 3):
    """K = 3 and C = 21 reach the kernel's tap and channel tails."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, C, generator=g), torch.randn(C, K, generator=g),
            torch.randn(C, generator=g), torch.randn(B, C, K, generator=g))


def _spec(name: str, **kw) -> OpInfo:
    return OpInfo(
        name=name,
        inputs=(Arg("x", "B T C"), Arg("w", "C K"), Arg("b", "C"), Arg("state", "B C K")),
        outputs=(Arg("y", "B T C"), Arg("state_out", "B C K")),
        constraints=(("K >= 1", "w must have K >= 1 taps; got K = {K}"),
                     (f"K <= {MAX_TAPS}", f"w has K = {{K}} taps; this kernel supports up to {MAX_TAPS}")),
        state_args=(3,), sample_inputs=sample_inputs, **kw)


# ---- ONNX: a node `edgekit::CausalConv1d` whose model-local function body stock ORT inlines ----
@onnx_body
def CausalConv1d(x: FLOAT, w: FLOAT, b: FLOAT, state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """Any T: a Loop over the K taps of the inputs with the state in front."""
    ax1 = op.Constant(value_ints=[1])
    zero = op.Constant(value_ints=[0])
    T = op.Shape(x, start=1, end=2)
    K = op.Shape(w, start=1, end=2)
    u = op.Concat(op.Slice(op.Transpose(state, perm=[0, 2, 1]), ax1, K, ax1), x, axis=1)   # (B, K-1+T, C)
    y = op.Mul(x, op.Constant(value_float=0.0))
    for k in range(op.Squeeze(K)):
        k1 = op.Unsqueeze(k, zero)
        tap = op.Squeeze(op.Slice(w, k1, op.Add(k1, ax1), ax1), ax1)                     # (C,)
        y = op.Add(y, op.Mul(op.Slice(u, k1, op.Add(k1, T), ax1), tap))
    y = op.Add(y, b)
    total = op.Shape(u, start=1, end=2)
    S = op.Transpose(op.Slice(u, op.Sub(total, K), total, ax1), perm=[0, 2, 1])          # (B, C, K)
    return y, S


@onnx_body
def CausalConv1dT1(x: FLOAT, w: FLOAT, b: FLOAT, state: FLOAT) -> tuple[FLOAT, FLOAT]:
    """T = 1 (the step graph): shift the new column in, one multiply-reduce."""
    S = op.Concat(op.Slice(state, op.Constant(value_ints=[1]), op.Constant(value_ints=[2**62]),
                           op.Constant(value_ints=[2])),
                  op.Transpose(x, perm=[0, 2, 1]), axis=2)                                # (B, C, K)
    y = op.Add(op.Transpose(op.ReduceSum(op.Mul(S, w), op.Constant(value_ints=[2]), keepdims=1),
                            perm=[0, 2, 1]), b)
    return y, S


class ThenSilu:
    """An ONNX function body made from another: `body`'s nodes, then y ← y · σ(y) on its
    first output, under the op type `name` (so the conv is written once, above)."""

    def __init__(self, body, name: str):
        self.body, self.name = body, name

    def to_function_proto(self):
        from onnx import FunctionProto, helper
        fp = FunctionProto()
        fp.CopyFrom(self.body.to_function_proto())     # a copy: never edit the body's own proto
        fp.name = self.name
        y = fp.output[0]
        pre = f"{y}_before_silu"
        for node in fp.node:                      # top-level nodes: y's producer (and any reader)
            node.output[:] = [pre if o == y else o for o in node.output]
            node.input[:] = [pre if i == y else i for i in node.input]
        fp.node.extend([helper.make_node("Sigmoid", [pre], [f"{pre}_sigmoid"]),
                        helper.make_node("Mul", [pre, f"{pre}_sigmoid"], [y])])
        return fp


INFO = register(_spec(NAME, reference=reference, onnx_function=CausalConv1d, onnx_step_function=CausalConv1dT1))
INFO_SILU = register(_spec(NAME_SILU, reference=reference_silu, composite=composite_silu,
                                 onnx_function=ThenSilu(CausalConv1d, "CausalConv1dSilu"),
                                 onnx_step_function=ThenSilu(CausalConv1dT1, "CausalConv1dSilu")))
