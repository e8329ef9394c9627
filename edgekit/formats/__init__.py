"""The format registry: each way edgekit writes or runs a model is one entry here (STYLE.md
§14), and the CLI's choices, suffix dispatch, `--backend`, and the stale-file cleanup of an
export folder all come from it. Adding a format is one module and one line below.

A `Format` knows its file names, how to export a model to it (`export`, for artifact
formats), and how to open it as a `Backend` (`open`). The entries import their exporter and
runtime only when called, so reading this registry loads neither torch nor a runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Format:
    name: str                       # "onnx" | "pte" | "checkpoint"; the manifest's artifact key
    backend: str                    # the runtime that runs it: "onnxruntime" | "executorch" | "torch"
    suffix: str | None = None       # ".onnx"
    file: str | None = None         # what an export writes: "model.onnx"
    prefill_file: str | None = None # the sequence-form graph (--prefill T): "prefill.onnx"
    side_files: tuple[str, ...] = ()   # files an export may write beside (external data)
    export: Callable | None = None  # (model, path, *, ops, batch, state_style, seq_len, metadata, passes, dtype) -> entry dict
    # (path, entry: ArtifactEntry, manifest: Manifest, threads, prefill=(path, entry) | None) -> Backend;
    # with prefill, the backend's `prefill` runs that sequence-form graph on its own state
    open: Callable | None = None

    def written_files(self) -> tuple[str, ...]:
        """Every file name an export of this format can leave in its folder."""
        return tuple(f for f in (self.file, self.prefill_file, *self.side_files) if f)


def _export_onnx(model, path, *, ops, batch, state_style=None, seq_len=None, metadata=None, passes=None,
                 dtype="fp32"):
    from edgekit.export.onnx import export_onnx
    return export_onnx(model, path, ops=ops, batch=batch, seq_len=seq_len, metadata=metadata, passes=passes,
                       dtype=dtype)


def _open_onnx(path, entry, manifest, threads, prefill=None):
    from edgekit.runtimes.ort import OrtBackend
    backend = OrtBackend(path, entry, len(manifest.inputs), threads)
    if prefill is not None:
        backend.attach_prefill(prefill, prefill[1].seq_len)
    return backend


def _export_pte(model, path, *, ops, batch, state_style=None, seq_len=None, metadata=None, passes=None,
                dtype="fp32"):
    from edgekit.export.executorch import DEFAULT_STATE_STYLE, export_pte
    if dtype != "fp32":
        raise ValueError("fp16 .pte is not built")
    return export_pte(model, path, ops=ops, batch=batch, state_style=state_style or DEFAULT_STATE_STYLE,
                      seq_len=seq_len, passes=passes)


def _open_pte(path, entry, manifest, threads, prefill=None):
    from edgekit.runtimes.executorch import ExecuTorchBackend
    backend = ExecuTorchBackend(path, entry, len(manifest.inputs), threads, state_specs=manifest.state)
    if prefill is not None:          # a second program: the state goes in and out of it (Backend.prefill)
        backend.attach_prefill(ExecuTorchBackend(prefill[0], prefill[1], len(manifest.inputs), threads,
                                                 state_specs=manifest.state), prefill[1].seq_len)
    return backend


def _open_checkpoint(path, entry, manifest, threads, prefill=None):
    """A checkpoint runs in torch eager: (manifest made from the model, backend)."""
    from edgekit.runtimes.torch import open_checkpoint
    return open_checkpoint(path, threads)


def _export_ort_genai(model, path, **kw):
    from edgekit.export.ort_genai import export_ort_genai
    return export_ort_genai(model, path, **kw)


def _open_ort_genai(path, entry, manifest, threads, prefill=None):
    """Not run by an edgekit session: the folder is for ONNX Runtime GenAI's own API."""
    raise EdgekitError(f"'{path}' is an ONNX Runtime GenAI export; edgekit's session runs its onnx or pte export",
                       expected="onnxruntime_genai: og.Model(folder), og.Generator (docs/ort-genai.md)",
                       fix="load the folder with onnxruntime_genai, or export --format onnx to run it here")


def _open_cuda(path, entry, manifest, threads, prefill=None):
    """A checkpoint on the GPU, fp16 weights and CUDA graphs: (manifest, backend, tokenizer folder)."""
    from edgekit.runtimes.cuda import open_cuda
    return open_cuda(path, threads)


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", "onnxruntime", ".onnx", "model.onnx", "prefill.onnx",
                   ("model.onnx.data", "prefill.onnx.data"), _export_onnx, _open_onnx),
    "pte": Format("pte", "executorch", ".pte", "model.pte", "prefill.pte", (), _export_pte, _open_pte),
    # a folder ONNX Runtime GenAI loads (og.Model): the step graph in a Loop over the prompt,
    # genai_config.json beside it (edgekit/export/ort_genai.py); not run by edgekit's session
    "ort-genai": Format("ort-genai", "onnxruntime-genai", None, "genai.onnx", None,
                        ("genai.onnx.data", "genai_config.json"), _export_ort_genai, _open_ort_genai),
}
# What `--format both` (and an export without --format) writes: the formats edgekit runs.
RUNNABLE_FORMATS = ("onnx", "pte")
# Not an export target: a checkpoint path given to a session or `edgekit run` runs eagerly.
CHECKPOINT = Format("checkpoint", "torch", open=_open_checkpoint)
# Also runs a checkpoint (not an artifact): on a CUDA GPU (edgekit/runtimes/cuda.py).
CUDA = Format("cuda", "cuda", open=_open_cuda)
RUNS_CHECKPOINTS = (CHECKPOINT, CUDA)

ARTIFACT_FORMATS = tuple(FORMATS)                        # what `edgekit export --format` takes
BACKENDS = tuple(f.backend for f in (*(FORMATS[n] for n in RUNNABLE_FORMATS), *RUNS_CHECKPOINTS))


def by_name(name: str) -> Format:
    if name not in FORMATS:
        raise EdgekitError(f"unknown format '{name}'", expected=", ".join(FORMATS) + " or both",
                           fix="pass --format " + "|".join(FORMATS) + "|both")
    return FORMATS[name]


def by_suffix(path: Path) -> Format | None:
    """The artifact format of a file name (its exact name first: genai.onnx is ort-genai's),
    None for anything else (a checkpoint, a folder)."""
    name = Path(path).name
    return next((f for f in FORMATS.values() if f.file == name), None) or \
        next((f for f in FORMATS.values() if f.suffix == Path(path).suffix), None)


def by_backend(backend: str) -> Format:
    for f in (*(FORMATS[n] for n in RUNNABLE_FORMATS), *RUNS_CHECKPOINTS):
        if f.backend == backend:
            return f
    raise EdgekitError(f"unknown backend '{backend}'", expected=", ".join(BACKENDS),
                       fix="pass --backend " + "|".join(BACKENDS))


def all_written_files() -> set[str]:
    """Every file name an export can write (the cleanup of a folder's stale artifacts)."""
    return {n for f in FORMATS.values() for n in f.written_files()}
