"""Neuromorphic device profiles (devices/NAME.toml), read with tomllib."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

_REPO = Path(__file__).resolve().parents[2]
_SEARCH = (_REPO / "devices", Path(__file__).resolve().parents[1] / "devices")


@dataclass
class NeuroDevice:
    name: str
    limits: dict
    fixed_point: dict
    energy: dict
    path: str

    @property
    def weight_exp_range(self) -> tuple[int, int]:
        return int(self.fixed_point["weight_exp_min"]), int(self.fixed_point["weight_exp_max"])


# the profile keys the passes read, with their type ([energy] is optional, all or none)
_REQUIRED = {"limits": {k: int for k in ("cores_per_chip", "neurons_per_core",
                                         "synapse_memory_bytes_per_core")},
             "fixed_point": {k: int for k in ("weight_bits", "weight_exp_min", "weight_exp_max",
                                              "state_bits", "vth_bits", "bias_mant_bits",
                                              "bias_exp_min", "bias_exp_max", "act_shift")},
             "energy": {k: (int, float) for k in ("synaptic_op_pj", "neuron_update_pj",
                                                  "spike_pj")}}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _dirs() -> list[Path]:
    dirs = [Path(os.environ["EDGEKIT_DEVICES"])] if os.environ.get("EDGEKIT_DEVICES") else []
    return dirs + list(_SEARCH)


def available_devices() -> list[str]:
    """The names of the profiles in the search folders (EDGEKIT_DEVICES, devices/)."""
    return sorted({q.stem for d in _dirs() if d.is_dir() for q in d.glob("*.toml")
                   if _NAME.fullmatch(q.stem)})


def load_device(name: str) -> NeuroDevice:
    """The profile devices/NAME.toml. NAME is a plain name (letters, digits, '_', '-'): never
    a path, so ``--device ../../x`` cannot make edgekit read a file outside the folders."""
    known = "one of: " + (", ".join(available_devices()) or "(no profiles found)")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EdgekitError(f"device '{name}' is not a device name", expected=known,
                           got=repr(name)[:60], fix="pass --device with one of the names "
                           "listed (a name, not a path or a .toml file)")
    for d in _dirs():
        p = d / f"{name}.toml"
        if p.is_file():
            break
    else:
        raise EdgekitError(f"device '{name}' is unknown", expected=known, got=name,
                           fix="pass --device with one of the names listed, or add "
                               "devices/NAME.toml (EDGEKIT_DEVICES names another folder)")
    try:
        d = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"device profile '{p}' is not valid TOML", got=str(e)[:80]) from None
    if d.get("class") != "neuromorphic" or not isinstance(d.get("limits"), dict) \
            or not isinstance(d.get("fixed_point"), dict):
        raise EdgekitError(f"device '{name}' is not a neuromorphic target",
                           expected="a profile with class = \"neuromorphic\" and [limits], "
                                    "[fixed_point]", got=str(d.get("class")),
                           fix="use --device loihi2")
    energy = d.get("energy", {})
    for table, keys in _REQUIRED.items():
        t = d.get(table, {})
        if table == "energy" and not t:
            continue
        for k, typ in keys.items():
            v = t.get(k) if isinstance(t, dict) else None
            if not isinstance(v, typ) or isinstance(v, bool):
                raise EdgekitError(f"device profile '{p}' [{table}] {k} is {v!r}",
                                   expected="an integer" if typ is int else "a number",
                                   fix=f"set {k} in [{table}]")
    return NeuroDevice(name, dict(d["limits"]), dict(d["fixed_point"]), dict(energy), str(p))


def with_limits(dev: NeuroDevice, **limits) -> NeuroDevice:
    """A copy of dev with some limits replaced (tests, what-if mapping)."""
    return NeuroDevice(dev.name, {**dev.limits, **limits}, dict(dev.fixed_point),
                       dict(dev.energy), dev.path)
