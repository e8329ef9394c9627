"""Constant memory (acceptance item 3, issue 13): a stream of any length runs in the memory
the session had after warm-up, its state never changes size, and it never goes NaN/Inf.

Measured, not read from the manifest, on a tiny RWKV-7 export (ONNX and .pte, with prefill
graphs) in every way a user streams: `step`, `stream`, `generate`, prefill (`forward_seq`
through the prefill graph), and the `edgekit run` loop, each in a fresh process (where a
leak has no memory freed by earlier tests to hide in).

* State: the session's live state tensors (the backend's own buffers: ONNX Runtime's two
  bound sets, the .pte's mutable buffers in the program's memory) are read after EVERY
  step: their total bytes never change, equal the bytes the program itself declares (the
  ONNX graph's state inputs/outputs; the .pte's buffers as the ExecuTorch program reports
  them), they stay where they were (no reallocation), and they are finite.
* Outputs: every step's output is checked finite (np.isfinite on each y or chunk of ys).
* Growth: anonymous resident memory (/proc/<pid>/statm: resident - file-backed) is read
  every SAMPLE steps over STEPS steps after WARMUP steps; the growth is the median, over
  WINDOWS windows, of the least-squares slope within each, and must be < MAX_SLOPE
  bytes/step. Clean runs measure 0.0 B/step; a planted 104 B/step leak measures ~104
  (test_slope_catches_a_planted_leak). The median keeps a one-off allocation from
  counting as growth: ONNX Runtime allocates ~220 KB ~9 s after import, stepping or not.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit_testutil import REPO

pytestmark = pytest.mark.slow       # long streams (pyproject's marker); ~1 min in all

WARMUP = 2_000      # ONNX Runtime's allocator settles over its first ~2,000 steps
STEPS = 20_000      # measured steps, after warm-up
SAMPLE = 100        # steps between RSS samples: 200 samples per stream
MAX_SLOPE = 4.0     # bytes/step (a page per 1,000 steps): a 100 B/step leak is 25x over it
STREAM_CHUNK = 25   # stream(): steps per chunk
WINDOWS = 8         # the slope is the median over 8 windows of 2,500 steps (25 samples each)
PREFILL = 16        # the exports' prefill chunk (tokens per call of the prefill graph)
V = 256             # vocabulary of the tiny model
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def tiny_rwkv7(tmp_path_factory) -> Path:
    """A tiny RWKV-7 (vocab 256, C 64, 2 layers) exported to model.onnx and model.pte with
    prefill graphs (chunks of 16): ~150 us a step, so a 22k-step stream takes seconds."""
    from edgekit.export import export
    from edgekit.models.rwkv7 import write_random_checkpoint
    d = tmp_path_factory.mktemp("mem-rwkv7")
    ckpt = write_random_checkpoint(d / "tiny.pth", vocab_size=V, n_embd=64, n_layer=2, head_size=64, seed=13)
    export(ckpt, d / "out", formats=("onnx", "pte"), ops="fused", state_style="buffers", prefill=PREFILL)
    return d / "out"


# ---- measuring ------------------------------------------------------------------------
def anon_bytes(pid: int | str = "self") -> int:
    """Resident anonymous memory now (heap, stacks, arenas; not the peak): statm's resident
    minus its file-backed pages, which come and go as code first runs (ONNX Runtime's
    library faults in ~300 KB of code ~9 s after import, with no step taken)."""
    with open(f"/proc/{pid}/statm") as f:
        _, resident, shared = f.read().split()[:3]
    return (int(resident) - int(shared)) * PAGE


def slope_bytes_per_step(steps, mem, windows: int = WINDOWS) -> float:
    """Growth in bytes/step: the least-squares slope of memory over step count within each
    of `windows` consecutive windows of samples, and the median of those. A steady leak
    has the same slope in every window; a one-off allocation (ONNX Runtime's ~220 KB
    ~9 s after import, with no step taken) moves one window's, not the median."""
    steps, mem = np.asarray(steps, dtype=np.float64), np.asarray(mem, dtype=np.float64)
    assert len(steps) >= 10 * windows, f"only {len(steps)} memory samples"
    slopes = [np.polyfit(s - s.mean(), m - m.mean(), 1)[0]
              for s, m in zip(np.array_split(steps, windows), np.array_split(mem, windows))]
    return float(np.median(slopes))


def _program_state(sess, backend) -> dict[str, tuple[int, int | None]]:
    """What the program itself declares its state to be: name -> (bytes, address or None).

    ONNX: the graph's inputs that come back as outputs (`name` -> `name.out`), bytes from the
    graph's own shapes and element types. .pte (state in buffers): each mutable buffer the
    ExecuTorch program reports through the native runner, with its size and address."""
    if backend.name == "onnxruntime":
        item = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(int64)": 8, "tensor(int32)": 4}
        outs = {o.name: o for o in backend.sess.get_outputs()}
        out = {}
        for i in backend.sess.get_inputs():
            o = outs.get(i.name + ".out")
            if o is None:
                continue
            assert all(isinstance(d, int) for d in i.shape), f"state '{i.name}' has a free dim: {i.shape}"
            assert (o.shape, o.type) == (i.shape, i.type), (i.name, i.shape, i.type, o.shape, o.type)
            out[i.name] = (int(np.prod(i.shape)) * item[i.type], None)
        return out
    assert backend.name == "executorch"
    eng = backend.engine
    assert type(eng).__name__ == "_NativeProgram", "the .pte should run on the native runner (make setup builds it)"
    lib, h, nb = eng._lib, eng._h, ctypes.c_int64()
    key = sess.format if backend is sess.backend else f"{sess.format}_prefill"
    entry = sess.manifest.artifacts[key]
    out = {}
    if entry.state_style == "buffers":      # the manifest names the buffers; the program sizes them
        for name, buf in entry.state_buffers.items():
            ptr = lib.edgekit_runner_attribute(h, buf.encode(), ctypes.byref(nb))
            assert ptr, f"the program has no buffer '{buf}'"
            out[name] = (nb.value, ptr)
        return out
    # state as I/O (the prefill graph): the program's inputs after the step inputs
    n_x = len(eng.xs)
    n_in = lib.edgekit_runner_num_inputs(h)
    assert lib.edgekit_runner_num_outputs(h) == n_in - n_x + 1, "every state input has a state output"
    for k, name in enumerate(eng.live):
        assert lib.edgekit_runner_input(h, n_x + k, ctypes.byref(nb)), f"the program has no input {n_x + k}"
        out[name] = (nb.value, None)
    assert len(out) == n_in - n_x, (list(out), n_in, n_x)
    return out


def _live_state(backend) -> dict[str, np.ndarray]:
    """The arrays that hold the state now (no copy)."""
    if backend.name == "onnxruntime":
        return dict(zip(backend.names, backend.sets[backend.cur]))
    return backend.live


class StateWatch:
    """Checks a session's live state (and its prefill program's) against what the programs
    declare, once at the start and then after every step it is called for."""

    def __init__(self, sess):
        self.sess = sess
        # the prefill program, where it is a program of its own (ONNX Runtime binds its prefill
        # graph to the step graph's own state sets: one live state)
        self.backends = [b for b in (sess.backend, sess.backend._prefill) if b is not None]
        self.declared = [_program_state(sess, b) for b in self.backends]
        for b, decl in zip(self.backends, self.declared):
            live = _live_state(b)
            assert decl and sorted(live) == sorted(decl), (sorted(live), sorted(decl))
            for n, a in live.items():
                assert a.nbytes == decl[n][0], f"live state '{n}' has {a.nbytes} bytes, the program {decl[n][0]}"
                if decl[n][1] is not None:
                    assert a.ctypes.data == decl[n][1], f"live state '{n}' is not the program's own buffer"
        self.bytes = sum(a[0] for a in self.declared[0].values())
        assert len(self.backends) == 1 or sum(a[0] for a in self.declared[1].values()) == self.bytes
        # the memory the state may live in: fixed when the session is built
        self.homes = [self._homes(b) for b in self.backends]
        self.checks = 0

    @staticmethod
    def _homes(b) -> frozenset:
        sets = b.sets if b.name == "onnxruntime" else [list(b.live.values())]
        return frozenset((a.ctypes.data, a.nbytes) for s in sets for a in s)

    def __call__(self, y=None) -> None:
        if y is not None:
            assert np.isfinite(y).all(), f"non-finite output after {self.sess.position} steps"
        for b, home in zip(self.backends, self.homes):
            live = _live_state(b)
            total = 0
            for n, a in live.items():
                total += a.nbytes
                if (a.ctypes.data, a.nbytes) not in home:
                    raise AssertionError(f"state '{n}' moved or was resized at step {self.sess.position}")
                if not np.isfinite(a).all():
                    raise AssertionError(f"state '{n}' is not finite at step {self.sess.position}")
            if total != self.bytes:
                raise AssertionError(f"live state is {total} bytes at step {self.sess.position}, "
                                     f"the program declares {self.bytes}")
        self.checks += 1


def measure(advance, n_calls: int, steps_per_call: int, warm_calls: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Run advance() warm_calls times, then n_calls times reading memory after each; returns
    (slope in bytes/step, steps, memory). The sample arrays are allocated up front."""
    for _ in range(warm_calls):
        advance()
    steps = np.arange(1, n_calls + 1) * steps_per_call
    mem = np.zeros(n_calls, dtype=np.int64)
    for k in range(n_calls):
        advance()
        mem[k] = anon_bytes()
    return slope_bytes_per_step(steps, mem), steps, mem


# ---- drivers: one per way a user streams -----------------------------------------------
# Each returns (advance, steps per call): advance() runs ~SAMPLE steps, checking every output
# and the state as it goes.
def _tokens(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, V, size=n).tolist()


def drive_step(sess, watch):
    toks = iter(_tokens(STEPS + WARMUP, 1))

    def advance():
        for _ in range(SAMPLE):
            watch(sess.step(next(toks)))
    return advance, SAMPLE


def drive_stream(sess, watch):
    toks = iter(_tokens(STEPS + WARMUP, 2))

    def advance():
        for ys in sess.stream([next(toks) for _ in range(SAMPLE)], chunk=STREAM_CHUNK):
            assert ys.shape == (STREAM_CHUNK, V)
            watch(ys)                   # every step's output; the state between chunks (.pte:
    return advance, SAMPLE              # a chunk's steps run in one C call)


def drive_generate(sess, watch):
    sess.feed([1, 2, 3])

    def on_token(_tok):                 # runs between two steps of generate
        watch(sess.last_y)

    def advance():
        out = sess.generate(SAMPLE, on_token=on_token)
        assert len(out) == SAMPLE and all(0 <= t < V for t in out)
    return advance, SAMPLE


def drive_prefill(sess, watch):
    assert sess.prefill_len == PREFILL
    toks = iter(_tokens(STEPS + WARMUP, 3))
    per = SAMPLE // PREFILL

    def advance():
        for _ in range(per):            # one call of the prefill graph each
            ys = sess.forward_seq([next(toks) for _ in range(PREFILL)])
            assert ys.shape == (PREFILL, V)
            watch(ys)
    return advance, per * PREFILL


DRIVERS = {"step": drive_step, "stream": drive_stream, "generate": drive_generate, "prefill": drive_prefill}
CHECKS_PER_STEP = {"step": 1, "stream": 1 / STREAM_CHUNK, "generate": 1, "prefill": 1 / PREFILL}


def _run(sess, mode):
    watch = StateWatch(sess)
    advance, per = DRIVERS[mode](sess, watch)
    start = sess.position
    slope, steps, mem = measure(advance, STEPS // per, per, WARMUP // per)
    assert sess.position - start == (STEPS // per + WARMUP // per) * per
    assert watch.checks >= (sess.position - start) * CHECKS_PER_STEP[mode] - 1
    return watch, slope, steps, mem


def child(art: str, modes: list[str]) -> None:
    """In a fresh process (no torch, no other test's freed memory for a leak to hide in): run
    each mode on a new session of art and print one JSON line {mode: result}. Mode
    "step+leak" is `step` with a planted leak of 104 bytes a step."""
    import json
    import traceback

    from edgekit.runtimes.session import StreamingSession
    for mode in modes:
        sess = StreamingSession(art)
        if mode == "step+leak":
            kept, step = [], sess.step
            sess.step = lambda x: (kept.append(bytes(60)), step(x))[1]
        try:
            watch, slope, steps, mem = _run(sess, mode.split("+")[0])
            res = {"slope": slope, "bytes": watch.bytes, "steps": int(steps[-1]), "mem": [int(mem.min()), int(mem.max())],
                   "grew": int(mem[-1] - mem[0])}
        except AssertionError:
            res = {"error": traceback.format_exc(limit=3)}
        print(json.dumps({mode: res}), flush=True)


@pytest.fixture(scope="module")
def session_runs(tiny_rwkv7) -> dict:
    """{art: {mode: result}} from one fresh process per artifact, both running at once."""
    import json
    modes = {"model.onnx": list(DRIVERS), "model.pte": [*DRIVERS, "step+leak"]}
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_streaming_memory as t; "
            "t.child(sys.argv[2], sys.argv[3:])")
    procs = {art: subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(tiny_rwkv7 / art), *ms],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for art, ms in modes.items()}
    out = {}
    for art, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        runs = {}
        for line in stdout.splitlines():
            if line.startswith("{"):
                runs.update(json.loads(line))
        out[art] = {"runs": runs, "rc": p.returncode, "stderr": stderr}
    return out


def _result(session_runs, art, mode) -> dict:
    got = session_runs[art]
    r = got["runs"].get(mode)
    assert r is not None, f"the {art} process ended (rc {got['rc']}) before {mode}:\n{got['stderr'][-3000:]}"
    assert "error" not in r, f"{art} {mode}:\n{r['error']}"
    print(f"{art} {mode}: {r['slope']:+.2f} B/step, anon RSS {r['grew'] / 2**10:+.0f} KB over {r['steps']} "
          f"steps (range {(r['mem'][1] - r['mem'][0]) / 2**10:.0f} KB)")
    return r


@pytest.mark.parametrize("mode", list(DRIVERS))
@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
def test_session_memory_is_constant(session_runs, art, mode):
    """~22,000 steps of `mode` after warm-up, in a fresh process: the live state checked
    after every step (every chunk for `stream` and prefill, whose steps run inside one
    call), every output finite, and resident memory grows < MAX_SLOPE bytes/step."""
    r = _result(session_runs, art, mode)
    assert r["bytes"] == 2 * (64 + 64 * 64 + 64) * 4       # 2 layers x (shift_att, wkv, shift_ffn), fp32
    assert r["slope"] < MAX_SLOPE, f"{art} {mode}: resident memory grows {r['slope']:.1f} B/step " \
                                   f"({r['grew'] / 2**20:+.2f} MB over {r['steps']} steps)"


def test_slope_catches_a_planted_leak(session_runs):
    """The growth check is not blind: a step that keeps 104 bytes (a 60-byte bytes object,
    96 B in Python's allocator, and its list slot) measures as about that."""
    r = _result(session_runs, "model.pte", "step+leak")
    assert 80 < r["slope"] < 130 and r["slope"] > 4 * MAX_SLOPE, r["slope"]


# ---- the CLI loop, in a fresh process --------------------------------------------------
def _cli_memory(art: Path, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`edgekit run ART --tokens 1 --steps N` prints each token as it comes ("t "); the
    process's anonymous resident memory is read each time another SAMPLE tokens are out.
    Returns (tokens out, memory) at each reading."""
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(art), "--tokens", "1", "--steps", str(steps)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    reader.start()
    seen, mem, text = [], [], []
    n, next_at, fd = 0, SAMPLE, p.stdout.fileno()
    deadline = time.monotonic() + 300
    try:
        while chunk := os.read(fd, 1 << 16):
            text.append(chunk)
            n += chunk.count(b" ")
            if n >= next_at and n < steps:      # the process is still in its loop
                mem.append(anon_bytes(p.pid))
                seen.append(n)
                next_at = (n // SAMPLE + 1) * SAMPLE
            assert time.monotonic() < deadline, f"edgekit run: {n} of {steps} tokens after 300 s"
    finally:
        if p.poll() is None and time.monotonic() >= deadline:
            p.kill()
    rc = p.wait(timeout=60)
    reader.join(timeout=10)
    assert rc == 0, (err[0] if err else b"").decode(errors="replace")[-3000:]
    toks = b"".join(text).split()
    assert len(toks) == steps and all(0 <= int(t) < V for t in toks), toks[-10:]
    return np.array(seen), np.array(mem)


@pytest.mark.parametrize("art", ["model.onnx", "model.pte"])
def test_cli_run_loop_memory_is_constant(tiny_rwkv7, art):
    """`edgekit run` generating 22,000 tokens in a fresh process: after the first 2,000, its
    anonymous resident memory, read every 100 tokens, grows < MAX_SLOPE bytes/step. (It grew
    ~8 B/token while the loop kept every generated token, in run_cmd's list and generate's.)"""
    seen, mem = _cli_memory(tiny_rwkv7 / art, WARMUP + STEPS)
    keep = seen > WARMUP
    assert keep.sum() >= STEPS // SAMPLE // 2, f"only {keep.sum()} readings"
    slope = slope_bytes_per_step(seen[keep], mem[keep])
    print(f"edgekit run {art}: {slope:+.2f} B/step, anon RSS {(mem[keep][-1] - mem[keep][0]) / 2**10:+.0f} KB")
    assert slope < MAX_SLOPE, f"edgekit run {art}: resident memory grows {slope:.1f} B/step"
