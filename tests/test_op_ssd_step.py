"""`edgekit::ssd_step` beyond the registry's battery (tests/test_ops.py): the reference vs
the paper's per-head form in float64 for n_groups G in {1, 2}, and the head split over the
kernel pool at 12 heads in 3 groups."""

from __future__ import annotations

import pytest
import torch

from edgekit.ops import REGISTRY
from edgekit.ops.ssd_step import reference
from op_battery import close, et_matches_at_1_and_2_threads, OpRunners

H, P, N = 4, 8, 16


def inputs(T, seed=0, B=2, G=2, H=H):
    return REGISTRY["ssd_step"].sample_inputs(T, seed=seed, B=B, G=G, H=H, P=P, N=N)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("ssd_step", tmp_path_factory.mktemp("op-ssd"))


@pytest.mark.parametrize("T", [1, 5])
def test_kernel_split_over_threads_matches_reference(T, runners):
    """H = 12 splits the heads over the kernel pool (kernels/ssd_step.cpp: 4 per thread at
    least); with 1 and 2 threads the C++ kernel gives the reference's answer."""
    assert et_matches_at_1_and_2_threads(runners, inputs(T, seed=5, G=3, H=12), reference)


@pytest.mark.parametrize("G", [1, 2])
def test_reference_matches_paper_form(G):
    """The reference equals the per-head recurrence written out in float64, head h reading
    group h // (H / G)."""
    x, dt, A, Bm, C, Dp, S = inputs(3, seed=3, B=1, G=G)
    y, S_ref = reference(x, dt, A, Bm, C, Dp, S)
    S = S[0].double()
    for t in range(3):
        for h in range(H):
            g = h // (H // G)
            d = dt[0, t, h].double()
            S[h] = torch.exp(d * A[h].double()) * S[h] + d * torch.outer(x[0, t, h].double(), Bm[0, t, g].double())
            assert close(y[0, t, h], (S[h] @ C[0, t, g].double() + Dp[h] * x[0, t, h]).float())
    assert close(S_ref[0], S.float())

