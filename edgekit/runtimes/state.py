"""Saved session state: a versioned safetensors file, checked before it is loaded.

Metadata keys (all strings):
    edgekit_state   "2"           format version ("1" files still load)
    arch            architecture
    model_id        sha256 of the source weights (same for every artifact of one export)
    spec            JSON list of {name, shape, dtype}
    position        tokens/steps consumed so far
Tensors: one per state entry, plus `_last_output` (the last step's output) when known.
    payload_sha256  sha256 over the header (arch, model_id, spec, position) and every
                    tensor's shape, dtype and bytes in spec order (format "1": position and
                    tensors only, so a relabelled model_id went unnoticed)

Loaded states must be finite, with the shapes the manifest gives; `_last_output` must be a
finite float vector of the model's output size.

The file is written to a temp file and renamed, so a crash never destroys the previous
state file. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError

STATE_FORMAT = "2"
READABLE_FORMATS = ("1", STATE_FORMAT)
MAX_HEADER_BYTES = 16 << 20


def _payload_sha(arrays: list[np.ndarray], position: str, header: dict | None = None) -> str:
    """sha256 over the header fields (format 2), the position, and every tensor (shape,
    dtype and bytes)."""
    h = hashlib.sha256()
    if header is not None:
        h.update(json.dumps([header["arch"], header["model_id"], header["spec"]]).encode() + b"\0")
    h.update(position.encode())
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _spec_json(manifest) -> list[dict]:
    return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in manifest.state]


LAST_OUTPUT = "_last_output"   # the model's last output (logits), so generation can resume


def save_state(path, manifest, state: dict[str, np.ndarray], position: int,
               last_output: np.ndarray | None = None) -> Path:
    from safetensors.numpy import save_file
    spec = _spec_json(manifest)
    arrays = [np.ascontiguousarray(state[s["name"]]) for s in spec]
    extra = {} if last_output is None else {LAST_OUTPUT: np.ascontiguousarray(last_output)}
    meta = {"edgekit_state": STATE_FORMAT, "arch": manifest.arch, "model_id": manifest.model_id,
            "spec": json.dumps(spec), "position": str(position)}
    meta["payload_sha256"] = _payload_sha(arrays + list(extra.values()), str(position), meta)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({**{s["name"]: a for s, a in zip(spec, arrays)}, **extra}, str(tmp), metadata=meta)
    return path


def read_metadata(path) -> dict | None:
    """The safetensors metadata of an edgekit state file, or None for any other file (read
    from the header alone, bounded: the file may be anything, e.g. a model)."""
    import struct
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            n = struct.unpack("<Q", head)[0]
            if n > MAX_HEADER_BYTES or n > Path(path).stat().st_size - 8:
                return None
            raw = json.loads(f.read(n))
    except (OSError, ValueError, RecursionError):
        return None
    meta = raw.get("__metadata__") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or "edgekit_state" not in meta:
        return None
    return meta


def check_state_out(path, flag: str = "--state-out") -> None:
    """A state may replace only an earlier state file: never a model, a manifest or any
    other file of the user's."""
    path = Path(path)
    if path.exists() and (not path.is_file() or read_metadata(path) is None):
        raise EdgekitError(f"{flag} '{path}' exists and is not an edgekit state file",
                           expected="a new file name, or a state file written earlier",
                           fix=f"choose another {flag} path (edgekit never overwrites files it did not write)")


def _output_size(manifest) -> int | None:
    """Elements of one step's output per the manifest's artifacts (None if none lists it)."""
    for e in manifest.artifacts.values():
        for o in e.outputs:
            if o.name == manifest.output and e.seq_len is None:
                return int(np.prod(o.shape))
    return None


def load_state(path, manifest) -> tuple[dict[str, np.ndarray], int, np.ndarray | None]:
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"state file '{path}' does not exist", fix="pass a file written by --state-out / save_state")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EdgekitError(f"state file '{path}' is not a readable edgekit state ({e})",
                           fix="pass a file written by --state-out / save_state") from None
    version = meta.get("edgekit_state")
    if version not in READABLE_FORMATS:
        raise EdgekitError(f"state file '{path}' has format {version!r}",
                           expected=" or ".join(map(repr, READABLE_FORMATS)),
                           fix="save the state again with this edgekit version")
    if meta.get("arch") != manifest.arch or meta.get("model_id", "") != manifest.model_id:
        raise EdgekitError(f"state file '{path}' was saved from another model "
                           f"({meta.get('arch')} {meta.get('model_id', '')[:12]})",
                           expected=f"{manifest.arch} {manifest.model_id[:12]}",
                           fix="load a state saved from this model, or start fresh without --state-in")
    spec = _spec_json(manifest)
    try:
        saved_spec = json.loads(meta.get("spec", "[]"))
    except (ValueError, RecursionError):
        raise EdgekitError(f"state file '{path}' is corrupt (its state layout is not valid JSON)",
                           fix="use an intact copy or start fresh without --state-in") from None
    if saved_spec != spec:
        raise EdgekitError(f"state file '{path}' has a different state layout than this artifact",
                           fix="it was saved with another batch size or model version; start fresh")
    for s in spec:
        t = tensors.get(s["name"])
        if t is None or list(t.shape) != s["shape"] or str(t.dtype) != s["dtype"]:
            got = "missing" if t is None else f"{tuple(t.shape)} {t.dtype}"
            raise EdgekitError(f"state file '{path}' tensor '{s['name']}' is {got}",
                               expected=f"{tuple(s['shape'])} {s['dtype']}", fix="the file is corrupt; start fresh")
    arrays = [tensors[s["name"]] for s in spec]
    extra = [tensors[LAST_OUTPUT]] if LAST_OUTPUT in tensors else []
    header = meta if version != "1" else None
    if _payload_sha(arrays + extra, meta.get("position", ""), header) != meta.get("payload_sha256"):
        raise EdgekitError(f"state file '{path}' is corrupt (checksum mismatch)",
                           fix="use an intact copy or start fresh without --state-in")
    position = meta.get("position", "0")
    if not (position.isascii() and position.isdigit()) or len(position) > 19:
        raise EdgekitError(f"state file '{path}' has position {position[:40]!r}", expected="a non-negative integer",
                           fix="the file is corrupt; start fresh")
    for name, a in zip([s["name"] for s in spec], arrays):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise EdgekitError(f"state file '{path}' tensor '{name}' holds NaN or infinite values",
                               fix="the stream that saved it diverged or the file is corrupt; start fresh")
    last = tensors.get(LAST_OUTPUT)
    if last is not None:
        size = _output_size(manifest)
        if last.dtype.kind != "f" or (size is not None and last.size != size) or not np.isfinite(last).all():
            raise EdgekitError(f"state file '{path}' has a last output of {last.dtype} {tuple(last.shape)}",
                               expected=f"finite floats" + (f", {size} values" if size is not None else ""),
                               fix="the file is corrupt; start fresh")
    return dict(zip([s["name"] for s in spec], arrays)), int(position), last
