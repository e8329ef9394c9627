"""StreamingSession: one stateful model, fed one step at a time, in constant memory.

    sess = StreamingSession("out/model.pte")         # or model.onnx, or a checkpoint (torch)
    logits = sess.feed(tokenizer.encode("Hello"))    # prefill, step by step
    ids = sess.generate(32)                          # greedy; top_p=0.9, seed=0 to sample
    sess.save_state("s.safetensors"); sess.load_state("s.safetensors")

The session needs only the artifact and its edgekit.json. Its memory is fixed when it is
built: backends preallocate state and outputs, and nothing grows with stream length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgekit import artifact as _artifact, formats
from edgekit.errors import EdgekitError
from edgekit.runtimes import state as state_io

BACKENDS = formats.BACKENDS


def _pin_malloc_thresholds() -> None:
    """Keep glibc from moving its mmap threshold while the stream runs.

    By default glibc raises the threshold the first time a large block (a 256 KB
    logits copy, say) is freed, after which such blocks come from the heap and the heap
    grows by a few MB over the first ~100 steps before it levels off. Setting the
    threshold explicitly (to its default, 128 KiB) turns that adjustment off, so
    resident memory is flat from the first step. No-op off glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class _InputFacts:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    size: int
    vocab: int          # token inputs: the vocabulary size (-1: unknown); 0: not tokens


class StreamingSession:
    def __init__(self, artifact, *, backend: str | None = None, threads: int | None = None,
                 verify: bool = True, tokenizer: str | Path | None = None):
        """verify: check each file's sha256 against the manifest before opening it (a
        verified file is remembered by path, size, times and inode: edgekit.verify).
        tokenizer: a tokenizer.json to use instead of the one the artifact names."""
        _pin_malloc_thresholds()
        self._verify = verify
        self._tokenizer_file = None if tokenizer is None else Path(tokenizer)
        artifact = Path(artifact)
        if backend is not None:
            formats.by_backend(backend)                  # an unknown name: one clear error
        is_checkpoint = (artifact.is_file() and formats.by_suffix(artifact) is None) or \
            (artifact.is_dir() and not (artifact / _artifact.FILENAME).exists() and (artifact / "config.json").exists())
        if is_checkpoint:
            runner = formats.by_backend(backend) if backend else formats.CHECKPOINT
            if runner not in formats.RUNS_CHECKPOINTS:
                raise EdgekitError(f"backend '{backend}' cannot run the checkpoint '{artifact}'",
                                   fix="export it first (edgekit export), or use --backend torch")
            self.manifest, self.backend, self.base_dir = runner.open(artifact, None, None, threads)
            self.artifact_path, self.format = artifact, runner.name
        else:
            self._init_artifact(artifact, backend, threads)
        self.position = 0
        self.last_y: np.ndarray | None = None
        self._batch1 = self.manifest.batch == 1

    _facts: list[_InputFacts] | None = None

    # -- construction ------------------------------------------------------------------
    def _init_artifact(self, path: Path, backend, threads):
        self.manifest, mpath = _artifact.read(path)
        arts = self.manifest.artifacts
        if backend == formats.CUDA.backend:
            from edgekit.runtimes.cuda import refuse_artifact
            raise refuse_artifact(path, self.manifest)
        if path.is_dir():
            fmt = formats.by_backend(backend) if backend else \
                next((formats.FORMATS[n] for n in reversed(formats.RUNNABLE_FORMATS) if n in arts), None)
            if fmt is None and arts:            # e.g. only an ort-genai folder: not for this session
                fmt = formats.FORMATS[next(iter(arts))]
            if fmt is None:
                raise EdgekitError(f"'{mpath}' lists no artifact", fix="export again")
        else:
            fmt = formats.by_suffix(path)
            if backend not in (None, fmt.backend):
                raise EdgekitError(f"backend '{backend}' cannot run {path.name}", fix=f"use --backend {fmt.backend}")
        if fmt.name not in arts:
            raise EdgekitError(f"'{mpath}' lists no {fmt.name} artifact", expected=", ".join(arts) or "one",
                               fix=f"export with --format {fmt.name}")
        entry = arts[fmt.name]
        file = self._checked_file(mpath, entry)
        self.artifact_path, self.format, self.base_dir = file, fmt.name, mpath.parent
        pentry = arts.get(f"{fmt.name}_prefill")
        prefill = (self._checked_file(mpath, pentry), pentry) if pentry and (mpath.parent / pentry.file).is_file() \
            else None
        self.backend = fmt.open(file, entry, self.manifest, threads, prefill=prefill)

    def _checked_file(self, mpath: Path, entry) -> Path:
        """The artifact file an entry names, in the manifest's folder, with the size and
        sha256 the manifest records (and its external data's)."""
        from edgekit.verify import verify_file
        for name, size, sha in entry.checked_files():
            verify_file(mpath.parent / name, size, sha, manifest=mpath, verify=self._verify)
        if self.manifest.tokenizer_file:
            verify_file(mpath.parent / self.manifest.tokenizer_file, None, self.manifest.tokenizer_sha256,
                        manifest=mpath, verify=self._verify)
        return mpath.parent / entry.file

    # -- facts -------------------------------------------------------------------------
    @property
    def state_bytes(self) -> int:
        return self.manifest.state_bytes

    @property
    def tokenizer(self):
        from edgekit.tokenizer import HFTokenizer, get_tokenizer
        if self._tokenizer_file is not None:
            tok = HFTokenizer(self._tokenizer_file)
            V = self.manifest.config.get("vocab_size")
            if isinstance(V, int) and tok.vocab_size > V:
                raise EdgekitError(f"tokenizer '{self._tokenizer_file}' has {tok.vocab_size:,} tokens, the model's "
                                   f"vocabulary {V:,}", fix="pass the tokenizer this model was trained with")
            return tok
        return get_tokenizer(self.manifest.tokenizer, self.base_dir)

    # -- streaming ---------------------------------------------------------------------
    def step(self, x) -> np.ndarray:
        """One step. x: a token id (int), or for models with several inputs a tuple in
        the manifest's input order (CfC: (features, dt)). Returns y for batch 1 squeezed
        of its batch dim. The array may be a view into a buffer the next step reuses
        (ONNX Runtime writes outputs in place): copy it to keep it."""
        y = self.backend.step(self._check_inputs(x))
        self.position += 1
        self.last_y = y
        return y[0] if self._batch1 else y

    def _check_inputs(self, x) -> list[np.ndarray]:
        specs = self._facts or self._input_facts()
        xs = (x,) if len(specs) == 1 else (x if isinstance(x, (tuple, list)) else tuple(x))
        if len(xs) != len(specs):
            raise EdgekitError(f"step got {len(xs)} inputs", expected=", ".join(f.name for f in specs),
                               fix="pass one value per model input")
        arrs = []
        for f, v in zip(specs, xs):
            arr = v if type(v) is np.ndarray else np.asarray(v)
            if f.vocab != 0:
                if arr.dtype.kind not in "iu" or (f.vocab > 0 and arr.size and (arr.min() < 0 or arr.max() >= f.vocab)):
                    raise EdgekitError(f"token {v!r} is out of range",
                                       expected=f"an integer in [0, {f.vocab if f.vocab > 0 else None})",
                                       fix="pass token ids from this model's vocabulary")
            if arr.shape != f.shape:             # a step's own time is a few us for a small CfC:
                if arr.size != f.size:           # the common case (right shape, dtype) does no work
                    raise EdgekitError(f"input '{f.name}' has {arr.size} values",
                                       expected=f"shape {f.shape}", fix="check the number of features")
                arr = arr.reshape(f.shape)
            arr = arr if arr.dtype == f.dtype else arr.astype(f.dtype)
            if f.vocab == 0:
                _check_values(f, arr, self.position)
            arrs.append(arr)
        return arrs

    def _input_facts(self) -> list[_InputFacts]:
        """Per manifest input, what a step checks, computed once (a step of a small CfC takes
        a few microseconds: looking these up in the manifest every step cost ~6 us)."""
        facts = self._facts
        if facts is None:
            V = self.manifest.config.get("vocab_size")
            facts = self._facts = [
                _InputFacts(s.name, np.dtype(s.dtype), s.shape, int(np.prod(s.shape)),
                            (V if isinstance(V, int) else -1) if s.dtype == "int64" else 0)
                for s in self.manifest.inputs]
        return facts

    def stream(self, xs, chunk: int = 4096):
        """Step through xs (any iterable of per-step inputs, each as `step` takes it) and yield
        the outputs chunk by chunk, each an array (n, ...) (batch 1: its batch dim squeezed).
        On ExecuTorch's native runner a chunk runs in one C call, with no Python between
        steps; other backends step. Memory is bounded by the chunk, not the stream."""
        import itertools
        specs = self._facts or self._input_facts()
        rows = iter(xs)
        while part := list(itertools.islice(rows, chunk)):
            n = len(part)
            cols = []
            for k, f in enumerate(specs):
                try:
                    arr = np.asarray(part if len(specs) == 1 else [x[k] for x in part])
                    ok = arr.size == n * f.size and (f.vocab == 0 or (arr.dtype.kind in "iu" and (
                        f.vocab < 0 or (arr.min() >= 0 and arr.max() < f.vocab))))
                except ValueError:                      # ragged rows
                    ok = False
                if not ok:              # rows of mixed forms (5 and [6]), or a bad one: check each
                    arr = np.stack([self._check_inputs(x)[k] for x in part])   # raises a bad row's error
                arr = arr.reshape(n, *f.shape).astype(f.dtype, copy=False)
                if f.vocab == 0:
                    _check_values(f, arr, self.position)
                cols.append(arr)
            run = getattr(self.backend, "run_sequence", None)
            try:
                ys = run(cols) if run is not None else None
            except EdgekitError as e:   # the steps before the failing one ran: count them
                self.position += getattr(e, "steps_done", None) or 0
                raise
            if ys is None:
                ys = np.stack([np.array(self.backend.step([c[t] for c in cols])) for t in range(n)])
            self.position += n
            self.last_y = np.array(ys[-1])
            yield ys[:, 0] if self._batch1 else ys

    def feed(self, xs: Iterable) -> np.ndarray | None:
        """Consume a sequence (a prompt); returns the last step's output."""
        ys = self.forward_seq(xs, keep=False)
        return None if ys is None else ys[-1]

    @property
    def prefill_len(self) -> int:
        """Steps one call of the artifact's prefill graph takes (export --prefill T); 0: none."""
        return self.backend.prefill_len

    def forward_seq(self, xs: Iterable, keep: bool = True):
        """The sequence form: outputs for every step of xs (T, ...) (batch 1), or with
        keep=False only the last. Whole chunks of prefill_len go through the exported
        prefill graph when there is one (export --prefill T), the rest step by step."""
        xs = list(xs)
        ys, i = [], 0
        T = self.backend.prefill_len
        if T and len(self.manifest.inputs) == 1 and self._batch1:
            while len(xs) - i >= T:
                chunk = [self._check_inputs(x)[0] for x in xs[i:i + T]]
                arr = np.concatenate(chunk).reshape(1, T, *chunk[0].shape[1:])
                y = self.backend.prefill(arr)                      # (1, T, ...), on the live state
                self.last_y = np.array(y[:, -1])
                self.position += T
                i += T
                if keep:
                    ys.extend(np.array(y[0]))
        for x in xs[i:]:
            y = self.step(x)
            if keep:
                ys.append(np.array(y))
        if not xs:
            return None
        return np.stack(ys) if keep else [self.last_y[0]]

    def generate(self, n: int, *, prompt: Iterable[int] = (), top_p: float | None = None,
                 temperature: float = 1.0, seed: int | None = None,
                 on_token: Callable[[int], None] | None = None, keep: bool = True) -> list[int]:
        """Generate n tokens after feeding `prompt`. Greedy unless top_p or a temperature
        other than 1 is given (then nucleus sampling with top_p, default 1.0). keep=False
        returns [] and holds no token (an endless stream through on_token in constant memory)."""
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise EdgekitError(f"top_p {top_p} is out of range", expected="0 < top_p <= 1", fix="pass e.g. --top-p 0.9")
        if temperature <= 0:
            raise EdgekitError(f"temperature {temperature} is not positive", fix="pass e.g. --temperature 1.0")
        y = self.feed(prompt)
        if y is None:
            if self.last_y is None:
                raise EdgekitError("nothing to continue from: no prompt, and the state holds no last output",
                                   fix="pass a prompt (--prompt/--tokens), or a state saved after at least one step")
            y = self.last_y[0]
        if top_p is None and temperature != 1.0:
            top_p = 1.0
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            tok = int(np.argmax(y)) if top_p is None else _sample_top_p(y, top_p, temperature, rng)
            if keep:
                out.append(tok)
            if on_token:
                on_token(tok)
            y = self.step(tok)   # the state always holds every token seen, generated ones too
        return out

    def reset(self) -> None:
        self.backend.reset()
        self.position = 0
        self.last_y = None

    # -- state files -------------------------------------------------------------------
    def save_state(self, path) -> Path:
        last = None if self.last_y is None else np.array(self.last_y)
        return state_io.save_state(path, self.manifest, self.backend.get_state(), self.position, last)

    def load_state(self, path) -> None:
        state, position, last = state_io.load_state(path, self.manifest)
        self.backend.set_state(state)
        self.position = position
        self.last_y = last


def _check_values(f, arr: np.ndarray, position: int) -> None:
    """Feature inputs as the model uses them (its dtype): finite, and a time step dt > 0.
    Checked after the conversion: 1e308 is inf in float32, and dt = 1e-300 is 0."""
    if arr.dtype.kind != "f":
        return
    if not np.isfinite(arr).all():
        raise EdgekitError(f"input '{f.name}' at step {position} holds NaN, inf, or a value beyond {arr.dtype}'s "
                           "range", fix="clean or rescale the data first")
    if f.name == "dt" and not (arr > 0).all():
        raise EdgekitError(f"input 'dt' at step {position} is {float(arr.min()):g} in {arr.dtype}",
                           expected=f"dt > 0 ({arr.dtype} holds >= {np.finfo(arr.dtype).tiny:.2g})",
                           fix="dt is the time since the previous sample")


def _sample_top_p(logits: np.ndarray, top_p: float, temperature: float, rng) -> int:
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    keep = order[: int(np.searchsorted(cum, top_p)) + 1]
    q = p[keep] / p[keep].sum()
    return int(keep[rng.choice(len(keep), p=q)])
