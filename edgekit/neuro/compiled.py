"""The compiled network: what the passes produce and what the simulator and Lava run.

A compiled network is a set of Loihi LIF *populations* joined by Dense *connections*
(see the dimension legend in ``edgekit/neuro/__init__.py``). It is stored as two files in
the output folder, written atomically:

- ``network.json`` -- populations, connections, the pass log (every pass's name and the
  choices it made), the mapping, the device and dt.
- ``network.npz``  -- the arrays: per population p ``bias_mant_p``, ``bias_exp_p`` (int),
  ``bias_f_p`` (float twin); per connection c ``W_c`` (n_dst, n_src) int32 as Lava's
  bit-accurate Dense will use them (already clipped and truncated), ``Wf_c`` float32 (the
  float twin, in the same voltage units as ``vth_f``).

Fixed-point semantics are exactly Lava's ``PyLifModelBitAcc`` / ``PyDenseModelBitAcc``
(lava-nc 0.10.0), see ``edgekit.neuro.sim``. The float twin is the same network before
quantization, with the same one-step delay per connection.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError

FORMAT_VERSION = 1
SIGN_MODES = ("mixed", "excitatory", "inhibitory")
VTH_MAX = 2 ** 17 - 1           # vth << 6 must fit the 24-bit signed v
SHIFT_MAX = 24                  # |bias_exp|, |weight_exp|: a larger shift leaves the 24-bit state


def _splits(cores, n: int) -> bool:
    """cores = [[0, a], [a, b], ..., [z, n]]: consecutive non-empty neuron ranges."""
    if not isinstance(cores, list) or not cores:
        return False
    at = 0
    for r in cores:
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and
                all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in r)
                and r[0] == at and r[1] > at):
            return False
        at = r[1]
    return at == n


def _check_values(key: str, a: np.ndarray, kind: str) -> None:
    """An array of a compiled network: numeric; "int": whole numbers in int32; "shift":
    whole numbers in [-SHIFT_MAX, SHIFT_MAX]; "float": finite."""
    if a.dtype.kind not in "biuf":
        raise EdgekitError(f"array '{key}' has dtype {a.dtype}", expected="numbers",
                           got=str(a.dtype), fix="recompile the network")
    if a.size == 0:
        return
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise EdgekitError(f"array '{key}' is not finite", expected="finite numbers",
                           got=str(a[~np.isfinite(a)].ravel()[0]), fix="recompile the network")
    if kind == "float":
        return
    if a.dtype.kind == "f" and not np.array_equal(a, np.trunc(a)):
        raise EdgekitError(f"array '{key}' holds fractions", expected="whole numbers",
                           got=str(a[a != np.trunc(a)].ravel()[0]), fix="recompile the network")
    lo, hi = (-SHIFT_MAX, SHIFT_MAX) if kind == "shift" else (-2 ** 31, 2 ** 31 - 1)
    if a.min() < lo or a.max() > hi:
        raise EdgekitError(f"array '{key}' is out of range", expected=f"{lo} .. {hi}",
                           got=f"{a.min()} .. {a.max()}", fix="recompile the network")


@dataclass
class Population:
    """A population of Loihi LIF neurons (one Lava ``LIF`` process per core).

    Fixed point (per step, integers; u, v are 24-bit; units are Loihi's "v units")::

        u[t] = wrap24( trunc0(u[t-1] * (4096 - (du+1)) / 4096) + (a_in[t] << 6) )
        v[t] = clip24( trunc0(v[t-1] * (4096 - dv) / 4096) + u[t] + (bias_mant << bias_exp) )
        s[t] = v[t] > (vth << 6);   v[t] = 0 where s[t]

    Float twin: ``u = decay_u*u + a_in; v = decay_v*v + u + bias_f; s = v > vth_f``.
    ``kind`` is the source node kind (LIF, CubaLIF, IF, LI); ``cores`` the neuron ranges
    [lo, hi) that the map pass put on one core each.
    """

    name: str
    n: int
    du: int
    dv: int
    vth: int
    decay_u: float
    decay_v: float
    vth_f: float
    kind: str = "CubaLIF"
    cores: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cores:
            self.cores = [[0, self.n]]


@dataclass
class Connection:
    """A Dense connection: ``a_out[t] = (W @ s_src[t-1]) << weight_exp`` (one step of delay).

    ``src`` is a population index, or -1 for the network input. ``sign_mode`` is Lava's
    (mixed, excitatory, inhibitory); W holds the effective integer weights (mantissa <<
    (8 - num_weight_bits + mixed)), i.e. the values Lava's Dense uses after truncation.
    """

    name: str
    src: int
    dst: int
    weight_exp: int
    num_weight_bits: int
    sign_mode: str


class CompiledNetwork:
    """Populations + connections + arrays + the record of how they were made."""

    def __init__(self, n_in: int, populations: list[Population], connections: list[Connection],
                 arrays: dict[str, np.ndarray], *, dt: float | None = None,
                 device: str = "loihi2", passes: list[dict] | None = None,
                 outputs: list[int] | None = None, meta: dict | None = None) -> None:
        self.n_in = int(n_in)
        self.populations = populations
        self.connections = connections
        self.arrays = arrays
        self.dt = dt
        self.device = device
        self.passes = passes or []
        self.outputs = outputs if outputs is not None else [len(populations) - 1]
        self.meta = meta or {}
        self.validate()

    # -- accessors -------------------------------------------------------------------
    def W(self, c: int) -> np.ndarray:
        return self.arrays[f"W_{c}"]

    def Wf(self, c: int) -> np.ndarray:
        return self.arrays[f"Wf_{c}"]

    def bias(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays[f"bias_mant_{p}"], self.arrays[f"bias_exp_{p}"]

    def bias_f(self, p: int) -> np.ndarray:
        return self.arrays[f"bias_f_{p}"]

    def pop_size(self, idx: int) -> int:
        return self.n_in if idx < 0 else self.populations[idx].n

    def validate(self) -> None:
        """Structure, ranges and array shapes/dtypes; one EdgekitError per problem.

        Ranges are what the fixed-point model can hold: du, dv are 12-bit; ``vth << 6``,
        a bias and a weight shift must stay inside the 24-bit state; weights are 1..8 bits.
        """
        P = len(self.populations)

        def bad(what: str, expected: str, got) -> EdgekitError:
            return EdgekitError(what, expected=expected, got=str(got)[:60],
                                fix="recompile the network")

        def within(what: str, v, lo, hi, expected: str | None = None) -> None:
            if not (isinstance(v, (int, float, np.integer, np.floating))
                    and not isinstance(v, bool) and lo <= v <= hi):
                raise bad(f"{what} is out of range", expected or f"{lo} .. {hi}", v)

        within("n_in (network inputs)", self.n_in, 1, 1 << 40)
        if P == 0:
            raise bad("the network has no populations", "at least one", 0)
        if self.dt is not None:
            within("dt", self.dt, 1e-300, math.inf, "a positive number of seconds or null")
        names = [p.name for p in self.populations]
        if len(set(names)) != P:
            raise bad("population names repeat", "unique names", names)
        for p, pop in enumerate(self.populations):
            w = f"population '{pop.name}'"
            within(f"{w} size n", pop.n, 1, 1 << 40)
            within(f"{w} du", pop.du, 0, 4095, "0 .. 4095 (12-bit decay)")
            within(f"{w} dv", pop.dv, 0, 4095, "0 .. 4095 (12-bit decay)")
            within(f"{w} vth", pop.vth, 0, VTH_MAX, f"0 .. {VTH_MAX} (vth << 6 in 24 bits)")
            within(f"{w} decay_u", pop.decay_u, 0.0, 1.0)
            within(f"{w} decay_v", pop.decay_v, 0.0, 1.0)
            within(f"{w} vth_f", pop.vth_f, -sys.float_info.max, sys.float_info.max,
                   "a finite number")
            if not _splits(pop.cores, pop.n):
                raise bad(f"{w} cores do not split its {pop.n} neurons",
                          f"[[0, a], [a, b], ..., [z, {pop.n}]]", pop.cores)
            for key, kind in ((f"bias_mant_{p}", "int"), (f"bias_exp_{p}", "shift"),
                              (f"bias_f_{p}", "float")):
                if key not in self.arrays or self.arrays[key].shape != (pop.n,):
                    raise EdgekitError(f"population '{pop.name}' array '{key}' is missing or "
                                       f"mis-shaped", expected=f"({pop.n},)",
                                       got=None if key not in self.arrays else
                                       str(self.arrays[key].shape), fix="recompile the network")
                _check_values(key, self.arrays[key], kind)
        for c, con in enumerate(self.connections):
            w = f"connection '{con.name}'"
            within(f"{w} src", con.src, -1, P - 1, f"-1 (the input) .. {P - 1}")
            within(f"{w} dst", con.dst, 0, P - 1)
            within(f"{w} num_weight_bits", con.num_weight_bits, 1, 8)
            within(f"{w} weight_exp", con.weight_exp, -SHIFT_MAX, SHIFT_MAX)
            if con.sign_mode not in SIGN_MODES:
                raise EdgekitError(f"connection '{con.name}' sign mode is unknown",
                                   expected=" | ".join(SIGN_MODES), got=str(con.sign_mode))
            want = (self.populations[con.dst].n, self.pop_size(con.src))
            for key, kind in ((f"W_{c}", "int"), (f"Wf_{c}", "float")):
                W = self.arrays.get(key)
                if W is None or W.shape != want:
                    raise EdgekitError(f"connection '{con.name}' weights '{key}' have the wrong "
                                       "shape", expected=str(want),
                                       got=None if W is None else str(W.shape),
                                       fix="recompile the network")
                _check_values(key, W, kind)
        if not (isinstance(self.outputs, list) and self.outputs and
                all(isinstance(o, (int, np.integer)) and not isinstance(o, bool) and 0 <= o < P
                    for o in self.outputs)):
            raise bad("outputs are not population indices", f"a list of 0 .. {P - 1}",
                      self.outputs)

    def spec(self) -> dict:
        """The json-able part (everything but the arrays)."""
        return {
            "format": "edgekit.neuro.compiled", "version": FORMAT_VERSION,
            "device": self.device, "dt": self.dt, "n_in": self.n_in,
            "outputs": self.outputs,
            "populations": [asdict(p) for p in self.populations],
            "connections": [asdict(c) for c in self.connections],
            "passes": self.passes, "meta": self.meta,
        }

    # -- files -----------------------------------------------------------------------
    def save(self, outdir: str | Path) -> Path:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(outdir / "network.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.arrays)
        with atomic_path(outdir / "network.json") as tmp:
            tmp.write_text(json.dumps(self.spec(), indent=1, default=_json_default))
        return outdir

    @classmethod
    def load(cls, outdir: str | Path, max_bytes: int | None = None) -> "CompiledNetwork":
        """Read a compiled network folder. Both files are untrusted (a user may have edited
        them): network.json is checked key by key against the dataclasses, network.npz's
        arrays are size-checked before they are read (``untrusted.load_npz``), and
        ``validate`` checks ranges and shapes."""
        from edgekit.neuro.untrusted import MAX_READ_BYTES, load_npz, size_text

        outdir = Path(outdir)
        max_bytes = max_bytes or MAX_READ_BYTES
        js, npz = outdir / "network.json", outdir / "network.npz"
        fix = "recompile the network"
        if not outdir.is_dir() or not js.is_file() or not npz.is_file():
            raise EdgekitError(f"'{outdir}' is not a compiled edgekit network",
                               expected="a folder with network.json and network.npz",
                               fix="run `edgekit neuro compile SRC -o OUTDIR` first")
        if js.stat().st_size > max_bytes:
            raise EdgekitError(f"'{js}' is {size_text(js.stat().st_size)}",
                               expected=f"at most {size_text(max_bytes)} (--max-read-mib)",
                               fix=fix)
        try:
            spec = json.loads(js.read_text())
        except (ValueError, RecursionError, OSError) as e:   # not JSON / not UTF-8 / too deep
            raise EdgekitError(f"'{js}' cannot be read", expected="JSON written by edgekit",
                               got=f"{type(e).__name__}: {str(e)[:60]}", fix=fix) from None
        if not isinstance(spec, dict) or spec.get("format") != "edgekit.neuro.compiled" \
                or spec.get("version") != FORMAT_VERSION:
            got = (f"{spec.get('format')} v{spec.get('version')}" if isinstance(spec, dict)
                   else type(spec).__name__)
            raise EdgekitError(f"'{js}' is not a compiled network of this edgekit version",
                               expected=f"format edgekit.neuro.compiled v{FORMAT_VERSION}",
                               got=got[:60], fix=fix)
        for key, types, what in _SPEC_KEYS:
            if key not in spec and key not in _SPEC_OPTIONAL:
                raise EdgekitError(f"'{js}' has no '{key}'", expected=what, fix=fix)
            if key in spec and not _is(spec[key], types):
                raise EdgekitError(f"'{js}' key '{key}' is {repr(spec[key])[:40]}",
                                   expected=what, fix=fix)
        pops = [_from_json(Population, d, f"{js} populations[{i}]")
                for i, d in enumerate(spec["populations"])]
        cons = [_from_json(Connection, d, f"{js} connections[{i}]")
                for i, d in enumerate(spec["connections"])]
        arrays = load_npz(npz, "compiled network arrays", fix, max_bytes)
        return cls(spec["n_in"], pops, cons, arrays, dt=spec["dt"], device=spec["device"],
                   passes=spec["passes"], outputs=spec["outputs"], meta=spec.get("meta", {}))


_JSON_TYPES = {"str": (str, "a string"), "int": (int, "an integer"),
               "float": ((int, float), "a number"), "list": (list, "a list")}
# network.json's top-level keys: (key, allowed types, what is expected); see spec()
_SPEC_KEYS = (("device", str, "a device name"),
              ("dt", (int, float, type(None)), "seconds or null"),
              ("n_in", int, "the number of inputs"), ("outputs", list, "population indices"),
              ("populations", list, "a list of populations"),
              ("connections", list, "a list of connections"), ("passes", list, "a list"),
              ("meta", dict, "an object"))
_SPEC_OPTIONAL = ("meta",)


def _is(v, types) -> bool:
    """isinstance for JSON values: a bool is not a number; a list of ints stays a list."""
    return isinstance(v, types) and not isinstance(v, bool)


def _from_json(cls, d, where: str):
    """A Population / Connection from its JSON object, each key checked against the
    dataclass field's type; unknown and missing keys are refused by name."""
    if not isinstance(d, dict):
        raise EdgekitError(f"{where} is {repr(d)[:40]}", expected="a JSON object",
                           fix="recompile the network")
    fs = {f.name: f for f in fields(cls)}
    for k in d:
        if k not in fs:
            raise EdgekitError(f"{where} has an unknown key '{k}'", expected=", ".join(fs),
                               fix="recompile the network")
    for name, f in fs.items():
        if name not in d:
            if f.default is MISSING and f.default_factory is MISSING:
                raise EdgekitError(f"{where} has no '{name}'", expected=_JSON_TYPES[f.type][1],
                                   fix="recompile the network")
            continue
        types, words = _JSON_TYPES[f.type]
        if not _is(d[name], types):
            raise EdgekitError(f"{where} key '{name}' is {repr(d[name])[:40]}", expected=words,
                               fix="recompile the network")
    return cls(**d)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def sign_mode_of(W: np.ndarray) -> str:
    """Lava's inference of the sign mode (lava.utils.weightutils.determine_sign_mode)."""
    if np.all(W >= 0):
        return "excitatory"
    if np.all(W <= 0):
        return "inhibitory"
    return "mixed"


def lava_effective_weights(W: np.ndarray, sign_mode: str, num_weight_bits: int) -> np.ndarray:
    """What Lava's bit-accurate Dense does to its weights on the first step.

    clip to 8 bits for the sign mode ([-256, 255] mixed, [0, 255] excitatory, [-255, 0]
    inhibitory), then drop ``8 - num_weight_bits + mixed`` low bits of the magnitude
    (inhibitory weights are negated, truncated by arithmetic shift, negated back).
    """
    W = np.asarray(W).astype(np.int64)
    mixed = int(sign_mode == "mixed")
    inh = sign_mode == "inhibitory"
    if inh:
        W = -W
    W = np.clip(W, -256 * mixed, 255)
    nt = 8 - int(num_weight_bits) + mixed
    W = (W >> nt) << nt
    if inh:
        W = -W
    return W.astype(np.int32)


def dequantized_twin(W: np.ndarray, weight_exp: int) -> np.ndarray:
    """Float weights in v units equal to the fixed-point ones: W * 2**weight_exp * 64."""
    return (W.astype(np.float64) * 2.0 ** weight_exp * 64.0).astype(np.float32)
