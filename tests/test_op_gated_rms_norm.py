"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::gated_rms_norm` (Mamba-2's norm(y · silu(z)) · w per
group), over T in {1, small, long} and G in {1, 2} with a group size that leaves a scalar
tail: the C++ ExecuTorch kernel and the ONNX function body in ORT vs the plain reference;
the reference vs transformers' MambaRMSNormGated (the Mamba-2 oracle's own module); no
state, so "split and carry" and "prefill then steps" check that rows are independent; bad
shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from edgekit.ops.gated_rms_norm import reference
from op_battery import close, OpRunners

B = 2
TS = [1, 5, 40]
GROUPS = [1, 2]
S = 37


def inputs(T, G=2, seed=0, eps=1e-5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, G * S, generator=g), torch.randn(B, T, G * S, generator=g) * 3,
            torch.rand(G, S, generator=g) + 0.5, torch.tensor([eps]))


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("gated_rms_norm", tmp_path_factory.mktemp("op-grn"))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("G", GROUPS)
def test_reference_matches_transformers_gated_norm(G):
    from transformers.models.mamba2 import modeling_mamba2
    # transformers 5.25 renamed MambaRMSNormGated to Mamba2RMSNormGated; same module.
    gated_norm = getattr(modeling_mamba2, "Mamba2RMSNormGated", None) or modeling_mamba2.MambaRMSNormGated
    y, z, w, eps = inputs(5, G, seed=3, eps=1e-6)
    norm = gated_norm(G * S, group_size=S, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(w.reshape(-1))
        want = norm(y, gate=z)
    assert close(reference(y, z, w, eps), want, tol=1e-6)

