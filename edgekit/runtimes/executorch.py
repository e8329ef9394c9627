"""ExecuTorch backend: edgekit's native runner (runtime/edgekit_runner.cpp), or the executorch
wheel's Python binding when the kernel library is not built.

With state_style "buffers" the state lives in the program's mutable buffers and
persists across `execute` calls; `get_attribute` gives the live tensors, which is how the
session reads, writes and resets the state. With "io" the state is passed in and out
each step.

The native path imports no torch: the wheel's runtime, stock kernels and XNNPACK backend are
loaded from its torch-free libraries (edgekit.kernels.load_executorch_runtime), and the
threadpool is sized through the runner's C API. Only the fallback imports the binding
(`executorch.runtime`, whose `_C` links libtorch: hundreds of MB resident).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import Backend


# ExecuTorch's threadpool size, fixed by the first program this process runs: resizing it
# (ThreadPool::_unsafe_reset_threadpool) replaces the pthreadpool that every XNNPACK runtime
# already created holds a raw pointer to, and the next XNNPACK call on such a program blocks
# forever (seen: benchmarks/quant.py opening eight sessions, the pool set to 2 and 1 in turn).
_ET_POOL: int | None = None


def set_threads(n: int, native: bool = True, et: int | None = None) -> None:
    """edgekit's kernel pool (dense, qlinear, the recurrences) to n threads, and ExecuTorch's
    threadpool (XNNPACK) to `et` (default n) if no program has fixed it yet (_ET_POOL)."""
    from edgekit.kernels import set_kernel_threads
    fix_et_threadpool(n if et is None else et, native)
    set_kernel_threads(n)


def fix_et_threadpool(n: int, native: bool = True) -> int:
    """ExecuTorch's threadpool size: n (0: the size it has) if this is the first time it is
    set in this process, else the size it was fixed at (kept, whatever n asks: see _ET_POOL)."""
    global _ET_POOL
    if _ET_POOL is None:
        _ET_POOL = _et_threadpool(n, native)
    return _ET_POOL


def _fix_or_warn(n: int, native: bool) -> None:
    """fix_et_threadpool, with a warning when a program asked for another size than the one
    an earlier program of this process fixed."""
    got = fix_et_threadpool(n, native)
    if n and got != n:
        import warnings
        warnings.warn(f"ExecuTorch's threadpool stays at {got} thread(s), fixed by the first program this "
                      f"process loaded (resizing it would strand that program's XNNPACK calls); this program "
                      f"asked for {n}. Run it in its own process to give XNNPACK {n}.", RuntimeWarning, stacklevel=3)


def thread_count(native: bool = True) -> int | None:
    try:
        return _et_threadpool(0, native)
    except Exception:
        return None


def _et_threadpool(n: int, native: bool) -> int:
    """Resize ExecuTorch's threadpool to n threads (0: leave it) and return its size: through the
    runner's C API (`edgekit_runner_threadpool`), or the Python binding's functions (which
    import torch) without the native runner. Both log to stderr (the reset; cpuinfo when the
    first call starts the pool): captured."""
    from edgekit._io import native_stderr_captured
    with native_stderr_captured():
        if native:
            from edgekit.kernels import runner_api
            lib = runner_api()
            got = lib.edgekit_runner_threadpool(n)
            if got < 0:
                raise EdgekitError(f"ExecuTorch's threadpool could not be set "
                                   f"({lib.edgekit_runner_last_error().decode(errors='replace')})",
                                   fix="rebuild the kernel library with `make setup` (or `make kernels`)")
            return int(got)
        from executorch.extension.pybindings import portable_lib
        if n > 0:
            portable_lib._unsafe_reset_threadpool(n)
        return int(portable_lib._threadpool_get_thread_count())


class ExecuTorchBackend(Backend):
    """A .pte, one step per call. Runs on edgekit's native runner (runtime/edgekit_runner.cpp, in the
    kernel library) when that library is loaded: inputs are written straight into the
    program's planned memory and one C call executes the method and copies y out, ~1 us of
    overhead per step. Without the library (a .pte with stock ops only, and no `make setup`
    build), it runs on the executorch wheel's Python binding (~10 us per step)."""

    name = "executorch"

    def __init__(self, path: Path, entry, n_inputs: int, threads: int | None = None,
                 state_specs=None):
        """entry: the manifest's ArtifactEntry; state_specs: the manifest's state TensorSpecs (needed
        with the state in buffers: their shapes and dtypes)."""
        native = _load_kernel_library(required=bool(entry.kernel_library))
        if not native:
            from edgekit._io import native_stderr_captured
            with native_stderr_captured():
                from executorch.runtime import Runtime
                Runtime.get()         # the binding registers the wheel's kernels and XNNPACK
        if threads is not None and threads < 1:
            raise EdgekitError(f"--threads {threads} is not positive", fix="pass --threads 1 or more")
        # A program with edgekit's ops runs its GEMVs (dense, qlinear) and recurrences on
        # edgekit's spinning pool; XNNPACK keeps only small glue. Two pools of n threads on n
        # cores take turns badly: on the 2-core machine, RWKV-7 0.1B fp32 .pte's 108 XNNPACK
        # calls cost 3.03-3.20 ms a token with both pools at 2 threads and 1.93-1.95 ms with
        # XNNPACK's at 1 (wall 21.0-21.6 -> 19.9 ms; int8: 1.72-2.11 -> 1.22-1.24 ms, the spread
        # gone). So XNNPACK's pool gets one thread there, `threads` otherwise (none given: the
        # size it has); either only if this is the process's first program (_ET_POOL).
        from edgekit.kernels import set_kernel_threads
        self._edgekit_pool = bool(native and entry.kernel_library)
        _fix_or_warn(1 if self._edgekit_pool else (threads or 0), native)
        if threads is not None:
            set_kernel_threads(threads)
        self.style = entry.state_style
        self.engine = (_NativeProgram if native else _PybindProgram)(Path(path), entry, n_inputs, state_specs or [])
        self.reset()
        if native and self.engine._state_io is None:
            self.step = self.engine.step_buffers        # the hot path: no frame in between

    @property
    def threads(self) -> int | None:
        """The threads this program's heavy work runs on now: edgekit's kernel pool for a
        program with edgekit's ops (a process-wide pool: a later session's `threads` sets it
        for every session), else ExecuTorch's threadpool."""
        if self._edgekit_pool:
            from edgekit.kernels import kernel_threads
            return kernel_threads()
        return _ET_POOL

    @property
    def live(self) -> dict[str, np.ndarray]:
        return self.engine.live

    def step(self, xs):
        for buf, x in zip(self.engine.xs, xs):
            buf[...] = x
        return self.engine.run()

    def run_sequence(self, xs: list[np.ndarray]) -> np.ndarray | None:
        """Every step of a sequence in one call (inputs (T, *input shape) each, in the
        manifest's order); y (T, *y shape). None when this engine cannot (then step)."""
        run = getattr(self.engine, "run_sequence", None)
        return run(xs) if run is not None else None

    def get_state(self):
        return {n: np.array(t, copy=True) for n, t in self.live.items()}

    def set_state(self, state):
        for n, t in self.live.items():
            t[...] = np.asarray(state[n])

    def reset(self):
        for t in self.live.values():
            t[...] = 0


def _load_kernel_library(required: bool) -> bool:
    """Load edgekit's kernel library (which holds the native runner), after the wheel's
    runtime libraries it runs with; True if loaded. A .pte that calls edgekit ops needs it
    (the error says how to build it); one with stock ops only runs without it, on the Python
    binding."""
    from edgekit.kernels import kernel_library_path, load_executorch_runtime, load_kernels, runner_api
    if not required and not kernel_library_path().is_file():
        return False
    load_executorch_runtime()
    load_kernels()
    if not required:
        try:
            runner_api()
        except EdgekitError:      # a library built before the runner existed: its kernels are fine
            return False
    return True


_NP = {"float32": np.float32, "int64": np.int64, "float16": np.float16, "int32": np.int32}


def _zeros(spec: dict) -> np.ndarray:
    return np.zeros(spec.shape, dtype=_NP[spec.dtype])


def _spec(specs, name: str, path: Path):
    for s in specs:
        if s.name == name:
            return s
    raise EdgekitError(f"'{path}': its manifest names state buffer '{name}' but lists no state '{name}'",
                       fix="the manifest is damaged; export again")


class RunnerError(EdgekitError):
    """A step of the native runner failed; steps_done: of a sequence, the steps that ran
    (their outputs written, the state moved on) before the failing one."""

    def __init__(self, what: str, *, steps_done: int | None = None, **kw):
        super().__init__(what, **kw)
        self.steps_done = steps_done


class _RunnerOwner:
    """Closes a native runner when the last reference (a program, a view) is gone."""

    def __init__(self, lib, h):
        self.lib, self.h = lib, h

    def __del__(self):
        self.lib.edgekit_runner_close(self.h)


class _NativeProgram:
    """The .pte's forward method on runtime/edgekit_runner.cpp, through ctypes. `xs` and, with the
    state in buffers, `live` are numpy views of the method's own memory: writing them is
    writing the program's inputs and state."""

    def __init__(self, path: Path, entry, n_inputs: int, state_specs):
        import ctypes
        import os

        from edgekit._io import native_stderr_captured
        from edgekit.kernels import runner_api
        lib = self._lib = runner_api()
        with native_stderr_captured() as log:
            h = lib.edgekit_runner_open(os.fsencode(str(path)), b"forward")
        if not h:
            raise _load_error(path, entry, lib.edgekit_runner_last_error().decode(errors="replace"), log.text)
        self._h = h
        # The runner owns the memory behind every view below: each view's base holds this
        # owner, so the runner is closed only once this program AND the last view are gone.
        owner = self._owner = _RunnerOwner(lib, h)
        specs, self.y_spec = entry.inputs, entry.outputs[0]
        style = entry.state_style
        n_prog = lib.edgekit_runner_num_inputs(h)
        want = len(specs) if style == "io" else n_inputs
        if n_prog != want:
            raise EdgekitError(f"'{path}' takes {n_prog} inputs, its manifest lists {want}",
                               fix="the .pte and edgekit.json are from different exports; export again")
        nb = ctypes.c_int64()

        def check(ptr, spec, what):
            """The program's own tensor has the manifest spec's bytes: compared before anything
            is sized by the (untrusted) manifest."""
            if not ptr:
                raise EdgekitError(f"'{path}': {what} '{spec.name}' is not in the program "
                                   f"({lib.edgekit_runner_last_error().decode(errors='replace')})",
                                   fix="the .pte and edgekit.json are from different exports; export again")
            if nb.value != spec.nbytes:
                raise EdgekitError(f"'{path}': {what} '{spec.name}' has {nb.value} bytes in the program",
                                   expected=f"{spec.nbytes} bytes, shape {spec.shape} {spec.dtype} "
                                            "(per edgekit.json)",
                                   fix="the .pte and edgekit.json are from different exports; export again")

        def view(ptr, spec, what):
            check(ptr, spec, what)
            raw = (ctypes.c_char * spec.nbytes).from_address(ptr)
            raw.owner = owner
            return np.frombuffer(raw, dtype=_NP[spec.dtype]).reshape(spec.shape)

        ins = [view(lib.edgekit_runner_input(h, i, ctypes.byref(nb)), s, "input") for i, s in enumerate(specs[:want])]
        self.xs = ins[:n_inputs]
        check(lib.edgekit_runner_output(h, 0, ctypes.byref(nb)), self.y_spec, "output")
        self.y = _zeros(self.y_spec)
        lib.edgekit_runner_bind_output(h, self.y.ctypes.data, self.y.nbytes)    # self.y outlives h
        self._step = lib.edgekit_runner_step
        if style == "buffers":
            self.live = {n: view(lib.edgekit_runner_attribute(h, b.encode(), ctypes.byref(nb)),
                                 _spec(state_specs, n, path), "state buffer")
                         for n, b in entry.state_buffers.items()}
            self._state_io = None
        else:
            self.live = {s.name: _zeros(s) for s in specs[n_inputs:]}
            self._state_io = list(zip(ins[n_inputs:], self.live.values()))
        self._path = path

    def step_buffers(self, xs) -> np.ndarray:
        """`ExecuTorchBackend.step` with the state in buffers: write the inputs in place, run."""
        for buf, x in zip(self.xs, xs):
            buf[...] = x
        if self._step(self._h):
            self._fail()
        return self.y

    def run(self) -> np.ndarray:
        import ctypes
        io = self._state_io
        if io:
            for dst, src in io:
                dst[...] = src
        rc = self._step(self._h)
        if rc:
            self._fail()
        if io:
            nb = ctypes.c_int64()
            for k, (_, live) in enumerate(io, start=1):
                ptr = self._lib.edgekit_runner_output(self._h, k, ctypes.byref(nb))
                if not ptr or nb.value != live.nbytes:
                    self._fail()
                ctypes.memmove(live.ctypes.data, ptr, live.nbytes)
        return self.y

    def run_sequence(self, xs: list[np.ndarray]) -> np.ndarray | None:
        import ctypes
        if self._state_io is not None:
            return None
        seq = [np.ascontiguousarray(x, dtype=v.dtype).reshape(-1, *v.shape) for x, v in zip(xs, self.xs)]
        T = seq[0].shape[0]
        if any(a.shape[0] != T for a in seq):
            raise ValueError("run_sequence: inputs of different lengths")
        ys = np.empty((T, *self.y.shape), dtype=self.y.dtype)
        ptrs = (ctypes.c_void_p * len(seq))(*[a.ctypes.data for a in seq])
        sizes = (ctypes.c_int64 * len(seq))(*[v.nbytes for v in self.xs])
        done = ctypes.c_int64(0)
        rc = self._lib.edgekit_runner_run(self._h, T, len(seq), ptrs, sizes, ys.ctypes.data, self.y.nbytes,
                                          ctypes.byref(done))
        if rc:
            self._fail(steps_done=done.value)
        return ys

    def _fail(self, steps_done: int | None = None):
        err = self._lib.edgekit_runner_last_error().decode(errors="replace")
        raise RunnerError(f"ExecuTorch could not run '{self._path}' ({err})", steps_done=steps_done,
                          fix="export it again with this edgekit; if that fails, report it")



class _PybindProgram:
    """The .pte's forward method on the executorch wheel's Python binding."""

    def __init__(self, path: Path, entry, n_inputs: int, state_specs):
        import torch

        from edgekit._io import native_stderr_captured
        from executorch.runtime import Runtime
        try:
            with native_stderr_captured() as log:
                program = Runtime.get().load_program(Path(path))
        except Exception as e:
            raise _load_error(path, entry, f"'{path}' is not a loadable ExecuTorch program ({_first(e)})",
                              log.text) from None
        try:
            with native_stderr_captured() as log:
                self.method = program.load_method("forward")
        except Exception as e:
            raise _load_error(path, entry, f"method 'forward' could not be loaded ({_first(e)})", log.text) from None
        self._program = program
        self.style = entry.state_style
        self.tx = [torch.zeros(s.shape, dtype=getattr(torch, s.dtype)) for s in entry.inputs[:n_inputs]]
        # numpy views of the input tensors: a step writes into them (a numpy assignment of a
        # small input is ~0.5 us; torch.from_numpy + copy_ was ~4 us per input)
        self.xs = [t.numpy() for t in self.tx]
        if self.style == "buffers":
            raw = self.method._method
            self.live = {n: raw.get_attribute(b).numpy() for n, b in entry.state_buffers.items()}
            self.names = list(self.live)
        else:
            self.names = [s.name for s in entry.inputs[n_inputs:]]
            self.live = {s.name: _zeros(s) for s in entry.inputs[n_inputs:]}

    def run(self) -> np.ndarray:
        import torch
        # The binding copies outputs with ATen, which goes parallel above 32k elements
        # (any LM's logits): its OpenMP worker then spins for milliseconds on a core that
        # XNNPACK's and edgekit's pools need for the next step. One ATen thread while it runs.
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if self.style == "buffers":
                return self.method.execute(self.tx)[0].numpy()
            out = self.method.execute([*self.tx, *(torch.from_numpy(a) for a in self.live.values())])
        finally:
            torch.set_num_threads(before)
        for n, t in zip(self.names, out[1:]):
            self.live[n][...] = t.numpy()
        return out[0].numpy()


def _load_error(path: Path, entry, reason: str, native_log: str) -> EdgekitError:
    """One line for a .pte that does not load: a corrupt file, or a method whose operators
    this process lacks (an edgekit kernel library older than the export)."""
    msg = reason + _why(native_log)
    if "not a loadable" in reason or "cannot map" in reason:
        return EdgekitError(msg, fix="the file is truncated or corrupt; export it again")
    if entry.kernel_library and ("OperatorMissing" in msg or "Missing operator" in msg):
        from edgekit.kernels import kernel_library_path
        return EdgekitError(f"'{path}' needs edgekit kernels that {kernel_library_path()} lacks ({msg})",
                            fix="rebuild the library with `make setup` (or `make kernels`)")
    return EdgekitError(f"'{path}' could not be loaded ({msg})", fix="export it again")


def _why(native_log: str) -> str:
    """The runtime's own reason, from its log: e.g. 'Missing operator: ... edgekit::rwkv7_wkv.out'."""
    lines = [ln.split("] ", 1)[-1] for ln in native_log.splitlines()
             if "Missing operator" in ln or "rror" in ln]
    return (": " + "; ".join(lines[:2])) if lines else ""


def _first(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
