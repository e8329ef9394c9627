"""Shared fixtures: tiny random-weight models in real on-disk formats, and their exports.

The RWKV-7 parity model is the one the acceptance criteria name: BlinkDL .pth, bf16,
vocab 65536, C=256, 4 layers, head size 64. Exports are made once per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RWKV_V7_ON", "1")     # the oracle's RWKV-7 switch; read at import
os.environ.setdefault("RWKV_JIT_ON", "0")
# edgekit remembers verified checksums under $XDG_CACHE_HOME; tests never write the user's home
import tempfile as _tempfile  # noqa: E402
os.environ["XDG_CACHE_HOME"] = _tempfile.mkdtemp(prefix="edgekit-test-cache-")
from edgekit_testutil import REPO, run_cli  # noqa: F401  (re-exported for older imports)


def shared_once(tmp_path_factory, name: str, make) -> Path:
    """make(folder) once per test run, shared by all pytest-xdist workers: the first worker
    to ask makes it while the others wait on a lock file, instead of each making its own
    (an RWKV-7 export at vocab 65536 takes a minute). Only for what every worker would make
    byte for byte the same (fixed seeds), and that tests never modify."""
    import fcntl
    import shutil
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"   # <run>/popen-gwN
    root.mkdir(exist_ok=True)
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_dir():
            partial = root / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            make(partial)
            partial.rename(out)
    return out


@pytest.fixture(scope="session")
def rwkv7_ckpt(tmp_path_factory) -> Path:
    from edgekit.models.rwkv7 import write_random_checkpoint
    d = tmp_path_factory.mktemp("rwkv7")
    return write_random_checkpoint(d / "tiny.pth", vocab_size=65536, n_embd=256, n_layer=4,
                                   head_size=64, seed=7)


@pytest.fixture(scope="session")
def rwkv7_oracle(rwkv7_ckpt):
    """The `rwkv` pip package, RWKV-7 mode, strategy "cpu fp32". Not optional."""
    assert os.environ.get("RWKV_V7_ON") == "1"
    from rwkv.model import RWKV   # an ImportError here fails the test: CI installs the oracle
    return RWKV(model=str(rwkv7_ckpt.with_suffix("")), strategy="cpu fp32")


_EXPORTS: dict = {}
from edgekit_testutil import PREFILL, PREFILL_BY_OPS  # noqa: E402


@pytest.fixture(scope="session")
def rwkv7_export(rwkv7_ckpt, tmp_path_factory):
    """export(ops, state_style) -> OUTDIR with model.onnx, model.pte (with prefill graphs) and
    edgekit.json; for state_style "io", model.pte alone (cached per session)."""
    from edgekit.export import export

    def get(ops: str = "fused", state_style: str = "buffers") -> Path:
        key = (ops, state_style)
        if key not in _EXPORTS:
            # state as I/O is a .pte choice (ONNX always carries it so), and only the step graph
            # is compared in that style: the io exports are the .pte step graph alone
            io = state_style == "io"
            _EXPORTS[key] = shared_once(tmp_path_factory, f"rwkv7-export-{ops}-{state_style}", lambda out: export(
                rwkv7_ckpt, out, formats=("pte",) if io else ("onnx", "pte"), ops=ops, state_style=state_style,
                prefill=0 if io else PREFILL_BY_OPS[ops]))
        return _EXPORTS[key]
    return get


@pytest.fixture(scope="session")
def export_once(tmp_path_factory):
    """export_once(src, ops="fused") -> OUTDIR with model.onnx, model.pte (state in buffers) and
    edgekit.json, exported once per test session for each (src, ops)."""
    from edgekit.export import export
    done: dict = {}

    def get(src, ops: str = "fused") -> Path:
        key = (str(src), ops)
        if key not in done:
            out = tmp_path_factory.mktemp(f"export-{Path(src).name}-{ops}")
            export(src, out, formats=("onnx", "pte"), ops=ops, state_style="buffers")
            done[key] = out
        return done[key]
    return get
