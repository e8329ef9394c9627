"""`edgekit run --input` for feature models (CfC / LTC), their bad input (one line on
stderr naming the problem, non-zero exit, no traceback, no partial output), and constant
memory over 100,000 streamed steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, run_cli


I, U = 4, 16


@pytest.fixture(scope="module")
def cfc_dir(tmp_path_factory):
    from edgekit.models.cfc import random_ncps_module, save_ncps_dir
    m = random_ncps_module("CfC", I, U, seed=5)
    return m, save_ncps_dir(m, tmp_path_factory.mktemp("cfc-cli"))


@pytest.fixture(scope="module")
def cfc_export(cfc_dir, tmp_path_factory):
    from edgekit.export import export
    out = tmp_path_factory.mktemp("cfc-cli-export")
    export(cfc_dir[1], out, formats=("onnx", "pte"), ops="fused", state_style="buffers")
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, I)).astype(np.float32), rng.uniform(0.2, 2.0, 12).astype(np.float32)


def _oracle(m, x, dt):
    with torch.no_grad():
        y, _ = m(torch.from_numpy(x)[None], timespans=torch.from_numpy(dt)[None, :, None])
    return y[0].numpy()


def _write_csv(path, x, dt=None, dt_at=1):
    names = [f"f{i}" for i in range(x.shape[1])]
    cols = [list(map(repr, map(float, c))) for c in x.T]
    if dt is not None:
        names.insert(dt_at, "dt")
        cols.insert(dt_at, list(map(repr, map(float, dt))))
    path.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in zip(*cols)))
    return path


@pytest.mark.parametrize("art", ["model.onnx", "model.pte", "checkpoint"])
def test_run_csv_matches_ncps(cfc_dir, cfc_export, data, tmp_path, art):
    m, d = cfc_dir
    x, dt = data
    src = d if art == "checkpoint" else cfc_export / art
    r = run_cli("run", src, "--input", _write_csv(tmp_path / "in.csv", x, dt), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out) == ["outputs"]
    got = np.array(out["outputs"])
    assert got.shape == (12, U)
    ref = _oracle(m, x, dt)
    assert np.abs(got - ref).max() / ref.std() <= 1e-5


def test_run_prints_one_line_per_step_and_defaults_dt(cfc_dir, cfc_export, data, tmp_path):
    m, _ = cfc_dir
    x, _ = data
    r = run_cli("run", cfc_export / "model.onnx", "--input", _write_csv(tmp_path / "in.csv", x))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 12 and all(len(ln.split(",")) == U for ln in lines)
    got = np.array([[float(v) for v in ln.split(",")] for ln in lines])
    ref = _oracle(m, x, np.ones(12, np.float32))                       # dt = 1.0 by default
    assert np.abs(got - ref).max() / ref.std() <= 1e-5


def test_run_npy_with_and_without_dt(cfc_dir, cfc_export, data, tmp_path):
    m, _ = cfc_dir
    x, dt = data
    np.save(tmp_path / "a.npy", np.c_[x, dt])                          # (T, I+1): dt last
    np.save(tmp_path / "b.npy", x)                                     # (T, I): dt = 1
    for f, d in (("a.npy", dt), ("b.npy", np.ones(12, np.float32))):
        r = run_cli("run", cfc_export / "model.onnx", "--input", tmp_path / f, "--json", "--steps", 5)
        assert r.returncode == 0, r.stderr
        got = np.array(json.loads(r.stdout)["outputs"])
        ref = _oracle(m, x, d)[:5]
        assert got.shape == (5, U) and np.abs(got - ref).max() / ref.std() <= 1e-5


# ---- bad input -------------------------------------------------------------------------
def test_dir_missing_config_or_weights(cfc_dir, tmp_path):
    import shutil
    _, d = cfc_dir
    no_cfg = tmp_path / "no_cfg"
    shutil.copytree(d, no_cfg)
    (no_cfg / "config.json").unlink()
    r = run_cli("export", no_cfg, "-o", tmp_path / "out")
    assert_clean_failure(r, "no_cfg", "config.json")
    no_w = tmp_path / "no_weights"
    shutil.copytree(d, no_w)
    (no_w / "model.safetensors").unlink()
    r = run_cli("export", no_w, "-o", tmp_path / "out")
    assert_clean_failure(r, "no_weights", "has no weights", "model.safetensors")
    assert_no_output(tmp_path / "out")


def _edit_config(src, dst, **changes):
    import shutil
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_config_weight_shape_mismatch(cfc_dir, tmp_path):
    d = _edit_config(cfc_dir[1], tmp_path / "m", units=U + 2)
    r = run_cli("export", d, "-o", tmp_path / "out")
    assert_clean_failure(r, "rnn_cell.backbone.0.weight", "has shape", "expected")
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("change,needle", [({"mixed_memory": True}, "mixed_memory"),
                                           ({"activation": "relu"}, "activation='relu'"),
                                           ({"dropout_schedule": 3}, "'dropout_schedule'"),
                                           ({"mode": "fancy"}, "mode='fancy'"),
                                           ({"units": {"wiring": "NCP", "units": 10}}, "units.wiring='NCP'")])
def test_unsupported_config_option_named(cfc_dir, tmp_path, change, needle):
    d = _edit_config(cfc_dir[1], tmp_path / "m", **change)
    r = run_cli("export", d, "-o", tmp_path / "out")
    assert_clean_failure(r, "unsupported config option", needle)
    assert_no_output(tmp_path / "out")


def test_csv_wrong_columns_non_numeric_negative_dt(cfc_export, data, tmp_path):
    x, dt = data
    onnx_path = cfc_export / "model.onnx"
    r = run_cli("run", onnx_path, "--input", _write_csv(tmp_path / "a.csv", x[:, :3], dt))
    assert_clean_failure(r, "a.csv", "3 feature column(s)", f"expected {I} feature columns")
    bad = _write_csv(tmp_path / "b.csv", x, dt)
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], "abc", 1)
    bad.write_text("\n".join(lines) + "\n")
    r = run_cli("run", onnx_path, "--input", bad)
    assert_clean_failure(r, "b.csv", "line 4", "'abc' is not a number")
    neg = dt.copy()
    neg[5] = -0.5
    r = run_cli("run", onnx_path, "--input", _write_csv(tmp_path / "c.csv", x, neg))
    assert_clean_failure(r, "c.csv", "step 5 has dt = -0.5", "dt > 0")
    assert r.stdout == ""                                               # nothing before the check
    np.save(tmp_path / "d.npy", x[:, :2])
    assert_clean_failure(run_cli("run", onnx_path, "--input", tmp_path / "d.npy"), "d.npy", "shape (12, 2)")


def test_input_kind_mismatch(cfc_export, data, tmp_path):
    from edgekit.models.rwkv7 import write_random_checkpoint
    r = run_cli("run", cfc_export / "model.onnx", "--tokens", "1,2")
    assert_clean_failure(r, "cfc model that takes feature inputs", "--tokens", "--input")
    r = run_cli("run", cfc_export / "model.onnx", "--prompt", "hi")
    assert_clean_failure(r, "feature inputs", "--prompt")
    ckpt = write_random_checkpoint(tmp_path / "tiny.pth", vocab_size=64, n_embd=64, n_layer=1, head_size=64)
    r = run_cli("run", ckpt, "--input", _write_csv(tmp_path / "in.csv", data[0]))
    assert_clean_failure(r, "rwkv7 model that takes token ids", "--input", "--tokens")


# ---- constant memory -------------------------------------------------------------------
STEPS = 100_000
_STREAM = """
import sys, numpy as np
from edgekit.cli.bench import rss_mb
from edgekit.runtimes.session import StreamingSession
s = StreamingSession(sys.argv[1])
rng = np.random.default_rng(0)
xs = [(rng.standard_normal({I}).astype(np.float32), np.float32(rng.uniform(0.5, 1.5))) for _ in range(1024)]
for x in xs[:64]:
    s.step(x)
r0 = rss_mb()
for i in range({STEPS}):
    y = s.step(xs[i % 1024])
assert np.isfinite(y).all()
print(rss_mb() - r0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
def test_rss_flat_over_100k_steps(cfc_export, art):
    """`edgekit bench` streams 100,000 steps (irregular dt) with finite outputs and the
    manifest's state size; a plain session stream of 100,000 steps grows RSS < 2 MB.
    (bench's own rss_mb_end - rss_mb_start also counts its input chunks, ~3.6 MB for
    a features model: two 4096-step chunks of numpy arrays alive at once.)"""
    import subprocess
    import sys

    r = run_cli("bench", cfc_export / art, "--steps", STEPS, "--warmup", 64, "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print(art, res)
    assert res["steps"] == STEPS and res["finite"]
    assert res["state_bytes"] == json.loads((cfc_export / "edgekit.json").read_text())["state_bytes"] == 4 * U
    p = subprocess.run([sys.executable, "-c", _STREAM.format(I=I, STEPS=STEPS), str(cfc_export / art)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr
    growth = float(p.stdout.strip().splitlines()[-1])
    print(art, "session rss growth MB", growth)
    assert abs(growth) < 2.0
