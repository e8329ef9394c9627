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

import os
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.neuro.compiled import CompiledNetwork, lava_effective_weights

MODES = ("fixed", "float")
INT8_MIN_BATCH = 16             # below this, the row gather beats a GEMM call
_U_MAX = float(2 ** 23)        # Lava max_uv_val
_WRAP = float(2 ** 24)
_V_LIM = float(2 ** 23 - 1)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap of integer-valued float64 values (x itself if in range)."""
    if x.size == 0 or (x.max() < 2.0 ** 31 and x.min() >= -2.0 ** 31):
        return x
    return np.mod(x + 2.0 ** 31, 2.0 ** 32) - 2.0 ** 31


def _wrap_into(x: np.ndarray) -> None:
    w = _wrap_int32(x)
    if w is not x:
        x[:] = w


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
            # int8 path: W = m * 2**nt with an int8 mantissa m, and exact int32 sums
            nt = 8 - con.num_weight_bits + int(con.sign_mode == "mixed")
            m = W >> nt
            self.int8 = None
            if bound < 2 ** 24 and m.min(initial=0) >= -128 and m.max(initial=0) <= 127:
                self.int8 = (np.ascontiguousarray(m.astype(np.int8)), float(2 ** nt))
        else:
            self.int8 = None
            Wf = net.Wf(c).astype(np.float64)
            self.dtype = np.float32
            self.WT = np.ascontiguousarray(Wf.T.astype(np.float32))
            self.exp, self.scale, self.out_bound = 0, 1.0, 0.0
        self.fanout = (self.WT != 0).sum(axis=1).astype(np.int64)     # (n_src,)
        self.fanout_f = self.fanout.astype(self.dtype)
        self._packed = None

    def int8_matmul(self, s: np.ndarray) -> np.ndarray | None:
        """(B, n_src) bool @ W.T through oneDNN's int8 GEMM (exact int32 accumulation, AMX /
        VNNI where the CPU has them); None where torch or the op is unavailable."""
        if self.int8 is None:
            return None
        try:
            import torch
            if self._packed is None:
                m, sc = self.int8
                n_dst = m.shape[0]
                self._packed = (torch.ops.onednn.qlinear_prepack(torch.from_numpy(m),
                                                                 [s.shape[0], m.shape[1]]),
                                torch.full((n_dst,), sc, dtype=torch.float32),
                                torch.zeros(n_dst, dtype=torch.int32))
            w, ws, wz = self._packed
            x = torch.from_numpy(np.ascontiguousarray(s).view(np.uint8))
            out = torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, w, ws, wz, None, 1.0, 0,
                                                     torch.float32, "none", [], "")
            return out.numpy()
        except Exception:  # no torch, no oneDNN int8 kernel: use the float path for good
            self.int8 = None
            return None


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
            # (4096 - du - 1) / 4096 is a 12-bit binary fraction, so u * frac is exact in float64
            self.cu_frac = [(4096 - (p.du + 1)) / 4096 for p in pops]
            self.cv_frac = [(4096 - p.dv) / 4096 for p in pops]
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
        self.has_bias = [bool(np.any(b)) for b in self.bias]

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
            record_spikes: bool = True, threads: int | None = None) -> SimResult:
        """Run ``steps`` steps from rest. spikes: (T, n_in) or (B, T, n_in), 0/1.

        Large batches are split over ``threads`` worker threads (default: the CPU count, at
        most 8); numpy and BLAS release the GIL, and streams are independent, so results do
        not depend on the split.
        """
        x = self._check_input(spikes, steps)
        B, T, _ = x.shape
        n_thr = threads or min(os.cpu_count() or 1, 8)
        work = B * sum(p.n for p in self.net.populations)
        n_thr = max(1, min(n_thr, B, work // 32768))            # small runs: one thread
        from threadpoolctl import threadpool_limits

        # one BLAS/OpenMP thread per worker: parallelism comes from splitting the batch
        # (library thread pools spin badly when the machine is busy)
        with threadpool_limits(limits=1):
            if n_thr == 1:
                parts = [self._run_chunk(x, record_state, record_spikes)]
            else:
                from concurrent.futures import ThreadPoolExecutor
                bounds = np.linspace(0, B, n_thr + 1).astype(int)
                with ThreadPoolExecutor(n_thr) as ex:
                    parts = list(ex.map(lambda ab: self._run_chunk(
                        x[ab[0]:ab[1]], record_state, record_spikes),
                        zip(bounds[:-1], bounds[1:])))
        cat = (lambda k: [np.concatenate([pt[k][p] for pt in parts]) for p in
                          range(len(self.net.populations))])
        cnt = Counters(steps=T, batch=B, input_spikes=int(x.sum()),
                       neuron_updates=B * T * sum(p.n for p in self.net.populations),
                       synaptic_ops=int(sum(pt[3] for pt in parts)),
                       spikes={pop.name: int(sum(pt[4][i] for pt in parts))
                               for i, pop in enumerate(self.net.populations)})
        return SimResult(cat(0) if record_spikes else None, cat(1) if record_state else None,
                         cat(2) if record_state else None, cnt, self.mode)

    def _run_chunk(self, x: np.ndarray, record_state: bool, record_spikes: bool):
        """x (B, T, n_in) bool -> (spikes, u, v, synaptic ops, spike counts)."""
        B, T, _ = x.shape
        net, fixed = self.net, self.mode == "fixed"
        pops = net.populations
        u = [np.zeros((B, p.n)) for p in pops]
        v = [np.zeros((B, p.n)) for p in pops]
        # Dense buffers: what each connection sends next step (a_buff in Lava); in the fast
        # fixed path they are already multiplied by 64 (Lava's `a_in << 6`)
        buf = [None] * len(self.plans)
        rec_s = [np.zeros((B, T, p.n), bool) for p in pops] if record_spikes else None
        rec_u = [np.zeros((B, T, p.n)) for p in pops] if record_state else None
        rec_v = [np.zeros((B, T, p.n)) for p in pops] if record_state else None
        n_spk = [0] * len(pops)
        synops = 0
        last_spk = [None] * len(pops)
        for t in range(T):
            for p, pop in enumerate(pops):
                up, vp = u[p], v[p]
                inc = [buf[k] for k in self.incoming[p] if buf[k] is not None]
                if fixed:
                    slow = self.slow[p]
                    up *= self.cu_frac[p]                  # exact: u * cu / 4096
                    np.trunc(up, out=up)                   # round toward zero
                    if slow:
                        a_in = np.zeros((B, pop.n))
                        for a in inc:                      # int32 channel, int32 sum
                            a_in = _wrap_int32(a_in + _wrap_int32(a))
                        up += _wrap_int32(a_in * 64.0)     # int32 `a_in << 6`
                        _wrap_into(up)                     # int32 `decayed_curr += ...`
                    else:
                        for a in inc:
                            up += a
                    # ONE wrap, as Lava does (not a modulo)
                    if up.max(initial=0.0) > _U_MAX:
                        up -= (up > _U_MAX) * _WRAP
                    if up.min(initial=0.0) <= -_U_MAX:
                        up += (up <= -_U_MAX) * _WRAP
                    vp *= self.cv_frac[p]
                    np.trunc(vp, out=vp)
                    vp += up
                    if slow:
                        _wrap_into(vp)                     # int32 `decayed_volt + u + bias`
                        vp += self.bias[p]
                        _wrap_into(vp)
                    elif self.has_bias[p]:
                        vp += self.bias[p]
                    np.clip(vp, -_V_LIM, _V_LIM, out=vp)
                else:
                    up *= pop.decay_u
                    for a in inc:
                        up += a
                    vp *= pop.decay_v
                    vp += up
                    if self.has_bias[p]:
                        vp += self.bias[p]
                s = vp > self.vth[p]
                np.copyto(vp, 0.0, where=s)                # reset v (u is never reset)
                last_spk[p] = s
                if record_spikes:
                    rec_s[p][:, t] = s
                else:
                    n_spk[p] += int(np.count_nonzero(s))
                if record_state:
                    rec_u[p][:, t] = up
                    rec_v[p][:, t] = vp
            # Dense: next step's buffers from this step's spikes (one step of delay)
            for k, pl in enumerate(self.plans):
                s = x[:, t] if pl.src < 0 else last_spk[pl.src]
                buf[k], ops = self._dense(pl, s, fixed and not self.slow[pl.dst])
                synops += ops
        if record_spikes:
            n_spk = [int(np.count_nonzero(r)) for r in rec_s]
        return rec_s, rec_u, rec_v, synops, n_spk

    @staticmethod
    def _dense(pl: _ConnPlan, s: np.ndarray, times64: bool) -> tuple[np.ndarray | None, int]:
        """Event-driven Dense: only the rows of inputs that spiked (anywhere in the batch).

        s (B, n_src) bool -> (B, n_dst) float64 or None when nothing spiked. Fixed point:
        ``floor(acc * 2**weight_exp)`` (Lava's shifts), times 64 when ``times64``.
        """
        B = s.shape[0]
        active = np.flatnonzero(s.any(axis=0))
        if active.size == 0:
            return None, 0
        acc = None
        if B >= INT8_MIN_BATCH and pl.int8 is not None:   # batched: exact int8 GEMM
            acc = pl.int8_matmul(s)
            if acc is not None:
                ops = int(np.count_nonzero(s, axis=0) @ pl.fanout)
        if acc is not None:
            pass
        elif active.size * 2 > s.shape[1]:                  # most inputs active: no gather
            sf = s.astype(pl.dtype)
            ops = int(sf.sum(axis=0) @ pl.fanout_f)
            acc = sf @ pl.WT
        elif B == 1:
            ops = int(pl.fanout[active].sum())
            acc = pl.WT[active].sum(axis=0, dtype=pl.dtype)[None]
        else:
            sf = s[:, active].astype(pl.dtype)             # (B, A)
            ops = int(sf.sum(axis=0) @ pl.fanout_f[active])
            acc = sf @ pl.WT[active]                       # (B, A) @ (A, n_dst)
        acc = acc.astype(np.float64)
        if pl.exp < 0:
            acc *= pl.scale
            np.floor(acc, out=acc)                         # arithmetic right shift
            if times64:
                acc *= 64.0
        elif pl.exp > 0 or times64:
            acc *= pl.scale * (64.0 if times64 else 1.0)
        return acc, ops
