"""A pip-installable package: `pip wheel .` builds the kernel library into the package
(setup.py), and the installed wheel exports and runs a bundled model with fused ops from a
folder outside the repository, reading nothing from the source tree.

The wheel is built from a copy of the tracked files (the source tree stays untouched) with
this environment's setuptools and executorch (`--no-build-isolation`), installed by pip into a
fresh venv, and run by that venv's Python from a temp working directory. The venv reaches its
dependencies (torch, executorch, onnxruntime: GBs, the pinned ones) through a .pth line naming
this environment's site-packages, after its own: its edgekit is the wheel's, and this
environment's editable install is not seen (a .pth in a folder a .pth adds is not read).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    import sysconfig
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = sysconfig.get_paths()
    (site / "deps.pth").write_text("".join(f"{d}\n" for d in dict.fromkeys((ours["purelib"], ours["platlib"]))))
    r = subprocess.run([*pip, "--python", str(py), "install", "--no-deps", str(wheel)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (site / "edgekit" / "_kernels" / "libedgekit_et_kernels.so").is_file()
    assert (site / "edgekit" / "devices" / "android-arm64.toml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEKIT_KERNELS", "PYTHONPATH")}

    def edgekit(*args):
        return subprocess.run([py, "-m", "edgekit", *map(str, args)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    where = subprocess.run([py, "-c", "import edgekit, edgekit.kernels as k; "
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
