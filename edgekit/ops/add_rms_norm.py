"""`edgekit::add_rms_norm` — a pre-norm block's residual add and the next RMSNorm, in one call.

    h = x + r
    y = h / sqrt(mean(h², last dim) + eps) · w

x is the residual stream, r what the previous block adds to it; h is the new residual
stream, y the normalized input of the next block (or of the head, after the last block).

Not a recurrence. It exists because of what a decode step costs in ExecuTorch once the
GEMVs run at the memory floor: each XNNPACK delegate call costs ~20-25 µs however little it
computes (measured: dropping Mamba-2's 24 gated-norm calls saves 0.57 ms per token, paired
A/B), and the add + norm between two `edgekit::dense` calls is one such call per block.
As one C++ kernel it is one ~1 µs operator call. `.pte` exports with `--ops fused` use it
(models/layers.py `add_rms_norm`); ONNX exports keep the stock nodes, which ORT fuses into
SkipSimplifiedLayerNormalization / SimplifiedLayerNormalization itself.

Inputs: x, r (..., D), the same shape; w (D,); eps (1,); float32. Outputs: h, y (..., D).
The `.out` overload rejects outputs that overlap an input or each other.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "add_rms_norm"

def reference(x, r, w, eps):
    """The two equations above, in this order of operations (models/layers.py `rms_norm`)."""
    h = x + r
    return h, h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w


def sample_inputs(T: int, seed: int = 0, B: int = 2, D: int = 37):
    """D = 37 reaches the kernel's scalar tail."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g),
            1 + 0.1 * torch.randn(D, generator=g), torch.tensor([1e-5]))


# ---- ONNX: a node `edgekit::AddRmsNorm` whose model-local function body stock ORT inlines ----
@onnx_body
def AddRmsNorm(x: FLOAT, r: FLOAT, w: FLOAT, eps: FLOAT):
    """Add, then Pow, ReduceMean, Add, Sqrt, Div, Mul: the pattern ORT fuses into
    SimplifiedLayerNormalization."""
    h = op.Add(x, r)
    ms = op.ReduceMean(op.Pow(h, op.Constant(value_float=2.0)), op.Constant(value_ints=[-1]), keepdims=1)
    y = op.Mul(op.Div(h, op.Sqrt(op.Add(ms, eps))), w)
    return h, y


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "... D"), Arg("r", "... D", form="the shape of x"), Arg("w", "D"), Arg("eps", "1")),
    outputs=(Arg("h", "... D"), Arg("y", "... D")),
    reference=reference, composite=reference, sample_inputs=sample_inputs, onnx_function=AddRmsNorm))
