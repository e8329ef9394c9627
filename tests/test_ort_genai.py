"""`edgekit export --format ort-genai` (edgekit/export/ort_genai.py): a folder that ONNX Runtime
GenAI 0.18's own Python API loads (`og.Model`) and generates from.

- Each bundled trained LM (Mamba, Mamba-2, Hawk, RWKV-7): onnxruntime_genai's greedy 32 tokens
  after the demo's code prompt are edgekit's StreamingSession's on the same model's ONNX
  export, token for token.
- The wrapped graph itself, run in plain ONNX Runtime with the whole prompt in one call (as
  genai calls it), gives the step session's logits at every position (the std metric, 1e-5).
- What 0.18 cannot bind is refused in one line before anything is written: a Griffin (its
  attention layers' cache), a CfC (not a token LM), --prefill, --batch 2; and edgekit's own
  session refuses the folder's graph, naming onnxruntime_genai.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, run_cli, tiny_checkpoints

BUNDLED = {"mamba": "mamba-stdlib", "mamba2": "mamba2-stdlib", "hawk": "hawk-stdlib", "rwkv7": "rwkv7-stdlib/rwkv7.pth"}
PROMPT = b'def fibonacci(n):\n    """'          # the demo's code prompt (edgekit/cli/demo.py)
N = 32


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """arch -> (the ort-genai folder, the onnx export folder) of its bundled model."""
    import edgekit
    root = tmp_path_factory.mktemp("genai")
    out = {}
    for arch, rel in BUNDLED.items():
        src = REPO / "edgekit" / "bundled" / rel
        out[arch] = (root / arch / "genai", root / arch / "onnx")
        edgekit.export(src, out[arch][0], formats=("ort-genai",))
        edgekit.export(src, out[arch][1], formats=("onnx",))
    return out


def _genai_greedy(folder, prompt: list[int], n: int) -> list[int]:
    import onnxruntime_genai as og
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array([prompt], dtype=np.int32))
    out = []
    for _ in range(n):
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    return out


@pytest.mark.parametrize("arch", sorted(BUNDLED))
def test_onnxruntime_genai_generates_the_sessions_tokens(arch, exports):
    from edgekit.runtimes.session import StreamingSession
    genai_dir, onnx_dir = exports[arch]
    session = StreamingSession(onnx_dir)
    prompt = session.tokenizer.encode(PROMPT.decode())
    want = session.generate(N, prompt=prompt)
    got = _genai_greedy(genai_dir, prompt, N)
    print(f"{arch}: genai {bytes(got)!r}")
    assert got == want, f"{arch}: onnxruntime_genai {got} != edgekit session {want}"


@pytest.mark.parametrize("arch", sorted(BUNDLED))
def test_the_wrapped_graph_gives_the_step_logits_at_every_position(arch, exports):
    """genai.onnx with the prompt in one call (zero state, positions 0..P-1) against the
    session's logits after each prompt token."""
    import onnxruntime as ort

    from edgekit.runtimes.session import StreamingSession
    from op_battery import close
    genai_dir, onnx_dir = exports[arch]
    session = StreamingSession(onnx_dir)
    prompt = session.tokenizer.encode(PROMPT.decode())
    want = []
    for t in prompt:
        session.step(t)
        want.append(np.array(session.last_y, dtype=np.float32).reshape(-1))   # a copy: the buffer is reused
    sess = ort.InferenceSession(str(genai_dir / "genai.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array([prompt], dtype=np.int64)}
    for i in sess.get_inputs():
        if i.name == "position_ids":
            feeds[i.name] = np.arange(len(prompt), dtype=np.int64)[None]
        elif i.name != "input_ids":
            feeds[i.name] = np.zeros(i.shape, np.float32)
    logits = sess.run(["logits"], feeds)[0]
    assert logits.shape == (1, len(prompt), want[0].size)
    assert close(logits[0], np.stack(want)), f"{arch}: max |diff| {np.abs(logits[0] - np.stack(want)).max()}"


def test_the_folder_holds_what_genai_reads_and_the_manifest_lists_it(exports):
    import json

    from edgekit.artifact import read
    genai_dir, _ = exports["mamba"]
    manifest, _ = read(genai_dir)
    entry = manifest.artifacts["ort-genai"]
    assert set(manifest.files()) == {"genai.onnx", "genai_config.json", "tokenizer.json"}
    cfg = json.loads((genai_dir / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert dec["filename"] == entry.file == "genai.onnx"
    assert dec["num_hidden_layers"] == manifest.config["n_layer"]
    assert cfg["search"]["past_present_share_buffer"] is False
    names = [s.name for s in entry.inputs]
    assert names[0] == "input_ids" and "past_key_values.0.conv_state" in names and "past_key_values.3.recurrent_state" in names


def test_an_export_of_another_format_into_the_folder_removes_the_genai_files(tmp_path):
    import edgekit
    src = REPO / "edgekit" / "bundled" / "mamba-stdlib"
    edgekit.export(src, tmp_path / "x", formats=("ort-genai",))
    edgekit.export(src, tmp_path / "x", formats=("onnx",))
    assert not (tmp_path / "x" / "genai.onnx").exists() and not (tmp_path / "x" / "genai_config.json").exists()


def test_a_griffin_is_refused_naming_its_attention_cache(tmp_path):
    ck = tiny_checkpoints(tmp_path)("recurrent_gemma")       # recurrent, recurrent, local attention
    r = run_cli("export", ck, "--format", "ort-genai", "-o", tmp_path / "out")
    assert_clean_failure(r, "does not fit ONNX Runtime GenAI", "layer 2", "k_cache", "--format onnx")
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("extra,needle", [(("--prefill", "16"), "--prefill"), (("--batch", "2"), "--batch 2")])
def test_options_genai_cannot_honour_are_refused(extra, needle, tmp_path):
    r = run_cli("export", REPO / "edgekit" / "bundled" / "mamba-stdlib", "--format", "ort-genai", *extra,
                "-o", tmp_path / "out")
    assert_clean_failure(r, needle)
    assert_no_output(tmp_path / "out")


def test_a_cfc_is_refused_as_not_a_token_lm(tmp_path):
    r = run_cli("export", REPO / "edgekit" / "bundled" / "cfc-pendulum", "--format", "ort-genai", "-o", tmp_path / "out")
    assert_clean_failure(r, "token language models")
    assert_no_output(tmp_path / "out")


def test_edgekit_run_on_the_genai_graph_names_onnxruntime_genai(exports):
    genai_dir, _ = exports["mamba"]
    r = run_cli("run", genai_dir / "genai.onnx", "--prompt", "x")
    assert_clean_failure(r, "ONNX Runtime GenAI export", "onnxruntime_genai")


def test_edgekit_inspect_reads_the_genai_graph_by_its_name(exports):
    genai_dir, _ = exports["mamba"]
    r = run_cli("inspect", genai_dir / "genai.onnx")
    assert r.returncode == 0, r.stderr
    assert "genai.onnx" in r.stdout and "genai_config.json" in r.stdout and "past_key_values.0.conv_state" in r.stdout


def test_a_tied_embedding_stays_one_weight_listed_as_an_input(exports):
    """The step graph lists a tied embedding as an input too (export/onnx.py: ONNX Runtime then
    keeps no repacked second copy); the genai graph keeps it so, and genai runs it (above)."""
    import onnx
    genai_dir, onnx_dir = exports["mamba"]
    step = onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False).graph
    g = onnx.load(str(genai_dir / "genai.onnx"), load_external_data=False).graph
    shared = {i.name for i in step.input} & {t.name for t in step.initializer}
    assert shared and shared <= {i.name for i in g.input}
    assert sum(t.name in shared for t in g.initializer) == len(shared)
