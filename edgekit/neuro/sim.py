"""edgekit's own simulator: bit-exact with Lava's ``fixed_pt`` LIF + Dense, batched, event-driven.

Shapes (legend in ``edgekit/neuro/__init__.py``): a run takes input spikes ``(B, T, n_in)``
and returns per population ``spikes (B, T, N)`` and, if asked, ``u``/``v (B, T, N)``.

Fixed-point arithmetic, per step t (lava-nc 0.10.0 ``PyLifModelBitAcc`` and
``PyDenseModelBitAcc``; RECIPES.md "Lava's fixed-point LIF and Dense")::

    Dense c:  a_c[t]   = int32( floor((W_c @ s_src[t-1]) * 2**weight_exp) )   # one step late
    LIF:      a_in[t]  = int32( sum_c a_c[t] )                                 # int32 channel
              u[t]     = trunc0(u[t-1] * (4096 - du - 1) / 4096) + int32(a_in << 6)
              u[t]     = u - 2**24 if u > 2**23 else (u + 2**24 if u <= -2**23 else u)  # ONE wrap
              v[t]     = clip(trunc0(v[t-1] * (4096 - dv) / 4096) + u + (bias_mant << bias_exp),
                              -(2**23 - 1), 2**23 - 1)
              s[t]     = v > (vth << 6);   v[s] = 0     # u is never reset

How it is fast:

- integer state is kept in float64 arrays: every value is an integer below 2**36, so
  products, divisions by 4096 and ``trunc`` are exact; no int64 temporaries.
- a connection only touches the rows of inputs that spiked somewhere in the batch
  (event-driven: silent inputs cost nothing), in float32 when the largest possible
  partial sum stays below 2**24 (then float32 sums of integers are exact in any order),
  in float64 otherwise.
- B independent streams advance together, so each step's numpy calls cover B*N values.
- Lava keeps u, v, a_in in int32 and lets them wrap; that can only matter when the
  largest possible input (64 * max |a_in|) exceeds 2**24. Only such populations take the
  slow path, which wraps every int32 operation exactly as numpy does in Lava.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.neuro.compiled import CompiledNetwork, lava_effective_weights

MODES = ("fixed", "float")
_U_MAX = float(2 ** 23)        # Lava max_uv_val
_WRAP = float(2 ** 24)
_V_LIM = float(2 ** 23 - 1)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap of integer-valued float64 (or int64) values."""
    return np.mod(x + 2.0 ** 31, 2.0 ** 32) - 2.0 ** 31


@dataclass
class Counters:
    """Event counts of a run (summed over the batch): what the energy estimate uses."""

    steps: int = 0
    batch: int = 0
    spikes: dict = field(default_factory=dict)          # population name -> count
    synaptic_ops: int = 0                               # weight lookups: sum over events of fan-out
    neuron_updates: int = 0                             # population size x steps x batch
    input_spikes: int = 0

    def as_dict(self) -> dict:
        return {"steps": self.steps, "batch": self.batch, "spikes": dict(self.spikes),
                "total_spikes": int(sum(self.spikes.values())),
                "input_spikes": self.input_spikes, "synaptic_ops": self.synaptic_ops,
                "neuron_updates": self.neuron_updates}


@dataclass
class SimResult:
    spikes: list            # per population (B, T, N) bool
    u: list | None
    v: list | None
    counters: Counters
    mode: str

    def output_counts(self, net: CompiledNetwork) -> np.ndarray:
        """Spike counts of the (first) output population: (B, N)."""
        return self.spikes[net.outputs[0]].sum(axis=1)


class _ConnPlan:
    """Per-connection precomputation: transposed weights, exactness bounds, fan-outs."""

    def __init__(self, net: CompiledNetwork, c: int, mode: str) -> None:
        con = net.connections[c]
        self.src, self.dst = con.src, con.dst
        if mode == "fixed":
            # what Lava's Dense does to its weights on step 1 (idempotent on compiled W)
            W = lava_effective_weights(net.W(c), con.sign_mode,
                                       con.num_weight_bits).astype(np.int64)
            bound = int(np.abs(W).sum(axis=1).max(initial=0))         # max |row sum|
            self.dtype = np.float32 if bound < 2 ** 24 else np.float64
            self.WT = np.ascontiguousarray(W.T.astype(self.dtype))    # (n_src, n_dst)
            self.exp = int(con.weight_exp)
            self.scale = 2.0 ** self.exp
            self.out_bound = bound * self.scale                       # max |a_c|
        else:
            Wf = net.Wf(c).astype(np.float64)
            self.dtype = np.float32
            self.WT = np.ascontiguousarray(Wf.T.astype(np.float32))
            self.exp, self.scale, self.out_bound = 0, 1.0, 0.0
        self.fanout = (self.WT != 0).sum(axis=1).astype(np.int64)     # (n_src,)


class Simulator:
    """Steps a compiled network for B input streams at once.

    mode "fixed": bit-exact with Lava fixed_pt. mode "float": the float twin (same graph,
    same delays, float weights/decays/thresholds).
    """

    def __init__(self, net: CompiledNetwork, mode: str = "fixed") -> None:
        if mode not in MODES:
            raise EdgekitError(f"simulator mode '{mode}' is unknown", expected=" | ".join(MODES),
                               got=mode)
        self.net, self.mode = net, mode
        self.plans = [_ConnPlan(net, c, mode) for c in range(len(net.connections))]
        self.incoming = [[k for k, pl in enumerate(self.plans) if pl.dst == p]
                         for p in range(len(net.populations))]
        self.outgoing = {i: [k for k, pl in enumerate(self.plans) if pl.src == i]
                         for i in range(-1, len(net.populations))}
        pops = net.populations
        if mode == "fixed":
            self.cu = np.array([4096 - (p.du + 1) for p in pops], np.float64)
            self.cv = np.array([4096 - p.dv for p in pops], np.float64)
            self.vth = [float(np.left_shift(np.int64(p.vth), 6)) for p in pops]
            self.bias = []
            for i in range(len(pops)):
                bm, be = net.bias(i)
                bm, be = bm.astype(np.int64), be.astype(np.int64)
                eff = np.where(be >= 0, np.left_shift(bm, np.maximum(be, 0)),
                               np.right_shift(bm, np.maximum(-be, 0)))
                self.bias.append(eff.astype(np.float64))
            # can Lava's int32 ports wrap for this population? (see module docstring)
            self.slow = []
            for p in range(len(pops)):
                a_max = sum(self.plans[k].out_bound for k in self.incoming[p])
                # with A = 64 * a_max <= 2**24 the single wrap keeps |u| <= 2**23 + A, so no
                # int32 value can wrap; above that u drifts and Lava's int32 arithmetic shows
                self.slow.append(64 * a_max > 2 ** 24)
        else:
            self.vth = [float(p.vth_f) for p in pops]
            self.bias = [net.bias_f(i).astype(np.float64) for i in range(len(pops))]
            self.slow = [False] * len(pops)

    # -- input checks ----------------------------------------------------------------
    def _check_input(self, spikes: np.ndarray, steps: int | None) -> np.ndarray:
        x = np.asarray(spikes)
        if x.ndim == 2:
            x = x[None]
        n_in = self.net.n_in
        if x.ndim != 3 or x.shape[-1] != n_in:
            raise EdgekitError("input spikes have the wrong shape",
                               expected=f"(T, {n_in}) or (B, T, {n_in})", got=str(x.shape),
                               fix=f"give one column per network input ({n_in})")
        if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
            raise EdgekitError("input spikes are not numeric", got=str(x.dtype))
        if x.dtype != bool:
            if not np.all(np.isfinite(x)) or not np.all((x == 0) | (x == 1)):
                raise EdgekitError("input spikes must be 0 or 1",
                                   got=f"values in [{np.nanmin(x)}, {np.nanmax(x)}]",
                                   fix="binarize the input (rate-code it) first")
            x = x.astype(bool)
        T = x.shape[1]
        if steps is not None:
            if steps < 1 or steps > T:
                raise EdgekitError(f"--steps {steps} does not fit the input",
                                   expected=f"1 <= steps <= {T} (the input's time axis)",
                                   got=str(steps), fix="pass a longer input or fewer steps")
            x = x[:, :steps]
        return x

    # -- the run ---------------------------------------------------------------------
    def run(self, spikes: np.ndarray, steps: int | None = None, record_state: bool = False,
            record_spikes: bool = True) -> SimResult:
        """Run ``steps`` steps from rest. spikes: (T, n_in) or (B, T, n_in), 0/1."""
        x = self._check_input(spikes, steps)
        B, T, _ = x.shape
        net, fixed = self.net, self.mode == "fixed"
        P = len(net.populations)
        u = [np.zeros((B, p.n)) for p in net.populations]
        v = [np.zeros((B, p.n)) for p in net.populations]
        # Dense buffers: what each connection sends next step (a_buff in Lava)
        buf = [np.zeros((B, net.populations[pl.dst].n)) for pl in self.plans]
        rec_s = [np.zeros((B, T, p.n), bool) for p in net.populations] if record_spikes else None
        rec_u = [np.zeros((B, T, p.n)) for p in net.populations] if record_state else None
        rec_v = [np.zeros((B, T, p.n)) for p in net.populations] if record_state else None
        cnt = Counters(steps=T, batch=B, spikes={p.name: 0 for p in net.populations})
        cnt.neuron_updates = B * T * sum(p.n for p in net.populations)
        cnt.input_spikes = int(x.sum())
        synops = 0
        tmp = [np.empty((B, p.n)) for p in net.populations]
        last_spk = [None] * P
        for t in range(T):
            for p, pop in enumerate(net.populations):
                inc = self.incoming[p]
                if fixed:
                    if self.slow[p]:
                        a_in = np.zeros((B, pop.n))
                        for k in inc:
                            a_in = _wrap_int32(a_in + _wrap_int32(buf[k]))
                        act = _wrap_int32(a_in * 64.0)
                    else:
                        act = None
                        for k in inc:
                            act = buf[k] if act is None else act + buf[k]
                    up, vp, tp = u[p], v[p], tmp[p]
                    up *= self.cu[p]
                    up *= 1.0 / 4096.0
                    np.trunc(up, out=up)
                    if self.slow[p]:
                        up += act
                        up[:] = _wrap_int32(up)        # int32 `decayed_curr += a_in << 6`
                    elif act is not None:
                        up += act * 64.0
                    # one wrap, as Lava does (not a modulo)
                    np.greater(up, _U_MAX, out=tp)
                    if tp.any():
                        up -= tp * _WRAP
                    np.less_equal(up, -_U_MAX, out=tp)
                    if tp.any():
                        up += tp * _WRAP
                    vp *= self.cv[p]
                    vp *= 1.0 / 4096.0
                    np.trunc(vp, out=vp)
                    vp += up
                    if self.slow[p]:
                        vp[:] = _wrap_int32(vp)         # int32 `decayed_volt + u + bias`
                        vp += self.bias[p]
                        vp[:] = _wrap_int32(vp)
                    else:
                        vp += self.bias[p]
                    np.clip(vp, -_V_LIM, _V_LIM, out=vp)
                else:
                    up, vp = u[p], v[p]
                    up *= pop.decay_u
                    for k in inc:
                        up += buf[k]
                    vp *= pop.decay_v
                    vp += up
                    vp += self.bias[p]
                s = vp > self.vth[p]
                vp[s] = 0.0
                last_spk[p] = s
                if record_spikes:
                    rec_s[p][:, t] = s
                if record_state:
                    rec_u[p][:, t] = up
                    rec_v[p][:, t] = vp
            # Dense: compute next step's buffers from this step's spikes
            for k, pl in enumerate(self.plans):
                s = x[:, t] if pl.src < 0 else last_spk[pl.src]
                buf[k], ops = self._dense(pl, s, fixed)
                synops += ops
        for p, pop in enumerate(net.populations):
            cnt.spikes[pop.name] = int(rec_s[p].sum()) if record_spikes else 0
        cnt.synaptic_ops = int(synops)
        return SimResult(rec_s, rec_u, rec_v, cnt, self.mode)

    @staticmethod
    def _dense(pl: _ConnPlan, s: np.ndarray, fixed: bool) -> tuple[np.ndarray, int]:
        """Event-driven Dense: only rows of inputs that spiked (anywhere in the batch)."""
        B = s.shape[0]
        active = np.flatnonzero(s.any(axis=0))
        n_dst = pl.WT.shape[1]
        if active.size == 0:
            return np.zeros((B, n_dst)), 0
        ops = int((s[:, active].sum(axis=0) * pl.fanout[active]).sum())
        Wa = pl.WT[active]                                       # (A, n_dst)
        if B == 1:
            acc = Wa.sum(axis=0, dtype=pl.dtype)[None] if active.size > 1 else Wa[:1].copy()
        else:
            acc = s[:, active].astype(pl.dtype) @ Wa                 # (B, n_dst)
        acc = acc.astype(np.float64)
        if fixed and pl.exp != 0:
            acc *= pl.scale
            if pl.exp < 0:
                np.floor(acc, out=acc)                           # arithmetic right shift
        return acc, ops
