"""`edgekit bundle` (edgekit/bundle.py): the folder builds with CMake against the pip ExecuTorch
on this host, and its C example prints the greedy tokens the Python session generates.

A bundled trained model exported for a phone (int4: qlinear, the Mamba step, the conv and
glue kernels) is bundled, configured with `find_package(executorch)` on the wheel's folder,
built, and run with the demo prompt; the tokens must equal StreamingSession.generate's.
Bad input: an ONNX-only export, a device that runs no .pte, a non-empty output folder: one
line, nothing written.
"""

from __future__ import annotations

import subprocess

import pytest

from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, run_cli


@pytest.fixture(scope="module")
def phone_pte(tmp_path_factory):
    from edgekit.export import export
    out = tmp_path_factory.mktemp("bundle-src") / "exp"
    export(REPO / "edgekit" / "bundled" / "mamba-stdlib", out, device="android-arm64")
    return out


def test_the_bundle_builds_and_its_example_matches_the_session(phone_pte, tmp_path):
    import executorch

    from edgekit.cli.demo import CODE_PROMPT
    from edgekit.runtimes.session import StreamingSession
    out = tmp_path / "bundle"
    r = run_cli("bundle", phone_pte, "--device", "android-arm64", "-o", out)
    assert r.returncode == 0, r.stderr
    names = {p.name for p in (out / "kernels").iterdir()}
    assert {"mamba_step.cpp", "qlinear.cpp", "threadpool.cpp", "edgekit_op_checks.h"} <= names
    assert {p.name for p in (out / "runtime").iterdir()} == {"edgekit_runner.cpp", "edgekit_runner.h"}
    assert {p.name for p in out.iterdir()} >= {"model.pte", "edgekit.json", "CMakeLists.txt", "stream.c", "README.md"}
    assert len((out / "stream.c").read_text().splitlines()) <= 60
    et = list(executorch.__path__)[0]
    cmake = _cmake()
    for cmd in ([cmake, "-S", str(out), "-B", str(out / "build"), f"-DCMAKE_PREFIX_PATH={et}"],
                [cmake, "--build", str(out / "build"), "-j", "2"]):
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    sess = StreamingSession(phone_pte / "model.pte")
    prompt = sess.tokenizer.encode(CODE_PROMPT)
    want = sess.generate(32, prompt=prompt)
    run = subprocess.run([str(out / "build" / "stream"), str(out / "model.pte"), "32", "2", *map(str, prompt)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [int(t) for t in run.stdout.split()] == want


def _cmake() -> str:
    """The test extras' pinned cmake (pyproject.toml), beside this Python; else the machine's."""
    import shutil
    import sys
    from pathlib import Path
    mine = Path(sys.executable).parent / "cmake"
    found = str(mine) if mine.is_file() else shutil.which("cmake")
    assert found, "cmake is missing: pip install -e '.[test]' brings it"
    return found


def test_bundle_mistakes_get_one_line(phone_pte, tmp_path):
    from edgekit.export import export
    onnx_only = tmp_path / "onnx"
    export(REPO / "edgekit" / "bundled" / "mamba-stdlib", onnx_only, formats=("onnx",))
    for args, words in (([onnx_only, "--device", "android-arm64"], "holds onnx, and a bundle for 'android-arm64' needs a .pte"),
                        ([phone_pte, "--device", "jetson-orin-nano"], "runs onnx, and a bundle is for an ExecuTorch .pte"),
                        ([phone_pte, "--device", "pixel-99"], "device 'pixel-99' is unknown")):
        r = run_cli("bundle", *args, "-o", tmp_path / "out")
        assert_clean_failure(r, words)
        assert_no_output(tmp_path / "out")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    r = run_cli("bundle", phone_pte, "--device", "android-arm64", "-o", tmp_path / "mine")
    assert_clean_failure(r, "exists and is not empty")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_every_op_has_its_kernel_file():
    from edgekit.bundle import kernel_sources
    from edgekit.ops import REGISTRY
    assert len(kernel_sources([f"edgekit::{name}.out" for name in REGISTRY])) >= 10


def test_a_manifest_naming_an_unknown_op_is_refused(phone_pte, tmp_path):
    """ops_used comes from an untrusted edgekit.json: a name that is no edgekit op (a path)
    never reaches the file system."""
    import json
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(phone_pte, bad)
    m = json.loads((bad / "edgekit.json").read_text())
    m["artifacts"]["pte"]["ops_used"]["edgekit"] = ["edgekit::../../setup.out"]
    (bad / "edgekit.json").write_text(json.dumps(m))
    r = run_cli("bundle", bad, "--device", "android-arm64", "-o", tmp_path / "out")
    assert_clean_failure(r, "which edgekit does not have")
    assert_no_output(tmp_path / "out")
