"""Acceptance 1: edgekit's simulator is bit-exact with Lava's fixed_pt LIF + Dense.

Every case runs real Lava (lava-nc 0.10.0, ``Loihi2SimCfg(select_tag="fixed_pt")``) in the
side environment and compares u, v and spikes of every population at every step. There is
no skip: without ``.venv-lava`` the bridge raises an error naming `make setup` and the test
fails. Two samples run back to back per case (the second from rest, as in the demo).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.neuro.lava_bridge import run_lava
from edgekit.neuro.sim import Simulator
from tests.neuro.conftest import random_network

STEPS = 200

# name: (sizes, network kwargs, input rate)
CASES = {
    "mixed": ([40, 30, 20], dict(weight_exps=[0, 1], weight_bits=[8, 8]), 0.2),
    "excitatory-only": ([30, 25, 15], dict(sign="excitatory", weight_exps=[-2, 2],
                                           weight_bits=[6, 5], vth=[100, 300]), 0.1),
    "inhibitory-only": ([30, 20, 10], dict(sign="inhibitory", weight_exps=[3, 4],
                                           weight_bits=[4, 7], bias_exp_range=(3, 7),
                                           bias_range=(0, 4095)), 0.2),
    "wexp-6": ([40, 20, 10], dict(weight_exps=[-6, -5], weight_bits=[8, 3],
                                  vth=[2, 3]), 0.3),
    "wexp+7": ([30, 20, 10], dict(weight_exps=[7, 6], weight_bits=[2, 1],
                                  vth=[60000, 30000]), 0.2),
    "bits-1-and-3": ([30, 20, 10], dict(weight_exps=[5, 4], weight_bits=[1, 3]), 0.3),
    "du-dv-extremes": ([30, 20, 10], dict(weight_exps=[2, 2], du=[0, 4095],
                                          dv=[4095, 0]), 0.2),
    "du-dv-middle": ([30, 20, 10], dict(weight_exps=[1, 3], du=[2048, 1], dv=[1, 2047],
                                        weight_bits=[7, 4]), 0.2),
    "bias-negative-exp": ([30, 20, 10], dict(weight_exps=[0, 0], bias_exp_range=(-7, -1),
                                             bias_range=(-4096, 4095), vth=[200, 100]), 0.2),
    "overflow-24bit": ([300, 12, 8], dict(sign="excitatory", weight_exps=[7, 7],
                                          du=[0, 0], dv=[4000, 100],
                                          vth=[131071, 131071]), 0.5),
    "overflow-int32": ([1100, 6, 4], dict(sign="excitatory", weight_exps=[7, 7],
                                          weight_bits=[8, 8], du=[0, 0],
                                          vth=[131071, 131071]), 1.0),
    "chain-3layer": ([50, 40, 30, 20], dict(weight_exps=[0, -1, 2], weight_bits=[8, 7, 6]),
                     0.2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bitexact_vs_lava(name):
    sizes, kw, rate = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    net = random_network(rng, sizes, **kw)
    x = rng.random((2, STEPS, sizes[0])) < rate
    sim = Simulator(net, "fixed")
    ours = sim.run(x, record_state=True)
    lava = run_lava(net, x, record_state=True, timeout_s=240)
    for p, pop in enumerate(net.populations):
        for what, a, b in (("spikes", ours.spikes[p], lava.spikes[p]),
                           ("u", ours.u[p], lava.u[p]), ("v", ours.v[p], lava.v[p])):
            assert a.shape == b.shape == (2, STEPS, pop.n)
            bad = np.argwhere(a != b)
            assert bad.size == 0, (f"{name}: {pop.name}.{what} differs first at (sample, step, "
                                   f"neuron)={tuple(bad[0])}: ours {a[tuple(bad[0])]}, "
                                   f"lava {b[tuple(bad[0])]}")
    # the case exercises what it claims to
    for p, pop in enumerate(net.populations):
        assert lava.spikes[p].any(), f"{name}: {pop.name} never spiked; the case tests little"
    if name.startswith("overflow"):
        u = lava.u[0]
        jumps = np.abs(np.diff(u, axis=1)).max()
        assert jumps > 2 ** 23, f"{name}: u never wrapped around 24 bits"
    if name == "overflow-int32":
        assert sim.slow[0], "the int32 port wrap-around path was not taken"
