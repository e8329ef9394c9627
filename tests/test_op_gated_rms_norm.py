"""STYLE.md §5 battery for `edgekit::gated_rms_norm` (Mamba-2's norm(y · silu(z)) · w per
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
from op_battery import (close, cpp_kernel_refuses_like_python, dynamic_dim, OpRunners,
                        rows_prefill_then_steps, rows_split_equals_whole)

BATTERY_OPS = ("gated_rms_norm",)  # read by test_registry.py
B = 2
TS = [1, 5, 40]
SLICED = (True, True, False, False)  # y, z, w, eps: which have a T axis
GROUPS = [1, 2]
S = 37


def inputs(T, G=2, seed=0, eps=1e-5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, G * S, generator=g), torch.randn(B, T, G * S, generator=g) * 3,
            torch.rand(G, S, generator=g) + 0.5, torch.tensor([eps]))


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("gated_rms_norm", tmp_path_factory.mktemp("op-grn"), rank_of=(0,))


def _y(out):
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("G", GROUPS)
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, G, runners):
    args = inputs(T, G)
    want = reference(*args)
    for name, run in runners.all().items():
        assert close(_y(run(*args)), want), name


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


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    """No state to carry: rows [0, cut) and [cut, T) in two calls equal one call."""
    assert not rows_split_equals_whole(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert not rows_prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


def test_bad_shapes_rejected():
    y, z, w, eps = inputs(2)
    fn = torch.ops.edgekit.gated_rms_norm
    with pytest.raises(ValueError, match=r"gated_rms_norm: w must be \(G, S\) float32 with G \* S = D = 74; "
                                         r"got \(3, 37\)"):
        fn(y, z, torch.ones(3, S), eps)
    with pytest.raises(ValueError, match=r"gated_rms_norm: w must be \(G, S\) .* got \(74,\)"):
        fn(y, z, w.reshape(-1), eps)
    with pytest.raises(ValueError, match=r"gated_rms_norm: z must be the shape of y = \(2, 2, 74\) float32"):
        fn(y, z[:, :1], w, eps)
    with pytest.raises(ValueError, match=r"gated_rms_norm: eps must be \(1,\) float32; got \(\)"):
        fn(y, z, w, eps[0])


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = [*args[:2], torch.ones(2, S - 1), args[3]]
    cpp_kernel_refuses_like_python("gated_rms_norm", args, bad, dynamic_dim(args, {2: 1}), tmp_path)


def test_aliased_output_rejected():
    y, z, w, eps = inputs(3)
    with pytest.raises(ValueError, match="out must not alias input y"):
        torch.ops.edgekit.gated_rms_norm.out(y, z, w, eps, out=y)
    out = torch.empty_like(y)
    torch.ops.edgekit.gated_rms_norm.out(y, z, w, eps, out=out)
    assert close(out, reference(y, z, w, eps))
