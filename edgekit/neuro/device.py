"""Neuromorphic device profiles (devices/NAME.toml), read with tomllib."""

from __future__ import annotations

import os
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


def load_device(name: str) -> NeuroDevice:
    dirs = [Path(os.environ["EDGEKIT_DEVICES"])] if os.environ.get("EDGEKIT_DEVICES") else []
    dirs += list(_SEARCH)
    for d in dirs:
        p = d / f"{name}.toml"
        if p.exists():
            break
    else:
        known = sorted({q.stem for d in dirs if d.is_dir() for q in d.glob("*.toml")})
        raise EdgekitError(f"device '{name}' is unknown", expected=" | ".join(known) or "a profile",
                           got=name, fix="pick a device listed by `edgekit devices`")
    try:
        d = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise EdgekitError(f"device profile '{p}' is not valid TOML", got=str(e)) from None
    if d.get("class") != "neuromorphic" or "limits" not in d or "fixed_point" not in d:
        raise EdgekitError(f"device '{name}' is not a neuromorphic target",
                           expected="a profile with class = \"neuromorphic\" and [limits], "
                                    "[fixed_point]", got=str(d.get("class")),
                           fix="use --device loihi2")
    return NeuroDevice(name, dict(d["limits"]), dict(d["fixed_point"]), dict(d.get("energy", {})),
                       str(p))


def with_limits(dev: NeuroDevice, **limits) -> NeuroDevice:
    """A copy of dev with some limits replaced (tests, what-if mapping)."""
    return NeuroDevice(dev.name, {**dev.limits, **limits}, dict(dev.fixed_point),
                       dict(dev.energy), dev.path)
