"""Bad RecurrentGemma (Hawk/Griffin) directories: one line naming the problem and the fix,
non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from edgekit_testutil import run_cli
from edgekit_testutil import assert_clean_failure, assert_no_output


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    from edgekit.models.hawk import write_random_hf_dir
    return write_random_hf_dir(tmp_path_factory.mktemp("rg-good"), seed=0, vocab_size=64, hidden_size=32,
                               intermediate_size=64, num_attention_heads=2, num_hidden_layers=3,
                               attention_window_size=4)


def _copy(good_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(good_dir, d)
    return d


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _export(d, tmp_path):
    return run_cli("export", d, "-o", tmp_path / "out")


def test_missing_config(good_dir, tmp_path):
    d = _copy(good_dir, tmp_path)
    (d / "config.json").unlink()
    r = _export(d, tmp_path)
    assert_clean_failure(r, "no config.json")
    assert_no_output(tmp_path / "out")


def test_missing_weights(good_dir, tmp_path):
    d = _copy(good_dir, tmp_path)
    (d / "model.safetensors").unlink()
    r = _export(d, tmp_path)
    assert_clean_failure(r, "has no weights", "model.safetensors")
    assert_no_output(tmp_path / "out")


def test_config_weight_shape_mismatch(good_dir, tmp_path):
    d = _copy(good_dir, tmp_path)
    _edit_config(d, lru_width=48)
    r = _export(d, tmp_path)
    assert_clean_failure(r, "model.layers.0.temporal_block", "expected", "from config.json")
    assert_no_output(tmp_path / "out")


def test_missing_key(good_dir, tmp_path):
    d = _copy(good_dir, tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    del sd["model.layers.1.temporal_block.rg_lru.recurrent_param"]
    save_file(sd, str(d / "model.safetensors"))
    r = _export(d, tmp_path)
    assert_clean_failure(r, "missing", "model.layers.1.temporal_block.rg_lru.recurrent_param")
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("option,change", [
    ("rope_parameters.rope_type", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}),
    ("block_types", {"block_types": ["recurrent", "mlp"]}),
    ("hidden_activation", {"hidden_activation": "silu"}),
    ("num_key_value_heads", {"num_key_value_heads": 3}),
])
def test_unsupported_config_option_is_named(good_dir, tmp_path, option, change):
    d = _copy(good_dir, tmp_path)
    _edit_config(d, **change)
    r = _export(d, tmp_path)
    assert_clean_failure(r, option, "not support")
    assert_no_output(tmp_path / "out")
