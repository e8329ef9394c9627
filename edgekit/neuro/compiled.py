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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError

FORMAT_VERSION = 1
SIGN_MODES = ("mixed", "excitatory", "inhibitory")


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
        for c, con in enumerate(self.connections):
            W = self.arrays.get(f"W_{c}")
            want = (self.populations[con.dst].n, self.pop_size(con.src))
            if W is None or W.shape != want:
                raise EdgekitError(f"connection '{con.name}' weights have the wrong shape",
                                   expected=str(want), got=None if W is None else str(W.shape),
                                   fix="recompile the network")
            if con.sign_mode not in SIGN_MODES:
                raise EdgekitError(f"connection '{con.name}' sign mode is unknown",
                                   expected=" | ".join(SIGN_MODES), got=con.sign_mode)
        for p, pop in enumerate(self.populations):
            for key in (f"bias_mant_{p}", f"bias_exp_{p}", f"bias_f_{p}"):
                if key not in self.arrays or self.arrays[key].shape != (pop.n,):
                    raise EdgekitError(f"population '{pop.name}' array '{key}' is missing or "
                                       f"mis-shaped", expected=f"({pop.n},)",
                                       fix="recompile the network")

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
    def load(cls, outdir: str | Path) -> "CompiledNetwork":
        outdir = Path(outdir)
        js, npz = outdir / "network.json", outdir / "network.npz"
        if not outdir.is_dir() or not js.exists() or not npz.exists():
            raise EdgekitError(f"'{outdir}' is not a compiled edgekit network",
                               expected="a folder with network.json and network.npz",
                               fix="run `edgekit neuro compile SRC -o OUTDIR` first")
        try:
            spec = json.loads(js.read_text())
            with np.load(npz) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise EdgekitError(f"compiled network in '{outdir}' cannot be read",
                               got=type(e).__name__, fix="recompile the network") from None
        if spec.get("format") != "edgekit.neuro.compiled" or spec.get("version") != FORMAT_VERSION:
            raise EdgekitError(f"'{js}' is not a compiled network of this edgekit version",
                               expected=f"format edgekit.neuro.compiled v{FORMAT_VERSION}",
                               got=f"{spec.get('format')} v{spec.get('version')}",
                               fix="recompile the network")
        return cls(spec["n_in"], [Population(**p) for p in spec["populations"]],
                   [Connection(**c) for c in spec["connections"]], arrays, dt=spec["dt"],
                   device=spec["device"], passes=spec["passes"], outputs=spec["outputs"],
                   meta=spec.get("meta", {}))


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
