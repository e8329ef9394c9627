"""Shared helpers for the neuromorphic tests.

Random networks are built directly in compiled form (integer Loihi parameters), so the
bit-exactness test exercises the whole parameter space, not only what the compiler emits.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.neuro.compiled import (CompiledNetwork, Connection, Population,
                                    dequantized_twin, lava_effective_weights)


def random_network(rng: np.random.Generator, sizes: list[int], *, sign: str = "mixed",
                   weight_exps: list[int] | None = None, weight_bits: list[int] | None = None,
                   du: list[int] | None = None, dv: list[int] | None = None,
                   vth: list[int] | None = None, bias_exp_range=(-4, 7), bias_range=(-400, 400),
                   weight_scale: int = 256, cores: list | None = None) -> CompiledNetwork:
    """A chain sizes[0] (inputs) -> sizes[1] -> ... with random integer parameters."""
    L = len(sizes) - 1
    weight_exps = weight_exps or [0] * L
    weight_bits = weight_bits or [8] * L
    du = du or list(rng.integers(0, 4096, L))
    dv = dv or list(rng.integers(0, 4096, L))
    vth = vth or list(rng.integers(1, 2000, L))
    pops, cons, arr = [], [], {}
    for i in range(L):
        n_src, n = sizes[i], sizes[i + 1]
        if sign == "mixed":
            W = rng.integers(-weight_scale, weight_scale, (n, n_src))
        elif sign == "excitatory":
            W = rng.integers(0, weight_scale, (n, n_src))
        else:
            W = -rng.integers(0, weight_scale, (n, n_src))
        mode = "excitatory" if np.all(W >= 0) else "inhibitory" if np.all(W <= 0) else "mixed"
        W = lava_effective_weights(W, mode, int(weight_bits[i]))
        arr[f"W_{i}"] = W
        arr[f"Wf_{i}"] = dequantized_twin(W, int(weight_exps[i]))
        bm = rng.integers(bias_range[0], bias_range[1] + 1, n)
        be = rng.integers(bias_exp_range[0], bias_exp_range[1] + 1, n)
        arr[f"bias_mant_{i}"], arr[f"bias_exp_{i}"] = bm, be
        arr[f"bias_f_{i}"] = bm * 2.0 ** be
        pops.append(Population(f"lif{i}", n, du=int(du[i]), dv=int(dv[i]), vth=int(vth[i]),
                               decay_u=(4096 - du[i] - 1) / 4096, decay_v=(4096 - dv[i]) / 4096,
                               vth_f=float(vth[i] * 64),
                               cores=(cores[i] if cores else [])))
        cons.append(Connection(f"dense{i}", i - 1, i, weight_exp=int(weight_exps[i]),
                               num_weight_bits=int(weight_bits[i]), sign_mode=mode))
    return CompiledNetwork(sizes[0], pops, cons, arr, dt=1e-3)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
