"""The digits demo: rate-coded scikit-learn digits -> LIF classifier -> loihi2 fixed point.

Steps: load ``sklearn.datasets.load_digits`` (8x8 images, ships with scikit-learn);
rate-code each pixel as a Bernoulli spike train (p = pixel / 16 * P_MAX per step, fixed
seed); train a 64 -> 128 CubaLIF -> 10 LIF network with surrogate gradients on the
output spike counts; compile it (discretize, quantize, map) for loihi2; classify the
held-out set with the float twin and the bit-exact fixed-point simulator, and a subset in
Lava (fixed_pt), checking that Lava and the simulator agree spike for spike; draw the
raster of one digit.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

T_STEPS = 32
P_MAX = 0.5
DT = 1e-3
HIDDEN = 128
SEED = 0


def rate_code(images: np.ndarray, T: int, rng: np.random.Generator) -> np.ndarray:
    """images (B, 64) in 0..16 -> spikes (B, T, 64) uint8."""
    p = images[:, None, :] / 16.0 * P_MAX
    return (rng.random((images.shape[0], T, images.shape[1])) < p).astype(np.uint8)


def train(xtr: np.ndarray, ytr: np.ndarray, epochs: int = 25, seed: int = SEED):
    import torch

    from edgekit.neuro.torch_lif import CubaLIF, LIF, SpikingMLP

    torch.manual_seed(seed)
    model = SpikingMLP([64, HIDDEN, 10], [CubaLIF(HIDDEN, tau_syn=4e-3, tau_mem=8e-3, dt=DT),
                                         LIF(10, tau_mem=16e-3, dt=DT)], DT)
    with torch.no_grad():
        model.fc[0].weight.mul_(3.0)
        model.fc[1].weight.mul_(2.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X = torch.from_numpy(xtr.astype(np.float32))
    Y = torch.from_numpy(ytr.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]
            out = model(X[idx])[-1]                      # (B, T, 10)
            logits = out.sum(1) * 0.5
            loss = torch.nn.functional.cross_entropy(logits, Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def run_digits_demo(console, outdir: Path, lava_subset: int = 50, epochs: int = 25) -> dict:
    """Train, compile, simulate; print the accuracy table; save the raster. Returns accuracies."""
    import torch
    from rich.table import Table
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgekit.neuro.device import load_device
    from edgekit.neuro.lava_bridge import run_lava
    from edgekit.neuro.passes import compile_graph
    from edgekit.neuro.raster import save_raster
    from edgekit.neuro.sim import Simulator

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    digits = load_digits()
    Xtr, Xte, ytr, yte = train_test_split(digits.data, digits.target, test_size=0.25,
                                          random_state=SEED, stratify=digits.target)
    rng = np.random.default_rng(SEED)
    str_, ste = rate_code(Xtr, T_STEPS, rng), rate_code(Xte, T_STEPS, rng)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny matmuls: one thread is fastest, and immune to a busy CPU
    try:
        with console.status("[bold]training the LIF classifier (surrogate gradients)"):
            model = train(str_, ytr, epochs=epochs)
    finally:
        torch.set_num_threads(threads)
    t_train = time.perf_counter() - t0
    graph = model.to_graph()
    graph.save(outdir / "digits_snn.npz")
    net, report = compile_graph(graph, load_device("loihi2"), calibration_spikes=str_[:256])
    net.save(outdir / "digits_loihi2")
    acc, preds = {}, {}
    for mode in ("float", "fixed"):
        r = Simulator(net, mode).run(ste)
        counts = r.output_counts(net)
        preds[mode] = counts.argmax(1)
        acc[mode] = float((preds[mode] == yte).mean())
        if mode == "fixed":
            fixed_res = r
    with torch.no_grad():
        tout = model(torch.from_numpy(ste.astype(np.float32)))[-1].sum(1).numpy()
    acc["torch"] = float((tout.argmax(1) == yte).mean())
    # Lava on a subset, compared spike for spike with the simulator
    n_sub = int(min(lava_subset, len(yte)))
    lava_info = {"samples": n_sub}
    if n_sub > 0:
        with console.status(f"[bold]Lava fixed_pt on {n_sub} held-out digits"):
            lres = run_lava(net, ste[:n_sub], timeout_s=300)
        same = all(np.array_equal(lres.spikes[p], fixed_res.spikes[p][:n_sub])
                   for p in range(len(net.populations)))
        lava_pred = lres.spikes[net.outputs[0]].sum(1).argmax(1)
        acc["lava_subset"] = float((lava_pred == yte[:n_sub]).mean())
        acc["fixed_subset"] = float((preds["fixed"][:n_sub] == yte[:n_sub]).mean())
        lava_info.update(spikes_identical=bool(same), lava_wall_s=lres.total_s)
    # raster of one digit
    k = int(np.flatnonzero(preds["fixed"] == yte)[0]) if np.any(preds["fixed"] == yte) else 0
    raster = save_raster([s[k] for s in fixed_res.spikes], [p.name for p in net.populations],
                         outdir / "digits_raster.png", input_spikes=ste[k],
                         title=f"digit {yte[k]} (predicted {preds['fixed'][k]}), loihi2 fixed point")
    t = Table(title=f"Digits, LIF 64-{HIDDEN}-10, {T_STEPS} steps, held-out n={len(yte)}")
    t.add_column("model")
    t.add_column("accuracy", justify="right")
    t.add_row("torch (training graph)", f"{acc['torch']:.1%}")
    t.add_row("float twin (edgekit sim, float)", f"{acc['float']:.1%}")
    t.add_row("loihi2 fixed point (edgekit sim)", f"{acc['fixed']:.1%}")
    if n_sub:
        t.add_row(f"Lava fixed_pt, first {n_sub}", f"{acc['lava_subset']:.1%}  "
                  f"(sim on same: {acc['fixed_subset']:.1%})")
    console.print(t)
    if n_sub:
        console.print(f"Lava vs edgekit simulator on {n_sub} digits: "
                      f"{'identical spikes in every layer' if lava_info['spikes_identical'] else 'SPIKES DIFFER'}")
    console.print(f"raster: {raster}   compiled: {outdir / 'digits_loihi2'}   "
                  f"({time.perf_counter() - t0:.1f} s, training {t_train:.1f} s)")
    return {"accuracy": acc, "lava": lava_info, "raster": str(raster),
            "compiled": str(outdir / "digits_loihi2"), "seconds": time.perf_counter() - t0}
