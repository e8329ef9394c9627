"""Corrupt or crafted checkpoints (edgekit/models/_checkpoint.py): memory bombs (stride-0 and
overlapping views, tensors past their storage, views aliasing one storage, safetensors
headers declaring huge shapes), non-finite weights and bad config.json files. Each goes
through the real CLI (`edgekit export` / `edgekit run` in a fresh process) and must give one
line naming the tensor or key, a non-zero exit, no traceback, no partial output; the bombs
must be refused before anything is allocated (the child's peak memory stays low)."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgekit_testutil import (REPO, assert_clean_failure, assert_no_output, run_cli, run_cli_peak,
                              tiny_checkpoints)

# A CLI process that imports torch and fails at load peaks near 0.4 GB; a bomb below declares
# 1 GB of bf16 weights (2 GB as float32), which the loader used to materialise (4+ GB peak).
PEAK_LIMIT = 1_000_000_000


@pytest.fixture(scope="module")
def rwkv7_sd(tmp_path_factory):
    """A tiny RWKV-7 checkpoint's state_dict (vocab 256, C 128, 2 layers, bf16)."""
    from edgekit.models.rwkv7 import RWKV7
    path = RWKV7.write_random(tmp_path_factory.mktemp("hostile-rwkv7") / "tiny.pth")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def arch_ckpt(tmp_path_factory):
    """arch -> a tiny random checkpoint of it, in its real format (write_random)."""
    return tiny_checkpoints(tmp_path_factory.mktemp("hostile-archs"))


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    return dst


def _export_fails(src, tmp_path, *needles):
    r = run_cli("export", src, "-o", tmp_path / "out", "--format", "onnx")
    assert_clean_failure(r, *needles)
    assert_no_output(tmp_path / "out")
    return r


# ---- memory bombs in .pth files --------------------------------------------------------------
def test_stride0_embedding_is_refused_before_allocating(tmp_path, rwkv7_sd):
    """A 1 MB .pth whose embedding and head are torch.zeros(1, C).expand(V, C): V = 2M rows,
    1 GB of bf16 declared by 128 stored values each."""
    sd = dict(rwkv7_sd)
    V = 2_000_000
    sd["emb.weight"] = torch.zeros(1, 128, dtype=torch.bfloat16).expand(V, 128)
    sd["head.weight"] = torch.zeros(1, 128, dtype=torch.bfloat16).expand(V, 128)
    torch.save(sd, tmp_path / "bomb.pth")
    assert (tmp_path / "bomb.pth").stat().st_size < 4_000_000
    r, peak = run_cli_peak("run", tmp_path / "bomb.pth", "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, "bomb.pth", "'emb.weight'", "(2000000, 128)", "strides (0, 1)", "stride 0",
                         "corrupt or crafted")
    assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB: the bomb was materialised"


def test_overlapping_view_is_refused(tmp_path, rwkv7_sd):
    """as_strided rows that overlap: (V, C) with strides (1, 1) reads V + C - 1 stored values."""
    sd = dict(rwkv7_sd)
    V = 1_000_000
    for k in ("emb.weight", "head.weight"):
        sd[k] = torch.randn(V + 127).to(torch.bfloat16).as_strided((V, 128), (1, 1))
    torch.save(sd, tmp_path / "overlap.pth")
    r, peak = run_cli_peak("export", tmp_path / "overlap.pth", "-o", tmp_path / "out", "--format", "onnx")
    assert_clean_failure(r, "'emb.weight'", "(1000000, 128)", "strides (1, 1)", "overlapping", "corrupt or crafted")
    assert_no_output(tmp_path / "out")
    assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"


class _Storage:
    pass


class _Tensor:
    def __init__(self, storage, size, stride):
        self.args = (storage, 0, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def _write_raw_pth(path, tensors: dict, data: bytes, declared_numel: int):
    """A torch.save zip, written by hand: one float32 storage of `data` whose pickle declares
    `declared_numel` elements, and tensors {name: (size, stride)} over it."""
    storage = _Storage()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", declared_numel) if obj is storage else None
    buf = io.BytesIO()
    P(buf, protocol=2).dump({k: _Tensor(storage, size, stride) for k, (size, stride) in tensors.items()})
    w = torch._C.PyTorchFileWriter(str(path))
    for name, rec in (("data.pkl", buf.getvalue()), ("byteorder", b"little"), ("data/0", data), ("version", b"3\n")):
        w.write_record(name, rec, len(rec))
    w.write_end_of_file()


@pytest.mark.parametrize("declared,size", [(4, (1_000_000,)), (1_000_000, (1_000_000,))],
                         ids=["view-past-storage", "storage-past-record"])
def test_tensor_past_its_stored_data_is_refused(tmp_path, declared, size):
    """A tensor whose size reaches past its storage, or a storage declared larger than the
    16 bytes the file stores for it."""
    f = tmp_path / "short.pth"
    _write_raw_pth(f, {"emb.weight": (size, (1,))}, b"\0" * 16, declared)
    r = run_cli("run", f, "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, "short.pth", "larger than the data", "corrupt or crafted")


def test_views_aliasing_one_storage_are_bounded_by_the_file(tmp_path, rwkv7_sd):
    """Forty keys that are overlapping slices of one 2 MB storage declare 80 MB: each view is
    a plain dense tensor, but together they claim far more than the file holds."""
    sd = dict(rwkv7_sd)
    base = torch.randn(1_000_000).to(torch.bfloat16)
    for i in range(40):
        sd[f"extra.{i}"] = base[i:]
    torch.save(sd, tmp_path / "aliased.pth")
    _export_fails(tmp_path / "aliased.pth", tmp_path, "aliased.pth", "declares", "of tensors in a file of",
                  "corrupt or crafted")


def test_layer_index_bomb_is_refused(tmp_path, rwkv7_sd):
    """One key 'blocks.200000.*' would make a 200,000-layer config (millions of expected keys)."""
    sd = dict(rwkv7_sd)
    sd["blocks.200000.att.w0"] = torch.zeros(128, dtype=torch.bfloat16)
    torch.save(sd, tmp_path / "layers.pth")
    _export_fails(tmp_path / "layers.pth", tmp_path, "layer 200,000", "corrupt or crafted")


# ---- Hugging Face folders: safetensors headers, pytorch_model.bin ---------------------------------
def _rewrite_header(f, edit):
    b = f.read_bytes()
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n])
    edit(header)
    h = json.dumps(header).encode()
    f.write_bytes(len(h).to_bytes(8, "little") + h + b[8 + n:])


def test_safetensors_header_with_a_huge_shape(tmp_path, arch_ckpt):
    d = _copy(arch_ckpt("mamba"), tmp_path)
    _rewrite_header(d / "model.safetensors",
                    lambda h: h["backbone.embeddings.weight"].update(shape=[10 ** 12, 64]))
    _export_fails(d, tmp_path, "model.safetensors", "'backbone.embeddings.weight'", "(1000000000000, 64)",
                  "corrupt or crafted")


def test_safetensors_header_longer_than_the_file(tmp_path, arch_ckpt):
    d = _copy(arch_ckpt("recurrent_gemma"), tmp_path)
    f = d / "model.safetensors"
    f.write_bytes((10 ** 15).to_bytes(8, "little") + f.read_bytes()[8:])
    _export_fails(d, tmp_path, "model.safetensors", "header claims 1,000,000,000,000,000 bytes",
                  "corrupt or crafted")


def test_pytorch_model_bin_stride0_is_refused(tmp_path, arch_ckpt):
    d = _copy(arch_ckpt("mamba"), tmp_path)
    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    sd["backbone.embeddings.weight"] = torch.zeros(1, 64).expand(4_000_000, 64)     # 1 GB of float32 declared
    torch.save(sd, d / "pytorch_model.bin")
    r, peak = run_cli_peak("run", d, "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, "pytorch_model.bin", "'backbone.embeddings.weight'", "stride 0", "corrupt or crafted")
    assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"


# ---- non-finite weights: every architecture ------------------------------------------------
@pytest.mark.parametrize("arch,value,needle", [
    ("rwkv7", float("nan"), "NaN"), ("mamba", float("inf"), "inf"), ("mamba2", float("nan"), "NaN"),
    ("recurrent_gemma", float("-inf"), "-inf"), ("cfc", float("nan"), "NaN"), ("ltc", float("inf"), "inf")])
def test_non_finite_weight_is_refused_by_name(tmp_path, arch_ckpt, arch, value, needle):
    src = _copy(arch_ckpt(arch), tmp_path)
    f = src if src.is_file() else next(src.glob("*.safetensors"))
    sd = load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, weights_only=True)
    name = sorted(k for k, t in sd.items() if t.is_floating_point() and t.dim() == 2)[-1]
    t = sd[name].clone()
    t[1, 0] = value
    sd[name] = t
    save_file(sd, str(f)) if f.suffix == ".safetensors" else torch.save(sd, f)
    _export_fails(src, tmp_path, f"weight '{name}'", f"holds {needle} at [1, 0]", "finite")


# ---- config.json ------------------------------------------------------------------------
def _set(**kw):
    return lambda cfg: {**cfg, **kw}


def _drop(key):
    return lambda cfg: {k: v for k, v in cfg.items() if k != key}


@pytest.mark.parametrize("arch,edit,needles", [
    ("mamba", lambda cfg: [1, 2], ("config.json' is a JSON array", "expected a JSON object")),
    ("mamba2", lambda cfg: None, ("config.json' is a JSON null",)),
    ("recurrent_gemma", _drop("hidden_size"), ("has no 'hidden_size'",)),
    ("mamba", _set(hidden_size="64"), ('hidden_size = "64"', "an integer")),
    ("recurrent_gemma", _set(num_attention_heads=2.5), ("num_attention_heads = 2.5", "an integer")),
    ("mamba2", _set(num_hidden_layers=-2), ("num_hidden_layers = -2",)),
    ("mamba", _set(expand="2"), ('expand = "2"', "number")),
    ("mamba2", _set(hidden_size=10 ** 9), ("hidden_size = 1,000,000,000", "at most", "largest tensor")),
    ("cfc", _set(units=10 ** 9), ("units=1,000,000,000", "larger than the weights")),
    ("ltc", _set(ode_unfolds=10 ** 9), ("ode_unfolds=1,000,000,000",)),
    ("recurrent_gemma", _set(block_types="recurrent"), ("block_types",)),
    ("mamba", lambda cfg: {"d_model": 64, "n_layer": 2, "vocab_size": 256, "ssm_cfg": [1]}, ("ssm_cfg = [1]",)),
    ("mamba", _set(model_type="gpt2"), ('model_type "gpt2"', "edgekit does not load")),
], ids=["list", "null", "missing-key", "str-for-int", "float-for-int", "negative", "str-for-number",
        "huge-width", "huge-units", "huge-unfolds", "str-for-list", "ssm_cfg-list", "unknown-model-type"])
def test_bad_config_json_is_named(tmp_path, arch_ckpt, arch, edit, needles):
    d = _copy(arch_ckpt(arch), tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(edit(cfg)))
    _export_fails(d, tmp_path, *needles)


@pytest.mark.parametrize("arch,key,value,needles", [
    ("mamba", "num_hidden_layers", 10 ** 6, ("num_hidden_layers = 1,000,000", "tensors")),
    ("recurrent_gemma", "attention_window_size", 10 ** 7, ("attention_window_size = 10,000,000", "state of")),
], ids=["layers", "attention-window"])
def test_huge_config_size_is_refused_before_allocating(tmp_path, arch_ckpt, arch, key, value, needles):
    """Sizes no weight backs: a layer count (a loop over a million layers' keys) and the
    attention window (a 1.9 GB key/value ring buffer for a 260 kB model)."""
    d = _copy(arch_ckpt(arch), tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, key: value}))
    r, peak = run_cli_peak("run", d, "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, *needles)
    assert peak < PEAK_LIMIT, f"peak RSS {peak / 1e6:.0f} MB"
