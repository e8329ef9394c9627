"""Constant memory (acceptance item 3): 20,000 tokens through the ONNX and .pte sessions
in a fresh process each; resident memory after warm-up and after the last step differ
by < 2 MB, and no NaN/Inf appears in outputs or state."""

from __future__ import annotations

import json

import pytest

from edgekit_testutil import run_cli

TOKENS = 20_000


@pytest.mark.slow
@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
def test_rss_flat_over_20k_tokens(rwkv7_export, art):
    r = run_cli("bench", rwkv7_export("fused") / art, "--steps", TOKENS, "--warmup", 64, "--json", timeout=1200)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print(art, res)
    assert res["steps"] == TOKENS and res["finite"]
    assert abs(res["rss_mb_end"] - res["rss_mb_start"]) < 2.0, res
    assert res["state_bytes"] == json.loads((rwkv7_export("fused") / "edgekit.json").read_text())["state_bytes"]
