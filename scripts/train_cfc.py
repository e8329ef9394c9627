"""Train the CfC edgekit bundles (issue 15) on a damped, driven pendulum sampled at
irregular times (edgekit.data.pendulum), and report its one-step and 50-step RMSE on the
held-out trajectories against the persistence and linear-regression baselines.

    python scripts/train_cfc.py -o edgekit/bundled/cfc-pendulum [--steps N] [--units U]

The model is ncps' own `ncps.torch.CfC` (its training forward; edgekit exports the same
module's state_dict), saved in the ncps directory format edgekit loads (config.json +
model.safetensors), with train.json (config, seed, steps, minutes) and eval.json (the
RMSE table, measured with the torch module). Inputs per step: (sin θ, cos θ, θ', Δt) with
Δt also as ncps' timespans; output: the predicted change of (sin θ, cos θ, θ') over Δt.
Deterministic: a fixed seed and step count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.data import pendulum  # noqa: E402


def build(units: int, seed: int):
    from ncps.torch import CfC
    torch.manual_seed(seed)
    return CfC(4, units, proj_size=3, batch_first=True, backbone_units=units, backbone_layers=1)


def sequence(model, feats: torch.Tensor, dts: torch.Tensor) -> torch.Tensor:
    """ncps' CfC forward over (B, T) with a per-sample Δt: its cell and projection, stepped
    here because `CfC.forward` squeezes a batch of timespans to (B,), which does not
    broadcast against (B, units) for B > 1 (ncps 1.0.1)."""
    h = torch.zeros(feats.shape[0], model.state_size)
    ys = []
    for t in range(feats.shape[1]):
        out, h = model.rnn_cell(feats[:, t], h, dts[:, t, None])
        ys.append(model.fc(out))
    return torch.stack(ys, 1)


def torch_stepper(model) -> "pendulum.Stepper":
    """A fresh per-trajectory stepper over the ncps module (batch 1, its own hx)."""
    h = [None]

    @torch.no_grad()
    def step(feat: np.ndarray, dt: float) -> np.ndarray:
        y, h[0] = model(torch.from_numpy(np.asarray(feat, np.float32))[None, None],
                        hx=h[0], timespans=torch.tensor([[dt]], dtype=torch.float32))
        return y[0, 0].double().numpy()
    return step


def train(out: Path, *, steps: int, units: int, batch: int, seq: int, lr: float, seed: int,
          n_traj: int, log=print) -> dict:
    torch.set_num_threads(2)
    x, dt = pendulum.simulate(n_traj, 400, pendulum.TRAIN_SEED + seed)
    feats = torch.from_numpy(pendulum.inputs(x, dt))
    target = torch.from_numpy(x[:, 1:] - x[:, :-1])
    dts = torch.from_numpy(dt)
    model = build(units, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    t0, losses = time.time(), []
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * i / steps))
        rows = rng.integers(0, n_traj, batch)
        starts = rng.integers(0, x.shape[1] - seq - 1, batch)
        idx = torch.from_numpy(starts[:, None] + np.arange(seq)[None])
        r = torch.from_numpy(rows)[:, None]
        y = sequence(model, feats[r, idx], dts[r, idx])
        loss = torch.mean((y - target[r, idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (i + 1) % 200 == 0 or i == steps - 1:
            log(f"  step {i + 1}/{steps}  mse {np.mean(losses[-200:]):.2e}  {(time.time() - t0) / 60:.1f} min")
    minutes = (time.time() - t0) / 60
    model.eval()

    from edgekit.models.cfc import save_ncps_dir
    save_ncps_dir(model, out)
    hx, hdt = pendulum.heldout()
    w = pendulum.fit_linear(x, dt)
    table = {
        "cfc (torch)": pendulum.evaluate(lambda: torch_stepper(model), hx, hdt),
        "persistence": pendulum.evaluate(pendulum.persistence_stepper, hx, hdt),
        "linear regression": pendulum.evaluate(pendulum.linear_stepper(w), hx, hdt),
    }
    record = {"model": "ncps.torch.CfC", "units": units, "proj_size": 3, "backbone": [units, 1],
              "parameters": sum(p.numel() for p in model.parameters()), "seed": seed, "steps": steps,
              "batch": batch, "seq": seq, "lr": lr, "train_trajectories": n_traj,
              "train_minutes": round(minutes, 2), "system": _system()}
    (out / "train.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "eval.json").write_text(json.dumps({
        "command": "python scripts/train_cfc.py (torch); tests/test_bundled_cfc.py re-measures it in ONNX Runtime",
        "heldout": {"trajectories": len(hx), "warmup": pendulum.WARMUP, "horizon": pendulum.HORIZON,
                    "seed": pendulum.HELDOUT_SEED},
        "rmse": table}, indent=1) + "\n")
    return {**record, "rmse": table}


def _system() -> dict:
    p = pendulum
    return {"equation": "θ'' = -γ θ' - ω0² sin θ + A cos(Ω t + φ)", "gamma": p.GAMMA, "omega0": p.OMEGA0,
            "drive": p.DRIVE, "drive_freq": p.DRIVE_FREQ, "dt": [p.DT_MIN, p.DT_MAX],
            "observation": list(p.FEATURES), "output": "change of the observation over dt"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--units", type=int, default=48)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trajectories", type=int, default=256)
    a = ap.parse_args(argv)
    r = train(a.out, steps=a.steps, units=a.units, batch=a.batch, seq=a.seq, lr=a.lr, seed=a.seed,
              n_traj=a.trajectories)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
