"""The exporter's side of the artifact contract: a `Manifest` (edgekit/artifact.py) made
from a model. Reading and writing, and the schema itself, live in edgekit/artifact.py,
which runtimes use without importing any of the export code.
"""

from __future__ import annotations

from edgekit.artifact import FILENAME, SCHEMA, Manifest, read, write  # noqa: F401


def new_manifest(model, *, batch: int, ops: str, quantization: str = "none",
                 device: str | None = None) -> Manifest:
    """The manifest of an export of `model`, with no artifacts yet (RecurrentModel.manifest)."""
    return model.manifest(batch=batch, ops=ops, quantization=quantization, device=device)


read_manifest = read
write_manifest = write
