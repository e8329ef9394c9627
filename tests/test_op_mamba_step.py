"""`edgekit::mamba_step` beyond the registry's battery (tests/test_ops.py): the reference vs
eq. (2a, 2b) written out in float64, NaN in A kept by the vectorized exp, and the channel
split over the kernel pool at a width that splits (D = 600)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.ops import REGISTRY
from edgekit.ops.mamba_step import reference
from op_battery import close, et_matches_at_1_and_2_threads, OpRunners

D = 24


def inputs(T, seed=0, B=2, D=D):
    return REGISTRY["mamba_step"].sample_inputs(T, seed=seed, B=B, D=D, N=16)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("mamba_step", tmp_path_factory.mktemp("op-mamba"))


def test_nan_in_a_propagates_like_the_reference(runners):
    """The kernel's vectorized exp keeps NaN (it does not clamp it to a tiny decay)."""
    args = list(inputs(1, seed=7))
    args[2] = args[2].clone()
    args[2][3, 5] = float("nan")                        # A[d=3, n=5]
    y_ref, _ = reference(*args)
    y, s = runners.et(*args)
    assert torch.isnan(y_ref[..., 3]).all() and np.isnan(np.asarray(y)[..., 3]).all()
    assert np.isfinite(np.delete(np.asarray(y), 3, axis=-1)).all()


@pytest.mark.parametrize("T", [1, 5])
def test_kernel_split_over_threads_matches_reference(T, runners):
    """D = 600 splits the channels over the kernel pool (kernels/mamba_step.cpp: 256 per
    thread at least); with 1 and 2 threads the C++ kernel gives the reference's answer."""
    assert et_matches_at_1_and_2_threads(runners, inputs(T, seed=5, D=600), reference)


def test_reference_matches_paper_form():
    """The reference equals eq. (2a, 2b) written out per channel in float64."""
    x, dt, A, Bm, C, Dp, h = inputs(3, seed=3, B=1)
    y, h_ref = reference(x, dt, A, Bm, C, Dp, h)
    h = h[0].double()
    for t in range(3):
        for d in range(D):
            h[d] = torch.exp(dt[0, t, d].double() * A[d].double()) * h[d] + \
                dt[0, t, d].double() * x[0, t, d].double() * Bm[0, t].double()
            assert abs(float(h[d] @ C[0, t].double() + Dp[d] * x[0, t, d]) - float(y[0, t, d])) < 1e-4
    assert close(h_ref[0], h.float())

