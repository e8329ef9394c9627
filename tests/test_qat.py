"""`edgekit quantize --ternary`: quantization-aware fine-tuning writes the architecture's own
format with exactly ternary weights, which `edgekit export --quant ternary` reads back with
no further loss; bad input gets one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit_testutil import assert_clean_failure, run_cli


@pytest.fixture(scope="module")
def tiny_hawk(tmp_path_factory):
    """A tiny byte-level Hawk (transformers' save_pretrained) with the bundled byte tokenizer."""
    import shutil

    from edgekit.models.hawk import write_random_hf_dir
    d = write_random_hf_dir(tmp_path_factory.mktemp("qat") / "hawk", seed=0, vocab_size=256, hidden_size=32,
                            intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, lru_width=32,
                            num_hidden_layers=2, block_types=["recurrent"], attention_window_size=8)
    from edgekit_testutil import REPO
    shutil.copyfile(REPO / "edgekit" / "bundled" / "hawk-stdlib" / "tokenizer.json", d / "tokenizer.json")
    return d


@pytest.fixture(scope="module")
def qat_out(tiny_hawk, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat-out") / "ternary"
    r = run_cli("quantize", tiny_hawk, "--ternary", "--steps", "8", "--batch", "2", "--seq", "32", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def test_quantize_writes_exactly_ternary_weights_in_the_same_format(qat_out):
    from safetensors.torch import load_file
    rec = json.loads((qat_out / "quantize.json").read_text())
    assert rec["scheme"] == "ternary" and rec["steps"] == 8 and rec["extra_rmsnorm"] is False
    sd = load_file(str(qat_out / "model.safetensors"))
    quantized = [n.removesuffix(" (tied)") for n in rec["quantized"]]
    assert quantized
    for name in quantized:
        w = sd.get(name + ".weight")
        if w is None:                 # a tied head has no tensor of its own
            continue
        mags = w.float().abs()
        assert w.dtype == torch.bfloat16 and len(torch.unique(mags[mags > 0])) == 1, name
    cfg = json.loads((qat_out / "config.json").read_text())
    assert cfg["edgekit_quantization"]["scheme"] == "ternary"


def test_export_reads_the_ternary_codes_back_exactly(qat_out, tmp_path):
    """absmean of gamma * W~ is gamma times the share of nonzeros, the wrong scale: an already
    ternary weight gives back W~ and its own magnitude."""
    from edgekit.models import load_model
    from edgekit.models.layers import Linear
    from edgekit.quant import QuantLinear, quantize_model
    m = load_model(qat_out)
    before = {n: mod.weight.detach().t().clone() for n, mod in m.named_modules() if isinstance(mod, Linear)}
    quantize_model(m, "ternary")
    ternary = 0
    for n, mod in m.named_modules():
        if isinstance(mod, QuantLinear) and n in before:
            if mod.bits == 2:
                ternary += 1
                assert torch.equal(mod.weight_float(), before[n]), n
            else:   # the int4 head: its dequantized values were saved in bf16
                assert torch.allclose(mod.weight_float(), before[n], rtol=1e-2, atol=0), n
    assert ternary >= 4


def test_quantized_checkpoint_exports_and_runs(qat_out, tmp_path):
    r = run_cli("export", qat_out, "-o", tmp_path / "out", "--format", "onnx", "--quant", "ternary")
    assert r.returncode == 0, r.stderr
    r = run_cli("run", tmp_path / "out" / "model.onnx", "--prompt", "def f(x):", "--steps", "8", "--json")
    assert r.returncode == 0, r.stderr


def test_quantize_trains_mamba_with_its_fast_scan_and_checks_it(tmp_path):
    """Mamba (1) fine-tunes with edgekit.models.mamba_training's scan (transformers' own torch
    fallback takes over a minute a step on a CPU); the result is checked against
    transformers' scan and the check is recorded."""
    import shutil

    from edgekit.models.mamba import write_random_hf
    from edgekit_testutil import REPO
    d = write_random_hf(tmp_path / "mamba", "mamba", seed=0, vocab_size=256, hidden_size=32, num_hidden_layers=2,
                        state_size=8, expand=2, conv_kernel=4)
    shutil.copyfile(REPO / "edgekit" / "bundled" / "hawk-stdlib" / "tokenizer.json", d / "tokenizer.json")
    r = run_cli("quantize", d, "--ternary", "--steps", "8", "--batch", "2", "--seq", "32", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "out" / "quantize.json").read_text())
    assert record["arch"] == "mamba" and record["training_scan"]["max_rel_diff_vs_transformers_scan"] <= 1e-4


@pytest.mark.parametrize("args,words", [
    (["--ternary", "--steps", "3"], "--steps 3 is too few to ramp"),
    (["--steps", "20"], "edgekit quantize needs a scheme"),
    (["--ternary", "--steps", "20", "--lr", "nan"], "--lr nan is not a positive number"),
])
def test_quantize_bad_input_gets_one_line(tiny_hawk, tmp_path, args, words):
    r = run_cli("quantize", tiny_hawk, "-o", tmp_path / "out", *args)
    assert_clean_failure(r, words)
    assert not (tmp_path / "out").exists()


def test_quantize_refuses_what_is_no_model_and_an_existing_folder(tiny_hawk, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("quantize", tmp_path / "empty", "--ternary", "--steps", "8", "-o", tmp_path / "out")
    assert_clean_failure(r, "is neither a Hugging Face save_pretrained folder (no config.json) nor an RWKV-7 .pth")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = run_cli("quantize", tiny_hawk, "--ternary", "--steps", "8", "-o", tmp_path / "mine")
    assert_clean_failure(r, "exists and is not empty")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert np.all([p.name == "notes.txt" for p in (tmp_path / "mine").iterdir()])


@pytest.fixture(scope="module")
def tiny_rwkv7(tmp_path_factory):
    """A tiny byte-level RWKV-7 BlinkDL .pth with the bundled byte tokenizer beside it."""
    import shutil

    from edgekit.models.rwkv7 import write_random_checkpoint
    from edgekit_testutil import REPO
    d = tmp_path_factory.mktemp("qat-rwkv7")
    pth = write_random_checkpoint(d / "tiny.pth", vocab_size=256, n_embd=64, n_layer=2, head_size=32, seed=0)
    shutil.copyfile(REPO / "edgekit" / "bundled" / "hawk-stdlib" / "tokenizer.json", d / "tokenizer.json")
    return pth


def test_quantize_trains_an_rwkv7_pth_into_a_ternary_pth(tiny_rwkv7, tmp_path):
    """RWKV-7 trains on edgekit's own model (ln0 kept apart, the WKV reference) and is written
    back as a BlinkDL .pth: every Linear the export quantizes (the six per block, the head in
    int4) holds exactly gamma * W~, the LoRA matrices stay float, and `edgekit export
    OUT/rwkv7.pth --quant ternary` reads the very codes back and runs."""
    from edgekit.models import load_model
    from edgekit.quant import QuantLinear, quantize_model
    out = tmp_path / "out"
    r = run_cli("quantize", tiny_rwkv7, "--ternary", "--steps", "8", "--batch", "2", "--seq", "32", "-o", out)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "quantize.json").read_text())
    assert rec["arch"] == "rwkv7" and rec["export"] == "edgekit export OUT/rwkv7.pth --quant ternary"
    blocks = {f"model.blocks.{i}.{n}" for i in range(2) for n in ("att.receptance", "att.key", "att.value",
                                                                   "att.output", "ffn.key", "ffn.value")}
    assert set(rec["quantized"]) == blocks | {"model.head"}
    sd = torch.load(out / "rwkv7.pth", weights_only=True)
    for name in blocks:
        w = sd[name.removeprefix("model.") + ".weight"].float().abs()
        assert len(torch.unique(w[w > 0])) == 1, name
    lora = sd["blocks.1.att.w1"].float().abs()
    assert len(torch.unique(lora)) > 3
    m = load_model(out / "rwkv7.pth")
    before = {n: mod.weight.detach().t().clone() for n, mod in m.named_modules() if hasattr(mod, "d_in")}
    quantize_model(m, "ternary")
    ternary = [n for n, mod in m.named_modules() if isinstance(mod, QuantLinear) and mod.bits == 2]
    assert len(ternary) == 12 and all(torch.equal(dict(m.named_modules())[n].weight_float(), before[n])
                                      for n in ternary)
    r = run_cli("export", out / "rwkv7.pth", "-o", tmp_path / "exp", "--format", "onnx", "--quant", "ternary")
    assert r.returncode == 0, r.stderr
    r = run_cli("run", tmp_path / "exp" / "model.onnx", "--prompt", "def f(x):", "--steps", "8", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli("quantize", tiny_rwkv7, "--ternary", "--steps", "8", "--bitnet-packing", "-o", tmp_path / "p")
    assert_clean_failure(r, "an RWKV-7 .pth is no transformers checkpoint")
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def packed_out(tiny_hawk, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat-packed") / "packed"
    r = run_cli("quantize", tiny_hawk, "--ternary", "--steps", "8", "--batch", "2", "--seq", "32", "--bitnet-packing",
                "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def test_bitnet_packed_checkpoint_reads_back_the_same_model(packed_out, qat_out):
    """--bitnet-packing stores the ternary Linears as transformers does (uint8 (out/4, in),
    weight_scale, quantization_config bitnet/autobitlinear); edgekit reads it back to the very
    weights the unpacked checkpoint holds (same seed, same steps)."""
    from safetensors.torch import load_file

    from edgekit.models import load_model
    cfg = json.loads((packed_out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "bitnet"
    sd = load_file(str(packed_out / "model.safetensors"))
    packed = json.loads((packed_out / "quantize.json").read_text())["bitnet_packed"]
    assert packed and all(sd[n + ".weight"].dtype == torch.uint8 for n in packed)
    a, b = load_model(packed_out).state_dict(), load_model(qat_out).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage,words", [
    ("zero scale", "is 0.0; expected a finite scale > 0"),
    ("negative scale", "is -1.0; expected a finite scale > 0"),
    ("short packed rows", "has shape (28, 32); expected (32, 32)"),
])
def test_bitnet_packed_checkpoint_bad_input(packed_out, tmp_path, damage, words):
    """A packed checkpoint with a zero or negative weight_scale, or a packed shape its
    config does not give, is refused in one line."""
    import shutil

    from safetensors.torch import load_file, save_file
    d = tmp_path / "bad"
    shutil.copytree(packed_out, d)
    sd = load_file(str(d / "model.safetensors"))
    name = json.loads((d / "quantize.json").read_text())["bitnet_packed"][0]
    if damage == "zero scale":
        sd[name + ".weight_scale"] = torch.zeros(1, dtype=torch.bfloat16)
    elif damage == "negative scale":
        sd[name + ".weight_scale"] = -torch.ones(1, dtype=torch.bfloat16)
    else:
        sd[name + ".weight"] = sd[name + ".weight"][:-1].contiguous()
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    r = run_cli("export", d, "-o", tmp_path / "out", "--format", "onnx", "--quant", "ternary")
    assert_clean_failure(r, words)
    assert not (tmp_path / "out").exists()
