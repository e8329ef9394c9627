"""`edgekit::ltc_step` — the Liquid Time-Constant (LTC) cell's fused ODE solver, T >= 1.

Dimensions: B batch, T time, I sensory inputs, U units (neurons).

Paper: R. Hasani et al., "Liquid Time-constant Networks", AAAI 2021 (arXiv:2006.04439),
eq. (1) integrated with the paper's fused (semi-implicit) Euler step, eq. (3), unfolded
`ode_unfolds` times per input step, as `ncps.torch.LTCCell._ode_solver` implements it.
Per step t (x_t already input-mapped), with n = ode_unfolds:

    sensory:   sa[i, j] = sigmoid(s_sigma[i, j] · (x_t[i] - s_mu[i, j]))
               num_s[j] = Σ_i sa[i, j] · s_werev[i, j],   den_s[j] = Σ_i sa[i, j] · s_w[i, j]
    cm_t       = cm / (dt_t / n)
    n times:   a[i, j]  = sigmoid(sigma[i, j] · (v[i] - mu[i, j]))            (i = source)
               num[j]   = cm_t v[j] + gvleak[j] + (Σ_i a[i, j] · werev[i, j] + num_s[j])
               den[j]   = cm_t + gleak[j] + (Σ_i a[i, j] · w[i, j] + den_s[j])
               v[j]     = num[j] / (den[j] + eps)

Conversion-time transforms (STYLE.md §9), done by the model: the positivity map
(softplus under ncps' implicit constraints) is applied to w, s_w, cm, gleak; the
sparsity masks are folded into w and s_w; erev is folded in (werev = w·erev,
s_werev = s_w·erev); gvleak = gleak·vleak.

Inputs: x (B, T, I), dt (B, T, 1), v (B, U), s_mu, s_sigma, s_w, s_werev (I, U),
mu, sigma, w, werev (U, U), cm, gleak, gvleak (U,), cfg (2,) = [ode_unfolds, eps];
all float32. Outputs: y (B, T, U) = v after every step, v_out (B, U).
The `.out` overload may update v in place (v_out is v); other overlaps are rejected.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "ltc_step"
MAX_UNITS = 4096   # kernels/ltc_step.cpp kLtcMaxUnits: its scratch buffers hold U floats
def ode_loop(x, dt, v, s_mu, s_sigma, s_w, s_werev, mu, sigma, w, werev, cm, gleak, gvleak, *,
             ode_unfolds: int, eps: float):
    """Plain loop over T (and the unfolds), straight from the equations above, with the
    solver settings as Python values: the decomposed export path."""
    ys = []
    for t in range(x.shape[1]):
        sa = torch.sigmoid(s_sigma * (x[:, t, :, None] - s_mu))            # (B, I, U)
        num_s = (sa * s_werev).sum(1)                                      # (B, U)
        den_s = (sa * s_w).sum(1)
        cm_t = cm / (dt[:, t] / ode_unfolds)                               # (B, U)
        for _ in range(ode_unfolds):
            a = torch.sigmoid(sigma * (v[:, :, None] - mu))                # (B, U_src, U)
            num = cm_t * v + gvleak + ((a * werev).sum(1) + num_s)
            den = cm_t + gleak + ((a * w).sum(1) + den_s)
            v = num / (den + eps)
        ys.append(v)
    return torch.stack(ys, dim=1), v


def decode_cfg(cfg) -> dict:
    n, eps = cfg.tolist() if isinstance(cfg, torch.Tensor) else cfg
    return {"ode_unfolds": int(n), "eps": eps}


def decomposition(*args):
    """The reference with cfg (the last argument) as a Python list (the decompose pass)."""
    return ode_loop(*args[:-1], **decode_cfg(args[-1]))


def reference(*args):
    return ode_loop(*args[:-1], **decode_cfg(args[-1]))


def sample_inputs(T: int, seed: int = 0, B: int = 2, I: int = 3, U: int = 11, unfolds: int = 6):
    """Parameters in ncps' init ranges, after its softplus / mask / erev folding. U = 11
    reaches the kernel's vector tails."""
    g = torch.Generator().manual_seed(seed)
    ru = lambda lo, hi, *s: torch.rand(*s, generator=g) * (hi - lo) + lo  # noqa: E731
    sign = lambda *s: torch.where(torch.rand(*s, generator=g) < 0.33, -1.0, 1.0)  # noqa: E731
    s_w, w = ru(0.3, 1.3, I, U), ru(0.3, 1.3, U, U)
    gleak = ru(0.3, 1.3, U)
    return (torch.randn(B, T, I, generator=g), ru(0.2, 2.0, B, T, 1), torch.randn(B, U, generator=g) * 0.1,
            ru(0.3, 0.8, I, U), ru(3, 8, I, U), s_w, s_w * sign(I, U),
            ru(0.3, 0.8, U, U), ru(3, 8, U, U), w, w * sign(U, U),
            ru(0.9, 1.1, U), gleak, gleak * ru(-0.2, 0.2, U), torch.tensor([float(unfolds), 1e-8]))


# ---- ONNX: a node `edgekit::LtcStep` whose model-local function body stock ORT inlines ----
@onnx_body
def LtcStep(x: FLOAT, dt: FLOAT, v: FLOAT, s_mu: FLOAT, s_sigma: FLOAT, s_w: FLOAT, s_werev: FLOAT,
            mu: FLOAT, sigma: FLOAT, w: FLOAT, werev: FLOAT, cm: FLOAT, gleak: FLOAT, gvleak: FLOAT,
            cfg: FLOAT) -> tuple[FLOAT, FLOAT]:
    ax1 = op.Constant(value_ints=[1])
    axl = op.Constant(value_ints=[-1])
    unfolds = op.Gather(cfg, op.Constant(value_int=0), axis=0)
    eps = op.Gather(cfg, op.Constant(value_int=1), axis=0)
    n = op.Cast(op.Floor(unfolds), to=7)                                 # int64 trip count
    T = op.Shape(x, start=1, end=2)
    vn = v
    y = op.Slice(op.Unsqueeze(v, ax1), op.Constant(value_ints=[0]), op.Constant(value_ints=[0]), ax1)  # (B, 0, U)
    # One Loop over t serves T = 1 (decode) and T > 1 (prefill): the ODE unfolds are a
    # loop either way, so a straight-line T = 1 body would save nothing.
    for t in range(op.Squeeze(T)):
        t1 = op.Unsqueeze(t, op.Constant(value_ints=[0]))
        t2 = op.Add(t1, op.Constant(value_ints=[1]))
        xt = op.Unsqueeze(op.Squeeze(op.Slice(x, t1, t2, ax1), ax1), axl)   # (B, I, 1)
        dtt = op.Squeeze(op.Slice(dt, t1, t2, ax1), ax1)                    # (B, 1)
        sa = op.Sigmoid(op.Mul(s_sigma, op.Sub(xt, s_mu)))                 # (B, I, U)
        num_s = op.ReduceSum(op.Mul(sa, s_werev), ax1, keepdims=0)          # (B, U)
        den_s = op.ReduceSum(op.Mul(sa, s_w), ax1, keepdims=0)
        cm_t = op.Div(cm, op.Div(dtt, unfolds))                             # (B, U)
        vs = vn
        for _k in range(n):
            a = op.Sigmoid(op.Mul(sigma, op.Sub(op.Unsqueeze(vs, axl), mu)))   # (B, U, U)
            num = op.Add(op.Add(op.Mul(cm_t, vs), gvleak),
                         op.Add(op.ReduceSum(op.Mul(a, werev), ax1, keepdims=0), num_s))
            den = op.Add(op.Add(cm_t, gleak), op.Add(op.ReduceSum(op.Mul(a, w), ax1, keepdims=0), den_s))
            vs = op.Div(num, op.Add(den, eps))
        vn = op.Identity(vs)
        y = op.Concat(y, op.Unsqueeze(vs, ax1), axis=1)
    return y, vn


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "B T I"), Arg("dt", "B T 1"), Arg("v", "B U"),
            *(Arg(n, "I U") for n in ("s_mu", "s_sigma", "s_w", "s_werev")),
            *(Arg(n, "U U") for n in ("mu", "sigma", "w", "werev")),
            *(Arg(n, "U") for n in ("cm", "gleak", "gvleak")), Arg("cfg", "2", form="(2,) [ode_unfolds, eps]")),
    outputs=(Arg("y", "B T U"), Arg("v_out", "B U")),
    constraints=((f"U <= {MAX_UNITS}", f"U = {{U}} exceeds {MAX_UNITS}"),),
    state_args=(2,), reference=reference, sample_inputs=sample_inputs, onnx_function=LtcStep,
    config_args=(14,), decomposition=decomposition))
