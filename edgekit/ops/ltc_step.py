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

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, register
from edgekit.ops.cfc_step import check_out

NAME = "ltc_step"
_ARGS = ("x", "dt", "v", "s_mu", "s_sigma", "s_w", "s_werev", "mu", "sigma", "w", "werev",
         "cm", "gleak", "gvleak", "cfg")
_SIG = ", ".join(f"Tensor {n}" for n in _ARGS)
LIB.define(f"{NAME}({_SIG}) -> (Tensor, Tensor)")
LIB.define(f"{NAME}.out({_SIG}, *, Tensor(a!) y, Tensor(b!) v_out) -> (Tensor(a!), Tensor(b!))")


def validate(*args) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/ltc_step.cpp) uses the same words."""
    for name, t in zip(_ARGS, args):
        if t.dtype != torch.float32:
            raise ValueError(f"ltc_step: {name} must be float32; got {t.dtype}")
    x, dt, v = args[:3]
    if x.dim() != 3:
        raise ValueError(f"ltc_step: x must be (B, T, I); got {x.dim()} dims")
    B, T, I = x.shape
    if v.dim() != 2 or v.shape[0] != B:
        raise ValueError(f"ltc_step: v must be (B, U) with B = {B}; got {tuple(v.shape)}")
    U = v.shape[1]
    want = {"dt": (B, T, 1), "s_mu": (I, U), "s_sigma": (I, U), "s_w": (I, U), "s_werev": (I, U),
            "mu": (U, U), "sigma": (U, U), "w": (U, U), "werev": (U, U),
            "cm": (U,), "gleak": (U,), "gvleak": (U,), "cfg": (2,)}
    for name, t in zip(_ARGS, args):
        if name in want and tuple(t.shape) != want[name]:
            raise ValueError(f"ltc_step: {name} must be {want[name]}; got {tuple(t.shape)}")


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
    validate(*args)
    return ode_loop(*args[:-1], **decode_cfg(args[-1]))


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(*args):
    y, v = reference(*args)
    return y.contiguous(), v.contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(*args, y, v_out):
    check_out(NAME, _ARGS, args, "v", y, v_out)
    y_, v_ = reference(*args)
    y.resize_(y_.shape).copy_(y_)
    v_out.resize_(v_.shape).copy_(v_)
    return y, v_out


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(x, dt, v, *rest):
    return x.new_empty((x.shape[0], x.shape[1], v.shape[1])), torch.empty_like(v)


# ---- ONNX: a node `edgekit::LtcStep` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
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


INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=LtcStep,
                       cpp_kernel=f"{NAME}.out", validate=validate, config_args=(14,),
                       decomposition=decomposition))
