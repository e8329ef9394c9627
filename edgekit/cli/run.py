"""`edgekit run ARTIFACT (--prompt TEXT | --tokens 1,2,3) --steps N [--json]`
`edgekit run ARTIFACT --input data.csv|data.npy [--json]` for feature models (CfC, LTC)."""

from __future__ import annotations

import codecs
import json
import signal
import sys
from pathlib import Path

import numpy as np
import typer

from edgekit.errors import EdgekitError


def parse_tokens(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise EdgekitError(f"--tokens '{text}' is not a comma-separated list of integers",
                           fix="pass e.g. --tokens 1,2,3") from None


def _feature_layout(manifest) -> tuple[int, bool, list[str]]:
    specs = manifest.inputs
    feat = [s for s in specs if s.name != "dt"]
    if len(feat) != 1:
        raise EdgekitError(f"--input cannot feed a model with inputs {', '.join(s.name for s in specs)}",
                           fix="use the Python API (StreamingSession.step) for this model")
    return int(np.prod(feat[0].shape)), any(s.name == "dt" for s in specs), [s.name for s in specs]


def _checked_block(x: np.ndarray, dt: np.ndarray | None, where: str, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows as the model uses them (float32), checked after the conversion: 1e308 becomes
    inf and a dt of 1e-300 becomes 0 in float32, and both would poison the state."""
    x32 = x.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(x32).all(axis=1))
    if bad.size:
        raise EdgekitError(f"--input {where} step {first + int(bad[0])} holds a feature that is NaN, infinite "
                           "or beyond float32's range (±3.4e38)", fix="clean or rescale the data first")
    dt32 = np.ones(len(x), np.float32) if dt is None else dt.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(dt32) | (dt32 <= 0))
    if bad.size:
        i = int(bad[0])
        raise EdgekitError(f"--input {where} step {first + i} has dt = {float(dt[i]):g}"
                           + (" (0 in float32)" if dt32[i] == 0 and dt[i] != 0 else ""),
                           expected="an elapsed time dt > 0 that float32 can hold (>= 1.2e-38)",
                           fix="dt is the time since the previous sample")
    return x32, dt32


def iter_feature_input(path: str | Path, manifest, block: int = 1024):
    """Per-step inputs of a feature model, read incrementally from a CSV or .npy file, or a
    CSV on stdin ('-') or a FIFO (docs/cfc.md): memory stays bounded by `block` rows however
    long the stream. Yields one tuple per step, in the manifest's input order.

    CSV: a header row naming the columns, one column per feature (in order) and an optional
    `dt` column, found by name (default dt = 1.0). .npy: (T, I), or (T, I+1) with dt in the
    last column. Every value is checked where the model uses it (float32)."""
    n_feat, has_dt, order = _feature_layout(manifest)
    for x32, dt32 in _feature_blocks(path, n_feat, block):
        if not has_dt:
            yield from ((row,) for row in x32)
        else:
            yield from (tuple(d if n == "dt" else row for n in order) for row, d in zip(x32, dt32))


def _feature_blocks(path, n_feat: int, block: int):
    import os
    import stat
    if str(path) == "-":
        yield from _csv_blocks(sys.stdin, "(stdin)", n_feat, block)
        return
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"--input '{path}' does not exist", fix="pass a .csv or .npy file, or - for a CSV on stdin")
    if stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, newline="", encoding="utf-8", errors="strict") as f:
            yield from _csv_blocks(f, f"'{path}'", n_feat, block)
        return
    if path.is_dir():
        raise EdgekitError(f"--input '{path}' is a directory", fix="pass a .csv or .npy file")
    if path.suffix == ".npy":
        yield from _npy_blocks(path, n_feat, block)
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="strict") as f:
            yield from _csv_blocks(f, f"'{path}'", n_feat, block)
    else:
        raise EdgekitError(f"--input '{path}' has suffix '{path.suffix}'", expected=".csv or .npy",
                           fix="pass a CSV with a header row, or a .npy array (or - for a CSV on stdin)")


def _npy_blocks(path: Path, n_feat: int, block: int):
    """Rows of a .npy read block by block with plain reads (not mapped: mapped pages would
    count as resident memory, growing with the file); the header is checked against the
    file's size first."""
    import zipfile
    from numpy.lib import format as npy
    if zipfile.is_zipfile(path):
        raise EdgekitError(f"--input '{path}' is an .npz archive named .npy",
                           fix="save one array with numpy.save (not savez)")
    with open(path, "rb") as f:
        try:
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = read_header(f, max_header_size=10_000)
        except Exception as e:  # numpy raises ValueError/OSError/... for non-.npy files
            raise EdgekitError(f"--input '{path}' is not a readable .npy file ({str(e).splitlines()[0][:120]})",
                               fix="write it with numpy.save") from None
        if len(shape) != 2 or shape[1] not in (n_feat, n_feat + 1) or dtype.kind not in "fiu" or dtype.hasobject:
            raise EdgekitError(f"--input '{path}' holds a {dtype} array of shape {shape}",
                               expected=f"a numeric (T, {n_feat}) array, or (T, {n_feat + 1}) with dt last",
                               fix="save the features as a 2-D float array, one row per step")
        if fortran and shape[0] > 1:
            raise EdgekitError(f"--input '{path}' is stored column by column (Fortran order)",
                               fix="save it with numpy.save(path, numpy.ascontiguousarray(a))")
        rows, cols = shape
        need = f.tell() + rows * cols * dtype.itemsize
        if Path(path).stat().st_size < need:
            raise EdgekitError(f"--input '{path}' is truncated: its header declares {rows:,} rows",
                               expected=f"{need:,} bytes", got=f"{Path(path).stat().st_size:,}",
                               fix="write it again with numpy.save")
        for r0 in range(0, rows, block):
            n = min(block, rows - r0)
            data = np.fromfile(f, dtype=dtype, count=n * cols).reshape(n, cols).astype(np.float64)
            dt = data[:, n_feat] if cols == n_feat + 1 else None
            yield _checked_block(data[:, :n_feat], dt, f"'{path}'", r0)


def _csv_blocks(f, where: str, n_feat: int, block: int):
    import csv
    rows = csv.reader(f)
    line = 0
    try:
        header = None
        for row in rows:
            line += 1
            if any(c.strip() for c in row):
                header = [h.strip() for h in row]
                break
        if header is None:
            raise EdgekitError(f"--input {where} is empty", expected="a header row and one row per step",
                               fix="write a CSV with a header row")
        dt_col = header.index("dt") if "dt" in header else None
        cols = [i for i in range(len(header)) if i != dt_col]
        if len(cols) != n_feat:
            raise EdgekitError(f"--input {where} has {len(cols)} feature column(s) ({', '.join(header)[:200]})",
                               expected=f"{n_feat} feature columns plus an optional 'dt' column",
                               fix="write one column per model input feature, with a header row")
        buf, step = [], 0
        for row in rows:
            line += 1
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise EdgekitError(f"--input {where} line {line} has {len(row)} cells",
                                   expected=f"{len(header)} (as the header)", fix="fix that line")
            try:
                buf.append([float(c) for c in row])
            except ValueError:
                c = next(i for i, cell in enumerate(row) if not _is_float(cell))
                raise EdgekitError(f"--input {where} line {line}, column '{header[c]}': {row[c].strip()[:40]!r} "
                                   "is not a number", fix="write numbers only below the header") from None
            if len(buf) == block:
                yield _block(buf, cols, dt_col, where, step)
                step += len(buf)
                buf = []
        if buf:
            yield _block(buf, cols, dt_col, where, step)
    except UnicodeDecodeError as e:
        raise EdgekitError(f"--input {where} is not UTF-8 text (byte {e.object[e.start]:#04x} near line {line + 1})",
                           fix="save the CSV as UTF-8") from None
    except csv.Error as e:
        raise EdgekitError(f"--input {where} line {line} is not valid CSV ({e})", fix="fix that line") from None


def _is_float(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _block(buf, cols, dt_col, where, first):
    data = np.asarray(buf, dtype=np.float64)
    return _checked_block(data[:, cols], data[:, dt_col] if dt_col is not None else None, where, first)


def _peek_manifest(artifact: Path):
    """The artifact's manifest, or None for a checkpoint (no edgekit.json beside it)."""
    from edgekit.artifact import FILENAME, read as read_manifest
    artifact = Path(artifact)
    if not (artifact.parent / FILENAME).is_file() and not (artifact / FILENAME).is_file():
        return None
    return read_manifest(artifact)[0]


def _run_features(sess, input_file, manifest, steps, as_json, state_in, state_out) -> None:
    import itertools
    import os
    import stat
    if state_in is not None:
        sess.load_state(state_in)
    elif input_file is None:
        raise EdgekitError("nothing to run", fix="pass --input data.csv (one row per step), or - for stdin")
    if input_file is None:
        if state_out is not None:
            _save_state(sess, state_out)
        return
    seekable = str(input_file) != "-" and not stat.S_ISFIFO(os.stat(input_file).st_mode)
    limit = None if steps is None else max(steps, 0)
    if seekable:
        # A file is checked in full before the first row runs, so a bad row at line 900,000
        # prints nothing (stdin and FIFOs are checked row by row as they arrive).
        for _ in itertools.islice(iter_feature_input(input_file, manifest), limit):
            pass
    rows = itertools.islice(iter_feature_input(input_file, manifest), limit)
    outs = []
    # chunks of 1024 steps: on ExecuTorch one C call each, and rows still print as they come.
    # Ctrl-C or SIGTERM stops at a chunk boundary, with the state saved (--state-out).
    write = sys.stdout.write
    with _stop_signals() as stop:
        for ys in sess.stream((x if len(x) > 1 else x[0] for x in rows), chunk=1024):
            ys = np.asarray(ys, dtype=np.float64).reshape(len(ys), -1)
            if as_json:
                outs.extend([float(v) for v in y] for y in ys)
            else:
                write("".join(",".join(f"{float(v):.9g}" for v in y) + "\n" for y in ys))
            if stop["now"]:
                break
    sys.stdout.flush()
    if state_out is not None:
        _save_state(sess, state_out)
    if as_json:
        print(json.dumps({"outputs": outs}))
    if stop["now"]:
        print(f"edgekit: interrupted after {sess.position} steps" +
              (f"; state saved to {state_out}" if state_out is not None else ""), file=sys.stderr)
        raise SystemExit(128 + stop["signum"])


@__import__("contextlib").contextmanager
def _stop_signals():
    """While the block runs, SIGINT and SIGTERM only set stop["now"] (and stop["signum"]):
    the loop stops at its next boundary, so the state saved is a consistent one."""
    stop = {"now": False, "signum": signal.SIGINT}

    def on_signal(signum, frame):
        stop["now"], stop["signum"] = True, signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _save_state(sess, path: Path) -> None:
    """Save the stream's state; if the disk refuses (full, gone), keep it in a RAM-backed
    folder and say where, so hours of streaming are not lost to a full disk."""
    import os
    import tempfile
    try:
        sess.save_state(path)
        return
    except OSError as e:
        reason = e.strerror or str(e)
    for folder in ("/dev/shm", tempfile.gettempdir(), os.path.expanduser("~")):
        rescue = Path(folder) / f"edgekit-state-{os.getpid()}.safetensors"
        try:
            sess.save_state(rescue)
        except OSError:
            continue
        raise EdgekitError(f"--state-out '{path}' could not be written ({reason}); the state was saved to "
                           f"'{rescue}' instead", fix=f"free space, then move it: mv '{rescue}' '{path}'")
    raise EdgekitError(f"--state-out '{path}' could not be written ({reason}), nor any fallback copy",
                       fix="free disk space and run again from the last saved state")


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str | None:
    if prompt is not None and prompt_file is not None:
        raise EdgekitError("--prompt and --prompt-file both given", fix="pass one of them")
    if prompt_file is not None:
        if str(prompt_file) == "-":
            data, where = sys.stdin.buffer.read(MAX_PROMPT_BYTES + 1), "stdin"
        else:
            from edgekit._io import require_file
            require_file(prompt_file, "--prompt-file", "pass a UTF-8 text file, or - for stdin")
            with open(prompt_file, "rb") as f:
                data, where = f.read(MAX_PROMPT_BYTES + 1), f"'{prompt_file}'"
        if len(data) > MAX_PROMPT_BYTES:
            raise EdgekitError(f"--prompt-file {where} is larger than {MAX_PROMPT_BYTES >> 20} MB",
                               fix="pass a shorter prompt")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"--prompt-file {where} is not UTF-8 text (byte {data[e.start]:#04x} at offset "
                               f"{e.start})", fix="save the prompt as UTF-8") from None
    if prompt is not None:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:      # lone surrogates from a badly decoded argv
            raise EdgekitError(f"--prompt holds a character that is not valid Unicode text at position {e.start}",
                               fix="pass the prompt as UTF-8 text, or use --prompt-file") from None
    return prompt


MAX_PROMPT_BYTES = 64 << 20


def run_cmd(
    artifact: Path = typer.Argument(..., help="model.onnx, model.pte, their export folder, or a checkpoint "
                                    "(run in torch)", show_default=False),
    prompt: str = typer.Option(None, "--prompt", help="text, encoded with the model's tokenizer",
                               show_default=False),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="read the prompt from a UTF-8 file, or - for stdin",
                                     show_default=False),
    tokens: str = typer.Option(None, "--tokens", help="token ids, e.g. 1,2,3", show_default=False),
    input_file: str = typer.Option(None, "--input", help="feature models: a .csv (header row, optional dt "
                                   "column) or .npy file, one row per step; - reads a CSV from stdin",
                                   show_default=False),
    steps: int = typer.Option(None, "--steps", help="tokens to generate (default 32); with --input, rows to run "
                              "(default all)", show_default=False),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object {tokens, text} ({outputs} with --input)"),
    state_in: Path = typer.Option(None, "--state-in", help="resume from a state file saved by --state-out",
                                  show_default=False),
    state_out: Path = typer.Option(None, "--state-out", help="save the state at the end (or at Ctrl-C); replaces "
                                   "only an earlier state file", show_default=False),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="a tokenizer.json for --prompt, for models "
                                   "exported without one", show_default=False),
    top_p: float = typer.Option(None, "--top-p", help="sample with nucleus top-p, 0 < p <= 1 (default: greedy)",
                                show_default=False),
    temperature: float = typer.Option(1.0, "--temperature", help="sampling temperature > 0"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    backend: str = typer.Option(None, "--backend", help="onnxruntime | executorch | torch | cuda (default: from the "
                                "file, or the folder's last format)", show_default=False),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: the runtime's choice)",
                                show_default=False),
    no_verify: bool = typer.Option(False, "--no-verify", metavar="", help="skip the sha256 check of the model files "
                                   "(done once per file and remembered)"),
) -> None:
    """Stream tokens (or, with --input, feature rows) through a model, step by step."""
    import math

    from edgekit.runtimes.session import StreamingSession
    from edgekit.runtimes.state import check_state_out
    prompt = _read_prompt(prompt, prompt_file)
    if prompt is not None and tokens is not None:
        raise EdgekitError("--prompt and --tokens both given", fix="pass one of them")
    if steps is not None and steps < 0:
        raise EdgekitError(f"--steps {steps} is negative", fix="pass --steps 0 or more")
    if not (math.isfinite(temperature) and temperature > 0):
        raise EdgekitError(f"--temperature {temperature} is not a positive number", fix="pass e.g. --temperature 0.8")
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise EdgekitError(f"--top-p {top_p} is out of range", expected="0 < p <= 1", fix="pass e.g. --top-p 0.9")
    check_writable(state_out, "--state-out")
    if state_out is not None:
        check_state_out(state_out)
    # The input kind is checked before the runtime loads (which may log to stderr).
    sess = None
    open_session = lambda: StreamingSession(artifact, backend=backend, threads=threads,  # noqa: E731
                                            verify=not no_verify, tokenizer=tokenizer)
    manifest = _peek_manifest(artifact)
    if manifest is None:                      # a checkpoint: the torch session knows it
        sess = open_session()
        manifest = sess.manifest
    features = manifest.input_kind == "features"
    if features and (prompt is not None or tokens is not None):
        flag = "--prompt" if prompt is not None else "--tokens"
        raise EdgekitError(f"'{artifact}' is a {manifest.arch} model that takes feature inputs, "
                           f"not {flag}", fix="pass --input data.csv (one column per feature, optional dt)")
    if not features and input_file is not None:
        raise EdgekitError(f"'{artifact}' is a {manifest.arch} model that takes token ids, not --input",
                           fix="pass --prompt TEXT or --tokens 1,2,3")
    if features:
        if input_file is not None and input_file != "-":
            if not Path(input_file).exists():
                raise EdgekitError(f"--input '{input_file}' does not exist",
                                   fix="pass a .csv or .npy file, or - for a CSV on stdin")
        sess = sess or open_session()
        return _run_features(sess, input_file, manifest, steps, as_json, state_in, state_out)
    sess = sess or open_session()
    steps = 32 if steps is None else steps
    tok = None
    if prompt is not None:
        tok = sess.tokenizer
        if tok is None:
            raise EdgekitError(f"'{artifact}' has no tokenizer for --prompt", fix="pass token ids with --tokens 1,2,3")
        ids = tok.encode(prompt)
    elif tokens is not None:
        ids = parse_tokens(tokens)
    else:
        ids = []
    if state_in is not None:
        sess.load_state(state_in)
    elif not ids:
        raise EdgekitError("nothing to start from", fix="pass --prompt TEXT, --tokens 1,2,3 or --state-in FILE")
    if tok is None:
        try:
            tok = sess.tokenizer
        except EdgekitError:
            tok = None
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def show(t: int) -> None:
        if as_json:
            return
        if tok is not None:
            sys.stdout.write(dec.decode(tok.decode_bytes([t])))
        else:
            sys.stdout.write(f"{t} ")
        sys.stdout.flush()

    # Ctrl-C (or SIGTERM, a service manager's stop) stops at a token boundary: the stream so
    # far is printed and, with --state-out, its state saved, so an hours-long stream is never
    # lost to an interrupt.
    out: list[int] = []          # --json only: its one object holds every token; text streams
    n_out = 0

    def on_token(t: int) -> None:
        nonlocal n_out
        n_out += 1
        if as_json:
            out.append(t)
        show(t)
        if stop["now"]:
            raise _Interrupted

    interrupted = False
    with _stop_signals() as stop:
        try:
            sess.generate(steps, prompt=ids, top_p=top_p, temperature=temperature, seed=seed, on_token=on_token,
                          keep=False)
        except _Interrupted:
            interrupted = True
    if state_out is not None:
        _save_state(sess, state_out)
    if as_json:
        print(json.dumps({"tokens": out, "text": tok.decode(out) if tok is not None else None}))
    else:
        sys.stdout.write(dec.decode(b"", final=True) + "\n")
    if interrupted:
        print(f"edgekit: interrupted after {n_out} tokens" +
              (f"; state saved to {state_out}" if state_out is not None else ""), file=sys.stderr)
        raise SystemExit(128 + stop["signum"])


class _Interrupted(Exception):
    pass


def check_writable(path: Path | None, flag: str) -> None:
    """Fail before hours of streaming, not after: the folder must exist and be writable."""
    import os
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"{flag} '{path}' is a directory", expected="a file path",
                           fix=f"pass {flag} with a file name, e.g. {path / 'state.safetensors'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise EdgekitError(f"{flag} '{path}': folder '{parent}' does not exist or is not writable",
                           fix="create the folder or choose another path")
