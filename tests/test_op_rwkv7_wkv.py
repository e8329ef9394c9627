"""STYLE.md §5 battery for `edgekit::rwkv7_wkv`, over T in {1, small, long}:
native kernels (ExecuTorch C++, ONNX function body in ORT) vs the plain reference;
split-and-carry equals one call; prefill then single steps equals a full forward;
bad shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from op_battery import battery_fixtures, close, cpp_kernel_refuses_like_python, dynamic_dim
from edgekit.ops.rwkv7_wkv import reference

BATTERY_OPS = ("rwkv7_wkv",)  # read by test_registry.py
B, H, N = 2, 2, 64
TS = [1, 5, 40]


def inputs(T, seed=0, B=B):
    """Inputs shaped like RWKV-7 makes them: decays in (0.5, 1), a = -κ̂, b = κ̂·α."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g) * 0.5 for _ in range(3))
    w = 0.5 + 0.5 * torch.rand(B, T, H, N, generator=g)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=g)
    state = torch.randn(B, H, N, N, generator=g) * 0.1
    return r, w, k, v, -kk, kk * alpha, state


# the op alone in torch, ExecuTorch (C++ kernel) and ONNX Runtime (its function body); each
# output has the rank of argument (0, 6) (the one-node ONNX model declares it)
runners, et_runner, ort_run = battery_fixtures("rwkv7_wkv", rank_of=(0, 6))


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, et_runner):
    args = inputs(T)
    y_ref, s_ref = reference(*args)
    for name, (y, s) in {"executorch": et_runner(*args), "onnxruntime": ort_run(*args)}.items():
        assert close(y, y_ref) and close(s, s_ref), name


def test_reference_matches_paper_form():
    """The reference equals the matrix form S·(diag(w) + aᵀb) + vᵀk written out per head."""
    r, w, k, v, a, b, S = inputs(3, seed=3, B=1)
    y, S_ref = reference(r, w, k, v, a, b, S)
    S = S[0].double()
    for t in range(3):
        ys = []
        for h in range(H):
            M = torch.diag(w[0, t, h].double()) + torch.outer(a[0, t, h].double(), b[0, t, h].double())
            S[h] = S[h] @ M + torch.outer(v[0, t, h].double(), k[0, t, h].double())
            ys.append(S[h] @ r[0, t, h].double())
        assert close(y[0, t], torch.stack(ys).float())
    assert close(S_ref[0], S.float())


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, et_runner):
    args = inputs(T + 3, seed=1)
    *xs, s0 = args
    cut = (T + 3) // 2
    for run in (torch.ops.edgekit.rwkv7_wkv, et_runner, ort_run):
        y_all, s_all = run(*xs, s0)
        y1, s1 = run(*[x[:, :cut].contiguous() for x in xs], s0)
        y2, s2 = run(*[x[:, cut:].contiguous() for x in xs], torch.as_tensor(np.asarray(s1)))
        assert close(np.concatenate([y1, y2], axis=1), y_all) and close(s2, s_all)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, et_runner):
    args = inputs(T + 4, seed=2)
    *xs, s0 = args
    y_all, s_all = torch.ops.edgekit.rwkv7_wkv(*xs, s0)
    for run in (torch.ops.edgekit.rwkv7_wkv, et_runner, ort_run):
        ys, s = [], None
        y, s = run(*[x[:, :T].contiguous() for x in xs], s0)
        ys.append(np.asarray(y))
        for t in range(T, T + 4):
            y, s = run(*[x[:, t:t + 1].contiguous() for x in xs], torch.as_tensor(np.asarray(s)))
            ys.append(np.asarray(y))
        assert close(np.concatenate(ys, axis=1), y_all) and close(s, s_all)


def test_bad_shapes_rejected():
    r, w, k, v, a, b, s = inputs(2)
    with pytest.raises(ValueError, match=r"rwkv7_wkv: state must be \(B, H, N, N\)"):
        torch.ops.edgekit.rwkv7_wkv(r, w, k, v, a, b, s[..., :32])
    with pytest.raises(ValueError, match="rwkv7_wkv: k must be"):
        torch.ops.edgekit.rwkv7_wkv(r, w, k[:, :, :, :32], v, a, b, s)
    with pytest.raises(ValueError, match="float32"):
        torch.ops.edgekit.rwkv7_wkv(r.double(), w, k, v, a, b, s)


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """With a dynamic T per input, mismatched inputs pass ExecuTorch's own input checks and
    reach the C++ kernel, which refuses them with the Python validator's exact words."""
    args = list(inputs(3))
    bad = list(args)
    bad[2] = bad[2][:, :2].contiguous()                     # k with T=2, the rest T=3
    cpp_kernel_refuses_like_python("rwkv7_wkv", args, bad, dynamic_dim(args, {i: 1 for i in range(6)}, 64),
                                   tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    r, w, k, v, a, b, s = inputs(3)
    y = torch.empty_like(r)
    with pytest.raises(ValueError, match="y must not alias input r"):
        torch.ops.edgekit.rwkv7_wkv.out(r, w, k, v, a, b, s, y=r, state_out=torch.empty_like(s))
    with pytest.raises(ValueError, match="state_out must not alias input k"):
        torch.ops.edgekit.rwkv7_wkv.out(r, w, k, v, a, b, s, y=y, state_out=k)
    y_ref, s_ref = reference(r, w, k, v, a, b, s)
    s_live = s.clone()
    torch.ops.edgekit.rwkv7_wkv.out(r, w, k, v, a, b, s_live, y=y, state_out=s_live)
    assert close(y, y_ref) and close(s_live, s_ref)
