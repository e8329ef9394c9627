"""The bundled trained byte-level LMs (issue 15), each from its real on-disk format: it
exports, gives the same sampled bytes in torch, ONNX Runtime and ExecuTorch, and keeps the
held-out quality its training committed (eval.json). In a file of its own so that the
test workers can balance it against the corpus and training tests."""

from __future__ import annotations

import json

import pytest

from edgekit.cli.demo import bundled_lms
from edgekit_testutil import run_cli


# every bundled byte-level LM: a folder with the held-out figures its training committed
BUNDLED_LMS = bundled_lms()


def test_the_bundled_models_are_the_documented_ones():
    assert {p.name for p in BUNDLED_LMS} >= {"hawk-stdlib", "mamba-stdlib", "mamba2-stdlib", "rwkv7-stdlib"}, BUNDLED_LMS


@pytest.fixture(scope="module", params=BUNDLED_LMS, ids=lambda p: p.name)
def bundled(request, tmp_path_factory):
    from edgekit.cli.demo import bundled_source
    from edgekit.export import export
    out = tmp_path_factory.mktemp(request.param.name)
    export(bundled_source(request.param), out, formats=("onnx", "pte"))
    return request.param, out


def test_the_bundled_model_gives_the_same_sampled_bytes_everywhere(bundled):
    """Each bundled trained model loads from its real on-disk format, exports, and
    continues a Python prompt with identical sampled bytes (fixed seed) in torch, ORT and
    ExecuTorch: the logits agree closely enough that no draw lands on another byte (greedy
    decoding of these small models only repeats indentation, so it would compare little)."""
    src, exported = bundled
    got = {}
    from edgekit.cli.demo import bundled_source
    for name, path in (("torch", bundled_source(src)), ("onnx", exported / "model.onnx"), ("pte", exported / "model.pte")):
        r = run_cli("run", path, "--prompt", 'def fibonacci(n):\n    """', "--steps", 96, "--top-p", 0.8,
                    "--temperature", 0.7, "--seed", 1, "--json")
        assert r.returncode == 0, r.stderr
        got[name] = json.loads(r.stdout)["tokens"]
    assert got["torch"] == got["onnx"] == got["pte"], got
    assert len(set(got["onnx"])) > 10, got["onnx"]            # real text, not one repeated byte


def test_the_bundled_model_keeps_its_committed_quality(bundled):
    """Held-out bits per byte of the exported model on the committed subset (the first 32 kB
    of the held-out split) matches eval.json within 1%, and the whole split's committed
    figure beats gzip -9 (issue 15's bar)."""
    src, exported = bundled
    committed = json.loads((src / "eval.json").read_text())
    quality = committed["subset_32k"]
    r = run_cli("eval", exported / "model.onnx", "--max-bytes", 32768, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert abs(got["bits_per_byte"] - quality["bits_per_byte"]) < 0.01 * quality["bits_per_byte"], (got, quality)
    assert got["compressors"] == pytest.approx(quality["compressors"], rel=1e-9)
    assert committed["bits_per_byte"] < committed["compressors"]["gzip -9"]
