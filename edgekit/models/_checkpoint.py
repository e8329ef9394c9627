"""Reading checkpoint files, every one of which is untrusted: the one place every loader
(RWKV-7 .pth, Hugging Face safetensors / pytorch_model.bin, ncps folders) reads tensors
and config.json through.

What a corrupt or crafted file can do, and the check that stops it:

- A tensor can be a view that declares far more elements than the file stores:
  ``torch.zeros(1, C).expand(V, C)`` (stride 0) or an ``as_strided`` view whose rows
  overlap. ``torch.load(weights_only=True)`` accepts both; a 3 MB .pth held a 1M x 256
  embedding and ran at 4.3 GB resident. `check_tensors` refuses, before any tensor is
  copied (torch files are memory-mapped), a tensor that is not dense (sparse, quantized),
  that has stride 0 on a dimension of size > 1, whose strides overlap (sorted by stride,
  each stride must be at least the extent of the faster dimensions), or whose layout
  reaches past its storage; then it bounds the bytes all tensors declare (each distinct
  view once, so tied weights count once) by the file's size.
- A safetensors header can declare shapes its data cannot hold. The safetensors library
  checks offsets; `read_safetensors` also checks the header alone (its size, each entry's
  shape against the data size, the declared total) before the library maps the file.
- A NaN or inf weight makes every output NaN: `check_finite` refuses it by name.
- config.json can be any JSON value with any types: `read_config` wants an object, and
  `config_int` / `config_float` / `config_bool` check each option by name. A size in
  config.json is bounded by the weights present (`Limits`) before anything is allocated
  from it: no dimension is larger than the largest tensor, no layer count larger than
  the number of tensors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from edgekit.errors import EdgekitError
from edgekit.units import human_bytes

MAX_CONFIG_BYTES = 16 << 20          # a config.json is a few KB
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit
SIZE_SLACK = 1 << 20                 # declared tensor bytes may exceed the file by this much
FINITE_CHUNK = 1 << 24               # elements per finiteness check (bounds the bool mask of the exact path)

CRAFTED = "the file is corrupt or crafted; use the original checkpoint (re-download it, or re-save the " \
          "weights with torch.save(model.state_dict()) or safetensors)"

# safetensors dtype -> bytes per element (the formats torch reads)
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
                      "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


# ---- tensors -------------------------------------------------------------------------
def _fmt_shape(t: torch.Tensor) -> str:
    return f"shape ({', '.join(map(str, t.shape))}) and strides ({', '.join(map(str, t.stride()))})"


def layout_problem(t: torch.Tensor) -> str | None:
    """What is wrong with a tensor's layout as stored data, or None: dense (strided), no
    stride 0 on a dimension of size > 1, non-overlapping strides, inside its storage."""
    if t.layout != torch.strided:
        return f"is a {str(t.layout).removeprefix('torch.')} tensor, not a dense one"
    if t.is_quantized:
        return "is a quantized tensor, which edgekit does not read"
    if t.numel() == 0:
        return None
    span = 1                                    # elements spanned by the faster dims so far
    dims = sorted(((st, sz, i) for i, (sz, st) in enumerate(zip(t.shape, t.stride())) if sz > 1))
    for stride, size, i in dims:
        if stride == 0:
            return (f"has stride 0 on dimension {i} (size {size:,}): all {size:,} entries alias the same stored "
                    f"data (a broadcast view, as from expand)")
        if stride < span:
            return (f"has overlapping strides: dimension {i} steps {stride} element(s), less than the "
                    f"{span:,} its faster dimensions span, so elements alias each other")
        span += stride * (size - 1)
    need = (t.storage_offset() + span) * t.element_size()
    have = t.untyped_storage().nbytes()
    if need > have:
        return f"reaches byte {need:,} of a storage of {have:,} bytes"
    return None


def check_tensors(sd: Mapping[str, torch.Tensor], source: str, file_bytes: int) -> None:
    """Refuse a state_dict whose tensors are not plain data of their own (see module
    docstring), or that declares more bytes than a file of file_bytes holds. Reads only
    metadata: nothing is copied or materialised."""
    for name, t in sd.items():
        if not isinstance(name, str):
            raise EdgekitError(f"checkpoint '{source}' has a key {name!r} that is not a string",
                               expected="a state_dict of name -> tensor", fix=CRAFTED)
        problem = layout_problem(t)
        if problem:
            raise EdgekitError(f"checkpoint '{source}': tensor '{name}' of {_fmt_shape(t)} {problem}",
                               expected="a dense tensor backed by its own stored data", fix=CRAFTED)
    declared, seen = 0, set()
    for t in sd.values():   # a view of the same data under two names (tied weights) counts once
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype,
               tuple(sorted(zip(t.stride(), t.shape))))
        if key not in seen:
            seen.add(key)
            declared += t.numel() * t.element_size()
    if declared > file_bytes + SIZE_SLACK:
        raise EdgekitError(f"checkpoint '{source}' declares {human_bytes(declared)} of tensors in a file of "
                           f"{human_bytes(file_bytes)}", expected="at most the file's size", fix=CRAFTED)


def check_finite(sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a NaN or inf in any floating-point tensor, naming it and the first bad element.

    Per chunk, torch.isfinite of the chunk's sum first: a NaN or inf always reaches the sum
    (inf + -inf is NaN), so a finite sum proves the chunk finite, at a third of the cost of
    a full torch.isfinite mask (500 MB of bf16: ~1 s); a non-finite sum (or an overflow of
    large finite values) falls back to the exact element-wise torch.isfinite."""
    for name, t in sd.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        acc = torch.float64 if t.dtype == torch.float64 else torch.float32
        flat = t.reshape(-1)
        for start in range(0, flat.numel(), FINITE_CHUNK):
            chunk = flat[start:start + FINITE_CHUNK]
            if bool(torch.isfinite(chunk.sum(dtype=acc))):
                continue
            ok = torch.isfinite(chunk)
            if bool(ok.all()):
                continue                                  # the sum overflowed; every value is finite
            i = start + int((~ok).nonzero()[0, 0])
            v = float(flat[i])
            idx, rest = [], i
            for d in reversed(t.shape):
                rest, r = divmod(rest, d)
                idx.append(r)
            at = ", ".join(map(str, reversed(idx)))
            what = "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            raise EdgekitError(f"weight '{name}' ({', '.join(map(str, t.shape))}) of '{source}' holds {what} "
                               f"at [{at}]", expected="finite values in every weight",
                               fix="the checkpoint is corrupt or its training diverged; use another checkpoint")


# ---- files ---------------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one weights file (.safetensors, or a torch.save file read with
    weights_only=True), checked: plain dense data within the file's size, all finite."""
    path = Path(path)
    sd = read_safetensors(path) if path.suffix == ".safetensors" else load_torch(path)
    if not sd:
        raise EdgekitError(f"'{path}' holds no tensors", fix="the file is incomplete; save the weights again")
    check_tensors(sd, str(path), path.stat().st_size)
    check_finite(sd, str(path))
    return sd


def load_torch(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True (a file that carries pickled code is refused),
    memory-mapped when the file is a zip (every torch.save since 1.6), so no tensor is
    read before `check_tensors` has seen its layout. Not checked here: use read_tensors."""
    import pickle
    import zipfile
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" in text or "global" in text.split("|")[-1]:
            name = text.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in text else "an object"
            raise EdgekitError(f"'{path}' contains pickled code ({name}), which edgekit will not run",
                               expected="a plain tensor state_dict",
                               fix="re-save the weights with torch.save(model.state_dict()) or as safetensors") from None
        raise EdgekitError(f"'{path}' is not a PyTorch checkpoint (its pickle stream is not a state_dict)",
                           fix="pass a .pth written by torch.save") from None
    except Exception as e:  # torch.load raises many types for non-checkpoints (KeyError, EOFError, ...)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        if any(s in first for s in ("resize storage", "record size", "wrong byte size", "out of bounds")):
            raise EdgekitError(f"'{path}' declares a tensor larger than the data the file stores for it",
                               expected="every tensor inside its own stored data", fix=CRAFTED) from None
        raise EdgekitError(f"'{path}' is not a readable PyTorch checkpoint ({first})",
                           fix="pass a complete .pth written by torch.save; re-download it if it is truncated") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EdgekitError(f"'{path}' does not hold a state_dict of tensors",
                           fix="pass a checkpoint written by torch.save(model.state_dict())")
    return sd


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), checked
    from the header alone: a header inside the file, each shape's bytes equal to its data
    range, no dimension larger than the data, the declared total within the file."""
    path = Path(path)
    size = path.stat().st_size
    bad = lambda what: EdgekitError(f"'{path}' is not a readable safetensors file: {what}",  # noqa: E731
                                    expected="an 8-byte header length, a JSON header, the tensor data", fix=CRAFTED)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"it has {size} bytes")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise bad(f"its header claims {n:,} bytes in a file of {size:,}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise bad("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise bad(f"its header is a JSON {type(header).__name__}")
    data = size - 8 - n
    total, out = 0, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(e, dict) and e.get("dtype") in SAFETENSORS_DTYPES and isinstance(e.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in e["data_offsets"]))
        if not ok:
            raise bad(f"tensor '{name}' has entry {json.dumps(e)[:120]}")
        shape, (lo, hi) = e["shape"], e["data_offsets"]
        numel = math.prod(shape)
        nbytes = numel * SAFETENSORS_DTYPES[e["dtype"]]
        if any(d > max(data, 1 << 16) for d in shape) or not 0 <= lo <= hi <= data or hi - lo != nbytes:
            raise EdgekitError(f"'{path}': tensor '{name}' declares shape ({', '.join(map(str, shape))}) "
                               f"{e['dtype']} ({nbytes:,} bytes) at bytes {lo:,}..{hi:,}",
                               expected=f"a shape whose bytes are its data range, inside the {data:,} bytes of data",
                               fix=CRAFTED)
        total += nbytes
        out[name] = e
    if total > data:
        raise EdgekitError(f"'{path}' declares {human_bytes(total)} of tensors in {human_bytes(data)} of data",
                           expected="at most the file's size", fix=CRAFTED)
    return out


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    safetensors_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise EdgekitError(f"'{path}' is not a readable safetensors file ({e})",
                           fix="the file is truncated or corrupt; download or save it again") from None


# ---- config.json ---------------------------------------------------------------------
def read_config(cfg: Path) -> dict:
    """A config.json file: a JSON object of at most MAX_CONFIG_BYTES."""
    cfg = Path(cfg)
    size = cfg.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise EdgekitError(f"'{cfg}' has {human_bytes(size)}", expected=f"a config.json of at most "
                           f"{human_bytes(MAX_CONFIG_BYTES)}", fix="restore the original config.json")
    try:
        raw = json.loads(cfg.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise EdgekitError(f"'{cfg}' is not valid JSON ({str(e)[:120]})",
                           fix="restore the original config.json") from None
    if not isinstance(raw, dict):
        raise EdgekitError(f"'{cfg}' is a JSON {_json_kind(raw)}", expected="a JSON object {\"key\": value, ...}",
                           fix="restore the original config.json")
    return raw


def peek_config(cfg: Path) -> dict | None:
    """config.json as a JSON object, or None when it is missing, too large, not JSON or not
    an object: for `detect`, which must not raise (from_pretrained says what is wrong)."""
    try:
        if Path(cfg).stat().st_size > MAX_CONFIG_BYTES:
            return None
        raw = json.loads(Path(cfg).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError):
        return None
    return raw if isinstance(raw, dict) else None


def _json_kind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def json_text(v) -> str:
    """A config value as config.json spells it (null, true, "64"), for messages."""
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass(frozen=True)
class Limits:
    """What the weights actually present can back. A config.json size beyond them does not
    describe these weights (or was crafted), and is refused before anything is allocated
    from it: every dimension of a real model is a dimension of some weight (so at most the
    largest tensor's element count), every layer holds at least one tensor."""

    source: str          # the checkpoint, for messages
    tensors: int         # how many tensors
    largest: int         # elements of the largest tensor
    nbytes: int          # bytes of all tensors

    @classmethod
    def of(cls, sd: Mapping[str, torch.Tensor], source: str) -> "Limits":
        return cls(source, len(sd), max((t.numel() for t in sd.values()), default=0),
                   sum(t.numel() * t.element_size() for t in sd.values()))

    def dim(self) -> tuple[int, str]:
        return self.largest, f"the largest tensor in '{self.source}' has {self.largest:,} elements"

    def count(self) -> tuple[int, str]:
        return self.tensors, f"'{self.source}' holds {self.tensors:,} tensors"


REQUIRED = object()


def _config_error(source: str, key: str, v, expected: str) -> EdgekitError:
    return EdgekitError(f"config '{source}' has {key} = {json_text(v)}", expected=expected,
                        fix="restore the config.json written with the weights")


def _lookup(cfg: Mapping, key: str, source: str, default, expected: str):
    """(value, is_default). A null counts as absent where there is a default."""
    if key not in cfg or (cfg[key] is None and default is not REQUIRED):
        if default is REQUIRED:
            raise EdgekitError(f"config '{source}' has no '{key}'", expected=expected,
                               fix="restore the config.json written with the weights")
        return default, True
    return cfg[key], False


def config_int(cfg: Mapping, key: str, source: str, default=REQUIRED, *, minimum: int = 1,
               limit: tuple[int, str] | None = None) -> int:
    """An integer option >= minimum and, with limit = (bound, why), <= bound."""
    expected = f"an integer >= {minimum}"
    v, is_default = _lookup(cfg, key, source, default, expected)
    if is_default:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _config_error(source, key, v, expected)
    if limit is not None and v > limit[0]:
        raise EdgekitError(f"config '{source}' has {key} = {v:,}", expected=f"at most {limit[0]:,} ({limit[1]})",
                           fix="config.json does not describe these weights (or was crafted); restore the original")
    return v


def config_float(cfg: Mapping, key: str, source: str, default=REQUIRED, *, minimum: float | None = None,
                 maximum: float | None = None, finite: bool = True) -> float:
    """A number option (an int is taken), finite unless finite=False, within [minimum, maximum]."""
    expected = "a " + ("finite " if finite else "") + "number" + (
        f" from {minimum:g} to {maximum:g}" if minimum is not None and maximum is not None else
        f" >= {minimum:g}" if minimum is not None else f" <= {maximum:g}" if maximum is not None else "")
    v, is_default = _lookup(cfg, key, source, default, expected)
    if is_default:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (finite and not math.isfinite(v)) \
            or (minimum is not None and not v >= minimum) or (maximum is not None and not v <= maximum):
        raise _config_error(source, key, v, expected)
    return float(v)


def config_bool(cfg: Mapping, key: str, source: str, default=REQUIRED) -> bool:
    v, is_default = _lookup(cfg, key, source, default, "true or false")
    if not is_default and not isinstance(v, bool):
        raise _config_error(source, key, v, "true or false")
    return v


def config_dict(cfg: Mapping, key: str, source: str) -> dict:
    """An optional nested object option ({} when absent or null)."""
    v = cfg.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _config_error(source, key, v, "a JSON object")
    return v
