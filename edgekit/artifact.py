"""The artifact contract: what an export folder holds, typed and frozen (STYLE.md §14).

Exporters write an `edgekit.json` (a `Manifest`) beside the files they export; runtimes read
it and need nothing else. This module sits at the bottom of the house: it imports no torch
and no models, and every field it reads from a file is checked, because every file edgekit
reads is untrusted (a wrong type, a path out of the folder, a negative size: one clear error).

Schema `edgekit.manifest/2`; `edgekit.manifest/1` folders (written before the lowering
passes were recorded) still load, with no passes listed.

Fields of the manifest (JSON keys are the field names):
    schema            "edgekit.manifest/2"
    edgekit_version   the version that wrote it
    arch              registered architecture name (e.g. "rwkv7")
    model_id          sha256 over the weights: which model a saved state belongs to
    config            the architecture's config as a JSON object
    input_kind        "tokens" (int64 ids) or "features" (float rows)
    batch             batch size the graphs were exported for
    inputs            the step's inputs besides the state [TensorSpec]
    output            name of the step's output (e.g. "logits")
    ops               "fused" | "decomposed"
    state             [TensorSpec], in graph order; state_bytes = their sum
    quantization      "none", or what `--quant` did (edgekit/quant/): {"scheme": "ternary" | "int8" |
                      "int4", "group_size", "activations", "bits_by_kind", "bits_per_weight",
                      "layers": {name: {"bits", "group_size", "shape", ...}},
                      "kept_float32": {name: reason}, "quantizer": {scheme: what made its codes}}
    device            device profile name or null
    device_choices    with a device: {"profile": the profile's values, "overridden": {key: {"profile",
                      "flag"}}, "fit": {"weights", "state", "working", "budget"}} (edgekit/profiles.py)
    bytes_per_token   bytes of weights one decode step reads (an embedding table counts one row);
                      null in folders written before it was recorded
    tokenizer         tokenizer name or null; tokenizer_file: a file in the folder, or null,
                      and tokenizer_sha256 its checksum
    artifacts         {key: ArtifactEntry}: "onnx", "pte", and "<fmt>_prefill"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from edgekit.errors import EdgekitError

SCHEMA = "edgekit.manifest/2"
READABLE_SCHEMAS = ("edgekit.manifest/1", SCHEMA)
FILENAME = "edgekit.json"
MAX_MANIFEST_BYTES = 16 << 20          # a manifest is a few KB; refuse to parse a huge file

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
               "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


class ManifestError(EdgekitError):
    """edgekit.json is not what an export writes."""


def _bad(source: str, what: str, expected: str) -> ManifestError:
    return ManifestError(f"'{source}': {what}", expected=expected,
                         fix="the manifest was edited or damaged; export the model again")


def _get(d: Mapping, key: str, kind, source: str, *, optional: bool = False):
    if key not in d or d[key] is None:
        if optional:
            return None
        raise _bad(source, f"field '{key}' is missing", f"a {kind.__name__ if isinstance(kind, type) else kind}")
    v = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        raise _bad(source, f"field '{key}' is {type(v).__name__} {v!r:.60}",
                   " or ".join(k.__name__ for k in kinds))
    return v


def _filename(d: Mapping, key: str, source: str, optional: bool = False) -> str | None:
    """A file name inside the export folder: no directory part, not '.' or '..'."""
    name = _get(d, key, str, source, optional=optional)
    if name is not None and (name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name):
        raise _bad(source, f"'{key}' is {name!r}", "a file name inside the export folder (no path)")
    return name


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: `layers.3.wkv` of shape (1, 12, 64, 64), float32."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES[self.dtype]
        for d in self.shape:
            n *= d
        return n

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "bytes": self.nbytes}

    @classmethod
    def from_json(cls, d, source: str) -> "TensorSpec":
        if not isinstance(d, Mapping):
            raise _bad(source, f"a tensor entry is {type(d).__name__}", "an object {name, shape, dtype}")
        name = _get(d, "name", str, source)
        shape = _get(d, "shape", list, source)
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40 for s in shape):
            raise _bad(source, f"tensor '{name}' has shape {shape!r:.80}", "a list of non-negative ints")
        dtype = _get(d, "dtype", str, source)
        if dtype not in DTYPE_BYTES:
            raise _bad(source, f"tensor '{name}' has dtype {dtype!r}", ", ".join(DTYPE_BYTES))
        return cls(name, tuple(shape), dtype)


def _specs(d: Mapping, key: str, source: str) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_json(s, source) for s in _get(d, key, list, source))


@dataclass(frozen=True)
class ArtifactEntry:
    """One exported file: what it is, what it takes and gives, and how it was lowered."""

    file: str
    bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state_style: str                          # "io" | "buffers"
    seq_len: int | None = None                # a prefill graph's chunk length; None: the step
    ops_used: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    passes: tuple[str, ...] = ()              # the lowering pipeline that ran, in order
    passes_fired: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    state_buffers: Mapping[str, str] | None = None   # pte with state in buffers: state -> buffer
    kernel_library: str | None = None         # the edgekit kernel library the file needs
    external_data: str | None = None          # onnx: the weights file beside it
    external_data_bytes: int | None = None    # ... its size and sha256 (verified before use)
    external_data_sha256: str | None = None
    opset: int | None = None
    weight_bytes: int | None = None
    dtype: str = "fp32"                       # "fp16": fp16 weights and compute, state fp32
    bytes_per_token: int | None = None        # bytes of weights one step of this file reads
    config_file: str | None = None            # ort-genai: its genai_config.json, beside the graph

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.file, self.external_data, self.config_file) if f)

    def checked_files(self) -> list[tuple[str, int, str | None]]:
        """(file name, bytes, sha256) of every file this entry reads; sha256 None where an
        older export did not record it (the size is still checked)."""
        out = [(self.file, self.bytes, self.sha256)]
        if self.external_data:
            out.append((self.external_data, self.external_data_bytes, self.external_data_sha256))
        return out

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and v and isinstance(v[0], TensorSpec):
                v = [s.to_json() for s in v]
            elif isinstance(v, Mapping):
                v = {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d, source: str) -> "ArtifactEntry":
        if not isinstance(d, Mapping):
            raise _bad(source, f"an artifact entry is {type(d).__name__}", "an object")
        size = _get(d, "bytes", int, source)
        if size < 0:
            raise _bad(source, f"artifact size {size}", "a byte count >= 0")
        style = _get(d, "state_style", str, source)
        if style not in ("io", "buffers"):
            raise _bad(source, f"state_style {style!r}", "'io' or 'buffers'")
        ops = _get(d, "ops_used", dict, source, optional=True) or {}
        buffers = _get(d, "state_buffers", dict, source, optional=True)
        if buffers is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in buffers.items()):
            raise _bad(source, "state_buffers holds a non-string", "an object of state name -> buffer name")
        if style == "buffers" and buffers is None:
            raise _bad(source, "state_style 'buffers' names no state_buffers", "an object of state name -> buffer name")
        fired = _get(d, "passes_fired", dict, source, optional=True) or {}
        return cls(
            file=_filename(d, "file", source), bytes=size, sha256=_get(d, "sha256", str, source),
            inputs=_specs(d, "inputs", source), outputs=_specs(d, "outputs", source), state_style=style,
            seq_len=_get(d, "seq_len", int, source, optional=True),
            ops_used=MappingProxyType({k: tuple(v) for k, v in ops.items() if isinstance(v, list)}),
            passes=tuple(_get(d, "passes", list, source, optional=True) or ()),
            passes_fired=MappingProxyType({k: v for k, v in fired.items() if isinstance(v, int)}),
            state_buffers=MappingProxyType(dict(buffers)) if buffers is not None else None,
            kernel_library=_filename(d, "kernel_library", source, optional=True),
            external_data=_filename(d, "external_data", source, optional=True),
            external_data_bytes=_get(d, "external_data_bytes", int, source, optional=True),
            external_data_sha256=_get(d, "external_data_sha256", str, source, optional=True),
            opset=_get(d, "opset", int, source, optional=True),
            weight_bytes=_get(d, "weight_bytes", int, source, optional=True),
            dtype=_entry_dtype(d, source), bytes_per_token=_nonneg(d, "bytes_per_token", source),
            config_file=_filename(d, "config_file", source, optional=True))


def _entry_dtype(d: Mapping, source: str) -> str:
    v = _get(d, "dtype", str, source, optional=True) or "fp32"
    if v not in ("fp32", "fp16"):
        raise _bad(source, f"dtype {v!r}", "'fp32' or 'fp16'")
    return v


@dataclass(frozen=True)
class Manifest:
    """The facts of one export folder (module docstring lists them)."""

    arch: str
    model_id: str
    config: Mapping[str, Any]
    input_kind: str
    batch: int
    inputs: tuple[TensorSpec, ...]
    output: str
    ops: str
    state: tuple[TensorSpec, ...]
    quantization: Any = "none"          # "none" or a mapping (module docstring)
    device: str | None = None
    device_choices: Mapping[str, Any] | None = None
    bytes_per_token: int | None = None
    tokenizer: str | None = None
    tokenizer_file: str | None = None
    tokenizer_sha256: str | None = None
    artifacts: Mapping[str, ArtifactEntry] = field(default_factory=lambda: MappingProxyType({}))
    edgekit_version: str = ""
    schema: str = SCHEMA

    @property
    def state_bytes(self) -> int:
        return sum(s.nbytes for s in self.state)

    def with_artifact(self, key: str, entry: ArtifactEntry) -> "Manifest":
        return replace(self, artifacts=MappingProxyType({**self.artifacts, key: entry}))

    def files(self) -> list[str]:
        """Every file of the folder the manifest names (artifacts, their data, the tokenizer)."""
        out = [f for e in self.artifacts.values() for f in e.files()]
        return out + ([self.tokenizer_file] if self.tokenizer_file else [])

    def to_json(self, artifacts: bool = True) -> dict:
        out = {"schema": self.schema, "edgekit_version": self.edgekit_version, "arch": self.arch,
               "model_id": self.model_id, "config": dict(self.config), "input_kind": self.input_kind,
               "batch": self.batch, "inputs": [s.to_json() for s in self.inputs], "output": self.output,
               "ops": self.ops, "state": [s.to_json() for s in self.state], "state_bytes": self.state_bytes,
               "quantization": self.quantization if isinstance(self.quantization, str) else dict(self.quantization),
               "device": self.device, "device_choices": None if self.device_choices is None else dict(self.device_choices),
               "bytes_per_token": self.bytes_per_token, "tokenizer": self.tokenizer,
               "tokenizer_file": self.tokenizer_file, "tokenizer_sha256": self.tokenizer_sha256}
        if artifacts:
            out["artifacts"] = {k: e.to_json() for k, e in self.artifacts.items()}
        return out

    @classmethod
    def from_json(cls, d, source: str) -> "Manifest":
        if not isinstance(d, Mapping):
            raise _bad(source, f"the manifest is a JSON {type(d).__name__}", "a JSON object")
        schema = d.get("schema")
        if schema not in READABLE_SCHEMAS:
            raise ManifestError(f"'{source}' has schema {schema!r}", expected=" or ".join(map(repr, READABLE_SCHEMAS)),
                                fix="re-export the model with this edgekit version")
        batch = _get(d, "batch", int, source)
        if batch < 1:
            raise _bad(source, f"batch {batch}", "a batch size >= 1")
        kind = _get(d, "input_kind", str, source, optional=True) or "tokens"
        if kind not in ("tokens", "features"):
            raise _bad(source, f"input_kind {kind!r}", "'tokens' or 'features'")
        ops = _get(d, "ops", str, source)
        if ops not in ("fused", "decomposed"):
            raise _bad(source, f"ops {ops!r}", "'fused' or 'decomposed'")
        arts = _get(d, "artifacts", dict, source)
        return cls(
            arch=_get(d, "arch", str, source), model_id=_get(d, "model_id", str, source, optional=True) or "",
            config=MappingProxyType(dict(_get(d, "config", dict, source))), input_kind=kind, batch=batch,
            inputs=_specs(d, "inputs", source), output=_get(d, "output", str, source, optional=True) or "logits",
            ops=ops, state=_specs(d, "state", source),
            quantization=_quantization(d, source),
            device=_get(d, "device", str, source, optional=True),
            device_choices=_frozen(_get(d, "device_choices", dict, source, optional=True)),
            bytes_per_token=_nonneg(d, "bytes_per_token", source),
            tokenizer=_get(d, "tokenizer", str, source, optional=True),
            tokenizer_file=_filename(d, "tokenizer_file", source, optional=True),
            tokenizer_sha256=_get(d, "tokenizer_sha256", str, source, optional=True),
            artifacts=MappingProxyType({str(k): ArtifactEntry.from_json(e, source) for k, e in arts.items()}),
            edgekit_version=_get(d, "edgekit_version", str, source, optional=True) or "", schema=schema)


def _frozen(d: Mapping | None):
    return None if d is None else MappingProxyType(dict(d))


def _nonneg(d: Mapping, key: str, source: str) -> int | None:
    v = _get(d, key, int, source, optional=True)
    if v is not None and v < 0:
        raise _bad(source, f"{key} {v}", "a non-negative byte count")
    return v


QUANT_SCHEMES = ("ternary", "int8", "int4")      # edgekit/quant/schemes.py (this module imports no torch)


def _quantization(d: Mapping, source: str):
    q = _get(d, "quantization", (str, dict), source, optional=True) or "none"
    if isinstance(q, str):
        if q != "none":
            raise _bad(source, f"quantization {q!r}", "'none' or the record `--quant` writes")
        return q
    if q.get("scheme") not in QUANT_SCHEMES:
        raise _bad(source, f"quantization scheme {q.get('scheme')!r:.40}", " or ".join(QUANT_SCHEMES))
    _get(q, "layers", dict, source)
    _get(q, "kept_float32", dict, source)
    return MappingProxyType(dict(q))


def write(outdir: Path, manifest: Manifest) -> Path:
    """edgekit.json in outdir, written to a temp name and renamed."""
    from edgekit._io import atomic_write_bytes
    path = Path(outdir) / FILENAME
    atomic_write_bytes(path, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    return path


def read(artifact: Path) -> tuple[Manifest, Path]:
    """The manifest for an artifact file or an export directory, checked; and its path."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise EdgekitError(f"artifact '{artifact}' does not exist",
                           fix="pass a model.onnx / model.pte written by `edgekit export`, or its folder")
    path = (artifact if artifact.is_dir() else artifact.parent) / FILENAME
    if not path.is_file():
        raise EdgekitError(f"no {FILENAME} next to '{artifact}'",
                           expected="the manifest that `edgekit export` writes beside every artifact",
                           fix="re-run `edgekit export`, or copy edgekit.json along with the model file")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise _bad(str(path), f"the file has {size} bytes", f"a manifest of at most {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise EdgekitError(f"'{path}' is not valid JSON ({e})", fix="re-run `edgekit export`") from None
    return Manifest.from_json(raw, str(path)), path
