"""Bad input: one line naming the problem and the fix, non-zero exit, no traceback, no
partial output left behind (acceptance item 6)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from edgekit_testutil import assert_clean_failure, assert_no_output, run_cli


def test_missing_file(tmp_path):
    r = run_cli("export", tmp_path / "nope.pth", "-o", tmp_path / "out")
    assert_clean_failure(r, "nope.pth", "does not exist")
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("content", [b"hello, this is not a model\n", os.urandom(4096), b""])
def test_not_a_checkpoint(tmp_path, content):
    f = tmp_path / "junk.pth"
    f.write_bytes(content)
    r = run_cli("export", f, "-o", tmp_path / "out")
    assert_clean_failure(r, "junk.pth", "not a")
    assert_no_output(tmp_path / "out")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    f = tmp_path / "evil.pth"
    with open(f, "wb") as fh:
        torch.save({"emb.weight": torch.zeros(2, 2), "payload": _Evil(marker)}, fh)
    assert not marker.exists()
    r = run_cli("export", f, "-o", tmp_path / "out")
    assert_clean_failure(r, "evil.pth", "pickled code")
    assert not marker.exists(), "the payload ran"
    assert_no_output(tmp_path / "out")
    # also a raw pickle (not a torch zip)
    raw = tmp_path / "evil2.pth"
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    r = run_cli("export", raw, "-o", tmp_path / "out")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert not marker.exists()


@pytest.fixture(scope="module")
def small_sd():
    from edgekit.models.rwkv7 import random_state_dict
    return random_state_dict(vocab_size=512, n_embd=128, n_layer=2, head_size=64, seed=0)


def test_missing_keys(tmp_path, small_sd):
    sd = dict(small_sd)
    del sd["blocks.1.att.key.weight"]
    torch.save(sd, tmp_path / "m.pth")
    r = run_cli("export", tmp_path / "m.pth", "-o", tmp_path / "out")
    assert_clean_failure(r, "missing", "blocks.1.att.key.weight")
    assert_no_output(tmp_path / "out")


def test_misshapen_keys(tmp_path, small_sd):
    sd = dict(small_sd)
    sd["blocks.0.ffn.value.weight"] = torch.zeros(128, 100, dtype=torch.bfloat16)
    torch.save(sd, tmp_path / "m.pth")
    r = run_cli("export", tmp_path / "m.pth", "-o", tmp_path / "out")
    assert_clean_failure(r, "blocks.0.ffn.value.weight", "(128, 100)", "expected")
    assert_no_output(tmp_path / "out")


def test_failed_export_keeps_previous_artifacts(tmp_path, small_sd, rwkv7_export):
    """A bad checkpoint exported over an existing OUTDIR leaves the good files untouched."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(rwkv7_export("fused"), out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    r = run_cli("export", tmp_path / "bad.pth", "-o", out)
    assert_clean_failure(r, "bad.pth")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
@pytest.mark.parametrize("keep_manifest_size", [False, True])
def test_truncated_artifact(tmp_path, rwkv7_export, art, keep_manifest_size):
    import json
    import shutil
    out = tmp_path / "out"
    shutil.copytree(rwkv7_export("fused"), out)
    data = (out / art).read_bytes()
    (out / art).write_bytes(data[: len(data) // 3])
    if keep_manifest_size:   # the manifest updated to match: the runtime's own check must catch it
        m = json.loads((out / "edgekit.json").read_text())
        m["artifacts"][art.split(".")[1]]["bytes"] = len(data) // 3
        (out / "edgekit.json").write_text(json.dumps(m))
    r = run_cli("run", out / art, "--tokens", "1,2", "--steps", "2")
    assert_clean_failure(r, art, "export it again")


def test_state_file_from_another_model(tmp_path, rwkv7_export, small_sd):
    from edgekit.export import export
    from edgekit.runtimes.session import StreamingSession
    torch.save(small_sd, tmp_path / "other.pth")
    other = export(tmp_path / "other.pth", tmp_path / "other", formats=("onnx",), ops="fused", state_style="buffers")
    assert other.arch == "rwkv7"
    s = StreamingSession(tmp_path / "other" / "model.onnx")
    s.feed([1, 2, 3])
    s.save_state(tmp_path / "other.state")
    r = run_cli("run", rwkv7_export("fused") / "model.onnx", "--state-in", tmp_path / "other.state", "--steps", "2")
    assert_clean_failure(r, "other.state", "another model")
    # same layout, different weights: still refused (model_id)
    sd2 = {k: v.clone() for k, v in small_sd.items()}
    sd2["head.weight"] += 1
    torch.save(sd2, tmp_path / "twin.pth")
    export(tmp_path / "twin.pth", tmp_path / "twin", formats=("onnx",), ops="fused", state_style="buffers")
    r = run_cli("run", tmp_path / "twin" / "model.onnx", "--state-in", tmp_path / "other.state", "--steps", "2")
    assert_clean_failure(r, "another model")


def test_corrupt_state_file_and_state_out_is_atomic(tmp_path, rwkv7_export):
    onnx_path = rwkv7_export("fused") / "model.onnx"
    good = tmp_path / "s"
    assert run_cli("run", onnx_path, "--tokens", "1,2", "--steps", "1", "--state-out", good).returncode == 0
    saved = good.read_bytes()
    # a failing run (bad --tokens) never touches an existing state file
    r = run_cli("run", onnx_path, "--tokens", "1,x", "--steps", "1", "--state-out", good)
    assert_clean_failure(r, "--tokens")
    assert good.read_bytes() == saved
    bad = tmp_path / "bad"
    bad.write_bytes(saved[: len(saved) // 2])
    assert_clean_failure(run_cli("run", onnx_path, "--state-in", bad, "--steps", "1"), "state")
    assert not list(tmp_path.glob(".*tmp"))


def test_out_of_range_token(rwkv7_export):
    r = run_cli("run", rwkv7_export("fused") / "model.onnx", "--tokens", "1,99999999", "--steps", "1")
    assert_clean_failure(r, "out of range", "65536")


@pytest.mark.parametrize("mutate,needle", [
    (lambda sd: sd.__setitem__("emb.weight", sd["emb.weight"].flatten()), "emb.weight"),
    (lambda sd: sd.__setitem__("blocks.1.ffn.key.weight", sd["blocks.1.ffn.key.weight"].t().contiguous()),
     "blocks.1.ffn.key.weight"),
    (lambda sd: sd.__setitem__("blocks.1.att.w1", sd["blocks.1.att.w1"].t().contiguous()), "blocks.1.att.w1"),
    (lambda sd: sd.__setitem__("blocks.x.foo", torch.zeros(1)), "blocks.x.foo"),
    (lambda sd: sd.__setitem__("blocks.0.att.r_k", sd["blocks.0.att.r_k"].long()), "blocks.0.att.r_k"),
], ids=["1d-emb", "transposed-ffn", "transposed-lora", "bad-layer-key", "int-tensor"])
def test_malformed_tensors(tmp_path, small_sd, mutate, needle):
    sd = dict(small_sd)
    mutate(sd)
    torch.save(sd, tmp_path / "m.pth")
    r = run_cli("export", tmp_path / "m.pth", "-o", tmp_path / "out")
    assert_clean_failure(r, needle)
    assert_no_output(tmp_path / "out")


def test_state_out_checked_before_streaming(tmp_path, rwkv7_export):
    onnx_path = rwkv7_export("fused") / "model.onnx"
    r = run_cli("run", onnx_path, "--tokens", "1", "--steps", "1", "--state-out", tmp_path)
    assert_clean_failure(r, "--state-out", "is a directory")
    r = run_cli("run", onnx_path, "--tokens", "1", "--steps", "1", "--state-out", tmp_path / "no" / "such" / "s")
    assert_clean_failure(r, "--state-out", "does not exist")


def test_ctrl_c_saves_state_at_a_token_boundary(tmp_path, rwkv7_export):
    """SIGINT during a long stream: exit 130, the state so far saved and loadable."""
    import signal
    import subprocess
    import sys
    import time
    from edgekit_testutil import REPO
    from edgekit.runtimes.session import StreamingSession
    onnx_path = rwkv7_export("fused") / "model.onnx"
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(onnx_path), "--tokens", "1,2",
                          "--steps", "1000000", "--state-out", str(tmp_path / "s")],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.read(1)                     # streaming has started (the first token is printed)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted after" in err and "state saved" in err
    sess = StreamingSession(onnx_path)
    sess.load_state(tmp_path / "s")
    assert sess.position >= 3
