"""`edgekit::gated_rms_norm` — Mamba-2's gated RMSNorm over groups, in one call.

Dimensions: D the width, G groups (n_groups), S = D / G the group size.

    g = y · silu(z)                                   (..., D)
    out[..., j·S:(j+1)·S] = g_j / sqrt(mean(g_j²) + eps) · w[j]      for each group j

(arXiv:2405.21060, §7.1: the extra normalization before the output projection, per group
for tensor parallelism; transformers' `MambaRMSNormGated` with norm_before_gate=False.)

Not a recurrence: like `add_rms_norm` (whose docstring says why), it replaces one XNNPACK
delegate call per Mamba-2 block in `.pte` exports with `--ops fused`.

Inputs: y, z (..., D), the same shape; w (G, S) with G · S = D (the norm weight, one row per
group); eps (1,); float32. Output: out (..., D). The `.out` overload rejects an output that
overlaps an input.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "gated_rms_norm"

def reference(y, z, w, eps):
    """The equations above (models/layers.py `rms_norm` per group)."""
    G, S = w.shape
    g = (y * torch.nn.functional.silu(z)).reshape(*y.shape[:-1], G, S)                  # (..., G, S)
    out = g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + eps) * w
    return out.reshape(y.shape)


def sample_inputs(T: int, seed: int = 0, B: int = 2, G: int = 3, S: int = 13):
    """Three groups of S = 13 (D = 39): the kernel's scalar tail in every group."""
    g = torch.Generator().manual_seed(seed)
    D = G * S
    return (torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g),
            1 + 0.1 * torch.randn(G, S, generator=g), torch.tensor([1e-5]))


# ---- ONNX: a node `edgekit::GatedRmsNorm` whose model-local function body stock ORT inlines ----
@onnx_body
def GatedRmsNorm(y: FLOAT, z: FLOAT, w: FLOAT, eps: FLOAT) -> FLOAT:
    g = op.Mul(y, op.Mul(z, op.Sigmoid(z)))
    lead = op.Shape(y, start=0, end=-1)
    grouped = op.Reshape(g, op.Concat(lead, op.Shape(w), axis=0))                        # (..., G, S)
    ms = op.ReduceMean(op.Pow(grouped, op.Constant(value_float=2.0)), op.Constant(value_ints=[-1]), keepdims=1)
    out = op.Mul(op.Div(grouped, op.Sqrt(op.Add(ms, eps))), w)
    return op.Reshape(out, op.Shape(y))


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("y", "... D"), Arg("z", "... D", form="the shape of y"), Arg("w", "G S"), Arg("eps", "1")),
    outputs=(Arg("out", "... D"),),
    constraints=(("G * S == D", "w must be (G, S) with G * S = D = {D}; got G = {G}, S = {S}"),),
    reference=reference, composite=reference, sample_inputs=sample_inputs, onnx_function=GatedRmsNorm))
