"""The bundled CfC (edgekit/bundled/cfc-pendulum, scripts/train_cfc.py): a liquid network
trained on an irregularly sampled damped, driven pendulum (edgekit.data.pendulum)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.data import pendulum

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "edgekit" / "bundled" / "cfc-pendulum"


@pytest.fixture(scope="module")
def cfc_export(tmp_path_factory):
    from edgekit.export import export
    out = tmp_path_factory.mktemp("cfc")
    export(BUNDLED, out, formats=("onnx", "pte"))
    return out


def _ncps_module():
    """The bundled weights in ncps' own CfC (the oracle), built from config.json."""
    from safetensors.torch import load_file
    import sys
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_cfc
    finally:
        sys.path.pop(0)
    cfg = json.loads((BUNDLED / "train.json").read_text())
    m = train_cfc.build(cfg["units"], cfg["seed"])
    m.load_state_dict(load_file(BUNDLED / "model.safetensors"))
    return m.eval(), train_cfc


def test_the_simulator_is_deterministic_and_irregular():
    a, da = pendulum.simulate(3, 50, seed=7)
    b, db = pendulum.simulate(3, 50, seed=7)
    assert np.array_equal(a, b) and np.array_equal(da, db)
    assert da.min() >= pendulum.DT_MIN and da.max() <= pendulum.DT_MAX and da.std() > 0.03
    # an observation is a point on the circle and a rate: sin² + cos² = 1
    assert np.allclose(a[..., 0] ** 2 + a[..., 1] ** 2, 1, atol=1e-5)


def test_the_simulator_integrates_the_pendulum():
    """Against an independent integration: scipy-free, a fine explicit Euler-Cromer run of
    the same equation from the same start lands on the same state (to its own accuracy)."""
    x, dt = pendulum.simulate(1, 20, seed=3)
    rng = np.random.default_rng(3)
    theta, omega, phase = rng.uniform(-math.pi, math.pi), rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi)
    t, h = 0.0, 1e-5
    for k in range(19):
        for _ in range(int(round(float(dt[0, k]) / h))):
            omega += h * (-pendulum.GAMMA * omega - pendulum.OMEGA0 ** 2 * math.sin(theta)
                          + pendulum.DRIVE * math.cos(pendulum.DRIVE_FREQ * t + phase))
            theta += h * omega
            t += h
    assert np.allclose(x[0, 19], [math.sin(theta), math.cos(theta), omega], atol=2e-3)


def test_the_bundled_cfc_runs_the_same_in_ncps_onnx_and_executorch(cfc_export):
    """Per-step outputs over a held-out trajectory with its irregular Δt: ncps' own module
    (the oracle) against the exported ONNX and .pte, state carried step to step."""
    from edgekit.runtimes.session import StreamingSession
    m, train_cfc = _ncps_module()
    x, dt = pendulum.heldout(n=1, steps=120)
    feats = pendulum.inputs(x[0], dt[0])
    ref_step = train_cfc.torch_stepper(m)
    ref = np.stack([ref_step(f, float(d)) for f, d in zip(feats, dt[0])])
    with torch.no_grad():   # the sequence form used in training is the same recurrence
        seq = train_cfc.sequence(m, torch.from_numpy(feats)[None], torch.from_numpy(dt))[0].double().numpy()
    assert np.abs(seq - ref).max() <= 1e-5 * ref.std()
    for name in ("model.onnx", "model.pte"):
        step = pendulum.session_stepper(StreamingSession(cfc_export / name))()
        got = np.stack([step(f, float(d)) for f, d in zip(feats, dt[0])])
        assert np.abs(got - ref).max() <= 1e-5 * ref.std(), name


def test_the_bundled_cfc_keeps_its_committed_accuracy_and_beats_both_baselines(cfc_export):
    """The exported model's held-out one-step and 50-step RMSE (ONNX Runtime) equal the
    committed figures (measured in torch at training) within 1%, and beat persistence and
    linear regression, whose figures are recomputed here from the simulator."""
    from edgekit.runtimes.session import StreamingSession
    committed = json.loads((BUNDLED / "eval.json").read_text())["rmse"]
    hx, hdt = pendulum.heldout()
    got = pendulum.evaluate(pendulum.session_stepper(StreamingSession(cfc_export / "model.onnx")), hx, hdt)
    for k, v in got.items():
        assert abs(v - committed["cfc (torch)"][k]) <= 0.01 * committed["cfc (torch)"][k], (k, v, committed)
    base = pendulum.evaluate(pendulum.persistence_stepper, hx, hdt)
    assert base == pytest.approx(committed["persistence"], rel=1e-9)
    cfg = json.loads((BUNDLED / "train.json").read_text())
    x, dt = pendulum.simulate(cfg["train_trajectories"], 400, pendulum.TRAIN_SEED + cfg["seed"])
    lin = pendulum.evaluate(pendulum.linear_stepper(pendulum.fit_linear(x, dt)), hx, hdt)
    assert lin == pytest.approx(committed["linear regression"], rel=1e-6)
    for k in got:
        assert got[k] < base[k] and got[k] < lin[k], (k, got, base, lin)
