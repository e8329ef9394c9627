"""`edgekit.json`: what an artifact is, in one versioned JSON file next to it.

A runtime session needs only the artifact and this manifest. Schema (version 1):

    schema            "edgekit.manifest/1"
    edgekit_version   version that wrote it
    arch, config      architecture name and its config (as the model's config_dict)
    model_id          sha256 of the weights; saved states carry it
    input_kind        "tokens" | "features"
    inputs, output    the step's inputs besides the state ([{name, shape, dtype, bytes}]),
                      and the name of its output ("logits" for language models)
    batch             batch size the graphs were exported for
    ops               "fused" | "decomposed"
    state             [{name, shape, dtype, bytes}], in graph order; state_bytes = sum
    quantization      "none" | "bitnet" | "int8" | "int4"
    device            device profile name or null
    tokenizer         tokenizer name or null
    artifacts         {"onnx": {...}, "pte": {...}}: file, bytes, sha256, inputs,
                      outputs ([{name, shape, dtype}]), ops_used {edgekit: [...],
                      stock: [...]}, passes (the lowering pipeline that ran, in
                      order: edgekit/export/passes/), passes_fired ({pass: calls it
                      rewrote}), plus format-specific keys (state_style,
                      kernel_library, external_data)
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import __version__
from edgekit._io import atomic_write_bytes
from edgekit.errors import EdgekitError

SCHEMA = "edgekit.manifest/1"
FILENAME = "edgekit.json"


def new_manifest(model, *, batch: int, ops: str, tokenizer: str | None,
                 quantization: str = "none", device: str | None = None) -> dict:
    from edgekit.models.base import model_fingerprint
    spec = [s.to_json() for s in model.state_spec(batch)]
    return {"schema": SCHEMA, "edgekit_version": __version__, "arch": model.arch,
            "model_id": model_fingerprint(model),
            "config": model.config_dict(), "input_kind": model.input_kind, "batch": batch,
            "inputs": [s.to_json() for s in model.input_spec(batch)], "output": model.output_name,
            "ops": ops, "state": spec, "state_bytes": sum(s["bytes"] for s in spec),
            "quantization": quantization, "device": device, "tokenizer": tokenizer,
            "artifacts": {}}


def write_manifest(outdir: Path, manifest: dict) -> Path:
    path = Path(outdir) / FILENAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def read_manifest(artifact: Path) -> tuple[dict, Path]:
    """The manifest for an artifact file or an export directory, checked."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise EdgekitError(f"artifact '{artifact}' does not exist",
                           fix="pass a model.onnx / model.pte written by `edgekit export`, or its folder")
    path = (artifact if artifact.is_dir() else artifact.parent) / FILENAME
    if not path.is_file():
        raise EdgekitError(f"no {FILENAME} next to '{artifact}'",
                           expected="the manifest that `edgekit export` writes beside every artifact",
                           fix="re-run `edgekit export`, or copy edgekit.json along with the model file")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"'{path}' is not valid JSON ({e})", fix="re-run `edgekit export`") from None
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if schema != SCHEMA:
        raise EdgekitError(f"'{path}' has schema {schema!r}", expected=repr(SCHEMA),
                           fix="re-export the model with this edgekit version")
    return manifest, path
