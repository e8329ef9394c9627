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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, register
from edgekit.ops.registry import overlaps

NAME = "add_rms_norm"

LIB.define(f"{NAME}(Tensor x, Tensor r, Tensor w, Tensor eps) -> (Tensor, Tensor)")
LIB.define(f"{NAME}.out(Tensor x, Tensor r, Tensor w, Tensor eps, *, Tensor(a!) h, Tensor(b!) y) "
           "-> (Tensor(a!), Tensor(b!))")

_INPUTS = ("x", "r", "w", "eps")


def validate(x, r, w, eps) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/add_rms_norm.cpp) uses the same words."""
    if x.dim() < 1 or x.dtype != torch.float32:
        raise ValueError(f"{NAME}: x must be (..., D) float32; got {tuple(x.shape)} {x.dtype}")
    D = x.shape[-1]
    for name, want, shape, t in (("r", "the shape of x", tuple(x.shape), r), ("w", "(D,)", (D,), w),
                                 ("eps", "(1,)", (1,), eps)):
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            raise ValueError(f"{NAME}: {name} must be {want} = {shape} float32; got {tuple(t.shape)} {t.dtype}")


def reference(x, r, w, eps):
    """The two equations above, in this order of operations (models/layers.py `rms_norm`)."""
    validate(x, r, w, eps)
    h = x + r
    return h, h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w


def check_out(h, y, inputs) -> None:
    """Aliasing contract of a `.out` call (same words in C++)."""
    for out_name, out in (("h", h), ("y", y)):
        for name, t in zip(_INPUTS, inputs):
            if overlaps(out, t):
                raise ValueError(f"{NAME}: {out_name} must not alias input {name}")
    if overlaps(h, y):
        raise ValueError(f"{NAME}: h must not alias y")


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(x, r, w, eps):
    h, y = reference(x, r, w, eps)
    return h.contiguous(), y.contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(x, r, w, eps, *, h, y):
    check_out(h, y, (x, r, w, eps))
    h_ref, y_ref = reference(x, r, w, eps)
    h.resize_(h_ref.shape).copy_(h_ref)
    y.resize_(y_ref.shape).copy_(y_ref)
    return h, y


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(x, r, w, eps):
    return torch.empty_like(x), torch.empty_like(x)


# ---- ONNX: a node `edgekit::AddRmsNorm` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def AddRmsNorm(x: FLOAT, r: FLOAT, w: FLOAT, eps: FLOAT):
    """Add, then Pow, ReduceMean, Add, Sqrt, Div, Mul: the pattern ORT fuses into
    SimplifiedLayerNormalization."""
    h = op.Add(x, r)
    ms = op.ReduceMean(op.Pow(h, op.Constant(value_float=2.0)), op.Constant(value_ints=[-1]), keepdims=1)
    y = op.Mul(op.Div(h, op.Sqrt(op.Add(ms, eps))), w)
    return h, y


INFO = register(OpInfo(name=NAME, reference=reference, composite=reference, onnx_function=AddRmsNorm,
                       cpp_kernel=f"{NAME}.out", validate=validate))
