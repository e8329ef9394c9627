"""Issue 15's machinery: the stdlib corpus and its committed held-out split, the training
script (a tiny config, a few steps: the loss falls and the model loads in edgekit's real
formats), and `edgekit eval` (bits per byte against an independent computation)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from edgekit_testutil import REPO, assert_clean_failure, run_cli


def test_the_split_is_deterministic_and_matches_the_committed_list():
    from edgekit.data.stdlib import HELDOUT_LIST, corpus_files, heldout_files, split_of
    held = [rel for rel, _ in corpus_files("heldout")]
    train = [rel for rel, _ in corpus_files("train")]
    committed = [f["path"] for f in json.loads(HELDOUT_LIST.read_text())["files"]]
    assert held == committed and not set(held) & set(train)
    assert 0.03 < len(held) / (len(held) + len(train)) < 0.08
    assert all(split_of(r) == "heldout" for r in held) and [r for r, _ in heldout_files()] == held
    assert not any(part in ("test", "tests", "site-packages") for r in held + train for part in r.split("/"))


def test_a_different_stdlib_is_refused_in_one_line(tmp_path, monkeypatch):
    import edgekit.data.stdlib as stdlib
    from edgekit.errors import EdgekitError
    doc = json.loads(stdlib.HELDOUT_LIST.read_text())
    doc["files"][0]["sha256"] = "0" * 64
    (tmp_path / "list.json").write_text(json.dumps(doc))
    monkeypatch.setattr(stdlib, "HELDOUT_LIST", tmp_path / "list.json")
    with pytest.raises(EdgekitError, match="differs from the committed list"):
        stdlib.heldout_files()
    doc["files"].append({"path": "not_in_this_stdlib.py", "bytes": 1, "sha256": "0" * 64})
    (tmp_path / "list.json").write_text(json.dumps(doc))
    with pytest.raises(EdgekitError, match="different held-out file set"):
        stdlib.heldout_files()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Each architecture trained for 20 steps on a tiny config by the real script."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch in ("rwkv7", "mamba", "mamba2", "hawk"):
        r = subprocess.run([sys.executable, "scripts/train_tiny.py", arch, "-o", str(root / arch), "--tiny",
                            "--steps", "20", "--batch", "4", "--seq", "64", "--lr", "1e-2"],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[arch] = json.loads(r.stdout.strip().splitlines()[-1]), root / arch
    return out


@pytest.mark.parametrize("arch", ["rwkv7", "mamba", "mamba2", "hawk"])
def test_training_lowers_the_loss_and_writes_the_real_format(tiny_models, arch):
    record, folder = tiny_models[arch]
    assert record["last_loss_bits"] < record["first_loss_bits"] - 1.0, record
    src = folder / "rwkv7.pth" if arch == "rwkv7" else folder
    r = run_cli("run", src, "--prompt", "def f(x):", "--steps", 8, "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["tokens"]) == 8


def test_the_rwkv7_checkpoint_is_the_trained_model(tmp_path):
    """blink_state_dict is the inverse of edgekit's loader: the written .pth, loaded by
    edgekit, computes what the training model computes (its weights rounded to bf16)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_tiny
    finally:
        sys.path.pop(0)
    from edgekit.models import load_model
    m = train_tiny.build("rwkv7", train_tiny.TINY["rwkv7"], seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p)).copy_(p.bfloat16().float())
    path = train_tiny.save("rwkv7", m, tmp_path / "out")
    x = torch.randint(0, 256, (1, 40))
    want = m(x)
    got = load_model(path)(x)[0]
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_mambas_training_scan_is_transformers_scan():
    """train_tiny and `edgekit quantize` train transformers' Mamba with its torch scan fallback
    rewritten for speed (edgekit.models.mamba_training). The same model, on the same bytes,
    gives the same loss and the same gradients with transformers' own scan."""
    from edgekit.models.mamba_training import scan_for_training, training_scan
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_tiny
    finally:
        sys.path.pop(0)
    m = train_tiny.build("mamba", {**train_tiny.TINY["mamba"], "num_hidden_layers": 2}, seed=5)
    x = torch.randint(0, 256, (3, 41), generator=torch.Generator().manual_seed(0))

    def loss_and_grads(scan):
        m.zero_grad()
        with training_scan(scan):
            loss = torch.nn.functional.cross_entropy(train_tiny.logits_of("mamba", m, x[:, :-1]).reshape(-1, 256),
                                                     x[:, 1:].reshape(-1))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters()}

    from transformers.models.mamba import modeling_mamba
    reference = modeling_mamba.mamba_selective_scan
    ref_loss, ref_grads = loss_and_grads(reference)
    loss, grads = loss_and_grads(scan_for_training)
    assert modeling_mamba.mamba_selective_scan is reference        # the swap is undone
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for n, g in ref_grads.items():
        assert torch.allclose(grads[n], g, rtol=1e-4, atol=1e-6 * g.abs().max().item()), n


def test_a_run_over_its_time_budget_is_refused_before_training(tmp_path):
    r = subprocess.run([sys.executable, "scripts/train_tiny.py", "hawk", "-o", str(tmp_path / "x"), "--tiny",
                        "--steps", "100000", "--budget-min", "0.01"], capture_output=True, text=True, cwd=REPO,
                       timeout=600)
    assert r.returncode == 2 and "train_tiny: error: hawk: 100000 steps" in r.stderr and "--steps" in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_run_over_its_memory_budget_is_refused_before_training(tmp_path):
    r = subprocess.run([sys.executable, "scripts/train_tiny.py", "hawk", "-o", str(tmp_path / "x"), "--tiny",
                        "--steps", "20", "--budget-gb", "0.01"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 2 and "train_tiny: error: hawk:" in r.stderr and "resident after 3 steps" in r.stderr, r.stderr
    assert "--budget-gb 0.01" in r.stderr and "--batch" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_eval_bits_per_byte_equals_an_independent_computation(tiny_models):
    """`edgekit eval` streams the files through a session in chunks; transformers' own
    RecurrentGemma scores the same bytes in one forward pass."""
    from transformers import RecurrentGemmaForCausalLM
    from edgekit.evaluate import corpus_bytes
    _, folder = tiny_models["hawk"]
    r = run_cli("eval", folder, "--max-bytes", 3000, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    (_, data), = corpus_bytes("stdlib-heldout", 3000)
    ids = torch.tensor([list(data)])
    model = RecurrentGemmaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(ids, use_cache=False).logits.double(), -1)[0]
    want = -lp[:-1].gather(-1, ids[0, 1:, None]).sum().item() / math.log(2) / (len(data) - 1)
    assert got["scored_bytes"] == len(data) - 1 and abs(got["bits_per_byte"] - want) < 1e-4 * want, (got, want)
    import gzip
    assert abs(got["compressors"]["gzip -9"] - 8 * len(gzip.compress(data, 9, mtime=0)) / len(data)) < 1e-12


def test_eval_refuses_what_it_cannot_measure(tiny_models, tmp_path):
    _, folder = tiny_models["hawk"]
    assert_clean_failure(run_cli("eval", folder, "--corpus", "wikipedia"), "unknown corpus 'wikipedia'")
    from edgekit.models import ARCHITECTURES
    cfc = ARCHITECTURES["cfc"].write_random(tmp_path / "cfc", seed=0)
    assert_clean_failure(run_cli("eval", cfc, "--max-bytes", 100), "not a language model")
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "lossy.json"))
    assert_clean_failure(run_cli("eval", folder, "--max-bytes", 100, "--tokenizer", tmp_path / "lossy.json"),
                         "cannot encode text bytes losslessly")
