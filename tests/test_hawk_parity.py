"""Hawk / Griffin (RecurrentGemma) parity against transformers' RecurrentGemmaForCausalLM
(eager attention, its own cache), code we did not write. Metric: max |diff| / std(reference
logits) <= 1e-4 over 64 single steps, in torch, ONNX Runtime and ExecuTorch, each with
--ops fused and decomposed (Griffin also MQA with tied embeddings); greedy generation equal
to the reference's; the local-attention ring buffer wraps several times (window 8) and matches
the reference's sliding window; a Griffin with window 64 gives the oracle's last window of
logits after 160 steps (RoPE and ring slots past position 63) and streams 5,000 tokens through
ORT and .pte in constant memory; after a prefill of 2 chunks + 5 tokens the state equals the
stepped state and the oracle's.

Oracle quirks (transformers 5.23), handled in `Oracle`:
* the model keeps its recurrent state on its modules: `_setup_cache` once, then pass
  `position_ids` every step with a cache object (a `None` cache would reset the state);
* `_setup_cache` sizes the conv state with hidden_size instead of lru_width, which breaks
  single-step decoding from the start when they differ: we resize it (zeros) once;
* a cache with no attention layer (Hawk) fails in mask creation and in `generate`
  (`get_seq_length` on linear-attention layers only): Hawk steps pass a prepared (empty)
  mask dict, which the model accepts and which recurrent blocks ignore, and its greedy
  reference is the same loop by hand (prefill, then single steps with the module cache).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.models.hawk import RecurrentGemma, write_random_hf_dir
from edgekit.runtimes.session import StreamingSession
from edgekit_testutil import eager, run_cli

PARITY_ARCHS = ("recurrent_gemma",)     # read by test_registry.py
TOL = 1e-4
STEPS = 64
V = 256
BASE = dict(vocab_size=V, hidden_size=48, intermediate_size=96, num_attention_heads=4,
            num_key_value_heads=2, lru_width=64, tie_word_embeddings=False)
# hidden 48: sqrt(48) is not a bf16 number, so the reference's bf16 normalizer quirk matters;
# lru_width != hidden_size exercises the D/C split; 2 KV heads for 4 query heads (GQA).
CONFIGS = {
    "hawk": dict(BASE, num_hidden_layers=2, block_types=["recurrent"]),
    "griffin": dict(BASE, num_hidden_layers=3, attention_window_size=8),   # recurrent, recurrent, attention
    "griffin_tied": dict(BASE, num_hidden_layers=3, attention_window_size=8, tie_word_embeddings=True,
                         num_key_value_heads=1),
    "griffin64": dict(BASE, num_hidden_layers=3, attention_window_size=64),
}
PROMPT = [5, 17, 99, 3, 42, 7, 250]


@pytest.fixture(scope="session")
def rg_dir(tmp_path_factory):
    made = {}

    def get(kind):
        if kind not in made:
            made[kind] = write_random_hf_dir(tmp_path_factory.mktemp(f"rg-{kind}"), seed=3, **CONFIGS[kind])
        return made[kind]
    return get


@pytest.fixture(scope="session")
def rg_export(rg_dir, export_once):
    """export(kind, ops) -> OUTDIR with model.onnx, model.pte, edgekit.json (cached)."""
    return lambda kind, ops="fused": export_once(rg_dir(kind), ops)


class Oracle:
    """transformers' RecurrentGemmaForCausalLM stepping one token at a time with its cache."""

    def __init__(self, path):
        from transformers import RecurrentGemmaForCausalLM
        self.model = RecurrentGemmaForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                               dtype=torch.float32).eval()
        self.hawk = all(t == "recurrent" for t in self.model.config.block_types)

    def start(self):
        from transformers.cache_utils import DynamicCache
        m = self.model
        m._setup_cache(m.config, 1, "cpu", torch.float32)
        for layer in m.model.layers:
            tb = layer.temporal_block
            if hasattr(tb, "conv1d_state"):        # the quirk: hidden_size-wide conv state
                tb.conv1d_state = torch.zeros(1, tb.lru_width, tb.conv1d_width - 1)
        self.cache = DynamicCache(config=m.config)
        self.pos = 0

    @torch.no_grad()
    def forward(self, toks):
        T = len(toks)
        out = self.model(input_ids=torch.tensor([toks]), position_ids=torch.arange(self.pos, self.pos + T)[None],
                         past_key_values=self.cache, use_cache=True,
                         attention_mask={"sliding_attention": None} if self.hawk else None)
        self.pos += T
        return out.logits[0]

    def steps(self, toks):
        self.start()
        return np.stack([self.forward([t])[0].numpy() for t in toks])

    @torch.no_grad()
    def greedy(self, prompt, n):
        if not self.hawk:     # the reference's own generate() with its own cache
            self.model.generation_config.eos_token_id = None
            out = self.model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
            return out[0, len(prompt):].tolist()
        self.start()          # Hawk: generate() fails in transformers 5.23 (see module docstring)
        logits, res = self.forward(prompt)[-1], []
        for _ in range(n):
            res.append(int(torch.argmax(logits)))
            logits = self.forward([res[-1]])[-1]
        return res


def _tokens(n, seed=0):
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


_REF: dict = {}


@pytest.fixture(scope="session")
def oracle_steps(rg_dir):
    def get(kind):
        if kind not in _REF:
            toks = _tokens(STEPS)
            _REF[kind] = toks, Oracle(rg_dir(kind)).steps(toks)
        return _REF[kind]
    return get


def _rel(a, ref):
    return float(np.abs(a - ref).max() / ref.std())


def _torch_steps(model, toks):
    st, out = None, []
    with torch.no_grad():
        for t in toks:
            y, st = model.step(torch.tensor([t]), st)
            out.append(y[0].numpy())
    return np.stack(out), st


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("kind", ["hawk", "griffin", "griffin_tied"])
def test_torch_steps_match_oracle(rg_dir, oracle_steps, kind, ops):
    toks, ref = oracle_steps(kind)
    m = RecurrentGemma.from_pretrained(rg_dir(kind))
    with eager(m, ops):
        got, st = _torch_steps(m, toks)
    print(f"PARITY {kind} torch {ops} {_rel(got, ref):.2e}")   # the figure (pytest -s)
    assert _rel(got, ref) <= TOL, _rel(got, ref)
    assert int(st["position"]) == STEPS


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("kind", ["hawk", "griffin"])
def test_torch_sequence_form_matches_oracle(rg_dir, oracle_steps, kind, ops):
    """forward over a prefill of 20 then the remaining 44 in one call equals the steps."""
    toks, ref = oracle_steps(kind)
    m = RecurrentGemma.from_pretrained(rg_dir(kind))
    with torch.no_grad(), eager(m, ops):
        y1, st = m(torch.tensor([toks[:20]]))
        y2, st = m(torch.tensor([toks[20:]]), st)
    assert _rel(torch.cat([y1, y2], 1)[0].numpy(), ref) <= TOL


def test_oracle_prefill_matches_our_prefill(rg_dir):
    """The reference's own prefill path (T > 1: conv via nn.Conv1d, scan) against ours."""
    toks = _tokens(20, seed=5)
    o = Oracle(rg_dir("griffin"))
    o.start()
    ref = o.forward(toks).numpy()
    m = RecurrentGemma.from_pretrained(rg_dir("griffin"))
    with torch.no_grad():
        got = m(torch.tensor([toks]))[0][0].numpy()
    assert _rel(got, ref) <= TOL


def test_ring_buffer_matches_reference_window(rg_dir):
    """After 64 steps with window 8 (8 wraps), slot p mod 8 holds the key of position p for
    the last 8 positions, and the reference's sliding-window cache (its last 7 keys) agrees."""
    toks = _tokens(STEPS)
    o = Oracle(rg_dir("griffin"))
    o.steps(toks)
    ref_keys = o.cache.layers[2].keys[0]                                 # (KVH, 7, E): positions 57..63
    m = RecurrentGemma.from_pretrained(rg_dir("griffin"))
    _, st = _torch_steps(m, toks)
    ring = st["layers.2.k_cache"][0]                                     # (KVH, 8, E)
    W = CONFIGS["griffin"]["attention_window_size"]
    ours = ring[:, [p % W for p in range(STEPS - W + 1, STEPS)]]
    assert ref_keys.shape == ours.shape
    assert float((ours - ref_keys).abs().max()) <= 1e-5 * float(ref_keys.abs().max())


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("fmt", ["onnx", "pte"])
@pytest.mark.parametrize("kind", ["hawk", "griffin", "griffin_tied"])
def test_exported_steps_match_oracle(rg_export, oracle_steps, kind, fmt, ops):
    toks, ref = oracle_steps(kind)
    out = rg_export(kind, ops)
    sess = StreamingSession(out / f"model.{fmt}")
    got = np.stack([sess.step(t).copy() for t in toks])
    print(f"PARITY {kind} {fmt} {ops} {_rel(got, ref):.2e}")
    assert _rel(got, ref) <= TOL, _rel(got, ref)
    m = json.loads((out / "edgekit.json").read_text())
    used = m["artifacts"][fmt]["ops_used"]["edgekit"]
    assert bool(used) == (ops == "fused"), used
    if ops == "fused" and fmt == "pte":
        assert used == ["edgekit::add_rms_norm", "edgekit::dense", "edgekit::gelu_tanh_mul", "edgekit::rglru_step"], used


@pytest.fixture(scope="session")
def rg_prefill_export(rg_dir, tmp_path_factory):
    """`export --prefill 8` of Griffin (window 8), made once."""
    from edgekit.export import export
    out = tmp_path_factory.mktemp("rg-griffin-prefill8")
    export(rg_dir("griffin"), out, formats=("onnx", "pte"), ops="fused", state_style="buffers", prefill=8)
    return out


def test_prefill_graph_matches_oracle(rg_prefill_export, oracle_steps):
    """`export --prefill 8` on Griffin: the sequence graph (rglru_step's general ONNX body,
    the ring-buffer attention over 8 new keys) loads in ONNX Runtime and ExecuTorch, and 64
    tokens in chunks of 8 give the oracle's logits."""
    toks, ref = oracle_steps("griffin")
    for fmt in ("onnx", "pte"):
        sess = StreamingSession(rg_prefill_export / f"model.{fmt}")
        assert sess.prefill_len == 8, fmt
        got = np.asarray(sess.forward_seq(toks))
        assert _rel(got, ref) <= TOL, (fmt, _rel(got, ref))


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_state_after_uneven_prefill_matches_steps_and_oracle(rg_dir, rg_prefill_export, fmt):
    """A prompt of 2 chunks + 5 tokens (prefill graph twice, then the step graph) leaves the
    state that the same tokens stepped one by one leave, and the oracle's: its RG-LRU h and
    conv window per recurrent block, and the last S-1 keys and values of its sliding-window
    cache in ring slots p mod S."""
    pre = StreamingSession(rg_prefill_export / f"model.{fmt}")
    L = pre.prefill_len
    n = 2 * L + 5
    toks = _tokens(n, seed=11)
    pre.forward_seq(toks)
    stepped = StreamingSession(rg_prefill_export / f"model.{fmt}")
    for t in toks:
        stepped.step(t)
    a, b = pre.backend.get_state(), stepped.backend.get_state()
    assert sorted(a) == sorted(b)
    assert int(a["position"][0]) == int(b["position"][0]) == n
    o = Oracle(rg_dir("griffin"))
    o.steps(toks)
    S = CONFIGS["griffin"]["attention_window_size"]
    slots = [p % S for p in range(n - S + 1, n)]                     # positions n-S+1 .. n-1
    for i, layer in enumerate(o.model.model.layers):
        tb = layer.temporal_block
        if hasattr(tb, "rg_lru"):
            refs = {f"layers.{i}.rg_lru": tb.rg_lru.recurrent_states[0], f"layers.{i}.conv": tb.conv1d_state[0]}
            mine = {k: (a[k][0], b[k][0]) for k in refs}
        else:
            kv = o.cache.layers[i]
            refs = {f"layers.{i}.k_cache": kv.keys[0], f"layers.{i}.v_cache": kv.values[0]}   # (KVH, S-1, E)
            mine = {k: (a[k][0][:, slots], b[k][0][:, slots]) for k in refs}
        for k, ref in refs.items():
            ref = ref.numpy()
            for what, got in zip(("prefill", "steps"), mine[k]):
                assert got.shape == ref.shape, (k, what)
                assert _rel(got, ref) <= TOL, (k, what, _rel(got, ref))


LONG = 160      # Griffin with window 64: 2.5 windows, positions up to 159


@pytest.fixture(scope="session")
def oracle_long(rg_dir):
    toks = _tokens(LONG, seed=9)
    return toks, Oracle(rg_dir("griffin64")).steps(toks)


@pytest.mark.parametrize("backend", ["torch", "onnx", "pte"])
def test_long_stream_last_window_matches_oracle(rg_dir, rg_export, oracle_long, backend):
    """160 single steps through Griffin with window 64: the last window of logits (positions
    96..159, where RoPE angles and ring slots are past anything the 64-step tests reach and
    the ring has wrapped twice) equals the oracle's."""
    toks, ref = oracle_long
    W = CONFIGS["griffin64"]["attention_window_size"]
    assert LONG >= 2 * W and LONG - W >= STEPS
    if backend == "torch":
        got, _ = _torch_steps(RecurrentGemma.from_pretrained(rg_dir("griffin64")), toks)
    else:
        sess = StreamingSession(rg_export("griffin64") / f"model.{backend}")
        got = np.stack([sess.step(t).copy() for t in toks])
    r = _rel(got[-W:], ref[-W:])
    print(f"PARITY griffin64 long {backend} {r:.2e}")
    assert r <= TOL, r


@pytest.mark.parametrize("kind", ["hawk", "griffin"])
def test_greedy_generation_equals_reference(rg_dir, rg_export, kind):
    """32 greedy tokens after --tokens PROMPT: torch, ORT and ExecuTorch (through the CLI)
    equal the reference's generation with its own cache."""
    ref = Oracle(rg_dir(kind)).greedy(PROMPT, 32)
    assert len(set(ref)) > 4, ref          # a degenerate model would prove little
    assert StreamingSession(rg_dir(kind)).generate(32, prompt=PROMPT) == ref
    for art in ("model.onnx", "model.pte"):
        r = run_cli("run", rg_export(kind) / art, "--tokens", ",".join(map(str, PROMPT)), "--steps", 32, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["tokens"] == ref, art


def test_state_spec_and_manifest(rg_export):
    out = rg_export("griffin")
    m = json.loads((out / "edgekit.json").read_text())
    names = [s["name"] for s in m["state"]]
    assert names == ["layers.0.conv", "layers.0.rg_lru", "layers.1.conv", "layers.1.rg_lru",
                     "layers.2.k_cache", "layers.2.v_cache", "position"]
    shapes = {s["name"]: s["shape"] for s in m["state"]}
    assert shapes["layers.0.conv"] == [1, 64, 3] and shapes["layers.2.k_cache"] == [1, 2, 8, 12]
    assert m["arch"] == "recurrent_gemma" and m["config"]["variant"] == "griffin"


@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
def test_griffin_constant_memory_over_5000_tokens(rg_export, art):
    """Window 64: the ring buffer wraps ~78 times; resident memory stays flat (< 2 MB) and
    the state is exactly the manifest's."""
    out = rg_export("griffin64")
    r = run_cli("bench", out / art, "--steps", 5000, "--warmup", 64, "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    print(art, res)
    assert res["steps"] == 5000 and res["finite"]
    assert abs(res["rss_mb_end"] - res["rss_mb_start"]) < 2.0, res
    assert res["state_bytes"] == json.loads((out / "edgekit.json").read_text())["state_bytes"]
