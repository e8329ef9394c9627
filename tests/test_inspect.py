"""`edgekit inspect` on checkpoints of every architecture and on exported artifacts: the
architecture, config, parameter count (thousands separators), weight bytes and file sizes
in human units (kB for small files, never '0.0 MB'), and no Python reprs in the text."""

from __future__ import annotations

import re

import pytest

from edgekit_testutil import assert_clean_failure, run_cli, tiny_checkpoints

PY_REPR = re.compile(r"\b(None|True|False)\b|'[^']*'|\(\d+,\)")   # None/True/False, quoted strs, (1,)
HUMAN = r"\d[\d,]*(\.\d)? (B|kB|MB|GB)\b"


def _no_python_reprs(text: str):
    assert not PY_REPR.search(text), PY_REPR.search(text).group(0)
    assert "0.0 MB" not in text


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("inspect"))


@pytest.mark.parametrize("arch", ["rwkv7", "mamba", "mamba2", "recurrent_gemma", "cfc", "ltc"])
def test_inspect_checkpoint(ckpt, arch):
    from edgekit.models import load_model
    path = ckpt(arch)
    model = load_model(path)
    count = sum(p.numel() for p in model.parameters())
    r = run_cli("inspect", path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.split()[0] == arch
    assert re.search(rf"parameters:\s+{re.escape(f'{count:,}')}\b", out), out
    assert count >= 1000 and "," in f"{count:,}"                    # the separator is exercised
    assert re.search(rf"weight bytes:\s+{HUMAN} as loaded \(float32\)", out), out
    assert re.search(rf"files:\s+\S+ \({HUMAN}\)", out), out
    key = next(iter(model.config_dict()))
    assert f"config: {key}=" in out
    for s in model.state_spec(1):
        assert s.name in out
    _no_python_reprs(out)


def test_inspect_small_export_shows_kB_and_weight_bytes(ckpt, tmp_path):
    """A CfC export is tens of kB: shown in kB (it used to read '0.02 MB' / '0.0 MB'), with the
    weight bytes the manifest records and the tokenizer spelled 'none'."""
    from edgekit.artifact import read
    from edgekit.export import export
    export(ckpt("cfc"), tmp_path / "out", formats=("onnx",))
    entry = read(tmp_path / "out")[0].artifacts["onnx"]
    assert entry.bytes < 1_000_000 and entry.weight_bytes
    for target in (tmp_path / "out", tmp_path / "out" / "model.onnx"):
        r = run_cli("inspect", target)
        assert r.returncode == 0, r.stderr
        assert re.search(r"model\.onnx \(\d+\.\d kB\)", r.stdout), r.stdout
        assert re.search(r"weight bytes: \d+\.\d kB", r.stdout), r.stdout
        assert "tokenizer=none" in r.stdout and "cfc" in r.stdout
        _no_python_reprs(r.stdout)


def test_inspect_refuses_what_it_cannot_read(tmp_path):
    r = run_cli("inspect", tmp_path / "nope.pth")
    assert_clean_failure(r, "nope.pth", "does not exist")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    r = run_cli("inspect", junk)
    assert_clean_failure(r, "junk.bin", "not a checkpoint edgekit recognizes")
    onnx_no_manifest = tmp_path / "model.onnx"
    onnx_no_manifest.write_bytes(b"\0")
    r = run_cli("inspect", onnx_no_manifest)
    assert_clean_failure(r, "edgekit.json")
