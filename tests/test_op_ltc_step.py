"""STYLE.md §5 battery for `edgekit::ltc_step`, over T in {1, small, long}: native kernels
(ExecuTorch C++, ONNX function body in ORT) vs the plain reference; split-and-carry
equals one call; prefill then single steps equals a full forward; bad shapes and aliased
outputs rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch


import edgekit.ops  # noqa: F401
from op_battery import battery_fixtures, close, cpp_kernel_refuses_like_python, dynamic_dim
from edgekit.ops.ltc_step import _ARGS, reference

BATTERY_OPS = ("ltc_step",)  # read by test_registry.py
B, I, U = 2, 4, 7
TS = [1, 5, 40]


def inputs(T, seed=0, B=B, unfolds=6):
    """Parameters in ncps' init ranges, after its softplus / mask / erev folding."""
    g = torch.Generator().manual_seed(seed)
    ru = lambda lo, hi, *s: torch.rand(*s, generator=g) * (hi - lo) + lo  # noqa: E731
    sign = lambda *s: torch.where(torch.rand(*s, generator=g) < 0.33, -1.0, 1.0)  # noqa: E731
    s_w, w = ru(0.3, 1.3, I, U), ru(0.3, 1.3, U, U)
    gleak = ru(0.3, 1.3, U)
    return [torch.randn(B, T, I, generator=g), ru(0.2, 2.0, B, T, 1), torch.randn(B, U, generator=g) * 0.1,
            ru(0.3, 0.8, I, U), ru(3, 8, I, U), s_w, s_w * sign(I, U),
            ru(0.3, 0.8, U, U), ru(3, 8, U, U), w, w * sign(U, U),
            ru(0.9, 1.1, U), gleak, gleak * ru(-0.2, 0.2, U), torch.tensor([float(unfolds), 1e-8])]


# the op alone in torch, ExecuTorch (C++ kernel) and ONNX Runtime (its function body); each
# output has the rank of argument (0, 2) (the one-node ONNX model declares it)
runners, et_runner, ort_run = battery_fixtures("ltc_step", rank_of=(0, 2))


RUNNERS = ("torch", "executorch", "onnxruntime")


def _runner(name, et_runner):
    return {"torch": torch.ops.edgekit.ltc_step, "executorch": et_runner, "onnxruntime": ort_run}[name]


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, et_runner):
    args = inputs(T)
    y_ref, v_ref = reference(*args)
    for name in RUNNERS:
        y, v = _runner(name, et_runner)(*args)
        assert close(y, y_ref) and close(v, v_ref), name


def test_reference_matches_ncps_cell():
    """One step of the reference (with edgekit's conversion-time folding) equals ncps'
    LTCCell with softplus constraints and a sparse wiring."""
    from ncps.torch import LTCCell
    from ncps.wirings import AutoNCP
    from edgekit.models.cfc import LTC
    torch.manual_seed(0)
    cell = LTCCell(AutoNCP(10, 3), I, implicit_param_constraints=True).eval()
    cfg = {"framework": "ncps", "class": "LTC", "input_size": I, "units": {"wiring": "AutoNCP", "units": 10, "output_size": 3}, "input_mapping": "affine",
           "output_mapping": "affine", "ode_unfolds": 6, "epsilon": 1e-8, "implicit_param_constraints": True}
    m = LTC(cfg, {"rnn_cell." + k: v for k, v in cell.state_dict().items()})
    x, v = torch.randn(1, I), torch.randn(1, 10) * 0.1
    with torch.no_grad():
        _, ref = cell(x, v, torch.tensor(0.7))
        _, st = m.step((x, torch.full((1, 1), 0.7)), {"v": v})
    assert close(st["v"], ref, 1e-6)


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, et_runner):
    x, dt, v0, *w = inputs(T + 3, seed=1)
    cut = (T + 3) // 2
    for name in RUNNERS:
        run = _runner(name, et_runner)
        y_all, v_all = run(x, dt, v0, *w)
        y1, v1 = run(x[:, :cut].contiguous(), dt[:, :cut].contiguous(), v0, *w)
        y2, v2 = run(x[:, cut:].contiguous(), dt[:, cut:].contiguous(), torch.as_tensor(np.asarray(v1)), *w)
        assert close(np.concatenate([y1, y2], axis=1), y_all) and close(v2, v_all), name


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, et_runner):
    x, dt, v0, *w = inputs(T + 4, seed=2)
    y_all, v_all = torch.ops.edgekit.ltc_step(x, dt, v0, *w)
    for name in RUNNERS:
        run = _runner(name, et_runner)
        y, v = run(x[:, :T].contiguous(), dt[:, :T].contiguous(), v0, *w)
        ys = [np.asarray(y)]
        for t in range(T, T + 4):
            y, v = run(x[:, t:t + 1].contiguous(), dt[:, t:t + 1].contiguous(), torch.as_tensor(np.asarray(v)), *w)
            ys.append(np.asarray(y))
        assert close(np.concatenate(ys, axis=1), y_all) and close(v, v_all), name


def test_bad_shapes_rejected():
    args = inputs(2)
    bad = lambda i, t: [t if j == i else a for j, a in enumerate(args)]  # noqa: E731
    with pytest.raises(ValueError, match=r"ltc_step: v must be \(B, U\)"):
        torch.ops.edgekit.ltc_step(*bad(2, torch.zeros(3, U)))
    with pytest.raises(ValueError, match=r"ltc_step: sigma must be \(7, 7\)"):
        torch.ops.edgekit.ltc_step(*bad(8, torch.zeros(U, U + 1)))
    with pytest.raises(ValueError, match=r"ltc_step: dt must be \(2, 2, 1\)"):
        torch.ops.edgekit.ltc_step(*bad(1, torch.ones(B, 2)))
    with pytest.raises(ValueError, match="float32"):
        torch.ops.edgekit.ltc_step(*bad(0, args[0].double()))


def test_bad_shapes_rejected_by_cpp_kernel(tmp_path):
    """Inputs that disagree with each other (a dynamic dim lets them past ExecuTorch's own
    input checks) reach the C++ kernel, which refuses them with the validator's words."""
    args = list(inputs(1))
    bad = [*args[:2], torch.zeros(B, U - 2), *args[3:]]
    cpp_kernel_refuses_like_python("ltc_step", args, bad, dynamic_dim(args, {2: 1}), tmp_path)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    args = inputs(3)
    x, v = args[0], args[2]
    y = torch.empty(B, 3, U)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.ltc_step.out(*args, y=x, v_out=torch.empty_like(v))
    with pytest.raises(ValueError, match="v_out must not alias input cm"):
        torch.ops.edgekit.ltc_step.out(*args, y=y, v_out=args[11])
    y_ref, v_ref = reference(*args)
    live = [a.clone() if i == 2 else a for i, a in enumerate(args)]
    torch.ops.edgekit.ltc_step.out(*live, y=y, v_out=live[2])
    assert close(y, y_ref) and close(live[2], v_ref)
