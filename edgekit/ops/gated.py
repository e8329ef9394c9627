"""`edgekit::silu_mul` and `edgekit::gelu_tanh_mul` — an activated gate times a value, one call.

    silu_mul(a, b)      = silu(a) · b          = a · σ(a) · b                 (Mamba's y · silu(z))
    gelu_tanh_mul(a, b) = gelu_tanh(a) · b     = a · σ(2u) · b,  u = √(2/π) (a + 0.044715 a³)
                                                 (Hawk's GeGLU MLP and its recurrent block's gate)

gelu_tanh is 0.5 a (1 + tanh(u)) (Hendrycks & Gimpel, arXiv:1606.08415, §2, the tanh
approximation; transformers' `gelu_pytorch_tanh`), and 0.5 (1 + tanh(u)) = σ(2u) exactly,
which is the form the kernel computes (one exp, no cancellation near u = 0).

Not recurrences: they are the elementwise glue between two GEMVs that would otherwise be
one XNNPACK delegate call of ~20-25 µs each in an ExecuTorch step (edgekit/ops/add_rms_norm.py
says why that matters). `.pte` exports with `--ops fused` keep them (passes fuse_silu_mul, fuse_gelu_tanh_mul);
ONNX exports keep the stock nodes (ORT fuses Gelu and the multiply itself).

Inputs: a, b (...), the same shape, float32. Output: y, that shape. The `.out` overloads
reject an output that overlaps an input.
"""

from __future__ import annotations

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, impl_one_output, register

def silu(a):
    return torch.nn.functional.silu(a)


def gelu_tanh(a):
    return torch.nn.functional.gelu(a, approximate="tanh")


def validate_for(name: str):
    def validate(a, b) -> None:
        """Shape/dtype contract. The C++ kernel (kernels/gated.cpp) uses the same words."""
        if a.dtype != torch.float32:
            raise ValueError(f"{name}: a must be float32; got {tuple(a.shape)} {a.dtype}")
        if tuple(b.shape) != tuple(a.shape) or b.dtype != torch.float32:
            raise ValueError(f"{name}: b must be the shape of a = {tuple(a.shape)} float32; "
                             f"got {tuple(b.shape)} {b.dtype}")
    return validate


def _define(name: str, act, onnx_function) -> OpInfo:
    """Schema, reference, impls and registration of `name(a, b) = act(a) · b`."""
    validate = validate_for(name)
    LIB.define(f"{name}(Tensor a, Tensor b) -> Tensor")
    LIB.define(f"{name}.out(Tensor a, Tensor b, *, Tensor(a!) y) -> Tensor(a!)")

    def reference(a, b):
        validate(a, b)
        return act(a) * b

    impl_one_output(name, ("a", "b"), reference)
    return register(OpInfo(name=name, reference=reference, composite=reference, onnx_function=onnx_function,
                           cpp_kernel=f"{name}.out", validate=validate))


# ---- ONNX: nodes `edgekit::SiluMul` / `edgekit::GeluTanhMul` with model-local bodies ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def SiluMul(a: FLOAT, b: FLOAT) -> FLOAT:
    return op.Mul(op.Mul(a, op.Sigmoid(a)), b)


@onnxscript.script(_opset, default_opset=op)
def GeluTanhMul(a: FLOAT, b: FLOAT) -> FLOAT:
    return op.Mul(op.Gelu(a, approximate="tanh"), b)


SILU_MUL = _define("silu_mul", silu, SiluMul)
GELU_TANH_MUL = _define("gelu_tanh_mul", gelu_tanh, GeluTanhMul)
