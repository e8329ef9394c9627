"""STYLE.md §5 battery for `edgekit::rglru_step` (temporal Conv1D + RG-LRU), over T in
{1, small, long}: native kernels (ExecuTorch C++, ONNX function body in ORT) vs the plain
reference; split-and-carry equals one call; prefill then single steps equals a full
forward; bad shapes and aliased outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit.ops  # noqa: F401
from op_battery import battery_fixtures, close, cpp_kernel_refuses_like_python, dynamic_dim
from edgekit.ops.rglru_step import _INPUTS, reference

BATTERY_OPS = ("rglru_step",)  # read by test_registry.py
B, D, H, K = 2, 32, 4, 4
TS = [1, 5, 40]
STATE = (7, 8)       # positions of conv_state, h_state in the argument list


def inputs(T, seed=0, B=B, reset_first=True):
    """Inputs shaped like Griffin makes them: log a = -8·softplus(Λ) = 8·log(a0) with a0 in
    (0.9, 0.999) as the reference initializes Λ; a reset at the first step of batch row 0."""
    g = torch.Generator().manual_seed(seed)
    W = D // H
    x = torch.randn(B, T, D, generator=g)
    reset = torch.zeros(B, T)
    if reset_first:
        reset[0, 0] = 1.0
    a = 0.9 + 0.099 * torch.rand(D, generator=g)
    log_a = 8 * torch.log(a)
    return (x, reset, torch.randn(K, D, generator=g) * 0.5, torch.randn(D, generator=g) * 0.1,
            torch.randn(H, W, 2 * W, generator=g) / W ** 0.5, torch.randn(H, 2 * W, generator=g) * 0.3,
            log_a, torch.randn(B, D, K - 1, generator=g), torch.randn(B, D, generator=g))


def _slice_t(args, a, b):
    """The T-indexed inputs (x, reset) restricted to [a, b); weights and state unchanged."""
    x, reset, *rest = args
    return (x[:, a:b].contiguous(), reset[:, a:b].contiguous(), *rest)


# the op alone in torch, ExecuTorch (C++ kernel) and ONNX Runtime (its function body); each
# output has the rank of argument (0, 7, 8) (the one-node ONNX model declares it)
runners, et_runner, ort_run = battery_fixtures("rglru_step", rank_of=(0, 7, 8))


def _runners(et_runner):
    return {"torch": torch.ops.edgekit.rglru_step, "executorch": et_runner, "onnxruntime": ort_run}


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, et_runner):
    args = inputs(T)
    ref = reference(*args)
    for name, run in _runners(et_runner).items():
        out = run(*args)
        assert all(close(o, r) for o, r in zip(out, ref)), name


def test_reference_matches_transformers_rglru():
    """The reference's conv + RG-LRU equals transformers' RecurrentGemmaRglru and the
    block's decode-mode Conv1D, step by step from a reset (code we did not write)."""
    from transformers import RecurrentGemmaConfig
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRglru
    cfg = RecurrentGemmaConfig(hidden_size=D, lru_width=D, num_attention_heads=H, conv1d_width=K)
    torch.manual_seed(0)
    lru = RecurrentGemmaRglru(cfg)
    with torch.no_grad():
        for p in (lru.input_gate_weight, lru.recurrent_gate_weight):
            p.copy_(torch.randn_like(p) / (D // H) ** 0.5)
        for p in (lru.input_gate_bias, lru.recurrent_gate_bias):
            p.copy_(torch.randn_like(p) * 0.3)
        lru.recurrent_param.copy_(torch.randn(D))
    conv_w, conv_b = torch.randn(D, 1, K) * 0.5, torch.randn(D) * 0.1
    x = torch.randn(1, 6, D)
    gate_w = torch.cat([lru.input_gate_weight, lru.recurrent_gate_weight], -1).detach()
    gate_b = torch.cat([lru.input_gate_bias, lru.recurrent_gate_bias], -1).detach()
    log_a = (-8.0 * torch.nn.functional.softplus(lru.recurrent_param)).detach()
    reset = torch.zeros(1, 6)
    reset[0, 0] = 1.0
    y, _, _ = reference(x, reset, conv_w[:, 0].t().contiguous(), conv_b, gate_w, gate_b, log_a,
                        torch.zeros(1, D, K - 1), torch.zeros(1, D))
    lru.recurrent_states = torch.zeros(1, D)
    conv_state, ys = torch.zeros(1, D, K - 1), []
    with torch.no_grad():
        for t in range(6):   # the decode path of RecurrentGemmaRecurrentBlock.forward
            cs = torch.cat([conv_state, x[:, t, :, None]], -1)
            u = (torch.sum(cs * conv_w[:, 0, :], dim=-1) + conv_b)[:, None]
            conv_state = cs[:, :, 1:]
            ys.append(lru(u, torch.tensor([[t]])))
    assert close(y, torch.cat(ys, 1))


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, et_runner):
    args = inputs(T + 3, seed=1)
    cut = (T + 3) // 2
    for name, run in _runners(et_runner).items():
        y_all, c_all, h_all = run(*args)
        y1, c1, h1 = run(*_slice_t(args, 0, cut))
        a2 = list(_slice_t(args, cut, T + 3))
        a2[STATE[0]], a2[STATE[1]] = torch.as_tensor(np.asarray(c1)), torch.as_tensor(np.asarray(h1))
        y2, c2, h2 = run(*a2)
        assert close(np.concatenate([y1, y2], axis=1), y_all) and close(c2, c_all) and close(h2, h_all), name


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, et_runner):
    args = inputs(T + 4, seed=2)
    y_all, c_all, h_all = torch.ops.edgekit.rglru_step(*args)
    for name, run in _runners(et_runner).items():
        y, c, h = run(*_slice_t(args, 0, T))
        ys = [np.asarray(y)]
        for t in range(T, T + 4):
            a = list(_slice_t(args, t, t + 1))
            a[STATE[0]], a[STATE[1]] = torch.as_tensor(np.asarray(c)), torch.as_tensor(np.asarray(h))
            y, c, h = run(*a)
            ys.append(np.asarray(y))
        assert close(np.concatenate(ys, axis=1), y_all) and close(c, c_all) and close(h, h_all), name


def test_reset_forgets_the_state():
    """At a reset step the old h has no influence and the input is not normalized."""
    args = list(inputs(3, seed=4, B=1, reset_first=True))
    y1, _, _ = reference(*args)
    args[STATE[1]] = torch.randn(1, D) * 100
    y2, _, _ = reference(*args)
    assert close(y1, y2)


def test_bad_shapes_rejected():
    args = list(inputs(2))
    bad = list(args)
    bad[STATE[0]] = args[STATE[0]][..., :2]
    with pytest.raises(ValueError, match=r"rglru_step: conv_state must be \(B, D, K-1\) = \(2, 32, 3\)"):
        torch.ops.edgekit.rglru_step(*bad)
    bad = list(args)
    bad[4] = args[4][:, :, :8]
    with pytest.raises(ValueError, match=r"rglru_step: gate_w must be \(H, W, 2W\)"):
        torch.ops.edgekit.rglru_step(*bad)
    bad = list(args)
    bad[0] = args[0].double()
    with pytest.raises(ValueError, match="rglru_step: x must be .* float32"):
        torch.ops.edgekit.rglru_step(*bad)


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = list(args)
    bad[STATE[1]] = torch.zeros(B, D // 2)
    cpp_kernel_refuses_like_python("rglru_step", args, bad, dynamic_dim(args, {STATE[1]: 1}), tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    args = inputs(3)
    x, *_, c, h = args
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.rglru_step.out(*args, y=x, conv_state_out=torch.empty_like(c), h_state_out=torch.empty_like(h))
    with pytest.raises(ValueError, match="h_state_out must not alias input conv_state"):
        torch.ops.edgekit.rglru_step.out(*args, y=y, conv_state_out=torch.empty_like(c), h_state_out=c.view(-1)[:h.numel()].view(h.shape))
    y_ref, c_ref, h_ref = reference(*args)
    c_live, h_live = c.clone(), h.clone()
    torch.ops.edgekit.rglru_step.out(*args[:STATE[0]], c_live, h_live, y=y, conv_state_out=c_live, h_state_out=h_live)
    assert close(y, y_ref) and close(c_live, c_ref) and close(h_live, h_ref)
