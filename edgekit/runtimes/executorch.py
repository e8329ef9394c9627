"""ExecuTorch backend (the Python runtime of the executorch wheel).

With state_style "buffers" the state lives in the program's mutable buffers and
persists across `execute` calls; `get_attribute` returns tensors that alias it, which
is how the session reads, writes and resets the state. With "io" the state is passed
in and out each step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import Backend


def set_threads(n: int) -> None:
    """ExecuTorch's threadpool (XNNPACK) and edgekit's kernel pool (edgekit::dense) alike."""
    from edgekit._io import native_stderr_captured
    from edgekit.kernels import set_kernel_threads
    from executorch.extension.pybindings import portable_lib
    with native_stderr_captured():           # the threadpool logs its reset to stderr
        portable_lib._unsafe_reset_threadpool(n)
    set_kernel_threads(n)


def thread_count() -> int | None:
    try:
        from executorch.extension.pybindings import portable_lib
        return int(portable_lib._threadpool_get_thread_count())
    except Exception:
        return None


class ExecuTorchBackend(Backend):
    name = "executorch"

    def __init__(self, path: Path, entry: dict, n_inputs: int, threads: int | None = None):
        from edgekit._io import native_stderr_captured
        with native_stderr_captured():
            from executorch.runtime import Runtime
            Runtime.get()
        if entry.get("kernel_library"):
            from edgekit.kernels import load_kernels
            load_kernels()
        if threads is not None:
            if threads < 1:
                raise EdgekitError(f"--threads {threads} is not positive", fix="pass --threads 1 or more")
            set_threads(threads)
        try:
            with native_stderr_captured() as log:
                program = Runtime.get().load_program(Path(path))
        except Exception as e:
            raise EdgekitError(f"'{path}' is not a loadable ExecuTorch program ({_first(e)}{_why(log.text)})",
                               fix="the file is truncated or corrupt; export it again") from None
        try:
            with native_stderr_captured() as log:
                self.method = program.load_method("forward")
        except Exception as e:
            msg = _first(e) + _why(log.text)
            if entry.get("kernel_library"):
                raise EdgekitError(f"'{path}' needs the edgekit kernel library "
                                   f"{entry['kernel_library']} ({msg})",
                                   fix="run `make setup` to build it, or set EDGEKIT_KERNELS to its path") from None
            raise EdgekitError(f"'{path}' could not be loaded ({msg})", fix="export it again") from None
        self._program = program
        self.threads = thread_count()
        self.style = entry["state_style"]
        self.xs = [torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"])) for s in entry["inputs"][:n_inputs]]
        # numpy views of the input tensors: a step writes into them (a numpy assignment of a
        # small input is ~0.5 us; torch.from_numpy + copy_ was ~4 us per input)
        self._xs_np = [t.numpy() for t in self.xs]
        self.names = [s["name"] for s in entry["inputs"][n_inputs:]] if self.style == "io" \
            else list(entry["state_buffers"])
        if self.style == "buffers":
            raw = self.method._method
            self.live = {n: raw.get_attribute(b) for n, b in entry["state_buffers"].items()}
        else:
            self.live = {s["name"]: torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"]))
                         for s in entry["inputs"][n_inputs:]}
        self.reset()

    def step(self, xs):
        for buf, x in zip(self._xs_np, xs):
            buf[...] = x
        # The pybinding copies outputs with ATen, which goes parallel above 32k elements
        # (any LM's logits): its OpenMP worker then spins for milliseconds on a core that
        # XNNPACK's and edgekit's pools need for the next step (measured: the dense GEMV
        # fell from 27 to 12 GB/s). One ATen thread while the program runs.
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if self.style == "buffers":
                return self.method.execute(self.xs)[0].numpy()
            out = self.method.execute([*self.xs, *self.live.values()])
        finally:
            torch.set_num_threads(before)
        for n, t in zip(self.names, out[1:]):
            self.live[n] = t
        return out[0].numpy()

    def get_state(self):
        return {n: t.numpy().copy() for n, t in self.live.items()}

    def set_state(self, state):
        for n, t in self.live.items():
            t.copy_(torch.from_numpy(np.asarray(state[n])))

    def reset(self):
        for t in self.live.values():
            t.zero_()


def _why(native_log: str) -> str:
    """The runtime's own reason, from its log: e.g. 'Missing operator: ... edgekit::rwkv7_wkv.out'."""
    lines = [ln.split("] ", 1)[-1] for ln in native_log.splitlines()
             if "Missing operator" in ln or "rror" in ln]
    return (": " + "; ".join(lines[:2])) if lines else ""


def _first(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
