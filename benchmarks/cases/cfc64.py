"""CfC with 64 units and 32 inputs (ncps defaults otherwise: mode "default", one backbone
layer of 128 units, lecun_tanh), random weights, in edgekit's ncps directory format
(config.json + model.safetensors, docs/cfc.md).

Shape: backbone (32+64) x 128 = 12.3k, heads ff1/ff2/time_a/time_b 4 x 128 x 64 = 32.8k
-> ~45.6k parameters (~182 KB fp32 read per step); state h 64 floats (256 B).
Every step takes an irregular Δt (uniform in [0.5, 1.5]).
Oracle: the ncps.torch.CfC module stepping one sample at a time with its own hidden state.
"""

from __future__ import annotations

from pathlib import Path

from cases import make_checkpoint, oracle as arch_oracle

NAME = "cfc-64"
SHAPE = "CfC units=64, inputs=32, backbone 1x128 lecun_tanh, mode default (~46k params)"
INPUTS, UNITS = 32, 64
MIN_STEPS = 512         # steps per timed block (a step is a few us; see step_latency.py)


def make(d: Path) -> Path:
    return make_checkpoint("cfc", Path(d) / "cfc64", seed=1, **dict(input_size=INPUTS, units=UNITS))


def oracle(path: Path):
    return arch_oracle("cfc", path)


def inputs(n, rng):
    import numpy as np
    xs = rng.standard_normal((n, INPUTS)).astype(np.float32)
    dts = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return [(x, np.float32(d)) for x, d in zip(xs, dts)]
