"""RWKV-7 parity against the `rwkv` pip package (RWKV_V7_ON=1, "cpu fp32"), code we did
not write. Metric: max |diff| / std(reference logits) <= 1e-4 (acceptance item 1), over 64
single steps, the sequence form and the last 64 of 128 steps; the state after a prefill of
2 chunks + 5 tokens, against the package's state (same metric per tensor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit_testutil import PREFILL_BY_OPS, eager

from edgekit.models.rwkv7 import RWKV7
from edgekit.runtimes.session import StreamingSession

PARITY_ARCHS = ("rwkv7",)     # read by test_registry.py
TOL = 1e-4
STEPS = 64


def _tokens(n, seed=0):
    return torch.randint(0, 65536, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def oracle_steps(rwkv7_oracle):
    """Reference logits of 64 single steps."""
    toks, st, out = _tokens(STEPS), None, []
    for t in toks:
        logits, st = rwkv7_oracle.forward([t], st)
        out.append(logits.numpy().copy())
    return toks, np.stack(out)


def _rel(a, ref):
    return float(np.abs(a - ref).max() / ref.std())


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
def test_torch_steps_match_oracle(rwkv7_ckpt, oracle_steps, ops):
    toks, ref = oracle_steps
    m = RWKV7.from_pretrained(rwkv7_ckpt)
    st, out = None, []
    with torch.no_grad(), eager(m, ops):
        for t in toks:
            y, st = m.step(torch.tensor([t]), st)
            out.append(y[0].numpy())
    assert _rel(np.stack(out), ref) <= TOL


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
def test_torch_sequence_form_matches_oracle(rwkv7_ckpt, rwkv7_oracle, ops):
    toks = _tokens(STEPS, seed=1)
    ref, _ = rwkv7_oracle.forward(toks, None, full_output=True)
    m = RWKV7.from_pretrained(rwkv7_ckpt)
    with torch.no_grad(), eager(m, ops):
        y, _ = m(torch.tensor([toks]))
    assert _rel(y[0].numpy(), ref.numpy()) <= TOL


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("fmt,style", [("onnx", "io"), ("pte", "buffers"), ("pte", "io")])
def test_exported_steps_match_oracle(rwkv7_export, oracle_steps, ops, fmt, style):
    toks, ref = oracle_steps
    out = rwkv7_export(ops, style if fmt == "pte" else "buffers")
    sess = StreamingSession(out / f"model.{fmt}")
    got = np.stack([sess.step(t).copy() for t in toks])
    assert _rel(got, ref) <= TOL


@pytest.mark.parametrize("ops", ["fused", "decomposed"])
@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_exported_sequence_form_matches_oracle(rwkv7_export, rwkv7_oracle, ops, fmt):
    """The exported prefill graph (sequence form over chunks of 16 fused, 4 decomposed) and
    the step graph for the remainder: 70 tokens = 4 chunks + 6 steps (17 + 2), against the
    package's sequence form."""
    toks = _tokens(70, seed=1)
    ref, _ = rwkv7_oracle.forward(toks, None, full_output=True)
    sess = StreamingSession(rwkv7_export(ops) / f"model.{fmt}")
    assert sess.prefill_len == PREFILL_BY_OPS[ops]
    got = sess.forward_seq(toks)
    assert got.shape == tuple(ref.shape)
    assert _rel(got, ref.numpy()) <= TOL


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_state_after_uneven_prefill_matches_steps_and_oracle(rwkv7_export, rwkv7_oracle, fmt):
    """A prompt of 2 chunks + 5 tokens (the prefill graph twice, then the step graph) leaves
    the state the same tokens stepped one by one leave, and the package's state after its
    own single steps (per layer: att x_prev, att kv (H, N, N), ffn x_prev)."""
    out = rwkv7_export("fused")
    pre = StreamingSession(out / f"model.{fmt}")
    n = 2 * pre.prefill_len + 5
    toks = _tokens(n, seed=2)
    pre.forward_seq(toks)
    stepped = StreamingSession(out / f"model.{fmt}")
    for t in toks:
        stepped.step(t)
    ref = None
    for t in toks:
        _, ref = rwkv7_oracle.forward([t], ref)
    a, b = pre.backend.get_state(), stepped.backend.get_state()
    assert len(a) == len(b) == len(ref)
    for i in range(len(ref) // 3):
        for j, name in enumerate(("shift_att", "wkv", "shift_ffn")):
            key, r = f"layers.{i}.{name}", ref[3 * i + j].float().numpy()
            for what, st in (("prefill", a), ("steps", b)):
                assert st[key].shape == (1, *r.shape), (key, what)
                assert _rel(st[key][0], r) <= TOL, (key, what, _rel(st[key][0], r))


LONG = 128      # 2x the 64-step tests


@pytest.fixture(scope="module")
def oracle_long(rwkv7_oracle):
    toks, st, out = _tokens(LONG, seed=3), None, []
    for t in toks:
        logits, st = rwkv7_oracle.forward([t], st)
        out.append(logits.numpy().copy())
    return toks, np.stack(out)


@pytest.mark.parametrize("backend", ["torch", "onnx", "pte"])
def test_long_stream_last_window_matches_oracle(rwkv7_ckpt, rwkv7_export, oracle_long, backend):
    """128 single steps: the last 64 logits equal the package's single steps."""
    toks, ref = oracle_long
    sess = StreamingSession(rwkv7_ckpt if backend == "torch" else rwkv7_export("fused") / f"model.{backend}")
    got = np.stack([sess.step(t).copy() for t in toks])
    r = _rel(got[-STEPS:], ref[-STEPS:])
    print(f"PARITY rwkv7 long {backend} {r:.2e}")
    assert r <= TOL, r


def test_world_tokenizer_matches_package():
    import os
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    from edgekit.tokenizer import world_tokenizer
    ref = TRIE_TOKENIZER(os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt"))
    tok = world_tokenizer()
    for text in ["Hello, world! The quick brown fox.", "中文 and emoji 🤖\n\n\ttabs", "User: hi\n\nAssistant:"]:
        assert tok.encode(text) == ref.encode(text)
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("backend_art", ["torch", "model.onnx", "model.pte"])
def test_greedy_generation_equals_package(rwkv7_ckpt, rwkv7_oracle, rwkv7_export, backend_art):
    """32 greedy tokens from a text prompt, through the World tokenizer, equal the package's."""
    from edgekit.tokenizer import world_tokenizer
    prompt = world_tokenizer().encode("The Eiffel Tower is located in the city of")
    logits, st = rwkv7_oracle.forward(prompt, None)
    ref = []
    for _ in range(32):
        t = int(torch.argmax(logits))
        ref.append(t)
        logits, st = rwkv7_oracle.forward([t], st)
    art = rwkv7_ckpt if backend_art == "torch" else rwkv7_export("fused") / backend_art
    sess = StreamingSession(art)
    assert sess.generate(32, prompt=prompt) == ref
