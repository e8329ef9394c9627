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


def read_feature_input(path: Path, manifest) -> list[tuple[np.ndarray, ...]]:
    """Per-step inputs of a feature model from a CSV or .npy file (docs/cfc.md).

    CSV: a header row naming the columns, one column per feature (in order) and an
    optional `dt` column, found by name (default dt = 1.0). .npy: (T, I), or (T, I+1)
    with dt in the last column. Returns one tuple per step, in the manifest's input order.
    """
    from edgekit._io import require_file
    specs = manifest.inputs
    feat = [s for s in specs if s.name != "dt"]
    if len(feat) != 1:
        raise EdgekitError(f"--input cannot feed a model with inputs {[s.name for s in specs]}",
                           fix="use the Python API (StreamingSession.step) for this model")
    n_feat = int(np.prod(feat[0].shape))
    has_dt = any(s.name == "dt" for s in specs)
    path = require_file(path, "--input", "pass a .csv or .npy file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy raises ValueError/OSError/... for non-.npy files
            raise EdgekitError(f"--input '{path}' is not a readable .npy file ({str(e).splitlines()[0][:120]})",
                               fix="write it with numpy.save") from None
        if arr.ndim != 2 or arr.shape[1] not in (n_feat, n_feat + 1) or arr.dtype.kind not in "fiu":
            raise EdgekitError(f"--input '{path}' holds a {arr.dtype} array of shape {arr.shape}",
                               expected=f"a numeric (T, {n_feat}) array, or (T, {n_feat + 1}) with dt last",
                               fix="save the features as a 2-D float array, one row per step")
        data = arr.astype(np.float64)
        x, dt = (data[:, :n_feat], data[:, n_feat]) if data.shape[1] == n_feat + 1 else (data, None)
    elif path.suffix == ".csv":
        import csv
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
        if not rows:
            raise EdgekitError(f"--input '{path}' is empty", expected="a header row and one row per step",
                               fix="write a CSV with a header row")
        header = [h.strip() for h in rows[0]]
        dt_col = header.index("dt") if "dt" in header else None
        cols = [i for i in range(len(header)) if i != dt_col]
        if len(cols) != n_feat:
            raise EdgekitError(f"--input '{path}' has {len(cols)} feature column(s) ({', '.join(header)})",
                               expected=f"{n_feat} feature columns plus an optional 'dt' column",
                               fix="write one column per model input feature, with a header row")
        data = np.empty((len(rows) - 1, len(header)))
        for r, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise EdgekitError(f"--input '{path}' line {r} has {len(row)} cells",
                                   expected=f"{len(header)} (as the header)", fix="fix that line")
            for c, cell in enumerate(row):
                try:
                    data[r - 2, c] = float(cell)
                except ValueError:
                    raise EdgekitError(f"--input '{path}' line {r}, column '{header[c]}': {cell.strip()!r} "
                                       "is not a number", fix="write numbers only below the header") from None
        x, dt = data[:, cols], (data[:, dt_col] if dt_col is not None else None)
    else:
        raise EdgekitError(f"--input '{path}' has suffix '{path.suffix}'", expected=".csv or .npy",
                           fix="pass a CSV with a header row, or a .npy array")
    if not np.isfinite(x).all():
        raise EdgekitError(f"--input '{path}' holds NaN or infinite features", fix="clean the data first")
    if dt is None:
        dt = np.ones(len(x))
    bad = np.flatnonzero(~np.isfinite(dt) | (dt <= 0))   # LTC divides by dt: 0 is refused too
    if bad.size:
        raise EdgekitError(f"--input '{path}' step {int(bad[0])} has dt = {dt[bad[0]]:g}",
                           expected="elapsed times dt > 0", fix="dt is the time since the previous sample")
    if not has_dt:
        return [(row.astype(np.float32),) for row in x]
    order = [s.name for s in specs]
    return [tuple(np.float32(d) if n == "dt" else row.astype(np.float32) for n in order)
            for row, d in zip(x, dt)]


def _peek_manifest(artifact: Path):
    """The artifact's manifest, or None for a checkpoint (no edgekit.json beside it)."""
    from edgekit.artifact import FILENAME, read as read_manifest
    artifact = Path(artifact)
    if not (artifact.parent / FILENAME).is_file() and not (artifact / FILENAME).is_file():
        return None
    return read_manifest(artifact)[0]


def _run_features(sess, xs, steps, as_json, state_in, state_out) -> None:
    if steps is not None:
        xs = xs[:max(steps, 0)]
    if state_in is not None:
        sess.load_state(state_in)
    elif not xs:
        raise EdgekitError("nothing to run", fix="pass --input data.csv (one row per step)")
    outs = []
    # chunks of 1024 steps: on ExecuTorch one C call each, and rows still print as they come
    for ys in sess.stream([x if len(x) > 1 else x[0] for x in xs], chunk=1024):
        for y in np.asarray(ys, dtype=np.float64).reshape(len(ys), -1):
            if as_json:
                outs.append([float(v) for v in y])
            else:
                sys.stdout.write(",".join(f"{float(v):.9g}" for v in y) + "\n")
    if state_out is not None:
        sess.save_state(state_out)
    if as_json:
        print(json.dumps({"outputs": outs}))


def run_cmd(
    artifact: Path = typer.Argument(..., help="model.onnx, model.pte, their folder, or a checkpoint (torch)"),
    prompt: str = typer.Option(None, "--prompt", help="text, encoded with the model's tokenizer"),
    tokens: str = typer.Option(None, "--tokens", help="token ids, e.g. 1,2,3"),
    input_file: Path = typer.Option(None, "--input", help="feature models: a .csv (header row, optional dt "
                                    "column) or .npy file, one row per step"),
    steps: int = typer.Option(None, "--steps", help="tokens to generate (default 32); with --input, rows to run"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object {tokens, text} ({outputs} with --input)"),
    state_in: Path = typer.Option(None, "--state-in", help="resume from a saved state"),
    state_out: Path = typer.Option(None, "--state-out", help="save the state at the end"),
    top_p: float = typer.Option(None, "--top-p", help="sample with nucleus top-p (default: greedy)"),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    backend: str = typer.Option(None, "--backend", help="onnxruntime | executorch | torch"),
    threads: int = typer.Option(None, "--threads"),
) -> None:
    """Stream tokens (or, with --input, feature rows) through a model, step by step."""
    from edgekit.runtimes.session import StreamingSession
    if prompt is not None and tokens is not None:
        raise EdgekitError("--prompt and --tokens both given", fix="pass one of them")
    if steps is not None and steps < 0:
        raise EdgekitError(f"--steps {steps} is negative", fix="pass --steps 0 or more")
    check_writable(state_out, "--state-out")
    # The input kind is checked before the runtime loads (which may log to stderr).
    sess = None
    manifest = _peek_manifest(artifact)
    if manifest is None:                      # a checkpoint: the torch session knows it
        sess = StreamingSession(artifact, backend=backend, threads=threads)
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
        xs = read_feature_input(input_file, manifest) if input_file is not None else []
        sess = sess or StreamingSession(artifact, backend=backend, threads=threads)
        return _run_features(sess, xs, steps, as_json, state_in, state_out)
    sess = sess or StreamingSession(artifact, backend=backend, threads=threads)
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
    stop = {"now": False, "signum": signal.SIGINT}

    def on_sigint(signum, frame):
        stop["now"], stop["signum"] = True, signum

    def on_token(t: int) -> None:
        nonlocal n_out
        n_out += 1
        if as_json:
            out.append(t)
        show(t)
        if stop["now"]:
            raise _Interrupted

    previous = {sig: signal.signal(sig, on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    try:
        sess.generate(steps, prompt=ids, top_p=top_p, temperature=temperature, seed=seed, on_token=on_token,
                      keep=False)
    except _Interrupted:
        interrupted = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state_out is not None:
        sess.save_state(state_out)
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
