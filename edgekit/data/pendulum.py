"""A damped, driven pendulum sampled at irregular times: the dynamical system the bundled
CfC is trained and judged on (issue 15).

    θ'' = -γ θ' - ω0² sin θ + A cos(Ω t + φ)

Each trajectory starts from a random (θ, θ', φ) and is integrated with RK4 on a fine grid
(h = 0.01); it is observed at random times, Δt ~ U(DT_MIN, DT_MAX), as
x = (sin θ, cos θ, θ') (no wrap-around in θ). The drive's phase φ is not observed: a model
must infer it from the history, which is what the recurrent state is for.

A predictor sees x_t and the time Δt to the next observation (as ncps' `timespans` and as a
fourth input feature) and predicts the change x_{t+1} - x_t. `evaluate` reports the one-step
RMSE (teacher-forced) and the RMSE of a 50-step closed-loop rollout (its own predictions fed
back, after a warm-up on observed data), next to two baselines fitted on nothing but the
training trajectories: persistence (x_{t+k} = x_t) and linear least squares on
(x_t, Δt, x_t·Δt, 1).

Everything here is deterministic in its seed; the train and held-out trajectories use
disjoint seeds.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

GAMMA, OMEGA0, DRIVE, DRIVE_FREQ = 0.25, 1.0, 0.6, 0.8
DT_MIN, DT_MAX = 0.05, 0.25
H = 0.01                      # integration step
FEATURES = ("sin θ", "cos θ", "θ'")
TRAIN_SEED, HELDOUT_SEED = 0, 1_000_003
WARMUP, HORIZON = 100, 50


def _accel(theta, omega, t, phase):
    return -GAMMA * omega - OMEGA0 ** 2 * np.sin(theta) + DRIVE * np.cos(DRIVE_FREQ * t + phase)


def simulate(n: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` trajectories of `steps` observations: x (n, steps, 3) float32 and dt (n, steps)
    float32, where dt[:, t] is the time from observation t to observation t+1 (the last one
    is drawn too, so every observation has a next-step gap)."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-math.pi, math.pi, n)
    omega = rng.uniform(-1.0, 1.0, n)
    phase = rng.uniform(0, 2 * math.pi, n)
    dt = rng.uniform(DT_MIN, DT_MAX, (n, steps))
    x = np.empty((n, steps, 3), np.float32)
    t = np.zeros(n)
    for k in range(steps):
        x[:, k] = np.stack([np.sin(theta), np.cos(theta), omega], -1)
        left = dt[:, k].copy()
        while (left > 1e-12).any():      # RK4 in steps of at most H, landing on the sample time
            h = np.minimum(left, H)
            k1t, k1w = omega, _accel(theta, omega, t, phase)
            k2t, k2w = omega + h / 2 * k1w, _accel(theta + h / 2 * k1t, omega + h / 2 * k1w, t + h / 2, phase)
            k3t, k3w = omega + h / 2 * k2w, _accel(theta + h / 2 * k2t, omega + h / 2 * k2w, t + h / 2, phase)
            k4t, k4w = omega + h * k3w, _accel(theta + h * k3t, omega + h * k3w, t + h, phase)
            theta = theta + h / 6 * (k1t + 2 * k2t + 2 * k3t + k4t)
            omega = omega + h / 6 * (k1w + 2 * k2w + 2 * k3w + k4w)
            t, left = t + h, left - h
    return x, dt.astype(np.float32)


def heldout(n: int = 32, steps: int = WARMUP + HORIZON + 50) -> tuple[np.ndarray, np.ndarray]:
    """The held-out trajectories every figure is measured on."""
    return simulate(n, steps, HELDOUT_SEED)


def inputs(x: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """The model's input features: (x_t, Δt to the next observation)."""
    return np.concatenate([x, dt[..., None]], -1).astype(np.float32)


# A stepper is a function (features (4,), dt) -> predicted change (3,), carrying its own
# state; `new()` makes a fresh one per trajectory.
Stepper = Callable[[np.ndarray, float], np.ndarray]


def fit_linear(x: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Least squares x_{t+1} - x_t ≈ [x_t, Δt, x_t·Δt, 1] @ W on the given trajectories."""
    f = _linear_features(x[:, :-1].reshape(-1, 3), dt[:, :-1].reshape(-1))
    y = (x[:, 1:] - x[:, :-1]).reshape(-1, 3)
    return np.linalg.lstsq(f, y, rcond=None)[0]


def _linear_features(x: np.ndarray, dt: np.ndarray) -> np.ndarray:
    dt = dt[:, None]
    return np.concatenate([x, dt, x * dt, np.ones_like(dt)], -1)


def linear_stepper(w: np.ndarray) -> Callable[[], Stepper]:
    return lambda: (lambda feat, dt: (_linear_features(feat[None, :3], np.array([dt])) @ w)[0])


def persistence_stepper() -> Stepper:
    return lambda feat, dt: np.zeros(3, np.float32)


def evaluate(new: Callable[[], Stepper], x: np.ndarray, dt: np.ndarray,
             warmup: int = WARMUP, horizon: int = HORIZON) -> dict[str, float]:
    """One-step RMSE over every observed step (teacher-forced), and the RMSE over a
    `horizon`-step closed-loop rollout that starts after `warmup` observed steps."""
    one, roll = [], []
    for i in range(len(x)):
        step = new()
        feats = inputs(x[i], dt[i])
        for t in range(warmup):
            one.append(x[i, t] + step(feats[t], float(dt[i, t])) - x[i, t + 1])
        cur = x[i, warmup].astype(np.float64)
        for t in range(warmup, warmup + horizon):
            pred = cur + step(np.concatenate([cur, [dt[i, t]]]).astype(np.float32), float(dt[i, t]))
            roll.append(pred - x[i, t + 1])
            cur = pred
    rmse = lambda e: float(np.sqrt(np.mean(np.square(np.asarray(e)))))  # noqa: E731
    return {"one_step_rmse": rmse(one), f"{horizon}_step_rmse": rmse(roll)}


def session_stepper(sess) -> Callable[[], Stepper]:
    """Steppers over an edgekit StreamingSession of the bundled CfC (any backend): each
    new one starts from the model's initial state."""
    def new() -> Stepper:
        sess.reset()
        return lambda feat, dt: np.asarray(sess.step((np.asarray(feat, np.float32), np.float32(dt))),
                                           np.float64).reshape(3)
    return new
