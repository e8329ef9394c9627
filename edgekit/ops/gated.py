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

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register


def silu(a):
    return torch.nn.functional.silu(a)


def gelu_tanh(a):
    return torch.nn.functional.gelu(a, approximate="tanh")


def sample_inputs(T: int, seed: int = 0, B: int = 2, D: int = 37):
    """D = 37 reaches the kernel's scalar tail."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g) * 2, torch.randn(B, T, D, generator=g)


def _define(name: str, act, onnx_function) -> OpInfo:
    """Spec and registration of `name(a, b) = act(a) · b`."""
    def reference(a, b):
        return act(a) * b

    return register(OpInfo(
        name=name, inputs=(Arg("a", "..."), Arg("b", "...", form="the shape of a")), outputs=(Arg("y", "..."),),
        reference=reference, composite=reference, sample_inputs=sample_inputs, onnx_function=onnx_function))


# ---- ONNX: nodes `edgekit::SiluMul` / `edgekit::GeluTanhMul` with model-local bodies ----
@onnx_body
def SiluMul(a: FLOAT, b: FLOAT) -> FLOAT:
    return op.Mul(op.Mul(a, op.Sigmoid(a)), b)


@onnx_body
def GeluTanhMul(a: FLOAT, b: FLOAT) -> FLOAT:
    return op.Mul(op.Gelu(a, approximate="tanh"), b)


SILU_MUL = _define("silu_mul", silu, SiluMul)
GELU_TANH_MUL = _define("gelu_tanh_mul", gelu_tanh, GeluTanhMul)
