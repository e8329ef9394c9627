"""Load edgekit's C++ ExecuTorch kernels (kernels/*.cpp) into this process.

A .pte that calls an `edgekit::*` op needs the kernel library loaded before
`Runtime.load_method`; otherwise ExecuTorch refuses the method ("Missing operator").
The library links the wheel's libexecutorch.so (SONAME libexecutorch.so), the same copy the
Python runtime (`executorch.runtime`) uses, so its static initializers register the kernels
into the runtime's operator registry: a plain `ctypes.CDLL` is enough, before or after
`executorch.runtime` is imported. Load it once per process: a second, different library
file that registers the same op aborts the process.

The stock kernels and the XNNPACK backend come from the wheel's torch-free libraries
(`load_executorch_runtime`), not from its Python binding, whose `_C` module links libtorch:
importing it put torch (~0.5 s, hundreds of MB resident) into every session that runs a
.pte on the native runner. The binding links the same files, so a later
`import executorch.runtime` in the same process maps no second copy and registers nothing
twice (tests/test_session_memory.py).

`$EDGEKIT_KERNELS=/path/to/libedgekit_et_kernels.so` loads another build instead of
build/kernels/'s, e.g. the scalar one (`EDGEKIT_SIMD=off bash kernels/build.sh PYTHON OUT.so`,
tests/test_kernels_scalar.py). Set it before the first load, in a process that has not loaded
the default library (a fresh subprocess).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from edgekit.errors import EdgekitError

ENV_VAR = "EDGEKIT_KERNELS"
LIBRARY_NAME = "libedgekit_et_kernels.so"

# The executorch wheel's runtime libraries (its lib/), in dependency order: the runtime, its
# threadpool, the stock ATen kernels (portable and optimized: every stock op an edgekit .pte
# calls), the XNNPACK backend. None links libtorch.
ET_RUNTIME_LIBRARIES = ("libexecutorch.so", "libexecutorch_threadpool.so",
                        "libexecutorch_kernels_optimized.so", "libexecutorch_backend_xnnpack.so")

_lock = threading.Lock()
_loaded: Path | None = None
_handle: ctypes.CDLL | None = None  # kept alive: the kernels must never be unloaded
_et_runtime: list[ctypes.CDLL] = []  # likewise the wheel's runtime libraries


def executorch_lib_dir() -> Path:
    """The executorch wheel's lib/ folder, found without importing any executorch module."""
    import importlib.util
    spec = importlib.util.find_spec("executorch")
    for d in (spec.submodule_search_locations or []) if spec else []:
        if (Path(d) / "lib" / ET_RUNTIME_LIBRARIES[0]).is_file():
            return Path(d) / "lib"
    raise EdgekitError("the executorch wheel's lib/libexecutorch.so was not found",
                       expected="executorch installed in this Python environment",
                       fix="run `make setup` (it installs the pinned executorch wheel)")


def load_executorch_runtime() -> Path:
    """Load the wheel's runtime, threadpool, stock kernels and XNNPACK backend into this
    process, once (RTLD_GLOBAL, dependency order): their static initializers register the
    kernels and the backend. Returns the lib/ folder."""
    with _lock:
        lib_dir = executorch_lib_dir()
        if not _et_runtime:
            for name in ET_RUNTIME_LIBRARIES:
                try:
                    _et_runtime.append(ctypes.CDLL(str(lib_dir / name), mode=ctypes.RTLD_GLOBAL))
                except OSError as e:
                    raise EdgekitError(f"the executorch runtime library {lib_dir / name} failed to load",
                                       got=str(e), fix="reinstall executorch with `make setup`") from e
        return lib_dir


def kernel_library_path() -> Path:
    """`$EDGEKIT_KERNELS`; else the library a wheel carries (`edgekit/_kernels/`, setup.py);
    else the source tree's `<repo root>/build/kernels/libedgekit_et_kernels.so` (make setup)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    packaged = Path(__file__).resolve().parent / "_kernels" / LIBRARY_NAME
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "build" / "kernels" / LIBRARY_NAME


def load_kernels() -> Path:
    """Load the kernel library once per process and return its path."""
    global _loaded, _handle
    with _lock:
        path = kernel_library_path()
        if _loaded is not None:
            if path != _loaded:
                raise EdgekitError(
                    f"edgekit kernel library {path} requested, but {_loaded} is already loaded",
                    expected="one kernel library per process",
                    fix=f"unset {ENV_VAR} or set it before the first load, in a fresh process")
            return _loaded
        if not path.is_file():
            raise EdgekitError(
                f"edgekit ExecuTorch kernel library {path} not found",
                expected=f"the library built from kernels/*.cpp (or a path in ${ENV_VAR})",
                fix="run `make setup` (or `make kernels`) to build it")
        try:
            _handle = ctypes.CDLL(str(path))
        except OSError as e:
            raise EdgekitError(
                f"edgekit ExecuTorch kernel library {path} failed to load",
                got=str(e),
                fix="rebuild it with `make setup` (it links the executorch wheel in .venv)") from e
        _loaded = path
        return path


def set_kernel_threads(n: int | None) -> None:
    """Threads of edgekit's own kernel pool (kernels/edgekit_threadpool.h; today the
    `dense` GEMV); None: one per CPU this process may use. A no-op until the library is
    loaded."""
    if _handle is not None:
        default = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _handle.edgekit_kernels_set_threads(ctypes.c_int(n if n else default))


def kernel_threads() -> int | None:
    return int(_handle.edgekit_kernels_threads()) if _handle is not None else None


def runner_api() -> ctypes.CDLL:
    """The loaded library with the C signatures of its native step runner
    (runtime/edgekit_runner.cpp) declared. Call `load_kernels()` first."""
    lib = _handle
    if lib is None:
        raise RuntimeError("load_kernels() first")
    if not getattr(lib, "_edgekit_runner_typed", False):
        vp, i64, p64 = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
        sigs = {
            "edgekit_runner_last_error": (ctypes.c_char_p, []),
            "edgekit_runner_threadpool": (i64, [i64]),
            "edgekit_runner_open": (vp, [ctypes.c_char_p, ctypes.c_char_p]),
            "edgekit_runner_close": (None, [vp]),
            "edgekit_runner_num_inputs": (i64, [vp]),
            "edgekit_runner_num_outputs": (i64, [vp]),
            "edgekit_runner_input": (vp, [vp, i64, p64]),
            "edgekit_runner_output": (vp, [vp, i64, p64]),
            "edgekit_runner_attribute": (vp, [vp, ctypes.c_char_p, p64]),
            "edgekit_runner_bind_output": (None, [vp, vp, i64]),
            "edgekit_runner_step": (ctypes.c_int, [vp]),
            "edgekit_runner_run": (ctypes.c_int, [vp, i64, i64, ctypes.POINTER(vp), p64, vp, i64, p64]),
        }
        for name, (res, args) in sigs.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise EdgekitError(f"edgekit kernel library {_loaded} has no native runner ({name})",
                                   expected="a library built from this edgekit's kernels/*.cpp",
                                   fix="rebuild it with `make setup` (or `make kernels`)") from None
            fn.restype, fn.argtypes = res, args
        lib._edgekit_runner_typed = True
    return lib
