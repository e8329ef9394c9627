"""Compiler passes: lower -> discretize(dt) -> quantize(device) -> map(device).

Each pass is a named function that returns its result and a record of the choices it made;
``compile_graph`` runs them in order and stores every record in the compiled network
(``network.json`` -> ``passes``) and in ``report.json``.

Shapes: W (n_dst, n_src); per-population vectors (n,). Units: see graph.py (source units)
and compiled.py (Loihi v units = source units x the population's ``scale``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.neuro import graph as G
from edgekit.neuro.compiled import CompiledNetwork, Connection, Population, sign_mode_of
from edgekit.neuro.device import NeuroDevice

WEIGHT_NODES = (G.Affine, G.Linear, G.Scale, G.Flatten)
DEFAULT_TAU_TOL = 0.10
# A composed connection is a dense float64 (n_dst, n_src) matrix. 2**27 weights (1 GiB) is
# 8x the dense synapses of a whole loihi2 chip (128 cores x 128 KiB at 8 bits): lower
# refuses anything larger before allocating it.
MAX_DENSE_WEIGHTS = 1 << 27


# ---------------------------------------------------------------------------------------
# lower: graph -> populations + composed weight paths
# ---------------------------------------------------------------------------------------
@dataclass
class _Stage:
    name: str
    node: G.Node
    n: int = 0
    inputs: list = field(default_factory=list)      # [(src pop index or -1, M (n, n_src), b (n,))]


def lower(graph: G.SNNGraph) -> tuple[list[_Stage], int, list[int], dict]:
    """Find the neuron populations and the weight paths between them.

    A chain of Affine / Linear / Scale / Flatten nodes between two neuron nodes (or from
    the Input) becomes one connection: its matrices are multiplied, its biases carried.
    """
    graph.validate()
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, G.Input)]
    if len(inputs) != 1:
        raise EdgekitError("the graph must have exactly one Input node", got=str(len(inputs)),
                           fix="merge the inputs into one")
    inp = inputs[0]
    n_in = graph.nodes[inp].size
    for name, node in graph.nodes.items():
        if not isinstance(node, (G.Input, G.Output, *WEIGHT_NODES)) and not node.neuron:
            raise EdgekitError(f"node '{name}' has unsupported kind {node.kind}")
    # populations in breadth-first order from the input
    order, seen, queue = [], {inp}, [inp]
    while queue:
        cur = queue.pop(0)
        for nxt in graph.successors(cur):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
                if graph.nodes[nxt].neuron:
                    order.append(nxt)
    if not order:
        raise EdgekitError("the graph has no neuron node reachable from its Input",
                           expected="at least one LIF, CubaLIF, IF or LI", fix="add neurons")
    index = {name: i for i, name in enumerate(order)}
    stages = [_Stage(name, graph.nodes[name]) for name in order]

    def paths(name: str, depth: int = 0):
        """[(src_name, M, b)] of the linear map from a neuron/Input to `name`'s output."""
        if depth > 64:
            raise EdgekitError(f"the weight nodes around '{name}' form a loop without a neuron",
                               fix="every cycle must pass through a neuron node")
        node = graph.nodes[name]
        if isinstance(node, G.Input) or node.neuron:
            return [(name, None, None)]
        preds = graph.predecessors(name)
        if not preds:
            raise EdgekitError(f"node '{name}' ({node.kind}) has no input edge",
                               fix="connect it or remove it")
        out = []
        for p in preds:
            for src, M, b in paths(p, depth + 1):
                n_src = size_of(src)
                if isinstance(node, (G.Affine, G.Linear)):
                    W = np.atleast_2d(node.weight)
                    rows = n_src if M is None else M.shape[0]
                    if W.shape[1] != rows:
                        raise EdgekitError(f"node '{name}' weight does not fit its input",
                                           expected=f"(*, {rows})", got=str(W.shape))
                    if M is None:                  # W @ I = W exactly: no n_src^2 identity
                        M, b = W, np.zeros(W.shape[0])
                    else:
                        _check_dense(name, W.shape[0], M.shape[1])
                        M, b = W @ M, W @ b
                    if isinstance(node, G.Affine):
                        if np.size(node.bias) not in (1, W.shape[0]):
                            raise EdgekitError(f"node '{name}' bias does not fit its weight",
                                               expected=f"({W.shape[0]},)",
                                               got=str(np.shape(node.bias)))
                        b = b + node.bias
                else:
                    if M is None:
                        _check_dense(name, n_src, n_src)
                        M, b = np.eye(n_src), np.zeros(n_src)
                    if isinstance(node, G.Scale):
                        if np.size(node.scale) not in (1, M.shape[0]):
                            raise EdgekitError(f"node '{name}' scale does not fit its input",
                                               expected=f"({M.shape[0]},)",
                                               got=str(np.shape(node.scale)))
                        s = np.broadcast_to(node.scale, (M.shape[0],))
                        M, b = s[:, None] * M, s * b
                out.append((src, M, b))
        return out

    sizes: dict[str, int] = {inp: n_in}

    def size_of(name: str) -> int:
        if name not in sizes:
            raise EdgekitError(f"population '{name}' is used before its size is known",
                               fix="give the network a feed-forward path to every population")
        return sizes[name]

    # sizes: walk populations in order; a population's size is its incoming map's rows
    for st in stages:
        preds = graph.predecessors(st.name)
        if not preds:
            raise EdgekitError(f"neuron node '{st.name}' has no input", fix="connect it")
        entries = []
        for p in preds:
            try:
                entries += paths(p)
            except EdgekitError:
                raise
        ff = [(s, M, b) for s, M, b in entries if s in sizes]
        if not ff:
            raise EdgekitError(f"population '{st.name}' is fed only by later populations",
                               fix="give it a feed-forward input")
        n = _neuron_size(st.node, ff)
        sizes[st.name] = n
        st.n = n
    for st in stages:
        for p in graph.predecessors(st.name):
            for src, M, b in paths(p):
                n_src = sizes[src]
                if M is None:
                    _check_dense(st.name, n_src, n_src)
                    M, b = np.eye(n_src), np.zeros(n_src)
                if M.shape != (st.n, n_src):
                    raise EdgekitError(f"connection {src} -> {st.name} has the wrong shape",
                                       expected=f"({st.n}, {n_src})", got=str(M.shape))
                st.inputs.append((-1 if src == inp else index[src], M, b))
    outputs = []
    for name, node in graph.nodes.items():
        if isinstance(node, G.Output):
            for p in graph.predecessors(name):
                if p not in index:
                    raise EdgekitError(f"Output '{name}' is fed by '{p}' "
                                       f"({graph.nodes[p].kind}), not by a neuron node",
                                       expected="Output <- LIF | CubaLIF | IF | LI",
                                       fix="end the network with a neuron layer")
                outputs.append(index[p])
    if not outputs:
        outputs = [len(stages) - 1]
    rec = {"name": "lower", "input": inp, "n_in": n_in,
           "populations": [{"name": s.name, "kind": s.node.kind, "n": s.n} for s in stages],
           "outputs": outputs}
    return stages, n_in, outputs, rec


def _check_dense(name: str, rows: int, cols: int) -> None:
    """Refuse, before allocating it, a composed weight matrix larger than MAX_DENSE_WEIGHTS
    (a forged Input shape or a chain of Linear nodes that multiplies out to n^2)."""
    if rows * cols > MAX_DENSE_WEIGHTS:
        raise EdgekitError(f"the weights into '{name}' would form a dense {rows} x {cols} "
                           f"matrix", expected=f"at most {MAX_DENSE_WEIGHTS:,} weights per "
                           "connection", got=f"{rows * cols:,}",
                           fix="check the Input and Flatten shapes: a network that large maps "
                               "to no edgekit device")


def _neuron_size(node: G.Node, entries) -> int:
    rows = {M.shape[0] if M is not None else None for _, M, _ in entries}
    rows.discard(None)
    lens = {np.size(getattr(node, f)) for f in node.arrays if getattr(node, f) is not None}
    lens.discard(1)
    cand = rows | lens
    if len(cand) != 1:
        raise EdgekitError(f"{node.kind} node sizes disagree", expected="one size",
                           got=str(sorted(cand)) if cand else "none",
                           fix="check weight and parameter shapes")
    return cand.pop()


# ---------------------------------------------------------------------------------------
# discretize(dt): continuous time constants -> per-step decays and gains
# ---------------------------------------------------------------------------------------
@dataclass
class FloatPop:
    name: str
    kind: str
    n: int
    decay_u: float
    decay_v: float
    du: int
    dv: int
    vth_f: float
    bias_f: np.ndarray


def _decay(tau: float, dt: float, integrator: str) -> float:
    if math.isinf(tau):
        return 1.0
    return math.exp(-dt / tau) if integrator == "exact" else 1.0 - dt / tau


def _uniform(node_name: str, what: str, arr, n: int) -> float:
    a = np.broadcast_to(np.asarray(arr, float), (n,))
    if not np.allclose(a, a[0], rtol=1e-6, atol=0):
        raise EdgekitError(f"population '{node_name}' has {len(np.unique(a))} different "
                           f"'{what}' values", expected="one value per population (Loihi's du, dv "
                           "are per-population registers)", got=f"{a.min():g}..{a.max():g}",
                           fix="use one time constant per layer")
    return float(a[0])


def _check_tau(pop: str, what: str, tau: float, a: float, a_eff: float, dt: float,
               integrator: str, tol: float) -> float:
    """Relative error of the representable time constant; refuse if above tol."""
    if tau <= 0:
        raise EdgekitError(f"population '{pop}' {what} must be positive", got=f"{tau:g} s",
                           fix="fix the model")
    if integrator == "euler" and a < 0:
        raise EdgekitError(f"population '{pop}' {what} = {tau:g} s is shorter than dt",
                           expected=f"tau >= dt = {dt:g} s with the Euler integrator",
                           got=f"{tau:g} s", fix="use a smaller --dt")
    if a_eff >= 1.0 and a < 1.0:
        raise EdgekitError(f"population '{pop}' {what} = {tau:g} s is not representable at "
                           f"dt = {dt:g} s", expected=f"tau below ~{8192 * dt:g} s (12-bit decay)",
                           got="a decay that rounds to 'no leak'",
                           fix="use a larger --dt or a shorter time constant")
    if a < 2 / 4096 and a_eff < 2 / 4096:
        return 0.0                       # both forget everything within one step
    if a >= 1.0:
        return 0.0
    to_tau = (lambda x: -dt / math.log(x) if x > 0 else 0.0) if integrator == "exact" else \
        (lambda x: dt / (1 - x))
    t_eff = to_tau(a_eff)
    err = abs(t_eff - tau) / tau
    if err > tol:
        raise EdgekitError(f"population '{pop}' {what} = {tau:g} s is not representable at "
                           f"dt = {dt:g} s", expected=f"relative error <= {tol:g}",
                           got=f"nearest 12-bit decay gives {t_eff:g} s ({err:.0%} off)",
                           fix="change --dt (12-bit decays resolve tau well up to ~400*dt) or "
                               "raise the tolerance")
    return err


def discretize(stages: list[_Stage], dt: float, integrator: str = "exact",
               tau_tol: float = DEFAULT_TAU_TOL):
    """Per-step decays, 12-bit du/dv, and gains folded into the weights.

    Exact (zero-order hold) mapping, RECIPES.md: decay a = exp(-dt/tau),
    ``dv = round(4096 (1 - a_mem))``, ``du = round(4096 (1 - a_syn)) - 1`` (Lava adds 1 to
    du). Euler (snnTorch's convention): a = 1 - dt/tau. The input gain of a state with
    decay a is (1 - a) x its input scale (r, w_in), so that CubaLIF becomes Loihi's::

        u[t] = a_syn u[t-1] + g_v g_u W s[t-1]        g_u = (1 - a_syn) w_in, g_v = (1 - a_mem) r
        v[t] = a_mem v[t-1] + u[t] + (1 - a_mem) v_leak + g_v * (affine bias)

    LIF has no synaptic state (a_syn = 0, du = 4095); IF has no leak (a_mem = 1, dv = 0,
    g_v = r dt); LI never spikes. Per-neuron thresholds are equalised by scaling each
    neuron's weights and bias by theta_ref / theta_j (exact: the dynamics are linear and
    reset to 0). v_reset must be 0 (Loihi resets v to 0).
    """
    if not (dt and np.isfinite(dt) and dt > 0):
        raise EdgekitError("dt must be a positive number of seconds", got=str(dt),
                           fix="pass --dt")
    pops, conns, recs = [], [], []
    for i, st in enumerate(stages):
        node, n, nm = st.node, st.n, st.name
        rec = {"population": nm, "kind": node.kind, "n": n}
        if isinstance(node, G.CubaLIF):
            tau_u = _uniform(nm, "tau_syn", node.tau_syn, n)
            tau_v = _uniform(nm, "tau_mem", node.tau_mem, n)
            a_u, a_v = _decay(tau_u, dt, integrator), _decay(tau_v, dt, integrator)
            g_u = (1 - a_u) * np.broadcast_to(node.w_in, (n,)) if integrator == "exact" else \
                dt / tau_u * np.broadcast_to(node.w_in, (n,))
            g_v = ((1 - a_v) if integrator == "exact" else dt / tau_v) * \
                np.broadcast_to(node.r, (n,))
            rec.update(tau_syn=tau_u, tau_mem=tau_v)
        elif isinstance(node, (G.LIF, G.LI)):
            tau_v = _uniform(nm, "tau", node.tau, n)
            tau_u, a_u, g_u = 0.0, 0.0, np.ones(n)
            a_v = _decay(tau_v, dt, integrator)
            g_v = ((1 - a_v) if integrator == "exact" else dt / tau_v) * \
                np.broadcast_to(node.r, (n,))
            rec.update(tau_mem=tau_v)
        elif isinstance(node, G.IF):
            tau_u, a_u, g_u, a_v, tau_v = 0.0, 0.0, np.ones(n), 1.0, math.inf
            g_v = dt * np.broadcast_to(node.r, (n,))
        else:  # pragma: no cover
            raise EdgekitError(f"node '{nm}' kind {node.kind} is not a neuron")
        # 12-bit decays
        du = 4095 if a_u == 0.0 else int(round(4096 * (1 - a_u))) - 1
        dv = int(round(4096 * (1 - a_v)))
        if du < 0:
            raise EdgekitError(f"population '{nm}' tau_syn = {tau_u:g} s is not representable "
                               f"at dt = {dt:g} s", expected=f"tau_syn below ~{8192 * dt:g} s",
                               got="a decay that rounds to 'no leak'",
                               fix="use a larger --dt or a shorter time constant")
        du, dv = min(du, 4095), min(dv, 4095)
        a_u_eff, a_v_eff = (4095 - du) / 4096, (4096 - dv) / 4096
        rec["tau_syn_rel_err"] = 0.0 if a_u == 0.0 else _check_tau(
            nm, "tau_syn", tau_u, a_u, a_u_eff, dt, integrator, tau_tol)
        rec["tau_mem_rel_err"] = 0.0 if a_v == 1.0 else _check_tau(
            nm, "tau_mem", tau_v, a_v, a_v_eff, dt, integrator, tau_tol)
        # bias: leak target and affine biases
        bias = np.zeros(n)
        if isinstance(node, (G.LIF, G.LI, G.CubaLIF)):
            bias += (1 - a_v) * np.broadcast_to(node.v_leak, (n,))
        cuba_bias = False
        for src, M, b in st.inputs:
            if np.any(b != 0):
                if isinstance(node, G.CubaLIF):
                    # constant input current b: the synapse settles at g_u b / (1 - a_syn)
                    bias += g_v * g_u * b / max(1 - a_u, 1e-12)
                    cuba_bias = True
                else:
                    bias += g_v * g_u * b
        if cuba_bias:
            rec["affine_bias"] = "folded into v as the synapse's steady state (transient differs)"
        # threshold
        if isinstance(node, G.LI):
            theta = np.full(n, np.inf)
        else:
            theta = np.broadcast_to(node.v_threshold, (n,)).astype(float)
            reset = np.broadcast_to(node.v_reset, (n,))
            if np.any(reset != 0):
                raise EdgekitError(f"population '{nm}' has v_reset != 0", expected="v_reset = 0",
                                   got=f"{reset[reset != 0][0]:g}",
                                   fix="Loihi resets v to 0: shift v_leak/threshold so the reset "
                                       "is 0")
            if np.any(theta <= 0):
                raise EdgekitError(f"population '{nm}' has a non-positive threshold",
                                   expected="v_threshold > 0", got=f"{theta.min():g}",
                                   fix="Loihi thresholds are unsigned")
        theta_ref = float(theta.max()) if np.all(np.isfinite(theta)) else math.inf
        row = (g_v * g_u) * (theta_ref / theta if math.isfinite(theta_ref) else 1.0)
        if math.isfinite(theta_ref):
            bias = bias * theta_ref / theta
            rec["threshold_normalised"] = bool(np.any(theta != theta_ref))
        for src, M, b in st.inputs:
            conns.append((src, i, row[:, None] * M))
        rec.update(decay_u=a_u, decay_v=a_v, du=du, dv=dv, vth=theta_ref,
                   gain_mean=float(np.mean(row)))
        pops.append(FloatPop(nm, node.kind, n, a_u, a_v, du, dv, theta_ref, bias))
        recs.append(rec)
    return pops, conns, {"name": "discretize", "dt": dt, "integrator": integrator,
                         "tau_tol": tau_tol, "populations": recs}


# ---------------------------------------------------------------------------------------
# quantize(device): float twin -> Loihi fixed point
# ---------------------------------------------------------------------------------------
def _quantize_weights(T: np.ndarray, mode: str, nwb: int, erange: tuple[int, int]):
    """Best shared exponent for target integer weights T (a_in units). Returns W, e, info."""
    mixed = int(mode == "mixed")
    nt = 8 - nwb + mixed
    step = 2 ** nt
    hi = (255 >> nt) << nt
    lo = -((256 >> nt) << nt) if mixed else 0
    if mode == "inhibitory":
        lo, hi = -hi, 0
    best = None
    for e in range(erange[0], erange[1] + 1):
        q = np.round(T / 2.0 ** e / step) * step
        clipped = int(np.count_nonzero((q > hi) | (q < lo)))
        Wq = np.clip(q, lo, hi)
        err = float(np.sum((Wq * 2.0 ** e - T) ** 2))
        if best is None or err < best[0] - 1e-12 * max(best[0], 1.0):
            best = (err, e, Wq.astype(np.int32), clipped)
    err, e, Wq, clipped = best
    return Wq, e, clipped, err


def quantize(pops: list[FloatPop], conns: list, n_in: int, dev: NeuroDevice,
             calibration: dict | None = None):
    """Per population a scale k (float v -> Loihi v units); per connection 8-bit mantissas,
    the shared weight exponent that minimises the squared error, and Lava's sign mode;
    thresholds (17-bit, used << 6) and biases (13-bit mantissa, exponent 0..7).

    k: the largest value that keeps the population's state (max |u|, |v| seen on the
    calibration data, or else the threshold) ``headroom_bits`` below the 24-bit range.
    """
    fp = dev.fixed_point
    nwb = int(fp["weight_bits"])
    erange = dev.weight_exp_range
    state_lim = 2.0 ** (int(fp["state_bits"]) - 1 - int(fp.get("headroom_bits", 1)))
    vth_max = 2 ** int(fp["vth_bits"]) - 1
    bm_max = 2 ** (int(fp["bias_mant_bits"]) - 1) - 1
    be_min, be_max = int(fp["bias_exp_min"]), int(fp["bias_exp_max"])
    shift = 2 ** int(fp["act_shift"])
    populations, connections, arrays = [], [], {}
    pop_recs, conn_recs = [], []
    scales = []
    for p, fpop in enumerate(pops):
        incoming = [W for (s, d, W) in conns if d == p]
        wmax = max((float(np.abs(W).max()) for W in incoming), default=0.0)
        if calibration and fpop.name in calibration:
            ref = max(calibration[fpop.name], fpop.vth_f if math.isfinite(fpop.vth_f) else 0)
            basis = "calibration"
        elif math.isfinite(fpop.vth_f):
            ref, basis = 4.0 * fpop.vth_f, "threshold x 4"
        else:
            ref, basis = max(wmax * 16, 1e-30), "largest weight x 16"
        k = state_lim / max(ref, 1e-30)
        if math.isfinite(fpop.vth_f):
            k = min(k, vth_max * shift / fpop.vth_f)
        scales.append(k)
        if math.isfinite(fpop.vth_f):
            vth = int(round(k * fpop.vth_f / shift))
            vth_clipped = vth > vth_max
            vth = min(max(vth, 0), vth_max)
        else:
            vth, vth_clipped = vth_max, False
        B = k * fpop.bias_f
        be = np.full(fpop.n, be_min, np.int64)
        for e in range(be_min, be_max + 1):
            need = np.abs(np.round(B / 2.0 ** be)) > bm_max
            be = np.where(need, e, be)
        bm = np.round(B / 2.0 ** be)
        b_clipped = int(np.count_nonzero(np.abs(bm) > bm_max))
        bm = np.clip(bm, -bm_max - 1, bm_max).astype(np.int64)
        arrays[f"bias_mant_{p}"], arrays[f"bias_exp_{p}"] = bm, be.astype(np.int64)
        arrays[f"bias_f_{p}"] = np.asarray(fpop.bias_f, np.float64)
        b_eff = bm * 2.0 ** be
        b_err = float(np.linalg.norm(b_eff - B) / np.linalg.norm(B)) if np.any(B) else 0.0
        populations.append(Population(fpop.name, fpop.n, du=fpop.du, dv=fpop.dv, vth=vth,
                                      decay_u=fpop.decay_u, decay_v=fpop.decay_v,
                                      vth_f=fpop.vth_f if math.isfinite(fpop.vth_f) else 1e300,
                                      kind=fpop.kind))
        pop_recs.append({"population": fpop.name, "scale": k, "scale_basis": basis,
                         "vth": vth, "vth_clipped": vth_clipped,
                         "vth_rel_err": (abs(vth * shift / k - fpop.vth_f) / fpop.vth_f
                                         if math.isfinite(fpop.vth_f) else None),
                         "bias_clipped": b_clipped, "bias_rel_rms_err": b_err})
    for c, (s, d, Wf) in enumerate(conns):
        k = scales[d]
        T = k * Wf / shift
        mode = sign_mode_of(Wf)
        Wq, e, clipped, err = _quantize_weights(T, mode, nwb, erange)
        Wdeq = Wq * 2.0 ** e * shift / k
        rel = float(np.linalg.norm(Wdeq - Wf) / np.linalg.norm(Wf)) if np.any(Wf) else 0.0
        name = f"{'input' if s < 0 else pops[s].name}->{pops[d].name}"
        connections.append(Connection(name, s, d, weight_exp=e, num_weight_bits=nwb,
                                      sign_mode=mode))
        arrays[f"W_{c}"] = Wq
        arrays[f"Wf_{c}"] = np.asarray(Wf, np.float32)
        conn_recs.append({"connection": name, "shape": list(Wf.shape), "sign_mode": mode,
                          "weight_exp": e, "num_weight_bits": nwb, "clipped_weights": clipped,
                          "weights": int(Wf.size), "nonzero": int(np.count_nonzero(Wq)),
                          "rel_rms_error": rel})
    net = CompiledNetwork(n_in, populations, connections, arrays, device=dev.name)
    return net, {"name": "quantize", "device": dev.name, "weight_bits": nwb,
                 "weight_exp_range": list(erange), "populations": pop_recs,
                 "connections": conn_recs}


# ---------------------------------------------------------------------------------------
# map(device): populations -> cores
# ---------------------------------------------------------------------------------------
def map_cores(net: CompiledNetwork, dev: NeuroDevice) -> dict:
    """Split each population into cores within the profile's limits; refuse what won't fit.

    Per core: at most ``neurons_per_core`` neurons, and the synapses of all its neurons'
    incoming connections (dense: n_src x neurons x num_weight_bits bits) within
    ``synapse_memory_bytes_per_core``. The whole network gets at most ``cores_per_chip``.
    Input spikes come from the host and take no neuromorphic core.
    """
    lim = dev.limits
    npc = int(lim["neurons_per_core"])
    mem = int(lim["synapse_memory_bytes_per_core"])
    cpc = int(lim["cores_per_chip"])
    cores, pop_recs = [], []
    total_neurons = sum(p.n for p in net.populations)
    if total_neurons > int(lim.get("neurons_per_chip", 1 << 62)):
        raise EdgekitError(f"the network has {total_neurons} neurons, more than the chip holds",
                           expected=f"<= neurons_per_chip = {lim['neurons_per_chip']} "
                                    f"({dev.name})", got=str(total_neurons),
                           fix="shrink the network")
    for p, pop in enumerate(net.populations):
        bits_per_neuron = sum(net.pop_size(c.src) * c.num_weight_bits
                              for c in net.connections if c.dst == p)
        per_core_mem = (mem * 8) // bits_per_neuron if bits_per_neuron else npc
        if per_core_mem < 1:
            raise EdgekitError(f"one neuron of '{pop.name}' needs {bits_per_neuron // 8} bytes "
                               f"of synapses", expected=f"<= synapse_memory_bytes_per_core = "
                               f"{mem} ({dev.name})", got=f"{bits_per_neuron // 8} bytes",
                               fix="reduce the fan-in of that layer")
        per_core = min(npc, per_core_mem)
        ranges = [[lo, min(lo + per_core, pop.n)] for lo in range(0, pop.n, per_core)]
        pop.cores = ranges
        for lo, hi in ranges:
            k = hi - lo
            cores.append({"population": pop.name, "neurons": [lo, hi],
                          "neuron_util": k / npc,
                          "synapse_bytes": k * bits_per_neuron // 8,
                          "synapse_util": k * bits_per_neuron / 8 / mem})
        pop_recs.append({"population": pop.name, "cores": len(ranges),
                         "neurons_per_core": per_core,
                         "limited_by": "neurons_per_core" if per_core == npc and
                         per_core_mem >= npc else "synapse_memory_bytes_per_core"})
    if len(cores) > cpc:
        raise EdgekitError(f"the network needs {len(cores)} cores, more than one {dev.name} chip",
                           expected=f"<= cores_per_chip = {cpc}", got=f"{len(cores)} cores",
                           fix="shrink the layers or lower their fan-in")
    return {"name": "map", "device": dev.name, "limits": {k: lim[k] for k in
            ("neurons_per_core", "synapse_memory_bytes_per_core", "cores_per_chip")},
            "cores_used": len(cores), "chip_util": len(cores) / cpc,
            "populations": pop_recs, "cores": cores}


# ---------------------------------------------------------------------------------------
def float_twin(stages, n_in, outputs, pops, conns, dt) -> CompiledNetwork:
    """The discretized float network as a CompiledNetwork (for calibration runs)."""
    populations = [Population(p.name, p.n, du=p.du, dv=p.dv, vth=0, decay_u=p.decay_u,
                              decay_v=p.decay_v, vth_f=p.vth_f if math.isfinite(p.vth_f) else 1e300,
                              kind=p.kind) for p in pops]
    arrays, connections = {}, []
    for c, (s, d, W) in enumerate(conns):
        arrays[f"W_{c}"] = np.zeros(W.shape, np.int32)
        arrays[f"Wf_{c}"] = np.asarray(W, np.float32)
        connections.append(Connection(f"c{c}", s, d, 0, 8, "mixed"))
    for i, p in enumerate(pops):
        arrays[f"bias_mant_{i}"] = np.zeros(p.n, np.int64)
        arrays[f"bias_exp_{i}"] = np.zeros(p.n, np.int64)
        arrays[f"bias_f_{i}"] = np.asarray(p.bias_f, np.float64)
    return CompiledNetwork(n_in, populations, connections, arrays, dt=dt, outputs=outputs)


def compile_graph(graph: G.SNNGraph, dev: NeuroDevice, *, dt: float | None = None,
                  calibration_spikes: np.ndarray | None = None,
                  tau_tol: float = DEFAULT_TAU_TOL) -> tuple[CompiledNetwork, dict]:
    """Run lower -> discretize -> quantize -> map. Returns the network and report.json."""
    from edgekit.neuro.sim import Simulator

    dt = dt if dt is not None else graph.metadata.get("dt")
    if dt is None:
        raise EdgekitError("the graph records no dt", fix="pass --dt SECONDS")
    integrator = graph.metadata.get("integrator", "exact")
    stages, n_in, outputs, rec_lower = lower(graph)
    pops, conns, rec_disc = discretize(stages, float(dt), integrator, tau_tol)
    rec_disc["dt_origin"] = graph.metadata.get("dt_origin", "graph")
    calib = None
    if calibration_spikes is not None:
        twin = float_twin(stages, n_in, outputs, pops, conns, dt)
        r = Simulator(twin, "float").run(calibration_spikes, record_state=True)
        calib = {p.name: float(max(np.abs(r.u[i]).max(), np.abs(r.v[i]).max()))
                 for i, p in enumerate(pops)}
    net, rec_q = quantize(pops, conns, n_in, dev, calib)
    rec_q["calibration"] = None if calib is None else {"samples": int(
        np.asarray(calibration_spikes).reshape(-1, *np.shape(calibration_spikes)[-2:]).shape[0]),
        "max_abs_state": calib}
    net.dt, net.outputs = float(dt), outputs
    rec_map = map_cores(net, dev)
    net.passes = [rec_lower, rec_disc, rec_q, rec_map]
    net.meta = {"source": graph.metadata.get("source"), "integrator": integrator,
                "dt_origin": graph.metadata.get("dt_origin")}
    report = {"device": dev.name, "device_profile": dev.path, "dt": float(dt),
              "integrator": integrator, "passes": net.passes}
    return net, report


def report_text(report: dict) -> str:
    """The readable report (report.txt)."""
    lines = [f"edgekit neuro compile report — device {report['device']}, dt = "
             f"{report['dt']:g} s, integrator {report['integrator']}", ""]
    by = {p["name"]: p for p in report["passes"]}
    d = by["discretize"]
    lines.append(f"[discretize] dt origin: {d.get('dt_origin')}")
    for p in d["populations"]:
        lines.append(f"  {p['population']:<16} {p['kind']:<8} n={p['n']:<6} du={p['du']:<5} "
                     f"dv={p['dv']:<5} tau err syn {p['tau_syn_rel_err']:.2%} "
                     f"mem {p['tau_mem_rel_err']:.2%}")
    q = by["quantize"]
    lines.append(f"[quantize] {q['weight_bits']}-bit weight mantissas, exponent range "
                 f"{q['weight_exp_range']}")
    for c in q["connections"]:
        lines.append(f"  {c['connection']:<28} {c['sign_mode']:<10} exp={c['weight_exp']:<3} "
                     f"clipped={c['clipped_weights']}/{c['weights']}  rel RMS err "
                     f"{c['rel_rms_error']:.3%}")
    for p in q["populations"]:
        lines.append(f"  {p['population']:<28} scale={p['scale']:.4g} ({p['scale_basis']}) "
                     f"vth={p['vth']} bias clipped={p['bias_clipped']}")
    m = by["map"]
    lines.append(f"[map] {m['cores_used']} of {m['limits']['cores_per_chip']} cores "
                 f"({m['chip_util']:.1%} of the chip)")
    for c in m["cores"]:
        lines.append(f"  core: {c['population']}[{c['neurons'][0]}:{c['neurons'][1]}]  neurons "
                     f"{c['neuron_util']:.1%}  synapse memory {c['synapse_util']:.1%}")
    return "\n".join(lines) + "\n"
