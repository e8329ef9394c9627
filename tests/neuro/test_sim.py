"""Simulator internals: batched / threaded / int8 paths equal the per-stream path (which
test_lava_bitexact checks against Lava), a batched run equals Lava sample by sample, and
the event counters equal an independent count."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.neuro.device import load_device
from edgekit.neuro.energy import estimate
from edgekit.neuro.lava_bridge import run_lava
from edgekit.neuro.sim import INT8_MIN_BATCH, Simulator
from tests.neuro.conftest import random_network
from tests.neuro.test_lava_bitexact import CASES


@pytest.mark.parametrize("name", list(CASES))
def test_batched_equals_single_stream(name):
    sizes, kw, rate = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)) + 1)
    net = random_network(rng, sizes, **kw)
    B, T = max(INT8_MIN_BATCH, 24), 80
    x = rng.random((B, T, sizes[0])) < rate
    sim = Simulator(net, "fixed")
    big = sim.run(x, record_state=True, threads=2)
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
    assert sim.plans[0].int8 is not None          # the batched int8 path is the one tested
    ours = sim.run(x, record_state=True)
    lava = run_lava(net, x, record_state=True, timeout_s=300)
    for p in range(2):
        assert ours.spikes[p].any()
        np.testing.assert_array_equal(ours.spikes[p], lava.spikes[p])
        np.testing.assert_array_equal(ours.u[p], lava.u[p])
        np.testing.assert_array_equal(ours.v[p], lava.v[p])


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
