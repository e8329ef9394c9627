"""STYLE.md §5 battery for `edgekit::softplus_bias` (Δ = softplus(x + b)), over T in
{1, small, long} and a width with a scalar tail: the C++ ExecuTorch kernel and the ONNX
function body in ORT vs the plain reference (torch's softplus, what transformers' Mamba and
Mamba-2 call); the kernel's vector form (exp, log by polynomial, Goldberg's log1p) over the
whole float range against float64; no state, so "split and carry" and "prefill then steps"
check that rows are independent; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from edgekit.ops.softplus_bias import reference
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, OpRunners,
                        rows_prefill_then_steps, rows_split_equals_whole)

BATTERY_OPS = ("softplus_bias",)  # read by test_registry.py
B, C = 2, 37
TS = [1, 5, 40]
SLICED = (True, False)               # x, b: which have a T axis


def inputs(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=g) * 4, torch.randn(C, generator=g)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("softplus_bias", tmp_path_factory.mktemp("op-spb"), rank_of=(0,))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, runners):
    args = inputs(T)
    want = reference(*args)
    for name, run in runners.all().items():
        assert close(_y(run(*args)), want), name


def test_kernel_within_a_few_ulp_of_float64(runners):
    """Every region of softplus through the C++ kernel (8-wide and scalar tail): far negative
    (e^v, down to the smallest normals), around 0, large (v itself), and the float extremes;
    within 4 ulp of the float64 value; Inf -> Inf, -Inf -> 0, NaN -> NaN."""
    special = torch.tensor([float("inf"), float("-inf"), float("nan"), -1e30, 1e30, 3e38, -3e38, 0.0, -0.0])
    v = torch.cat([special, -torch.logspace(-8, np.log10(80.0), 400), torch.logspace(-8, np.log10(80.0), 400),
                   torch.linspace(-30, 30, 797)])            # 1606: all but the last 6 through the 8-wide loop
    x = v.float()[None, None]
    y = torch.as_tensor(_y(runners.et(x, torch.zeros(x.shape[-1]))))[0, 0]
    want = torch.nn.functional.softplus(x.double(), threshold=1e300)[0, 0]
    fin = torch.isfinite(want) & (want > 1e-37)
    ulp = (torch.nextafter(want[fin].float(), torch.tensor(float("inf"))) - want[fin].float()).double()
    err = ((y[fin].double() - want[fin]).abs() / ulp).max()
    print(f"softplus_bias kernel: max {float(err):.1f} ulp from float64")
    assert err <= 4, float(err)
    assert torch.isinf(y[0]) and y[0] > 0 and y[1] == 0 and torch.isnan(y[2])


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    """No state to carry: rows [0, cut) and [cut, T) in two calls equal one call."""
    assert not rows_split_equals_whole(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert not rows_prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


def test_bad_shapes_rejected():
    x, b = inputs(2)
    with pytest.raises(ValueError, match=r"softplus_bias: b must be \(C,\) = \(37,\) float32; got \(36,\)"):
        torch.ops.edgekit.softplus_bias(x, b[:36])
    with pytest.raises(ValueError, match=r"softplus_bias: x must be \(\.\.\., C\) float32; got .* torch.float64"):
        torch.ops.edgekit.softplus_bias(x.double(), b)


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    x, b = inputs(1)
    bad = [x, b[:36].contiguous()]
    cpp_kernel_refuses_like_python("softplus_bias", [x, b], bad, dynamic_dim([x, b], {1: 0}), tmp_path)


def test_aliased_output_rejected():
    x, b = inputs(3)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.softplus_bias.out(x, b, y=x)
    y = torch.empty_like(x)
    torch.ops.edgekit.softplus_bias.out(x, b, y=y)
    assert close(y, reference(x, b))
