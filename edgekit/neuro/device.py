"""Neuromorphic device profiles (devices/NAME.toml), read with tomllib."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.profiles import available, neuromorphic_profiles, profile_path, read_toml


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


def available_devices() -> list[str]:
    """The names of every profile in the search folders (edgekit/profiles.py), any class."""
    return available()


def load_device(name: str) -> NeuroDevice:
    """The profile devices/NAME.toml. NAME is a plain name (letters, digits, '_', '-'): never
    a path, so ``--device ../../x`` cannot make edgekit read a file outside the folders."""
    p = profile_path(name, neuromorphic_profiles)
    d = read_toml(p)
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
