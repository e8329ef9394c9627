"""A pip-installable package: `pip wheel .` builds the kernel library into the package
(setup.py), and the installed wheel exports and runs a bundled model with fused ops from a
folder outside the repository, reading nothing from the source tree.

The wheel is built from a copy of the tracked files (the source tree stays untouched) with
this environment's setuptools and executorch (`--no-build-isolation`), installed with
`--target` into a temp folder, and run by this interpreter with that folder first on
PYTHONPATH, from a temp working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from edgekit_testutil import REPO


def test_the_wheel_exports_and_runs_a_bundled_model_outside_the_repo(tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("edgekit-*.whl"))
    site = tmp_path / "site"
    r = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (site / "edgekit" / "_kernels" / "libedgekit_et_kernels.so").is_file()
    assert (site / "edgekit" / "devices" / "android-arm64.toml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_KERNELS"}
    env["PYTHONPATH"] = str(site)

    def edgekit(*args):
        return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    where = subprocess.run([sys.executable, "-c", "import edgekit, edgekit.kernels as k; "
                            "print(edgekit.__file__); print(k.kernel_library_path())"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.split() == [str(site / "edgekit" / "__init__.py"),
                                    str(site / "edgekit" / "_kernels" / "libedgekit_et_kernels.so")], where
    model = site / "edgekit" / "bundled" / "mamba-stdlib"
    r = edgekit("export", model, "-o", "out", "--device", "host-x86")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((work / "out" / "edgekit.json").read_text())
    assert any("mamba_step" in op for op in manifest["artifacts"]["pte"]["ops_used"]["edgekit"])   # fused ops
    r = edgekit("run", "out/model.pte", "--prompt", "def f(x):", "--steps", "16", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)["tokens"]
    from edgekit.runtimes.session import StreamingSession
    from edgekit.tokenizer import HFTokenizer
    sess = StreamingSession(work / "out" / "model.pte")
    assert got == sess.generate(16, prompt=HFTokenizer(model / "tokenizer.json").encode("def f(x):"))
