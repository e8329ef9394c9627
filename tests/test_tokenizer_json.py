"""An HF directory's tokenizer.json travels with the export, and `--prompt` text goes
through it (the `tokenizers` library); `--tokens` works for every model."""

from __future__ import annotations

import json

import torch

from edgekit_testutil import run_cli


def _word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ["hello", "world", "the", "cat", "sat", "on", "mat"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    vocab.update({f"w{i}": i for i in range(len(vocab), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_prompt_goes_through_tokenizer_json(tmp_path):
    import transformers
    from edgekit.models.mamba import write_random_hf
    d = write_random_hf(tmp_path / "m", "mamba", seed=5, vocab_size=64, hidden_size=32, state_size=8,
                        num_hidden_layers=2, expand=2, conv_kernel=4)
    tok = _word_tokenizer(64)
    tok.save(str(d / "tokenizer.json"))
    r = run_cli("export", d, "--format", "onnx", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "tokenizer.json").exists()
    assert json.loads((tmp_path / "out" / "edgekit.json").read_text())["tokenizer"] == "tokenizer.json"
    prompt = "the cat sat on the mat"
    ids = tok.encode(prompt).ids
    assert ids == [3, 4, 5, 6, 3, 7]
    ref = transformers.MambaForCausalLM.from_pretrained(str(d)).eval()
    with torch.no_grad():
        want = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    got = json.loads(run_cli("run", tmp_path / "out" / "model.onnx", "--prompt", prompt,
                             "--steps", "8", "--json").stdout)
    assert got["tokens"] == want
    assert got["text"] == tok.decode(want)
    by_ids = json.loads(run_cli("run", tmp_path / "out" / "model.onnx", "--tokens",
                                ",".join(map(str, ids)), "--steps", "8", "--json").stdout)
    assert by_ids["tokens"] == want
