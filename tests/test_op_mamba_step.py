"""STYLE.md §5 battery for `edgekit::mamba_step`, over T in {1, small, long}: native kernels
(ExecuTorch C++, ONNX function body in ORT) vs the plain reference; split-and-carry equals
one call; prefill then single steps equals a full forward; bad shapes and aliased outputs
rejected. The runners and shared checks are in tests/op_battery.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops.mamba_step import reference
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, et_matches_at_1_and_2_threads,
                        OpRunners, prefill_then_steps, rows_prefill_then_steps, rows_split_equals_whole,
                        split_and_carry)

BATTERY_OPS = ("mamba_step",)  # read by test_registry.py
B, D, N = 2, 24, 16
TS = [1, 5, 40]


def inputs(T, seed=0, B=B, D=D):
    """Inputs shaped like Mamba makes them: Δ = softplus(·) in (0, ~1), A = -exp(A_log) < 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    dt = F.softplus(torch.randn(B, T, D, generator=g) - 2)
    A = -torch.exp(torch.rand(D, N, generator=g) * 2)
    Bm, C = torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g)
    Dp = torch.randn(D, generator=g)
    state = torch.randn(B, D, N, generator=g) * 0.5
    return x, dt, A, Bm, C, Dp, state


SLICED = (True, True, False, True, True, False)    # x, dt, A, Bm, C, D: which have a T axis


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("mamba_step", tmp_path_factory.mktemp("op-mamba"))


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, runners):
    args = inputs(T)
    y_ref, s_ref = reference(*args)
    for name, run in runners.all().items():
        y, s = run(*args)
        assert close(y, y_ref) and close(s, s_ref), name


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


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    assert split_and_carry(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


def test_bad_shapes_rejected():
    x, dt, A, Bm, C, Dp, s = inputs(2)
    with pytest.raises(ValueError, match=r"mamba_step: state must be \(B, D, N\)"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm, C, Dp, s[..., :8])
    with pytest.raises(ValueError, match=r"mamba_step: Bm must be \(B, T, N\)"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm[..., :8], C, Dp, s)
    with pytest.raises(ValueError, match=r"mamba_step: D must be \(D,\) = \(24,\) float32"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm, C, Dp[:3], s)
    with pytest.raises(ValueError, match="float32"):
        torch.ops.edgekit.mamba_step(x.double(), dt, A, Bm, C, Dp, s)


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = [*args[:-1], torch.zeros(B, D, N // 2)]
    cpp_kernel_refuses_like_python("mamba_step", args, bad, dynamic_dim(args, {6: 2}), tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    x, dt, A, Bm, C, Dp, s = inputs(3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s, y=x, state_out=torch.empty_like(s))
    with pytest.raises(ValueError, match="state_out must not alias input A"):
        torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s, y=y, state_out=A)
    y_ref, s_ref = reference(x, dt, A, Bm, C, Dp, s)
    s_live = s.clone()
    torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s_live, y=y, state_out=s_live)
    assert close(y, y_ref) and close(s_live, s_ref)
