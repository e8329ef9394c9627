"""Device profiles (devices/NAME.toml): what an export for a phone, a Jetson or a board should
be, and what the device can hold and read per second.

A profile is data (DESIGN.md): the format and runtime the device runs, the dtype, the default
quantization, the lowering pass pipeline, threads, memory bandwidth (with its source in a
comment of the file), a RAM budget and ISA features. `edgekit export SRC --device NAME`
takes the profile's choices unless a flag overrides one, and the manifest records both;
`edgekit inspect ARTIFACT --device NAME` gives the bandwidth floor on that device and
whether the model fits. Neuromorphic profiles (class "neuromorphic": loihi2) are read by
edgekit/neuro/device.py; the search folders and the name rules here are shared.

Every profile is untrusted input: a name is a plain name, never a path; the file is at most
MAX_PROFILE_BYTES; an unknown key or a bad value is refused by name.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

_PACKAGE = Path(__file__).resolve().parent
SEARCH = (_PACKAGE.parent / "devices", _PACKAGE / "devices")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_PROFILE_BYTES = 64 << 10

EDGE_CLASSES = ("host", "phone", "jetson", "sbc")
FORMATS = ("onnx", "pte")
DTYPES = ("fp32", "fp16")
QUANTS = ("none", "ternary", "int8", "int4")
BACKENDS = ("onnxruntime", "executorch")
BANDWIDTH_KINDS = ("peak", "sustained", "measured")
ISA = ("avx2", "fma", "avx512f", "avx512vnni", "neon", "dotprod", "i8mm", "fp16", "sm_87")

# Resident memory of a decoding session beyond the artifact's bytes, by format: measured on
# this machine, Mamba-130m fused exports, `benchmarks/export_memory.py --processes 3`
# (docs/benchmarks.md): .pte 562 MB resident for a 516.8 MB file, .onnx 597 MB for 517.1 MB.
RUNTIME_OVERHEAD_BYTES = {"pte": 46 * 10**6, "onnx": 80 * 10**6}


def dirs() -> list[Path]:
    """Where profiles are looked up, first match wins: $EDGEKIT_DEVICES, then devices/."""
    env = os.environ.get("EDGEKIT_DEVICES")
    return ([Path(env)] if env else []) + list(SEARCH)


def available() -> list[str]:
    """The names of the profiles in the search folders."""
    return sorted({q.stem for d in dirs() if d.is_dir() for q in d.glob("*.toml") if NAME.fullmatch(q.stem)})


def profile_path(name, known=available) -> Path:
    """devices/NAME.toml. NAME is a plain name (letters, digits, '_', '-'), never a path, so
    `--device ../../x` cannot make edgekit read a file outside the folders. known: a function
    giving the names an error lists (called only for the error)."""
    def listed() -> str:
        return "one of: " + (", ".join(known()) or "(no profiles found)")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise EdgekitError(f"device '{name}' is not a device name", expected=listed(), got=repr(name)[:60],
                           fix="pass --device with one of the names listed (a name, not a path or a .toml file)")
    for d in dirs():
        p = d / f"{name}.toml"
        if p.is_file():
            return p
    raise EdgekitError(f"device '{name}' is unknown", expected=listed(), got=name,
                       fix="pass --device with one of the names listed (`edgekit devices`), or add "
                           "devices/NAME.toml (EDGEKIT_DEVICES names another folder)")


def read_toml(path: Path) -> dict:
    """A profile file as a dict, bounded in size; one clear error if it is not TOML."""
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise EdgekitError(f"device profile '{path}' is {path.stat().st_size:,} bytes",
                               expected=f"at most {MAX_PROFILE_BYTES:,} bytes (a profile is a few lines)",
                               fix="check the file; a profile is a short TOML file")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"device profile '{path}' is not valid TOML", got=str(e)[:80],
                           fix="fix the file's syntax (https://toml.io)") from None


@dataclass(frozen=True)
class EdgeProfile:
    """One CPU/GPU device profile (module docstring)."""

    name: str
    klass: str
    description: str
    format: str                     # the default artifact format
    formats: tuple[str, ...]        # the formats the device runs (a --format outside them is refused)
    backend: str
    accelerator: str
    dtype: str
    quant: str
    ops: str
    passes: tuple[str, ...] | None  # None: the format's default pipeline
    threads: int
    bandwidth_gbs: float
    bandwidth_kind: str
    ram_budget_mb: int
    isa: tuple[str, ...]
    static_shapes: bool
    path: str
    notes: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "class": self.klass, "format": self.format, "formats": list(self.formats),
                "backend": self.backend, "dtype": self.dtype, "quant": self.quant, "ops": self.ops,
                "passes": "default" if self.passes is None else list(self.passes), "threads": self.threads,
                "bandwidth_gbs": self.bandwidth_gbs, "bandwidth_kind": self.bandwidth_kind,
                "ram_budget_mb": self.ram_budget_mb, "isa": list(self.isa), "static_shapes": self.static_shapes}

    def floor_ms(self, bytes_per_token: int) -> float:
        """Bytes read per token / the device's bandwidth, in ms."""
        return bytes_per_token / (self.bandwidth_gbs * 1e9) * 1e3


def _one_of(choices):
    def check(v):
        return isinstance(v, str) and v in choices
    return check, " | ".join(choices)


def _list_of(choices):
    def check(v):
        return isinstance(v, list) and all(isinstance(x, str) and x in choices for x in v)
    return check, "a list of: " + ", ".join(choices)


def _positive(kind):
    def check(v):
        return isinstance(v, kind) and not isinstance(v, bool) and v > 0
    return check, "a positive " + ("integer" if kind is int else "number")


def _passes_value(v) -> bool:
    if v == "default":
        return True
    from edgekit.export.passes import PASS_MODULES
    return isinstance(v, list) and all(isinstance(x, str) and x in PASS_MODULES for x in v)


# key -> (check, what a good value is); every key is required except those in OPTIONAL
SCHEMA = {
    "name": (lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None, "the file's own name"),
    "class": _one_of(EDGE_CLASSES),
    "description": (lambda v: isinstance(v, str) and 0 < len(v) <= 200, "a one-line description"),
    "format": _one_of(FORMATS),
    "formats": _list_of(FORMATS),
    "backend": _one_of(BACKENDS),
    "accelerator": (lambda v: isinstance(v, str) and 0 < len(v) <= 100, "the runtime's accelerator, in words"),
    "dtype": _one_of(DTYPES),
    "quant": _one_of(QUANTS),
    "ops": _one_of(("fused", "decomposed")),
    "passes": (_passes_value, "\"default\" or a list of lowering pass names (edgekit/export/passes/)"),
    "threads": _positive(int),
    "bandwidth_gbs": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e5,
                      "a positive number of GB/s"),
    "bandwidth_kind": _one_of(BANDWIDTH_KINDS),
    "ram_budget_mb": _positive(int),
    "isa": _list_of(ISA),
    "static_shapes": (lambda v: isinstance(v, bool), "true or false"),
    "notes": (lambda v: isinstance(v, str) and len(v) <= 2000, "text"),
}
OPTIONAL = ("notes",)


def load_profile(name: str) -> EdgeProfile:
    """The CPU/GPU profile NAME, every key checked (module docstring)."""
    path = profile_path(name, edge_profiles)
    d = read_toml(path)
    if d.get("class") == "neuromorphic":
        raise EdgekitError(f"device '{name}' is a neuromorphic target, for `edgekit neuro compile`",
                           expected="a phone, Jetson, board or host profile for `edgekit export`",
                           fix="pass --device with one of: " + ", ".join(edge_profiles()))
    unknown = sorted(set(d) - set(SCHEMA))
    if unknown:
        raise EdgekitError(f"device profile '{path}' has unknown key '{unknown[0]}'",
                           expected="keys: " + ", ".join(SCHEMA), fix=f"remove or rename '{unknown[0]}'")
    for key, (check, good) in SCHEMA.items():
        if key not in d:
            if key in OPTIONAL:
                continue
            raise EdgekitError(f"device profile '{path}' lacks '{key}'", expected=good, fix=f"add {key} = ...")
        if not check(d[key]):
            raise EdgekitError(f"device profile '{path}': {key} = {d[key]!r:.60} is not valid", expected=good,
                               fix=f"set {key} to {good}")
    if d["name"] != path.stem:
        raise EdgekitError(f"device profile '{path}' says name = {d['name']!r}", expected=f"'{path.stem}' (its file name)",
                           fix=f"set name = \"{path.stem}\"")
    if d["format"] not in d["formats"]:
        raise EdgekitError(f"device profile '{path}': format {d['format']!r} is not in formats {d['formats']}",
                           fix="list the default format in formats")
    return EdgeProfile(name=d["name"], klass=d["class"], description=d["description"], format=d["format"],
                       formats=tuple(d["formats"]), backend=d["backend"], accelerator=d["accelerator"],
                       dtype=d["dtype"], quant=d["quant"], ops=d["ops"],
                       passes=None if d["passes"] == "default" else tuple(d["passes"]), threads=d["threads"],
                       bandwidth_gbs=float(d["bandwidth_gbs"]), bandwidth_kind=d["bandwidth_kind"],
                       ram_budget_mb=d["ram_budget_mb"], isa=tuple(d["isa"]), static_shapes=d["static_shapes"],
                       path=str(path), notes=d.get("notes", ""))


def _classes() -> dict[str, str | None]:
    """name -> the class its profile says (None: unreadable)."""
    out = {}
    for name in available():
        try:
            out[name] = read_toml(profile_path(name)).get("class")
        except EdgekitError:
            out[name] = None
    return out


def edge_profiles() -> list[str]:
    """The names of the profiles that are not neuromorphic."""
    return [n for n, c in _classes().items() if c != "neuromorphic"]


def neuromorphic_profiles() -> list[str]:
    return [n for n, c in _classes().items() if c == "neuromorphic"]


@dataclass(frozen=True)
class Fit:
    """Whether a model's weights, state and working memory fit a device's RAM budget."""

    weights: int
    state: int
    working: int
    budget: int

    @property
    def total(self) -> int:
        return self.weights + self.state + self.working

    @property
    def fits(self) -> bool:
        return self.total <= self.budget


def fit(profile: EdgeProfile, weight_bytes: int, state_bytes: int, fmt: str) -> Fit:
    """Weights (the artifact's bytes) + state + the runtime's working memory (measured,
    RUNTIME_OVERHEAD_BYTES) against the profile's RAM budget."""
    return Fit(weight_bytes, state_bytes, RUNTIME_OVERHEAD_BYTES.get(fmt, max(RUNTIME_OVERHEAD_BYTES.values())),
               profile.ram_budget_mb * 2**20)
