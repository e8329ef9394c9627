"""STYLE.md §5 battery for `edgekit::causal_conv1d` and `edgekit::causal_conv1d_silu` (the
same, then SiLU), over T in {1, small, long} and K in
{1, 4}: native kernels (ExecuTorch C++, ONNX function bodies in ORT) vs the plain
reference; the reference vs torch's own depthwise Conv1d; split-and-carry equals one call;
prefill then single steps equals a full forward; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops import REGISTRY
from edgekit.ops.causal_conv1d import reference, reference_silu
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, OpRunners, prefill_then_steps,
                        split_and_carry)

BATTERY_OPS = ("causal_conv1d", "causal_conv1d_silu")  # read by test_registry.py
B, C = 2, 24
TS = [1, 5, 40]
SLICED = (True, False, False)      # x, w, b: which have a T axis


def inputs(T, seed=0, B=B, K=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, C, generator=g), torch.randn(C, K, generator=g),
            torch.randn(C, generator=g), torch.randn(B, C, K, generator=g))


@pytest.fixture(scope="module", params=BATTERY_OPS)
def runners(request, tmp_path_factory):
    return OpRunners(request.param, tmp_path_factory.mktemp(f"op-{request.param}"))


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, K, runners):
    args = inputs(T, K=K)
    y_ref, s_ref = runners.info.reference(*args)
    for name, run in runners.all().items():
        y, s = run(*args)
        assert close(y, y_ref) and close(s, s_ref), name


@pytest.mark.parametrize("T", TS)
def test_reference_matches_torch_conv1d(T):
    """From a zero state the op is torch's depthwise Conv1d with K-1 zeros of left padding
    (what transformers' Mamba runs for a prompt), and the state is the last K inputs."""
    x, w, b, _ = inputs(T, seed=3)
    K = w.shape[1]
    y, s = reference(x, w, b, torch.zeros(B, C, K))
    want = F.conv1d(F.pad(x.transpose(1, 2), (K - 1, 0)), w[:, None, :], b, groups=C).transpose(1, 2)
    assert close(y, want)
    assert close(s, F.pad(x.transpose(1, 2), (K - 1, 0))[:, :, -K:])


def test_silu_form_is_the_conv_then_silu():
    """causal_conv1d_silu = silu(causal_conv1d) with the same state (x large enough that
    both tails of the sigmoid are reached)."""
    x, w, b, s = inputs(6, seed=5)
    y, s1 = reference(x * 30, w, b, s)
    y_silu, s2 = reference_silu(x * 30, w, b, s)
    assert torch.equal(s1, s2)
    assert torch.equal(y_silu, F.silu(y))


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    assert split_and_carry(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


@pytest.mark.parametrize("op", BATTERY_OPS)
def test_bad_shapes_rejected(op):
    x, w, b, s = inputs(2)
    fn = REGISTRY[op].torch_op
    with pytest.raises(ValueError, match=rf"{op}: state must be \(B, C, K\) = \(2, 24, 4\)"):
        fn(x, w, b, s[..., :3])
    with pytest.raises(ValueError, match=rf"{op}: b must be \(C,\) = \(24,\) float32"):
        fn(x, w, b[:3], s)
    with pytest.raises(ValueError, match=rf"{op}: w must be \(C, K\) with K >= 1"):
        fn(x, w[:, :0], b, s)
    with pytest.raises(ValueError, match="float32"):
        fn(x.double(), w, b, s)


def test_bad_shapes_rejected_by_cpp_kernel(runners, tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = [*args[:-1], torch.zeros(B, C, 2)]
    cpp_kernel_refuses_like_python(runners.info.name, args, bad, dynamic_dim(args, {3: 2}), tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    x, w, b, s = inputs(3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.causal_conv1d.out(x, w, b, s, y=x, state_out=torch.empty_like(s))
    with pytest.raises(ValueError, match="state_out must not alias input w"):
        torch.ops.edgekit.causal_conv1d.out(x, w, b, s, y=y, state_out=w)
    y_ref, s_ref = reference(x, w, b, s)
    s_live = s.clone()
    torch.ops.edgekit.causal_conv1d.out(x, w, b, s_live, y=y, state_out=s_live)
    assert close(y, y_ref) and close(s_live, s_ref)
