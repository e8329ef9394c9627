"""fp16 ONNX (`edgekit export --dtype fp16`, what the Jetson profiles ask for): fp16 weights and
compute, the state and logits fp32 (edgekit/export/onnx_fp16.py).

What a user depends on: a trained model's fp16 export gives the fp32 export's logits within
1e-2 of their std and the same greedy bytes (or differs only where the fp32 margin is within
that tolerance); the state stays fp32 and finite over a long stream; the file is about half
the size; the manifest says fp16; a .pte cannot be fp16 and says so in one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, assert_same_lm, run_cli

TOL = 1e-2
BUNDLED = REPO / "edgekit" / "bundled"


@pytest.fixture(scope="module", params=["mamba-stdlib", "rwkv7-stdlib"])
def pair(request, tmp_path_factory):
    """(fp32 export, fp16 export) of a bundled trained model."""
    from edgekit.cli.demo import bundled_source
    from edgekit.export import export
    src = bundled_source(BUNDLED / request.param)
    d = tmp_path_factory.mktemp("fp16-" + request.param)
    export(src, d / "fp32", formats=("onnx",))
    export(src, d / "fp16", formats=("onnx",), dtype="fp16")
    return d / "fp32", d / "fp16"


def test_fp16_matches_fp32_on_python_source_and_greedy(pair):
    from edgekit.cli.demo import CODE_PROMPT
    from edgekit.runtimes.session import StreamingSession
    ref, half = StreamingSession(pair[0] / "model.onnx"), StreamingSession(pair[1] / "model.onnx")
    text = ref.tokenizer.encode((REPO / "edgekit" / "cli" / "demo.py").read_text())[:256]
    assert half.step(text[0]).dtype == np.float32
    half.reset()
    assert_same_lm(ref, half, text, ref.tokenizer.encode(CODE_PROMPT), TOL)


def test_fp16_state_stays_fp32_and_finite_over_a_long_stream(pair):
    from edgekit.runtimes.session import StreamingSession
    half = StreamingSession(pair[1] / "model.onnx")
    rng = np.random.default_rng(1)
    for t in rng.integers(0, half.manifest.config["vocab_size"], 3000):
        y = half.step(int(t))
        assert np.isfinite(y).all()
    state = half.backend.get_state()
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in state.values())


def test_fp16_manifest_and_size(pair):
    a = json.loads((pair[0] / "edgekit.json").read_text())
    b = json.loads((pair[1] / "edgekit.json").read_text())
    ea, eb = a["artifacts"]["onnx"], b["artifacts"]["onnx"]
    assert ea["dtype"] == "fp32" and eb["dtype"] == "fp16"
    assert all(s["dtype"] == "float32" for s in b["state"])
    assert eb["bytes"] < 0.6 * ea["bytes"]
    assert b["bytes_per_token"] < 0.6 * a["bytes_per_token"]


def test_the_jetson_profile_exports_fp16_onnx(tmp_path):
    out = tmp_path / "jetson"
    r = run_cli("export", BUNDLED / "mamba-stdlib", "-o", out, "--device", "jetson-orin-nano")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "edgekit.json").read_text())
    assert set(m["artifacts"]) == {"onnx"} and m["artifacts"]["onnx"]["dtype"] == "fp16"
    assert m["device_choices"]["overridden"] == {}


def test_fp16_pte_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    r = run_cli("export", BUNDLED / "mamba-stdlib", "-o", out, "--dtype", "fp16", "--format", "pte")
    assert_clean_failure(r, "dtype fp16 is built for ONNX only")
    assert_no_output(out)
