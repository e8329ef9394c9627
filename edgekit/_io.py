"""File helpers: atomic writes, checked reads. No artifact is ever left half-written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are noted, not acted on; the first one noted is handed to
    its own handler on the way out (Ctrl-C's KeyboardInterrupt, the CLI's SIGTERM unwinding).
    For cleanup that must finish once an interrupt is unwinding: a second signal (Ctrl-C
    pressed again, or re-sent by a library) would otherwise stop a temp folder's removal
    halfway. Python runs signal handlers in the main thread only, so elsewhere this holds
    nothing (and a signal mask would not do: the kernel hands a process's signal to any
    thread that does not block it, and torch, ONNX Runtime and OpenMP start threads)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list = []
    kinds = [s for s in (signal.SIGINT, signal.SIGTERM) if callable(signal.getsignal(s))
             or signal.getsignal(s) == signal.SIG_DFL]
    previous = {s: signal.signal(s, lambda signum, frame: noted.append((signum, frame))) for s in kinds}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if noted:
            signum, frame = noted[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            else:                                   # SIG_DFL: what the signal would have done
                signal.raise_signal(signum)


def remove_tree(path: str | os.PathLike | None) -> None:
    """rmtree that a second interrupt cannot stop halfway (signals_held)."""
    import shutil
    if path is None:
        return
    with signals_held():
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in dest's folder; rename it onto dest only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; use the usual mode
        with open(tmp, "rb+") as f:            # durable before it replaces the old file
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        try:
            dfd = os.open(dest.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{what} '{path}' does not exist", fix=fix)
    if path.is_dir():
        raise EdgekitError(f"{what} '{path}' is a directory", expected="a file", fix=fix)
    return path


class _Captured:
    text: str = ""


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[_Captured]:
    """Capture what native code (ExecuTorch's ET_LOG, cpuinfo) writes to fd 2.

    Used around program loading only: the runtime's own diagnostics ("Missing operator:
    edgekit::rwkv7_wkv.out") are folded into edgekit's one-line errors instead of
    spilling onto the user's terminal.
    """
    import io
    import sys
    cap = _Captured()
    sys.stderr.flush()
    saved_fd, saved_py = os.dup(2), sys.stderr
    py_text = io.StringIO()                 # the pybindings may log through sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        sys.stderr = py_text
        try:
            yield cap
        finally:
            sys.stderr = saved_py
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            f.seek(0)
            cap.text = f.read().decode("utf-8", errors="replace") + py_text.getvalue()
