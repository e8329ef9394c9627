"""Mamba and Mamba-2 parity against transformers (the installed version), code we did not
write: `MambaForCausalLM` / `Mamba2ForCausalLM`, eager torch path, stepping one token at a
time with its own cache. Metric: max |diff| / std(reference logits) <= 1e-4 over 64 single
steps, in torch, ONNX Runtime and ExecuTorch, each with --ops fused and decomposed, and over
the last 64 of 160 steps; greedy generation of 32 tokens equals transformers'
`generate(do_sample=False)`; after a prefill of 2 chunks + 5 tokens the state equals the
stepped state and transformers' cache.

Tiny random configs written with `save_pretrained` (safetensors): Mamba; Mamba-2 with
n_groups 1 and 2.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgekit_testutil import eager, run_cli
from edgekit.models import load_model
from edgekit.models.mamba import Mamba, Mamba2, write_random_hf
from edgekit.runtimes.session import StreamingSession

PARITY_ARCHS = ("mamba", "mamba2")     # read by test_registry.py
TOL = 1e-4
STEPS = 64
V = 512
CONFIGS = {
    "mamba": ("mamba", dict(vocab_size=V, hidden_size=64, state_size=16, num_hidden_layers=2,
                            expand=2, conv_kernel=4)),
    "mamba2-g1": ("mamba2", dict(vocab_size=V, hidden_size=64, state_size=16, num_hidden_layers=2,
                                 num_heads=8, head_dim=16, n_groups=1, expand=2)),
    "mamba2-g2": ("mamba2", dict(vocab_size=V, hidden_size=64, state_size=16, num_hidden_layers=2,
                                 num_heads=8, head_dim=16, n_groups=2, expand=2)),
}
MODELS = list(CONFIGS)
PROMPT = [11, 301, 7, 45, 260, 3, 88, 150]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            arch, cfg = CONFIGS[name]
            cache[name] = write_random_hf(tmp_path_factory.mktemp(name), arch, seed=3, **cfg)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def oracle(model_dir):
    import transformers
    cache = {}

    def get(name):
        if name not in cache:
            cls = {"mamba": transformers.MambaForCausalLM, "mamba2": transformers.Mamba2ForCausalLM}[CONFIGS[name][0]]
            cache[name] = cls.from_pretrained(str(model_dir(name))).eval()
        return cache[name]
    return get


def _tokens(n=STEPS, seed=0):
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def oracle_steps(oracle):
    """Reference logits of 64 single steps, transformers stepping with its own cache, and the cache."""
    cache = {}

    def get(name):
        if name not in cache:
            ref, kv, out = oracle(name), None, []
            with torch.no_grad():
                for t in _tokens():
                    o = ref(torch.tensor([[t]]), cache_params=kv, use_cache=True)
                    kv = o.cache_params
                    out.append(o.logits[0, 0].numpy().copy())
            cache[name] = (np.stack(out), kv)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def exported(model_dir, export_once):
    return lambda name, ops: export_once(model_dir(name), ops)


def _rel(a, ref):
    return float(np.abs(a - ref).max() / ref.std())


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("name", MODELS)
def test_torch_steps_match_oracle(model_dir, oracle_steps, name, ops):
    ref, _ = oracle_steps(name)
    m = load_model(model_dir(name))
    st, out = None, []
    with torch.no_grad(), eager(m, ops):
        for t in _tokens():
            y, st = m.step(torch.tensor([t]), st)
            out.append(y[0].numpy())
    print(f"PARITY {name} torch {ops} {_rel(np.stack(out), ref):.2e}")   # the figure (pytest -s)
    assert _rel(np.stack(out), ref) <= TOL


@pytest.mark.parametrize("name", MODELS)
def test_torch_sequence_form_and_state_match_oracle(model_dir, oracle_steps, name):
    """The sequence form over all 64 tokens gives the same logits, and its final state
    equals transformers' cache tensor for tensor (same layout)."""
    ref, kv = oracle_steps(name)
    m = load_model(model_dir(name))
    assert isinstance(m, Mamba if CONFIGS[name][0] == "mamba" else Mamba2)
    with torch.no_grad():
        y, st = m(torch.tensor([_tokens()]))
    assert _rel(y[0].numpy(), ref) <= TOL
    for i in range(m.cfg.n_layer):
        conv, ssm = kv.get_conv_state(i), kv.get_recurrent_state(i)
        assert st[f"layers.{i}.conv"].shape == conv.shape and st[f"layers.{i}.ssm"].shape == ssm.shape
        assert _rel(st[f"layers.{i}.conv"].numpy(), conv.numpy()) <= TOL
        assert _rel(st[f"layers.{i}.ssm"].numpy(), ssm.numpy()) <= TOL


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("name", MODELS)
def test_exported_steps_match_oracle(exported, oracle_steps, name, ops):
    ref, _ = oracle_steps(name)
    out = exported(name, ops)
    manifest = json.loads((out / "edgekit.json").read_text())
    op = {"mamba": "mamba_step", "mamba2": "ssd_step"}[CONFIGS[name][0]]
    # fused .pte: every Linear is edgekit::dense (packed weights, edgekit's GEMV kernel), and
    # the residual add + RMSNorm (and Mamba's gate) run as edgekit kernels, not XNNPACK calls
    glue = ["edgekit::add_rms_norm", "edgekit::softplus_bias"] + \
        (["edgekit::silu_mul"] if op == "mamba_step" else ["edgekit::gated_rms_norm"])
    want = sorted(["edgekit::causal_conv1d_silu", "edgekit::dense", f"edgekit::{op}", *glue]) if ops == "fused" else []
    assert manifest["artifacts"]["pte"]["ops_used"]["edgekit"] == want
    for fmt in ("onnx", "pte"):
        sess = StreamingSession(out / f"model.{fmt}")
        got = np.stack([sess.step(t).copy() for t in _tokens()])
        print(f"PARITY {name} {fmt} {ops} {_rel(got, ref):.2e}")
        assert _rel(got, ref) <= TOL, fmt


@pytest.fixture(scope="module")
def prefill_exported(model_dir, tmp_path_factory):
    """name -> `export --prefill 8` OUTDIR (fused, ONNX and .pte), made once per model."""
    from edgekit.export import export
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"{name}-prefill8")
            export(model_dir(name), out, formats=("onnx", "pte"), ops="fused", state_style="buffers", prefill=8)
            cache[name] = out
        return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_prefill_graph_matches_oracle(prefill_exported, oracle_steps, name):
    """`export --prefill 8`: the sequence graph (the ops' general ONNX bodies, Loop over T)
    loads in ONNX Runtime and ExecuTorch, and 64 tokens in chunks of 8 give the oracle's
    logits."""
    ref, _ = oracle_steps(name)
    for fmt in ("onnx", "pte"):
        sess = StreamingSession(prefill_exported(name) / f"model.{fmt}")
        assert sess.prefill_len == 8, fmt
        got = np.asarray(sess.forward_seq(_tokens()))
        assert _rel(got, ref) <= TOL, fmt


def _oracle_cache(ref, toks):
    """transformers' cache after stepping toks one at a time."""
    kv = None
    with torch.no_grad():
        for t in toks:
            kv = ref(torch.tensor([[t]]), cache_params=kv, use_cache=True).cache_params
    return kv


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
@pytest.mark.parametrize("name", MODELS)
def test_state_after_uneven_prefill_matches_steps_and_oracle(prefill_exported, oracle, name, fmt):
    """A prompt of 2 chunks + 5 tokens (prefill graph twice, then the step graph) leaves the
    state the same tokens stepped one by one leave, and transformers' cache (conv window and
    SSM state of every layer)."""
    pre = StreamingSession(prefill_exported(name) / f"model.{fmt}")
    n = 2 * pre.prefill_len + 5
    toks = _tokens(n, seed=4)
    pre.forward_seq(toks)
    stepped = StreamingSession(prefill_exported(name) / f"model.{fmt}")
    for t in toks:
        stepped.step(t)
    a, b = pre.backend.get_state(), stepped.backend.get_state()
    assert sorted(a) == sorted(b)
    kv = _oracle_cache(oracle(name), toks)
    for i in range(oracle(name).config.num_hidden_layers):
        for key, ref in ((f"layers.{i}.conv", kv.get_conv_state(i)), (f"layers.{i}.ssm", kv.get_recurrent_state(i))):
            ref = ref.numpy()
            for what, st in (("prefill", a), ("steps", b)):
                assert st[key].shape == ref.shape, (key, what)
                assert _rel(st[key], ref) <= TOL, (key, what, _rel(st[key], ref))


LONG = 160      # 2.5x the 64-step tests


@pytest.fixture(scope="module")
def oracle_long(oracle):
    """name -> (tokens, transformers' logits over LONG single steps with its own cache)."""
    cache = {}

    def get(name):
        if name not in cache:
            toks, ref, kv = _tokens(LONG, seed=8), [], None
            with torch.no_grad():
                for t in toks:
                    o = oracle(name)(torch.tensor([[t]]), cache_params=kv, use_cache=True)
                    kv = o.cache_params
                    ref.append(o.logits[0, 0].numpy().copy())
            cache[name] = toks, np.stack(ref)
        return cache[name]
    return get


@pytest.mark.parametrize("backend", ["torch", "onnx", "pte"])
@pytest.mark.parametrize("name", MODELS)
def test_long_stream_last_window_matches_oracle(model_dir, oracle_long, exported, name, backend):
    """160 single steps (2.5x the 64-step tests): the last 64 logits equal transformers'
    stepping with its own cache."""
    toks, ref = oracle_long(name)
    sess = StreamingSession(model_dir(name) if backend == "torch" else exported(name, "fused") / f"model.{backend}")
    got = np.stack([sess.step(t).copy() for t in toks])
    r = _rel(got[-STEPS:], ref[-STEPS:])
    print(f"PARITY {name} long {backend} {r:.2e}")
    assert r <= TOL, r


def _reference_generation(ref, prompt, n=32):
    with torch.no_grad():
        ids = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    out = ids[0, len(prompt):].tolist()
    assert len(out) == n
    return out


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generation_equals_transformers(model_dir, oracle, exported, name):
    """32 greedy tokens from `--tokens`, through the CLI (ONNX Runtime and ExecuTorch) and the
    torch session, equal transformers' generate(do_sample=False)."""
    ref = _reference_generation(oracle(name), PROMPT)
    assert StreamingSession(model_dir(name)).generate(32, prompt=PROMPT) == ref
    for fmt in ("onnx", "pte"):
        r = run_cli("run", exported(name, "fused") / f"model.{fmt}", "--tokens", ",".join(map(str, PROMPT)),
                    "--steps", "32", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1])["tokens"] == ref, fmt


@pytest.mark.parametrize("name", ["mamba", "mamba2-g2"])
def test_state_spaces_layout_loads_the_same(model_dir, tmp_path, name):
    """The original state-spaces directory (mamba_ssm config.json, `backbone.embedding.weight`,
    no lm_head when tied) loads to the same model as the HF directory."""
    from safetensors.torch import load_file, save_file
    src = model_dir(name)
    hf_cfg = json.loads((src / "config.json").read_text())
    sd = load_file(str(src / "model.safetensors"))
    sd["backbone.embedding.weight"] = sd.pop("backbone.embeddings.weight")
    tie = "lm_head.weight" not in sd
    ssm = {"d_state": hf_cfg["state_size"], "d_conv": hf_cfg["conv_kernel"], "expand": hf_cfg["expand"]}
    if CONFIGS[name][0] == "mamba2":
        ssm.update(layer="Mamba2", headdim=hf_cfg["head_dim"], ngroups=hf_cfg["n_groups"])
    else:
        ssm.update(dt_rank=hf_cfg["time_step_rank"])
    cfg = {"d_model": hf_cfg["hidden_size"], "n_layer": hf_cfg["num_hidden_layers"], "vocab_size": V,
           "ssm_cfg": ssm, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 8, "tie_embeddings": tie}
    d = tmp_path / "ss"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    save_file(sd, str(d / "model.safetensors"))
    a, b = load_model(src), load_model(d)
    assert type(a) is type(b)
    toks = torch.tensor([_tokens(8)])
    with torch.no_grad():
        assert torch.equal(a(toks)[0], b(toks)[0])


def test_tied_head_without_lm_head_key(model_dir, tmp_path):
    """Mamba ties lm_head to the embeddings; save_pretrained then writes no lm_head.weight."""
    d = tmp_path / "tied"
    shutil.copytree(model_dir("mamba"), d)
    from safetensors import safe_open
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    m = load_model(d)
    assert m.cfg.tie_embeddings and m.head.weight.shape == (64, V)


def test_executorch_softplus_form_is_within_3_ulp_of_float64():
    """Mamba's Δ = softplus(·) in a decomposed .pte is written in ops XNNPACK runs
    (passes/xnnpack_forms.py);
    over the float32 range that matters (and inf / NaN) it is the float64 softplus to
    within 3 ulp, as close as torch's own float32 softplus gives it to within 1."""
    from edgekit.export.passes.xnnpack_forms import softplus_exp_log
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.linspace(-104, 89, 1_000_001), torch.randn(200_000, generator=g) * 6,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 16.6, -16.6, 17.0, -17.0])])
    ref = torch.nn.functional.softplus(x.double())
    ulp = (torch.nextafter(ref.float(), torch.tensor(float("inf"))) - ref.float()).double()
    err = ((softplus_exp_log(x).double() - ref).abs() / ulp).max().item()
    assert err <= 3.0, f"{err} ulp"
    special = softplus_exp_log(torch.tensor([float("inf"), -float("inf"), float("nan")]))
    assert special[0] == float("inf") and special[1] == 0 and special[2].isnan()
