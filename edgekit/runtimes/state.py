"""Saved session state: a versioned safetensors file, checked before it is loaded.

Metadata keys (all strings):
    edgekit_state   "1"           format version
    arch            architecture
    model_id        sha256 of the source weights (same for every artifact of one export)
    spec            JSON list of {name, shape, dtype}
    position        tokens/steps consumed so far
Tensors: one per state entry, plus `_last_output` (the last step's output) when known.
    payload_sha256  sha256 over the tensors' bytes in spec order

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

STATE_FORMAT = "1"


def _payload_sha(arrays: list[np.ndarray], position: str) -> str:
    """sha256 over every tensor (shape, dtype and bytes) and the position."""
    h = hashlib.sha256(position.encode())
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
            "spec": json.dumps(spec), "position": str(position),
            "payload_sha256": _payload_sha(arrays + list(extra.values()), str(position))}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({**{s["name"]: a for s, a in zip(spec, arrays)}, **extra}, str(tmp), metadata=meta)
    return path


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
    if meta.get("edgekit_state") != STATE_FORMAT:
        raise EdgekitError(f"state file '{path}' has format {meta.get('edgekit_state')!r}",
                           expected=repr(STATE_FORMAT), fix="save the state again with this edgekit version")
    if meta.get("arch") != manifest.arch or meta.get("model_id", "") != manifest.model_id:
        raise EdgekitError(f"state file '{path}' was saved from another model "
                           f"({meta.get('arch')} {meta.get('model_id', '')[:12]})",
                           expected=f"{manifest.arch} {manifest.model_id[:12]}",
                           fix="load a state saved from this model, or start fresh without --state-in")
    spec = _spec_json(manifest)
    if json.loads(meta.get("spec", "[]")) != spec:
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
    if _payload_sha(arrays + extra, meta.get("position", "")) != meta.get("payload_sha256"):
        raise EdgekitError(f"state file '{path}' is corrupt (checksum mismatch)",
                           fix="use an intact copy or start fresh without --state-in")
    return (dict(zip([s["name"] for s in spec], arrays)), int(meta.get("position", "0")),
            tensors.get(LAST_OUTPUT))
