"""Simulator internals: batched / threaded / int8 paths equal the per-stream path (which
test_lava_bitexact checks against Lava), a batched run equals Lava sample by sample, the
fixed-point path tracks the float twin population by population, and the event counters
equal an independent count.

The int8 GEMM (oneDNN) falls back to the exact float32 GEMM for good on any error
(`_ConnPlan.int8_matmul` sets `int8` to None), which gives the same numbers: a test of the
int8 path checks AFTER the run that it ran (`_spy_int8`), not before."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.neuro.device import load_device
from edgekit.neuro.energy import estimate
from edgekit.neuro.lava_bridge import run_lava
from edgekit.neuro.passes import compile_graph
from edgekit.neuro.sim import INT8_MIN_BATCH, Simulator
from tests.neuro.conftest import random_network
from tests.neuro.test_compile import mlp_graph
from tests.neuro.test_lava_bitexact import CASES


def _spy_int8(sim: Simulator) -> list[int]:
    """Count, per connection, the int8 GEMM calls that returned a result (the list fills
    as the simulator runs)."""
    hits = [0] * len(sim.plans)
    for k, pl in enumerate(sim.plans):
        def spy(s, _orig=pl.int8_matmul, _k=k):
            out = _orig(s)
            hits[_k] += out is not None
            return out
        pl.int8_matmul = spy
    return hits


def _assert_int8_ran(sim: Simulator, hits: list[int], x, res) -> None:
    """Every connection that can take the int8 path (exact: bound < 2**24, int8 mantissas,
    destination not on the int32-wrap path) and has a spike to carry took it, and none
    fell back."""
    eligible = [k for k, pl in enumerate(sim.plans) if not sim.slow[pl.dst]
                and (x if pl.src < 0 else res.spikes[pl.src]).any()]
    assert eligible, "no connection can take the int8 path"
    for k in eligible:
        assert sim.plans[k].int8 is not None, f"connection {k}: int8 GEMM failed, float fallback ran"
        assert hits[k] > 0, f"connection {k}: the int8 GEMM never ran"


@pytest.mark.parametrize("name", list(CASES))
def test_batched_equals_single_stream(name):
    sizes, kw, rate = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)) + 1)
    net = random_network(rng, sizes, **kw)
    B, T = max(INT8_MIN_BATCH, 24), 80
    x = rng.random((B, T, sizes[0])) < rate
    sim = Simulator(net, "fixed")
    hits = _spy_int8(sim)
    big = sim.run(x, record_state=True, threads=2)
    if all(pl.int8 is not None or sim.slow[pl.dst] for pl in Simulator(net, "fixed").plans):
        _assert_int8_ran(sim, hits, x, big)     # cases with int8-eligible weights: the batch ran int8
    for b in (0, 7, B - 1):
        one = sim.run(x[b], record_state=True)
        for p in range(len(net.populations)):
            np.testing.assert_array_equal(big.spikes[p][b], one.spikes[p][0])
            np.testing.assert_array_equal(big.u[p][b], one.u[p][0])
            np.testing.assert_array_equal(big.v[p][b], one.v[p][0])


def test_batched_run_equals_lava():
    rng = np.random.default_rng(5)
    net = random_network(rng, [120, 80, 30], weight_exps=[1, 0], du=[900, 300], dv=[400, 700],
                         vth=[300, 400])
    x = rng.random((INT8_MIN_BATCH, 60, 120)) < 0.15
    sim = Simulator(net, "fixed")
    hits = _spy_int8(sim)
    ours = sim.run(x, record_state=True)
    assert ours.mode == "fixed"
    _assert_int8_ran(sim, hits, x, ours)           # the batched int8 path is the one tested
    lava = run_lava(net, x, record_state=True, timeout_s=300)
    for p in range(2):
        assert ours.spikes[p].any()
        np.testing.assert_array_equal(ours.spikes[p], lava.spikes[p])
        np.testing.assert_array_equal(ours.u[p], lava.u[p])
        np.testing.assert_array_equal(ours.v[p], lava.v[p])


def test_threaded_equals_one_thread():
    """B * N large enough that threads=2 splits the batch (each half still takes the int8
    path): the result equals the one-thread run and the per-stream runs."""
    rng = np.random.default_rng(21)
    net = random_network(rng, [64, 300, 200], weight_exps=[0, 1], du=[500, 900], dv=[300, 600],
                         vth=[300, 300])
    B, T = 2 * 65536 // 500 + 2 * INT8_MIN_BATCH, 40
    x = rng.random((B, T, 64)) < 0.2
    sim = Simulator(net, "fixed")
    chunks = []
    run_chunk = sim._run_chunk
    sim._run_chunk = lambda xc, *a: (chunks.append(xc.shape[0]), run_chunk(xc, *a))[1]
    hits = _spy_int8(sim)
    two = sim.run(x, threads=2)
    assert len(chunks) == 2 and sum(chunks) == B and min(chunks) >= INT8_MIN_BATCH, chunks
    _assert_int8_ran(sim, hits, x, two)
    one = Simulator(net, "fixed").run(x, threads=1)
    for p in range(len(net.populations)):
        assert two.spikes[p].any()
        np.testing.assert_array_equal(two.spikes[p], one.spikes[p])
    for b in (0, B // 2, B - 1):
        single = Simulator(net, "fixed").run(x[b])
        for p in range(len(net.populations)):
            np.testing.assert_array_equal(two.spikes[p][b], single.spikes[p][0])


def test_fixed_point_rates_track_float_per_population():
    """A compiled 3-layer MLP, every layer active: each population's spike rate in fixed
    point (int8 path, checked after the run) is within 5% of the float twin's. Element-wise
    spike agreement is no measure here (it is ~90% when rates agree to 1%, and a silent
    population at a 3% rate would agree 97%)."""
    rng = np.random.default_rng(1234)
    g = mlp_graph(rng, [50, 40, 30, 10], wscale=4.0)
    x = rng.random((32, 100, 50)) < 0.3
    net, _ = compile_graph(g, load_device("loihi2"), calibration_spikes=x)
    fixed = Simulator(net, "fixed")
    hits = _spy_int8(fixed)
    a = fixed.run(x)
    b = Simulator(net, "float").run(x)
    assert (a.mode, b.mode) == ("fixed", "float")
    _assert_int8_ran(fixed, hits, x, a)
    for p, pop in enumerate(net.populations):
        ra, rb = float(a.spikes[p].mean()), float(b.spikes[p].mean())
        assert rb > 0.02, (pop.name, rb)          # every layer fires: a silent one would prove little
        assert abs(ra - rb) <= 0.05 * rb, (pop.name, ra, rb)


def test_counters_and_energy(rng):
    net = random_network(rng, [50, 40, 20], vth=[200, 200])
    x = rng.random((3, 70, 50)) < 0.2
    r = Simulator(net, "fixed").run(x)
    # independent count: every spike of a source costs one op per nonzero weight it drives
    expect = 0
    for c, con in enumerate(net.connections):
        nnz = np.count_nonzero(net.W(c), axis=0)                  # per source neuron
        src = x if con.src < 0 else r.spikes[con.src]
        expect += int(src.sum(axis=(0, 1)) @ nnz)
    assert r.counters.synaptic_ops == expect
    assert r.counters.neuron_updates == 3 * 70 * 60
    assert r.counters.spikes == {p.name: int(s.sum()) for p, s in zip(net.populations, r.spikes)}
    e = estimate(r.counters.as_dict(), load_device("loihi2"))
    assert "ESTIMATE" in e["label"] and "Davies" in e["source"]
    c = e["coefficients_pj"]
    total = (expect * c["synaptic_op_pj"] + 3 * 70 * 60 * c["neuron_update_pj"]
             + sum(r.counters.spikes.values()) * c["spike_pj"])
    assert abs(e["total_pj"] - total) < 1e-6 * total
