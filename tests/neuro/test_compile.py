"""Passes (discretize, quantize, map) and acceptance 5 (mapping)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.neuro import graph as G
from edgekit.neuro.compiled import CompiledNetwork, Connection, Population
from edgekit.neuro.device import load_device, with_limits
from edgekit.neuro.lava_bridge import run_lava
from edgekit.neuro.passes import compile_graph, map_cores
from edgekit.neuro.sim import Simulator


def mlp_graph(rng, sizes, *, tau_syn=4e-3, tau_mem=8e-3, dt=1e-3, wscale=1.0):
    nodes, edges, last = {"in": G.Input(shape=(sizes[0],))}, [], "in"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        nodes[f"w{i}"] = G.Affine(weight=rng.normal(0, wscale / math.sqrt(a) * 4, (b, a)),
                                  bias=np.zeros(b))
        nodes[f"n{i}"] = G.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=1.0, v_leak=0.0,
                                   v_threshold=1.0, v_reset=0.0, w_in=1.0)
        edges += [(last, f"w{i}"), (f"w{i}", f"n{i}")]
        last = f"n{i}"
    nodes["out"] = G.Output(shape=(sizes[-1],))
    edges.append((last, "out"))
    return G.SNNGraph(nodes, edges, {"dt": dt, "integrator": "exact"}).validate()


def test_discretize_uses_exact_decay_mapping(rng):
    dt, ts, tm = 1e-3, 4e-3, 8e-3
    net, rep = compile_graph(mlp_graph(rng, [10, 8]), load_device("loihi2"))
    pop = net.populations[0]
    # RECIPES.md: dv = round(4096 (1 - exp(-dt/tau_mem))), du = round(4096 (1 - exp(-dt/tau_syn))) - 1
    assert pop.dv == round(4096 * (1 - math.exp(-dt / tm)))
    assert pop.du == round(4096 * (1 - math.exp(-dt / ts))) - 1
    d = {p["name"]: p for p in rep["passes"]}
    assert d["discretize"]["populations"][0]["du"] == pop.du
    assert [p["name"] for p in rep["passes"]] == ["lower", "discretize", "quantize", "map"]


def test_quantize_reports_error_and_choices(rng):
    g = mlp_graph(rng, [40, 30, 10])
    net, rep = compile_graph(g, load_device("loihi2"))
    q = {p["name"]: p for p in rep["passes"]}["quantize"]
    for i, (c, rec) in enumerate(zip(net.connections, q["connections"])):
        assert rec["weight_exp"] == c.weight_exp and rec["sign_mode"] == "mixed"
        # independent check of the reported relative RMS error
        k = q["populations"][c.dst]["scale"]
        Wf = net.Wf(i)
        Wd = net.W(i) * 2.0 ** c.weight_exp * 64 / k
        rel = np.linalg.norm(Wd - Wf) / np.linalg.norm(Wf)
        assert abs(rel - rec["rel_rms_error"]) < 1e-9
        assert rel < 0.02          # 8-bit mantissas, mixed sign: ~1% on Gaussian weights
    # the chosen exponent really is the best one: every other exponent does worse
    c0 = 0
    k = q["populations"][0]["scale"]
    T = k * net.Wf(c0) / 64
    errs = {}
    for e in range(-8, 8):
        q8 = np.clip(np.round(T / 2.0 ** e / 2) * 2, -256, 254)
        errs[e] = np.sum((q8 * 2.0 ** e - T) ** 2)
    assert min(errs, key=errs.get) == net.connections[0].weight_exp


def test_layer_split_across_cores_output_unchanged(rng):
    """600 inputs x 8 bits = 600 B of synapses per neuron: 218 neurons per 128 KB core."""
    dev = load_device("loihi2")
    g = mlp_graph(rng, [600, 500, 10])
    x = rng.random((2, 60, 600)) < 0.05
    net, rep = compile_graph(g, dev)
    m = {p["name"]: p for p in rep["passes"]}["map"]
    assert len(net.populations[0].cores) == 3, net.populations[0].cores
    assert m["populations"][0]["limited_by"] == "synapse_memory_bytes_per_core"
    for c in m["cores"]:
        assert c["synapse_bytes"] <= dev.limits["synapse_memory_bytes_per_core"]
        assert c["neurons"][1] - c["neurons"][0] <= dev.limits["neurons_per_core"]
    # the same network on one big core
    big = with_limits(dev, synapse_memory_bytes_per_core=1 << 30)
    one, _ = compile_graph(g, big)
    assert len(one.populations[0].cores) == 1
    for k in net.arrays:
        np.testing.assert_array_equal(net.arrays[k], one.arrays[k])
    ref = Simulator(one, "fixed").run(x, record_state=True)
    # Lava runs the split network as 3 LIF processes fed by 3 Dense blocks each
    lava = run_lava(net, x, record_state=True, timeout_s=240)
    assert ref.spikes[0].sum() > 0
    for p in range(2):
        np.testing.assert_array_equal(lava.spikes[p], ref.spikes[p])
        np.testing.assert_array_equal(lava.v[p], ref.v[p])


def _shell_network(sizes) -> CompiledNetwork:
    """A network of the given layer sizes whose arrays take no memory (for mapping only)."""
    pops, cons, arr = [], [], {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        pops.append(Population(f"p{i}", b, 0, 0, 1, 0.0, 0.0, 1.0))
        cons.append(Connection(f"c{i}", i - 1, i, 0, 8, "mixed"))
        arr[f"W_{i}"] = np.broadcast_to(np.int32(0), (b, a))
        arr[f"Wf_{i}"] = np.broadcast_to(np.float32(0), (b, a))
        for k in ("bias_mant", "bias_exp", "bias_f"):
            arr[f"{k}_{i}"] = np.zeros(b)
    return CompiledNetwork(sizes[0], pops, cons, arr)


def test_network_larger_than_chip_is_refused():
    dev = load_device("loihi2")
    # fan-in 8000 at 8 bits = 8000 B per neuron -> 16 neurons per core; 2100 neurons -> 132 cores
    with pytest.raises(EdgekitError, match="cores_per_chip = 128"):
        map_cores(_shell_network([8000, 2100]), dev)
    # one neuron whose synapses exceed a core
    with pytest.raises(EdgekitError, match="synapse_memory_bytes_per_core"):
        map_cores(_shell_network([200_000, 4]), dev)
    # too many neurons for the chip
    with pytest.raises(EdgekitError, match="neurons_per_chip"):
        map_cores(_shell_network([1, 1_100_000]), dev)
    # and it fits when it should: 2000 neurons -> 125 cores
    rec = map_cores(_shell_network([8000, 2000]), dev)
    assert rec["cores_used"] == 125
