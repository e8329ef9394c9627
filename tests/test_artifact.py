"""The artifact contract (edgekit/artifact.py) and the format registry (edgekit/formats/):
a manifest round-trips; an `edgekit.manifest/1` folder still loads and runs; a manifest
that was tampered with gets one clear error, never a file outside its folder; a session
over an exported artifact imports neither the exporter nor the models; the CLI's choices
come from the registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgekit import artifact, formats
from edgekit.errors import EdgekitError
from edgekit.runtimes.session import StreamingSession


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from edgekit.export import export
    from edgekit.models.mamba import write_random_hf
    d = tmp_path_factory.mktemp("contract")
    src = write_random_hf(d / "mamba", "mamba", seed=2, vocab_size=128, hidden_size=32, state_size=8,
                          num_hidden_layers=1, expand=2, conv_kernel=4)
    export(src, d / "out", formats=("onnx", "pte"), ops="fused")
    return d / "out"


def _copy(src, dst, edit=None):
    shutil.copytree(src, dst)
    raw = json.loads((dst / artifact.FILENAME).read_text())
    if edit:
        edit(raw)
    (dst / artifact.FILENAME).write_text(json.dumps(raw))
    return dst


def test_manifest_round_trips(export_dir):
    m, _ = artifact.read(export_dir)
    again = artifact.Manifest.from_json(json.loads(json.dumps(m.to_json())), "round trip")
    assert again == m
    assert m.schema == artifact.SCHEMA and m.state_bytes == sum(s.nbytes for s in m.state)
    assert set(m.artifacts) == {"onnx", "pte"}
    from edgekit.export.passes import pipeline_for
    assert m.artifacts["pte"].passes == tuple(pipeline_for("pte", "fused", "buffers"))


def test_schema_1_folder_still_loads_and_runs(export_dir, tmp_path):
    def to_v1(raw):
        raw["schema"] = "edgekit.manifest/1"
        for e in raw["artifacts"].values():
            e.pop("passes"), e.pop("passes_fired")
    old = _copy(export_dir, tmp_path / "v1", to_v1)
    for f in ("model.onnx", "model.pte"):
        want = np.array(StreamingSession(export_dir / f).step(3))
        sess = StreamingSession(old / f)
        assert sess.manifest.schema == "edgekit.manifest/1" and sess.manifest.artifacts["pte"].passes == ()
        assert np.array_equal(np.array(sess.step(3)), want)


@pytest.mark.parametrize("edit,words", [
    (lambda r: r["artifacts"]["onnx"].__setitem__("file", "../../etc/passwd"), "a file name inside the export folder"),
    (lambda r: r["artifacts"]["onnx"].__setitem__("file", "/etc/passwd"), "a file name inside the export folder"),
    (lambda r: r.__setitem__("tokenizer_file", "../secret.json"), "a file name inside the export folder"),
    (lambda r: r["artifacts"]["onnx"].__setitem__("config_file", "../genai_config.json"),
     "a file name inside the export folder"),
    (lambda r: r.__setitem__("batch", "1"), "field 'batch' is str"),
    (lambda r: r.__setitem__("batch", 0), "batch 0"),
    (lambda r: r["state"][0].__setitem__("shape", [1, -4]), "non-negative ints"),
    (lambda r: r["state"][0].__setitem__("dtype", "complex128"), "has dtype 'complex128'"),
    (lambda r: r["artifacts"]["pte"].__setitem__("state_style", "shared"), "state_style 'shared'"),
    (lambda r: r.__setitem__("schema", "edgekit.manifest/9"), "has schema 'edgekit.manifest/9'"),
    (lambda r: r.pop("artifacts"), "field 'artifacts' is missing"),
])
def test_tampered_manifest_gets_one_clear_error(export_dir, tmp_path, edit, words):
    d = _copy(export_dir, tmp_path / "bad", edit)
    with pytest.raises(EdgekitError, match=words.replace("(", r"\(").replace(")", r"\)")):
        StreamingSession(d / "model.onnx")


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_a_manifest_shape_the_program_does_not_have_is_refused_before_allocating(export_dir, tmp_path, fmt):
    """A state declared (1, 2^36) in edgekit.json (256 GiB) is compared with the program's own
    I/O before any buffer is sized by it: one clear error, not an allocation."""
    def huge(raw):
        for spec in raw["state"] + raw["artifacts"][fmt]["inputs"][1:] + raw["artifacts"][fmt]["outputs"][1:]:
            spec["shape"] = [1, 1 << 36]
    d = _copy(export_dir, tmp_path / "huge", huge)
    with pytest.raises(EdgekitError, match=r"edgekit.json declares .* \[1, 68719476736\]|"
                                           r"has \d+ bytes in the program; expected 274877906944 bytes"):
        StreamingSession(d / f"model.{fmt}")


def test_cli_refuses_a_tampered_manifest_without_a_traceback(export_dir, tmp_path):
    from edgekit_testutil import run_cli
    d = _copy(export_dir, tmp_path / "bad", lambda r: r["artifacts"]["onnx"].__setitem__("file", "../x.onnx"))
    r = run_cli("run", d / "model.onnx", "--tokens", "1,2", "--steps", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "inside the export folder" in r.stderr


def test_a_session_over_an_artifact_imports_neither_exporter_nor_models(export_dir):
    code = ("import sys; from edgekit.runtimes.session import StreamingSession as S;"
            f"s = S({str(export_dir / 'model.onnx')!r}); s.step(1);"
            "print(sorted(m for m in sys.modules if m.startswith(('edgekit.export', 'edgekit.models'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_cli_and_session_choices_come_from_the_registry():
    from edgekit.cli.export import FORMAT_CHOICES
    from edgekit.runtimes.session import BACKENDS
    assert set(FORMAT_CHOICES) == set(formats.FORMATS) | {"both"}
    assert FORMAT_CHOICES["both"] == formats.RUNNABLE_FORMATS == ("onnx", "pte")
    # --backend names what edgekit runs: not ort-genai, whose folder is for onnxruntime_genai
    runnable = [formats.FORMATS[n] for n in formats.RUNNABLE_FORMATS]
    assert set(BACKENDS) == {f.backend for f in (*runnable, *formats.RUNS_CHECKPOINTS)}
    for f in formats.FORMATS.values():
        assert formats.by_suffix(f"x/{f.file}") is f
    for f in runnable:
        assert formats.by_backend(f.backend) is f
    assert formats.by_suffix("x/other.onnx") is formats.FORMATS["onnx"]
    with pytest.raises(EdgekitError, match="unknown backend 'tensorrt'"):
        StreamingSession("whatever.onnx", backend="tensorrt")


def test_the_contract_imports_no_torch():
    code = "import sys, edgekit.artifact, edgekit.formats; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]
