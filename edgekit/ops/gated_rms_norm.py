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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, impl_one_output, register

NAME = "gated_rms_norm"

LIB.define(f"{NAME}(Tensor y, Tensor z, Tensor w, Tensor eps) -> Tensor")
LIB.define(f"{NAME}.out(Tensor y, Tensor z, Tensor w, Tensor eps, *, Tensor(a!) out) -> Tensor(a!)")

_INPUTS = ("y", "z", "w", "eps")


def validate(y, z, w, eps) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/gated_rms_norm.cpp) uses the same words."""
    if y.dim() < 1 or y.dtype != torch.float32:
        raise ValueError(f"{NAME}: y must be (..., D) float32; got {tuple(y.shape)} {y.dtype}")
    if tuple(z.shape) != tuple(y.shape) or z.dtype != torch.float32:
        raise ValueError(f"{NAME}: z must be the shape of y = {tuple(y.shape)} float32; got {tuple(z.shape)} {z.dtype}")
    D = y.shape[-1]
    if w.dim() != 2 or w.shape[0] * w.shape[1] != D or w.dtype != torch.float32:
        raise ValueError(f"{NAME}: w must be (G, S) float32 with G * S = D = {D}; got {tuple(w.shape)} {w.dtype}")
    if tuple(eps.shape) != (1,) or eps.dtype != torch.float32:
        raise ValueError(f"{NAME}: eps must be (1,) float32; got {tuple(eps.shape)} {eps.dtype}")


def reference(y, z, w, eps):
    """The equations above (models/layers.py `rms_norm` per group)."""
    validate(y, z, w, eps)
    G, S = w.shape
    g = (y * torch.nn.functional.silu(z)).reshape(*y.shape[:-1], G, S)                  # (..., G, S)
    out = g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + eps) * w
    return out.reshape(y.shape)


impl_one_output(NAME, _INPUTS, reference, out="out")


# ---- ONNX: a node `edgekit::GatedRmsNorm` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def GatedRmsNorm(y: FLOAT, z: FLOAT, w: FLOAT, eps: FLOAT) -> FLOAT:
    g = op.Mul(y, op.Mul(z, op.Sigmoid(z)))
    lead = op.Shape(y, start=0, end=-1)
    grouped = op.Reshape(g, op.Concat(lead, op.Shape(w), axis=0))                        # (..., G, S)
    ms = op.ReduceMean(op.Pow(grouped, op.Constant(value_float=2.0)), op.Constant(value_ints=[-1]), keepdims=1)
    out = op.Mul(op.Div(grouped, op.Sqrt(op.Add(ms, eps))), w)
    return op.Reshape(out, op.Shape(y))


INFO = register(OpInfo(name=NAME, reference=reference, composite=reference, onnx_function=GatedRmsNorm,
                       cpp_kernel=f"{NAME}.out", validate=validate))
