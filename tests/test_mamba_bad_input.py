"""Bad Mamba / Mamba-2 directories: one line naming the problem and the fix, a non-zero
exit, no traceback, no partial output (`edgekit export` in a fresh process)."""

from __future__ import annotations

import json
import shutil

import pytest

from edgekit.models.mamba import write_random_hf
from edgekit_testutil import run_cli
from edgekit_testutil import assert_clean_failure, assert_no_output

MAMBA = dict(vocab_size=128, hidden_size=32, state_size=8, num_hidden_layers=2)
MAMBA2 = dict(vocab_size=128, hidden_size=32, state_size=8, num_hidden_layers=2, num_heads=4,
              head_dim=16, n_groups=2)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mamba-bad")
    return {"mamba": write_random_hf(root / "mamba", "mamba", **MAMBA),
            "mamba2": write_random_hf(root / "mamba2", "mamba2", **MAMBA2)}


def _copy(dirs, arch, tmp_path):
    d = tmp_path / arch
    shutil.copytree(dirs[arch], d)
    return d


def _export_fails(src, tmp_path, *needles):
    r = run_cli("export", src, "-o", tmp_path / "out", "--format", "onnx")
    assert_clean_failure(r, *needles)
    assert_no_output(tmp_path / "out")


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_missing_config_json(dirs, tmp_path, arch):
    d = _copy(dirs, arch, tmp_path)
    (d / "config.json").unlink()
    _export_fails(d, tmp_path, "has no config.json")


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_missing_weights(dirs, tmp_path, arch):
    d = _copy(dirs, arch, tmp_path)
    (d / "model.safetensors").unlink()
    _export_fails(d, tmp_path, "has no weights", "model.safetensors")


def test_config_weight_shape_mismatch(dirs, tmp_path):
    d = _copy(dirs, "mamba", tmp_path)
    _edit_config(d, state_size=16)     # the weights were saved with state_size 8
    _export_fails(d, tmp_path, "mixer.x_proj.weight", "(18, 64)", "expected (34, 64)", "config.json")


def test_mamba2_groups_shape_mismatch(dirs, tmp_path):
    d = _copy(dirs, "mamba2", tmp_path)
    _edit_config(d, n_groups=1)        # conv width 64 + 2*2*8 in the file, 64 + 2*1*8 in config
    _export_fails(d, tmp_path, "mixer.in_proj.weight", "expected")


def test_missing_weight_key(dirs, tmp_path):
    from safetensors.torch import load_file, save_file
    d = _copy(dirs, "mamba2", tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    del sd["backbone.layers.1.mixer.dt_bias"]
    save_file(sd, str(d / "model.safetensors"))
    _export_fails(d, tmp_path, "missing 1 key", "backbone.layers.1.mixer.dt_bias")


def test_inconsistent_heads(dirs, tmp_path):
    d = _copy(dirs, "mamba2", tmp_path)
    _edit_config(d, num_heads=3)
    _export_fails(d, tmp_path, "num_heads * head_dim", "expected expand * hidden_size = 64")


@pytest.mark.parametrize("arch,option,value", [("mamba", "hidden_act", "gelu"), ("mamba2", "hidden_act", "relu")])
def test_unsupported_option_is_named(dirs, tmp_path, arch, option, value):
    d = _copy(dirs, arch, tmp_path)
    _edit_config(d, **{option: value})
    _export_fails(d, tmp_path, option, repr(value), "does not support")


def test_unsupported_state_spaces_layernorm(dirs, tmp_path):
    """A state-spaces config with rms_norm = false (LayerNorm blocks) is refused by name."""
    d = _copy(dirs, "mamba", tmp_path)
    (d / "config.json").write_text(json.dumps({"d_model": 32, "n_layer": 2, "vocab_size": 128,
                                               "ssm_cfg": {"d_state": 8}, "rms_norm": False}))
    _export_fails(d, tmp_path, "rms_norm", "does not support")
