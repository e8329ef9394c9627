"""Runs a compiled edgekit network in Lava (``fixed_pt`` or ``floating_pt``), in the 3.10 side env.

This file is executed as a *script* by the Lava side environment (``.venv-lava``, Python
3.10, lava-nc 0.10.0): ``.venv-lava/bin/python _lava_worker.py REQUEST.json``. It must stay
Python-3.10 compatible and import only numpy and lava — never torch, never other edgekit
modules (importing the ``edgekit`` package would pull in the 3.11 side).

Protocol (files only, written by ``edgekit.neuro.lava_bridge``):

REQUEST.json::

    {"network": "net.npz",            # arrays, see below
     "spec": {...},                   # populations / connections / cores (json part)
     "input": "input.npz",            # key "spikes": (S, T, n_in) uint8 -- S samples
     "steps": T, "record": ["spikes", "u", "v"] | ["spikes"],
     "select_tag": "fixed_pt",
     "result": "result.npz"}

net.npz holds, per population p: ``bias_mant_p``, ``bias_exp_p`` (n_p,) and per connection
c: ``W_c`` (n_dst, n_src) int32, already clipped and truncated as Lava's Dense would.

The network is built as Lava processes: a RingBuffer source (all S samples back to back),
then per core one LIF process and, per (connection, destination core, source core), one
Dense process holding that block of the weight matrix. Several Dense blocks feeding one LIF
sum on its ``a_in`` port, as on the chip. Between samples every LIF's u, v and every
Dense's a_buff are set back to 0, so each sample starts from rest, like a fresh run.

result.npz: for population p and recorded r in {spikes, u, v}: ``{r}_p`` of shape (S, T, n_p),
plus ``wall_s`` (seconds spent in ``run``) and ``build_s``.
"""

import json
import sys
import time

import numpy as np


def _log(msg):
    print("[lava-worker] " + msg, file=sys.stderr, flush=True)


def build_and_run(req):
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor
    from lava.utils.weightutils import SignMode

    sign_modes = {"mixed": SignMode.MIXED, "excitatory": SignMode.EXCITATORY,
                  "inhibitory": SignMode.INHIBITORY}

    spec = req["spec"]
    arrays = np.load(req["network"])
    spikes_in = np.load(req["input"])["spikes"]          # (S, T, n_in)
    S, T, n_in = spikes_in.shape
    steps = int(req["steps"])
    assert steps == T, "input has %d steps, request says %d" % (T, steps)
    record = list(req["record"])
    fixed = req["select_tag"] == "fixed_pt"
    t0 = time.perf_counter()

    # source: (n_in, S*T); sample s occupies columns [s*T, (s+1)*T)
    data = spikes_in.transpose(2, 0, 1).reshape(n_in, S * T).astype(np.int32)
    src = RingBuffer(data=data)

    pops = spec["populations"]
    lifs = []          # per population: list of (lo, hi, LIF)
    for p, pop in enumerate(pops):
        bm = arrays["bias_mant_%d" % p]
        be = arrays["bias_exp_%d" % p]
        procs = []
        for lo, hi in pop["cores"]:
            if fixed:
                lif = LIF(shape=(hi - lo,), du=int(pop["du"]), dv=int(pop["dv"]),
                          vth=int(pop["vth"]), bias_mant=bm[lo:hi].astype(np.int32),
                          bias_exp=be[lo:hi].astype(np.int32),
                          name="%s[%d:%d]" % (pop["name"], lo, hi))
            else:
                bf = arrays["bias_f_%d" % p]
                lif = LIF(shape=(hi - lo,), du=float(1 - pop["decay_u"]),
                          dv=float(1 - pop["decay_v"]), vth=float(pop["vth_f"]),
                          bias_mant=bf[lo:hi].astype(np.float64), bias_exp=0,
                          name="%s[%d:%d]" % (pop["name"], lo, hi))
            procs.append((lo, hi, lif))
        lifs.append(procs)

    denses = []
    for c, con in enumerate(spec["connections"]):
        W = arrays["W_%d" % c] if fixed else arrays["Wf_%d" % c]
        dst_cores = lifs[con["dst"]]
        if con["src"] < 0:
            src_blocks = [(0, n_in, src.s_out)]
        else:
            src_blocks = [(lo, hi, lif.s_out) for lo, hi, lif in lifs[con["src"]]]
        for dlo, dhi, dlif in dst_cores:
            for slo, shi, sport in src_blocks:
                kw = {}
                if fixed:
                    kw = dict(weight_exp=int(con["weight_exp"]),
                              num_weight_bits=int(con["num_weight_bits"]),
                              sign_mode=sign_modes[con["sign_mode"]])
                d = Dense(weights=np.ascontiguousarray(W[dlo:dhi, slo:shi]), **kw)
                sport.connect(d.s_in)
                d.a_out.connect(dlif.a_in)
                denses.append(d)

    monitors = []      # (p, core_idx, what, Monitor)
    total = S * T
    for p, procs in enumerate(lifs):
        for k, (lo, hi, lif) in enumerate(procs):
            for what in record:
                m = Monitor()
                target = lif.s_out if what == "spikes" else getattr(lif, what)
                m.probe(target=target, num_steps=total)
                monitors.append((p, k, what, m, lif))

    cfg = Loihi2SimCfg(select_tag=req["select_tag"])
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        for s in range(S):
            src.run(condition=RunSteps(num_steps=T), run_cfg=cfg)
            if s + 1 < S:          # back to rest between samples
                for procs in lifs:
                    for lo, hi, lif in procs:
                        lif.u.set(np.zeros(hi - lo))
                        lif.v.set(np.zeros(hi - lo))
                for d in denses:
                    d.a_buff.set(np.zeros(d.a_buff.shape))
        wall = time.perf_counter() - t1
        out = {"wall_s": np.array(wall), "build_s": np.array(build_s)}
        for p, pop in enumerate(pops):
            for what in record:
                out["%s_%d" % (what, p)] = np.zeros((S, T, pop["n"]), np.int64 if fixed
                                                   else np.float64)
        for p, k, what, m, lif in monitors:
            lo, hi, _ = lifs[p][k]
            d = m.get_data()[lif.name]
            key = "s_out" if what == "spikes" else what
            arr = np.asarray(d[key]).reshape(S, T, hi - lo)
            out["%s_%d" % (what, p)][:, :, lo:hi] = arr
    finally:
        src.stop()
    np.savez(req["result"], **out)


def main(argv):
    if len(argv) != 2:
        print("usage: _lava_worker.py REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        req = json.load(f)
    build_and_run(req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
