"""STYLE.md §5 battery for `edgekit::silu_mul` (silu(a) · b) and `edgekit::gelu_tanh_mul`
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
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, OpRunners,
                        rows_prefill_then_steps, rows_split_equals_whole)

BATTERY_OPS = ("silu_mul", "gelu_tanh_mul")  # read by test_registry.py
ORACLE_ACT = {"silu_mul": "silu", "gelu_tanh_mul": "gelu_pytorch_tanh"}
B, D = 2, 35
TS = [1, 5, 40]
SLICED = (True, True)                # a, b: which have a T axis


def inputs(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g) * 4, torch.randn(B, T, D, generator=g)


@pytest.fixture(scope="module", params=BATTERY_OPS)
def runners(request, tmp_path_factory):
    return OpRunners(request.param, tmp_path_factory.mktemp(f"op-{request.param}"), rank_of=(0,))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, runners):
    args = inputs(T)
    want = runners.info.reference(*args)
    for name, run in runners.all().items():
        assert close(_y(run(*args)), want), name


@pytest.mark.parametrize("op", BATTERY_OPS)
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


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    """No state to carry: rows [0, cut) and [cut, T) in two calls equal one call."""
    assert not rows_split_equals_whole(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert not rows_prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


@pytest.mark.parametrize("op", BATTERY_OPS)
def test_bad_shapes_rejected(op):
    a, b = inputs(2)
    fn = REGISTRY[op].torch_op
    with pytest.raises(ValueError, match=rf"{op}: b must be the shape of a = \(2, 2, 35\) float32; got \(2, 2, 34\)"):
        fn(a, b[..., :34])
    with pytest.raises(ValueError, match=rf"{op}: a must be float32; got \(2, 2, 35\) torch.float64"):
        fn(a.double(), b)


def test_bad_shapes_rejected_by_cpp_kernel(runners, tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    a, b = inputs(1)
    bad = [a, b[..., :34].contiguous()]
    cpp_kernel_refuses_like_python(runners.info.name, [a, b], bad, dynamic_dim([a, b], {1: b.dim() - 1}), tmp_path)


@pytest.mark.parametrize("op", BATTERY_OPS)
def test_aliased_output_rejected(op):
    a, b = inputs(3)
    out = getattr(torch.ops.edgekit, op).out
    with pytest.raises(ValueError, match="y must not alias input a"):
        out(a, b, y=a)
    y = torch.empty_like(a)
    out(a, b, y=y)
    assert close(y, REGISTRY[op].reference(a, b))
