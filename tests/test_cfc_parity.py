"""CfC / LTC parity against `ncps` (ncps.torch.CfC / LTC), code we did not write.

Metric: max |diff| / std(reference outputs) <= 1e-5 over 500 steps with irregular Δt
(uniform in [0.2, 2.0]), batch 1 (ncps crashes on per-sample timespans with batch > 1),
in torch (step and sequence forms), ONNX Runtime and ExecuTorch, with --ops fused and
decomposed. Models are saved in the on-disk format edgekit reads (config.json +
model.safetensors) and exported once per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit_testutil import eager

from edgekit.models import load_model
from edgekit.models.cfc import random_ncps_module, save_ncps_dir
from edgekit.runtimes.session import StreamingSession

PARITY_ARCHS = ("cfc", "ltc")     # read by test_registry.py
TOL = 1e-5
STEPS = 500
I = 6
CASES = {
    "cfc_default": ("CfC", 16, {}),
    "cfc_no_gate": ("CfC", 16, {"mode": "no_gate", "backbone_units": 24, "backbone_layers": 2}),
    "cfc_pure": ("CfC", 16, {"mode": "pure", "proj_size": 3}),
    "cfc_autoncp": ("CfC", ("AutoNCP", 20, 4), {}),
    "ltc": ("LTC", 12, {}),
    "ltc_autoncp": ("LTC", ("AutoNCP", 16, 3), {}),
}
EXPORTED = tuple(CASES)     # every case is exported and compared in ORT and ExecuTorch


@pytest.fixture(scope="module")
def ncps_models(tmp_path_factory):
    """case -> (ncps module, its directory, x (1, T, I), dt (1, T, 1), oracle y (T, O))."""
    out = {}
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, STEPS, I, generator=g)
    dt = 0.2 + 1.8 * torch.rand(1, STEPS, 1, generator=g)            # irregular sampling
    for i, (name, (cls, units, kw)) in enumerate(CASES.items()):
        m = random_ncps_module(cls, I, units, seed=i, **kw)
        d = save_ncps_dir(m, tmp_path_factory.mktemp(name))
        with torch.no_grad():
            ref, _ = m(x, timespans=dt)                                # the oracle, batch 1
        out[name] = (m, d, x, dt, ref[0].numpy())
    return out


_EXPORTS: dict = {}


@pytest.fixture(scope="module")
def exported(ncps_models, tmp_path_factory):
    from edgekit.export import export

    def get(case, ops):
        if (case, ops) not in _EXPORTS:
            out = tmp_path_factory.mktemp(f"{case}-{ops}")
            export(ncps_models[case][1], out, formats=("onnx", "pte"), ops=ops, state_style="buffers")
            _EXPORTS[case, ops] = out
        return _EXPORTS[case, ops]
    return get


def _rel(a, ref):
    assert ref.std() > 1e-3, "degenerate reference"
    return float(np.abs(np.asarray(a) - ref).max() / ref.std())


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_steps_match_oracle(ncps_models, case, ops):
    _, d, x, dt, ref = ncps_models[case]
    m = load_model(d)
    st, ys = None, []
    with torch.no_grad(), eager(m, ops):
        for t in range(STEPS):
            y, st = m.step((x[:, t], dt[:, t]), st)
            ys.append(y[0].numpy())
    r = _rel(np.stack(ys), ref)
    print(f"PARITY {case} torch {ops}: {r:.2e}")
    assert r <= TOL


@pytest.mark.parametrize("case", list(CASES))
def test_torch_sequence_form_matches_oracle(ncps_models, case):
    _, d, x, dt, ref = ncps_models[case]
    with torch.no_grad():
        y, _ = load_model(d)((x, dt))
    assert _rel(y[0].numpy(), ref) <= TOL


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("case", EXPORTED)
def test_exported_steps_match_oracle(ncps_models, exported, case, ops, fmt):
    _, _, x, dt, ref = ncps_models[case]
    sess = StreamingSession(exported(case, ops) / f"model.{fmt}")
    got = np.stack([sess.step((x[0, t].numpy(), dt[0, t].numpy())).copy() for t in range(STEPS)])
    r = _rel(got, ref)
    print(f"PARITY {case} {fmt} {ops}: {r:.2e}")
    assert r <= TOL


@pytest.mark.parametrize("case", ["cfc_autoncp", "ltc"])
def test_live_module_export(ncps_models, tmp_path, case):
    """edgekit.export accepts a live ncps module (the from_module hook)."""
    from edgekit.export import export
    m, _, x, dt, ref = ncps_models[case]
    man = export(m, tmp_path, formats=("onnx",))
    assert man.arch == CASES[case][0].lower() and man.input_kind == "features"
    assert [s.name for s in man.inputs] == ["x", "dt"]
    sess = StreamingSession(tmp_path / "model.onnx")
    got = np.stack([sess.step((x[0, t].numpy(), dt[0, t].numpy())).copy() for t in range(50)])
    assert _rel(got, ref[:50]) <= TOL


def test_state_dict_pt_directory(ncps_models, tmp_path):
    """A directory with model.pt (a state_dict, read with weights_only=True) loads the same."""
    m, d, x, dt, ref = ncps_models["cfc_default"]
    save_ncps_dir(m, tmp_path, weights="pt")
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "model.safetensors").exists()
    with torch.no_grad():
        y, _ = load_model(tmp_path)((x, dt))
    assert _rel(y[0].numpy(), ref) <= TOL


def test_state_is_the_ncps_hidden_state(ncps_models):
    """The exported state h is ncps' own hx (wired layers in ncps' order)."""
    m, d, x, dt, _ = ncps_models["cfc_autoncp"]
    with torch.no_grad():
        _, hx = m(x[:, :20], timespans=dt[:, :20])
        _, st = load_model(d)((x[:, :20], dt[:, :20]))
    assert torch.allclose(st["h"], hx, atol=1e-6)
