"""STYLE.md §5 battery for `edgekit::ssd_step` (Mamba-2 SSD, scalar A per head), over T in
{1, small, long} and n_groups G in {1, 2}: native kernels (ExecuTorch C++, ONNX function
body in ORT) vs the plain reference; split-and-carry equals one call; prefill then single
steps equals a full forward; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops.ssd_step import reference
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, et_matches_at_1_and_2_threads,
                        OpRunners, prefill_then_steps, split_and_carry)

BATTERY_OPS = ("ssd_step",)  # read by test_registry.py
B, H, P, N = 2, 4, 8, 16
TS = [1, 5, 40]
SLICED = (True, True, False, True, True, False)    # x, dt, A, Bm, C, D: which have a T axis


def inputs(T, seed=0, B=B, G=2, H=H):
    """Inputs shaped like Mamba-2 makes them: Δ = softplus(·) > 0, A = -exp(A_log) < 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, P, generator=g)
    dt = F.softplus(torch.randn(B, T, H, generator=g) - 1)
    A = -torch.exp(torch.rand(H, generator=g) * 2)
    Bm, C = torch.randn(B, T, G, N, generator=g), torch.randn(B, T, G, N, generator=g)
    Dp = torch.randn(H, generator=g)
    state = torch.randn(B, H, P, N, generator=g) * 0.5
    return x, dt, A, Bm, C, Dp, state


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("ssd_step", tmp_path_factory.mktemp("op-ssd"))


@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, G, runners):
    args = inputs(T, G=G)
    y_ref, s_ref = reference(*args)
    for name, run in runners.all().items():
        y, s = run(*args)
        assert close(y, y_ref) and close(s, s_ref), name


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


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    assert split_and_carry(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert prefill_then_steps(runners, inputs(T + 4, seed=2, G=1), T, 4, SLICED)


def test_bad_shapes_rejected():
    x, dt, A, Bm, C, Dp, s = inputs(2)
    with pytest.raises(ValueError, match=r"ssd_step: state must be \(B, H, P, N\)"):
        torch.ops.edgekit.ssd_step(x, dt, A, Bm, C, Dp, s[..., :8])
    with pytest.raises(ValueError, match=r"ssd_step: C must be \(B, T, G, N\)"):
        torch.ops.edgekit.ssd_step(x, dt, A, Bm, C[..., :8], Dp, s)
    with pytest.raises(ValueError, match=r"ssd_step: groups G = 3 must divide heads H = 4"):
        torch.ops.edgekit.ssd_step(x, dt, A, torch.zeros(B, 2, 3, N), torch.zeros(B, 2, 3, N), Dp, s)
    with pytest.raises(ValueError, match="float32"):
        torch.ops.edgekit.ssd_step(x, dt.double(), A, Bm, C, Dp, s)


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = [*args[:-1], torch.zeros(B, H, P, N // 2)]
    cpp_kernel_refuses_like_python("ssd_step", args, bad, dynamic_dim(args, {6: 3}), tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    x, dt, A, Bm, C, Dp, s = inputs(3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.ssd_step.out(x, dt, A, Bm, C, Dp, s, y=x, state_out=torch.empty_like(s))
    with pytest.raises(ValueError, match="state_out must not alias input Bm"):
        torch.ops.edgekit.ssd_step.out(x, dt, A, Bm, C, Dp, s, y=y, state_out=Bm)
    y_ref, s_ref = reference(x, dt, A, Bm, C, Dp, s)
    s_live = s.clone()
    torch.ops.edgekit.ssd_step.out(x, dt, A, Bm, C, Dp, s_live, y=y, state_out=s_live)
    assert close(y, y_ref) and close(s_live, s_ref)
