"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::softplus_bias` (Δ = softplus(x + b)), over T in
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
from op_battery import OpRunners

B, C = 2, 37
TS = [1, 5, 40]


def inputs(T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=g) * 4, torch.randn(C, generator=g)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("softplus_bias", tmp_path_factory.mktemp("op-spb"))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


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

