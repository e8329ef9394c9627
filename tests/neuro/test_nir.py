"""Acceptance 4: NIR round trips, and a snnTorch CubaLIF network imports and reproduces
snnTorch's own spikes in float mode.

Alignment (docs/neuro.md): snnTorch's exporter writes tau = dt / (1 - beta) with dt = 1e-4,
i.e. forward Euler, so the file is imported with ``integrator="euler"`` and dt = 1e-4.
edgekit (like Lava and Loihi) delays each Dense connection by one step, so population k
(0-based) spikes at step t + k + 1 where snnTorch spikes at step t. snnTorch's reset
"zero" is used with ``reset_delay=False`` (v is zeroed in the step it spikes, as on Loihi).
"""

from __future__ import annotations

import numpy as np

from edgekit.neuro import graph as G
from edgekit.neuro.graph import load_graph
from edgekit.neuro.nir_io import from_nir, write_nir
from edgekit.neuro.passes import compile_graph
from edgekit.neuro.device import load_device
from edgekit.neuro.sim import Simulator


def _every_node_graph(rng) -> G.SNNGraph:
    n = 6
    return G.SNNGraph({
        "in": G.Input(shape=(2, 4)),
        "flat": G.Flatten(input_shape=(2, 4), start_dim=0, end_dim=-1),
        "aff": G.Affine(weight=rng.normal(size=(n, 8)), bias=rng.normal(size=n)),
        "lif": G.LIF(tau=np.full(n, 2e-3), r=rng.random(n) + 0.5, v_leak=rng.normal(size=n),
                     v_threshold=rng.random(n) + 0.5, v_reset=np.zeros(n)),
        "scale": G.Scale(scale=rng.normal(size=n)),
        "lin": G.Linear(weight=rng.normal(size=(5, n))),
        "cuba": G.CubaLIF(tau_syn=np.full(5, 1e-3), tau_mem=np.full(5, 3e-3), r=np.ones(5) * 2,
                          v_leak=np.zeros(5), v_threshold=np.ones(5), v_reset=np.zeros(5),
                          w_in=np.ones(5) * 1.5),
        "lin2": G.Linear(weight=rng.normal(size=(4, 5))),
        "if": G.IF(r=np.ones(4) * 100, v_threshold=np.ones(4), v_reset=np.zeros(4)),
        "lin3": G.Linear(weight=rng.normal(size=(3, 4))),
        "li": G.LI(tau=np.full(3, 5e-3), r=np.ones(3), v_leak=np.zeros(3)),
        "out": G.Output(shape=(3,)),
    }, [("in", "flat"), ("flat", "aff"), ("aff", "lif"), ("lif", "scale"), ("scale", "lin"),
        ("lin", "cuba"), ("cuba", "lin2"), ("lin2", "if"), ("if", "lin3"), ("lin3", "li"),
        ("li", "out")], {"dt": 1e-3, "integrator": "exact"})


def test_every_supported_node_round_trips(tmp_path, rng):
    g = _every_node_graph(rng).validate()
    write_nir(g, tmp_path / "g.nir")
    h = from_nir(tmp_path / "g.nir")
    assert set(h.nodes) == set(g.nodes) and set(h.edges) == set(g.edges)
    assert h.metadata["dt"] == 1e-3 and h.metadata["integrator"] == "exact"
    for name, node in g.nodes.items():
        other = h.nodes[name]
        assert type(other) is type(node), name
        for f in node.arrays:
            np.testing.assert_array_equal(np.broadcast_to(getattr(node, f), np.shape(getattr(other, f))),
                                          getattr(other, f), err_msg=f"{name}.{f}")
    assert h.nodes["in"].shape == (2, 4) and h.nodes["flat"].input_shape == (2, 4)
    # and edgekit's own format
    g.save(tmp_path / "g.npz")
    k = G.SNNGraph.load(tmp_path / "g.npz")
    assert set(k.nodes) == set(g.nodes)
    for name, node in g.nodes.items():
        for f in node.arrays:
            np.testing.assert_array_equal(getattr(node, f), getattr(k.nodes[name], f))


def test_nir_round_trip_compiles_identically(tmp_path, rng):
    g = _every_node_graph(rng)
    dev = load_device("loihi2")
    a, _ = compile_graph(g.validate(), dev)
    write_nir(g, tmp_path / "g.nir")
    b, _ = compile_graph(load_graph(tmp_path / "g.nir"), dev)
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def _snntorch_net(seed=0):
    import snntorch as snn
    import torch

    torch.manual_seed(seed)

    def syn(n, a, b, **kw):
        return snn.Synaptic(alpha=torch.full((n,), a), beta=torch.full((n,), b),
                            threshold=torch.ones(n), reset_mechanism="zero", reset_delay=False,
                            init_hidden=True, **kw)

    net = torch.nn.Sequential(torch.nn.Linear(20, 30, bias=False), syn(30, 0.8, 0.9),
                              torch.nn.Linear(30, 10, bias=False), syn(10, 0.7, 0.85, output=True))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[2].weight.mul_(3.0)
    return net


def test_snntorch_cubalif_imports_and_matches(tmp_path):
    import nir
    import snntorch.utils
    import torch
    from snntorch.export_nir import export_to_nir

    net = _snntorch_net()
    nir.write(tmp_path / "snn.nir", export_to_nir(net, torch.zeros(1, 20), ignore_dims=[0]))
    g = load_graph(tmp_path / "snn.nir", integrator="euler")
    assert g.metadata["dt"] == 1e-4 and "assumed" in g.metadata["dt_origin"]
    assert [type(n).__name__ for n in g.nodes.values()].count("CubaLIF") == 2
    compiled, report = compile_graph(g, load_device("loihi2"))

    T, B = 200, 4
    rng = np.random.default_rng(7)
    x = (rng.random((B, T, 20)) < 0.3).astype(np.float32)
    # snnTorch's own simulation
    ref = [np.zeros((B, T, 30), bool), np.zeros((B, T, 10), bool)]
    snntorch.utils.reset(net)
    with torch.no_grad():
        h = torch.from_numpy(x)
        for t in range(T):
            cur = net[0](h[:, t])
            s1 = net[1](cur)
            spk2, _, _ = net[3](net[2](s1))
            ref[0][:, t] = s1.numpy() > 0
            ref[1][:, t] = spk2.numpy() > 0
    ours = Simulator(compiled, "float").run(x.astype(bool))
    for k in range(2):
        # population k lags snnTorch by k + 1 steps (one per Dense)
        a = ours.spikes[k][:, k + 1:]
        b = ref[k][:, :T - k - 1]
        assert b.sum() > 50, "snnTorch layer barely spikes; the comparison would be weak"
        mism = np.argwhere(a != b)
        assert mism.size == 0, f"population {k}: {len(mism)} of {a.size} spikes differ, first {mism[0]}"
