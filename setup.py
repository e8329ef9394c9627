"""A wheel (`pip install .`, `pip wheel .`) carries what an editable install (`make setup`) reads
from the source tree: the kernel library, built here by kernels/build.sh against this Python's
executorch wheel (so the wheel is for this platform and executorch version), the kernels'
sources (for `edgekit bundle`) and the device profiles. Everything else is pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithKernels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        pkg = Path(self.build_lib) / "edgekit"
        lib = pkg / "_kernels" / "libedgekit_et_kernels.so"
        subprocess.run(["bash", str(ROOT / "kernels" / "build.sh"), sys.executable, str(lib)], check=True,
                       env={**__import__("os").environ, "EDGEKIT_KERNEL_FORCE": "1"})
        src = pkg / "_kernels" / "src"
        src.mkdir(parents=True, exist_ok=True)
        for f in [*ROOT.glob("kernels/*.cpp"), *ROOT.glob("kernels/*.h")]:
            shutil.copyfile(f, src / f.name)
        (src / "runtime").mkdir(exist_ok=True)
        for f in [*ROOT.glob("runtime/*.cpp"), *ROOT.glob("runtime/*.h")]:
            shutil.copyfile(f, src / "runtime" / f.name)
        (pkg / "devices").mkdir(exist_ok=True)
        for f in ROOT.glob("devices/*.toml"):
            shutil.copyfile(f, pkg / "devices" / f.name)


setup(cmdclass={"build_py": BuildWithKernels})
