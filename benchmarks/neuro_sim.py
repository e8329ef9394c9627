"""Simulator speed: edgekit's bit-exact simulator vs Lava fixed_pt, side by side.

Network per N: input(N) -> Dense -> LIF(N) -> Dense -> LIF(N) ("2 x Dense + LIF"), random
mixed-sign 8-bit weights, 10% input spike rate. Prints steps/s and synaptic events/s.

How batch is counted: Lava runs ONE input stream. edgekit runs B independent streams in
one call; its "stream-steps/s" = B * steps / wall seconds (each stream advances that many
steps per second). Batch 1 is shown too, so the per-stream speed-up and the batched
throughput are both visible. Lava's time is the wall time of its run() calls only (process
start, import and compile excluded); edgekit's is the wall time of Simulator.run.

    .venv/bin/python benchmarks/neuro_sim.py [--plot benchmarks/neuro_sim.png] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.neuro.compiled import (CompiledNetwork, Connection, Population,  # noqa: E402
                                    dequantized_twin, lava_effective_weights)
from edgekit.neuro.lava_bridge import run_lava  # noqa: E402
from edgekit.neuro.sim import Simulator  # noqa: E402

RATE = 0.10


def bench_network(N: int, seed: int = 0) -> CompiledNetwork:
    rng = np.random.default_rng(seed)
    pops, cons, arr = [], [], {}
    for i in range(2):
        W = lava_effective_weights(rng.integers(-256, 256, (N, N)), "mixed", 8)
        arr[f"W_{i}"], arr[f"Wf_{i}"] = W, dequantized_twin(W, 0)
        arr[f"bias_mant_{i}"] = np.zeros(N, np.int64)
        arr[f"bias_exp_{i}"] = np.zeros(N, np.int64)
        arr[f"bias_f_{i}"] = np.zeros(N)
        # threshold ~ 5x the std of one step's input drive: ~10% hidden activity
        vth = min(131071, int(5 * 150 * np.sqrt(RATE * N)))
        pops.append(Population(f"lif{i}", N, du=1000, dv=500, vth=vth, decay_u=0.75,
                               decay_v=0.88, vth_f=vth * 64.0))
        cons.append(Connection(f"dense{i}", i - 1, i, 0, 8, "mixed"))
    return CompiledNetwork(N, pops, cons, arr)


def time_sim(net, B, T, rng, repeats=1):
    x = rng.random((B, T, net.n_in)) < RATE
    sim = Simulator(net, "fixed")
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = sim.run(x, record_spikes=True)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,4000")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(1)
    rows = []
    print(f"edgekit neuro simulator vs Lava fixed_pt — 2 x (Dense + LIF), {RATE:.0%} input rate")
    hdr = (f"{'N':>6} | {'Lava steps/s':>12} | {'edgekit B=1':>12} {'x Lava':>7} | "
           f"{'edgekit batched':>16} {'B':>4} {'x Lava':>7} | {'syn events/s (batched)':>22} "
           f"| {'spikes/neuron/step':>18}")
    print(hdr)
    print("-" * len(hdr))
    for N in sizes:
        net = bench_network(N)
        lava_T = {100: 1000, 1000: 400, 4000: 60}.get(N, 200)
        if args.quick:
            lava_T = max(lava_T // 4, 20)
        x1 = rng.random((1, lava_T, N)) < RATE
        lv = run_lava(net, x1, record_spikes=False, timeout_s=600)
        lava_sps = lava_T / lv.wall_s
        T1 = {100: 4000, 1000: 2000, 4000: 300}.get(N, 500)
        w1, r1 = time_sim(net, 1, T1, rng, repeats=2)
        sim1 = T1 / w1
        B = {100: 1024, 1000: 256, 4000: 64}.get(N, 64)
        TB = {100: 400, 1000: 100, 4000: 30}.get(N, 50)
        wB, rB = time_sim(net, B, TB, rng, repeats=2)
        simB = B * TB / wB
        ev = rB.counters.synaptic_ops / wB
        rate1 = rB.spikes[0].mean()
        rows.append((N, lava_sps, sim1, simB, B, ev))
        print(f"{N:>6} | {lava_sps:>12.0f} | {sim1:>12.0f} {sim1 / lava_sps:>6.1f}x | "
              f"{simB:>16.0f} {B:>4} {simB / lava_sps:>6.1f}x | {ev:>22.3g} | {rate1:>18.3f}")
    print("\nsteps/s: Lava and 'edgekit B=1' advance one stream; 'edgekit batched' is B streams "
          "x steps / wall s.\nsyn events/s: synaptic operations (spike x fan-out) per second, "
          "all streams.")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        Ns = [r[0] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(Ns, [r[1] for r in rows], "o-", label="Lava fixed_pt (1 stream)")
        ax.loglog(Ns, [r[2] for r in rows], "s-", label="edgekit sim, B=1")
        ax.loglog(Ns, [r[3] for r in rows], "^-", label="edgekit sim, batched (stream-steps/s)")
        ax.set_xlabel("neurons per layer N")
        ax.set_ylabel("steps / s")
        ax.set_title("2 x (Dense + LIF), 10% input rate")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
