"""`edgekit::softplus_bias` — the SSM step size Δ = softplus(dt + bias), one call.

Dimensions: C channels (Mamba: d_inner; Mamba-2: heads).

    y = softplus(x + b) = log(1 + e^(x + b)),   b broadcast over the leading dims

(Mamba's Δ = softplus(Parameter + Linear(x)), arXiv:2312.00752, Alg. 2 and §3.6; mamba_ssm
passes the dt_proj bias to its kernels as `delta_bias` with `delta_softplus=True` the same
way.) Computed as max(v, 0) + log1p(e^-|v|), v = x + b, for every float32 v: no overflow,
and log1p by Goldberg's correction, as models/layers.py `softplus`.

Not a recurrence: like `add_rms_norm` (whose docstring says why), it replaces one XNNPACK
delegate call per Mamba / Mamba-2 block in `.pte` exports with `--ops fused`.

Inputs: x (..., C); b (C,); float32. Output: y (..., C). The `.out` overload rejects an
output that overlaps an input.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "softplus_bias"

def reference(x, b):
    return torch.nn.functional.softplus(x + b)


def sample_inputs(T: int, seed: int = 0, B: int = 2, C: int = 37):
    """Pre-activations spanning softplus's linear, curved and vanishing ranges; C = 37
    reaches the kernel's scalar tail."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=g) * 8, torch.randn(C, generator=g)


# ---- ONNX: a node `edgekit::SoftplusBias` whose model-local function body stock ORT inlines ----
@onnx_body
def SoftplusBias(x: FLOAT, b: FLOAT) -> FLOAT:
    return op.Softplus(op.Add(x, b))


INFO = register(OpInfo(
    name=NAME, inputs=(Arg("x", "... C"), Arg("b", "C")), outputs=(Arg("y", "... C"),),
    reference=reference, composite=reference, sample_inputs=sample_inputs, onnx_function=SoftplusBias))
