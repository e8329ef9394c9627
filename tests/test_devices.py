"""Device profiles (devices/*.toml, edgekit/profiles.py): `edgekit devices`, `edgekit export
--device`, `edgekit inspect --device`, and the profile schema.

What a user depends on: every shipped profile loads and is listed with its figures; an
export for a device takes the profile's format and quantization unless a flag says
otherwise, and the manifest records both; a flag the device cannot honour, a model over the
device's RAM budget (unless --force), an unknown device and a damaged profile each get one
line and write nothing; inspect's floor is bytes per token over the device's bandwidth.
"""

from __future__ import annotations

import json
import re

import pytest

from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, run_cli

SHIPPED = ("host-x86", "android-arm64", "ios-arm64", "jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-5")


@pytest.fixture(scope="module")
def tiny_mamba(tmp_path_factory):
    from edgekit.models.mamba import write_random_hf
    return write_random_hf(tmp_path_factory.mktemp("dev") / "mamba", "mamba", seed=0, vocab_size=256,
                           hidden_size=64, num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4)


@pytest.fixture(scope="module")
def phone_export(tiny_mamba, tmp_path_factory):
    out = tmp_path_factory.mktemp("dev-phone") / "out"
    r = run_cli("export", tiny_mamba, "-o", out, "--device", "android-arm64")
    assert r.returncode == 0, r.stderr
    return out


def test_every_shipped_profile_loads_and_is_listed():
    from edgekit.profiles import load_profile
    r = run_cli("devices")
    assert r.returncode == 0, r.stderr
    for name in SHIPPED:
        p = load_profile(name)
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(name + " "))
        assert f"{p.bandwidth_gbs:.1f}" in row and f"{p.ram_budget_mb:,} MB" in row and p.format in row
        # the bandwidth is sourced in the file's comments
        assert "GB/s" in (REPO / "devices" / f"{name}.toml").read_text().split("\nname =")[0]
    assert "loihi2" in r.stdout
    r = run_cli("devices", "jetson-orin-nano")
    assert r.returncode == 0 and "fp16" in r.stdout and "68 GB/s (peak)" in r.stdout


def test_an_export_for_a_phone_takes_the_profiles_choices_and_records_them(phone_export):
    m = json.loads((phone_export / "edgekit.json").read_text())
    assert m["device"] == "android-arm64"
    assert set(m["artifacts"]) == {"pte"}                        # the profile's format only
    assert m["quantization"]["scheme"] == "int4"                 # phones default to a quantized format
    c = m["device_choices"]
    assert c["profile"]["threads"] == 4 and c["overridden"] == {} and c["fit"]["fits"] is True
    assert c["fit"]["weights"] + c["fit"]["state"] + c["fit"]["working"] <= c["fit"]["budget"]


def test_a_flag_overrides_the_profile_and_both_are_recorded(tiny_mamba, tmp_path):
    out = tmp_path / "out"
    r = run_cli("export", tiny_mamba, "-o", out, "--device", "android-arm64", "--quant", "int8", "--format", "onnx")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "edgekit.json").read_text())
    assert set(m["artifacts"]) == {"onnx"} and m["quantization"]["scheme"] == "int8"
    assert m["device_choices"]["overridden"] == {"quant": {"profile": "int4", "flag": "int8"},
                                                 "format": {"profile": ["pte"], "flag": ["onnx"]}}


@pytest.mark.parametrize("args,words", [
    (["--device", "jetson-orin-nano", "--format", "pte"], "--format pte cannot run on device 'jetson-orin-nano'"),
    (["--device", "ios-arm64", "--format", "onnx"], "--format onnx cannot run on device 'ios-arm64'"),
    (["--device", "android-arm64", "--dtype", "fp16"], "dtype fp16 is built for ONNX only"),
    (["--device", "pixel-99"], "device 'pixel-99' is unknown"),
    (["--device", "../devices/host-x86"], "is not a device name"),
    (["--device", "loihi2"], "is a neuromorphic target"),
    (["--force"], "--force needs --device"),
])
def test_device_mistakes_get_one_line_and_write_nothing(tiny_mamba, tmp_path, args, words):
    out = tmp_path / "out"
    r = run_cli("export", tiny_mamba, "-o", out, *args)
    assert_clean_failure(r, words)
    assert_no_output(out)


def _profile_folder(tmp_path, **changes):
    """A folder holding host-x86's profile with some keys changed (None: removed)."""
    d = tmp_path / "profiles"
    d.mkdir(exist_ok=True)
    text = (REPO / "devices" / "host-x86.toml").read_text()
    for key, value in changes.items():
        text = re.sub(rf"(?m)^{key} = .*$\n?", "" if value is None else f"{key} = {value}\n", text)
    (d / "host-x86.toml").write_text(text)
    return d


@pytest.mark.parametrize("change,words", [
    ({"colour": '"blue"'}, "unknown key 'colour'"),
    ({"threads": "0"}, "threads = 0 is not valid"),
    ({"format": '"tflite"'}, "format = 'tflite' is not valid"),
    ({"bandwidth_gbs": '"fast"'}, "bandwidth_gbs = 'fast' is not valid"),
    ({"passes": '["fuse_everything"]'}, "passes = ['fuse_everything'] is not valid"),
    ({"ram_budget_mb": None}, "lacks 'ram_budget_mb'"),
    ({"name": '"other"'}, "says name = 'other'"),
])
def test_a_damaged_profile_is_refused_by_name(tiny_mamba, tmp_path, monkeypatch, change, words):
    if "colour" in change:          # a new key: appended, not substituted
        d = _profile_folder(tmp_path)
        (d / "host-x86.toml").write_text((d / "host-x86.toml").read_text() + 'colour = "blue"\n')
    else:
        d = _profile_folder(tmp_path, **change)
    monkeypatch.setenv("EDGEKIT_DEVICES", str(d))
    r = run_cli("export", tiny_mamba, "-o", tmp_path / "out", "--device", "host-x86")
    assert_clean_failure(r, words)
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("text,words", [
    ('name = "host-x86"\nclass = [unclosed\n', "is not valid TOML"),
    ("# " + "x" * 70000 + "\n", "bytes"),
    (None, "bandwidth_gbs = nan is not valid"),
    (b"name = \"host-x86\"\xff\xfe\n", "is not valid TOML"),
])
def test_a_hostile_profile_file_is_refused_in_one_line(tiny_mamba, tmp_path, monkeypatch, text, words):
    """Not TOML, over the size bound, a NaN bandwidth, bytes that are not UTF-8."""
    d = _profile_folder(tmp_path, bandwidth_gbs="nan") if text is None else tmp_path / "profiles"
    d.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        (d / "host-x86.toml").write_bytes(text)
    elif text is not None:
        (d / "host-x86.toml").write_text(text)
    monkeypatch.setenv("EDGEKIT_DEVICES", str(d))
    r = run_cli("export", tiny_mamba, "-o", tmp_path / "out", "--device", "host-x86")
    assert_clean_failure(r, words)
    assert_no_output(tmp_path / "out")


def test_a_model_over_the_ram_budget_is_refused_unless_forced(tiny_mamba, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DEVICES", str(_profile_folder(tmp_path, ram_budget_mb="40")))
    out = tmp_path / "out"
    r = run_cli("export", tiny_mamba, "-o", out, "--device", "host-x86")
    assert_clean_failure(r, "over its RAM budget of 41.9 MB", "--force")
    assert_no_output(out)
    r = run_cli("export", tiny_mamba, "-o", out, "--device", "host-x86", "--force")
    assert r.returncode == 0, r.stderr
    fit = json.loads((out / "edgekit.json").read_text())["device_choices"]["fit"]
    assert fit["fits"] is False and fit["budget"] == 40 * 2**20


def test_inspect_on_a_device_gives_its_floor_and_fit(phone_export):
    """floor = bytes read per token (the manifest's, checked against the model) / bandwidth."""
    from edgekit.profiles import load_profile
    per_token = json.loads((phone_export / "edgekit.json").read_text())["bytes_per_token"]
    for name in SHIPPED:
        r = run_cli("inspect", phone_export, "--device", name, env={"COLUMNS": "250"})
        assert r.returncode == 0, r.stderr
        p = load_profile(name)
        assert f"{per_token / (p.bandwidth_gbs * 1e9) * 1e3:.3f} ms/token" in r.stdout, name
        if "pte" not in p.formats:
            assert f"NOT RUN THERE: {name} runs onnx" in r.stdout
    r = run_cli("inspect", phone_export, "--device", "android-arm64", env={"COLUMNS": "250"})
    assert "edgekit::mamba_step" in r.stdout and "its arm64 build (NEON + dotprod" in r.stdout


def test_inspect_of_a_checkpoint_on_a_device_counts_the_export_it_would_make(tiny_mamba, phone_export):
    """A checkpoint inspected for a phone (int4 by default) reads the bytes of its int4 export,
    exactly: the same floor as inspecting the export itself."""
    from edgekit.profiles import load_profile
    per_token = json.loads((phone_export / "edgekit.json").read_text())["bytes_per_token"]
    p = load_profile("android-arm64")
    r = run_cli("inspect", tiny_mamba, "--device", "android-arm64", env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "exported int4" in r.stdout
    assert f"{per_token / (p.bandwidth_gbs * 1e9) * 1e3:.3f} ms/token" in r.stdout


def test_bytes_per_token_counts_an_embedding_as_one_row():
    """Independent count for a model with an untied embedding (RWKV-7): every parameter's
    bytes, less all but one row of the embedding table."""
    import torch

    from edgekit.models.base import bytes_read_per_token
    from edgekit.models.rwkv7 import RWKV7, RWKV7Config
    cfg = RWKV7Config(256, 64, 2, 32, **RWKV7Config.default_lora(64))
    model = RWKV7(cfg)
    total = sum(p.numel() for p in model.parameters()) * 4
    assert bytes_read_per_token(model) == total - (256 - 1) * 64 * 4
    assert model.emb.weight.dtype == torch.float32


def test_shipped_profiles_are_the_files_listed():
    """Every devices/*.toml is either shipped above or neuromorphic (a new profile gets a test)."""
    names = {p.stem for p in (REPO / "devices").glob("*.toml")}
    assert names == set(SHIPPED) | {"loihi2"}
