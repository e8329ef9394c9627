"""`edgekit::cfc_step` — the Closed-form Continuous-time (CfC) cell, over T >= 1 steps.

Dimensions: B batch, T time, I input features, U units, Z backbone width, K head width
(4U for the gated modes, U for "pure"), Lx = backbone layers after the first.

Paper: R. Hasani et al., "Closed-form continuous-time neural networks", Nature Machine
Intelligence 2022 (arXiv:2106.13898), eq. (10) (CfC) and eq. (5) (the "pure" direct
solution); as `ncps.torch.CfCCell` implements them. Per step t, with xh = [x_t, h]:

    z   = act(... act(xh W_in + b_in) W_bb[0] + b_bb[0] ...)     (n_bb backbone layers;
                                                                  z = xh when n_bb = 0)
    heads = z W_head + b_head = [f1 | f2 | ta | tb]              (each U wide)
    g   = sigmoid(ta · dt_t + tb)                                 (the time gate)
    h'  = tanh(f1) · (1 - c·g) + g · tanh(f2)                     c = 1 "default", 0 "no_gate"
  "pure" (K = U, heads = f1):
    h'  = A - A · exp(-dt_t · (|w_tau| + |f1|)) · f1              p = [A; |w_tau|] (2, U)

act(u) = act_scale · tanh(act_slope · u) covers ncps' "lecun_tanh" (1.7159, 0.666) and
"tanh" (1, 1). The cell's constants travel as one tensor, cfg = [mode, n_bb, act_scale,
act_slope] (mode 0 default, 1 no_gate, 2 pure), so the op's schema is tensors only and
the same in torch, ONNX and the C++ kernel. Sparsity masks (wired CfC) are folded into
W_head at conversion time; unused inputs (w_in/b_in when n_bb = 0, w_bb/b_bb when
n_bb <= 1, p in the gated modes) are passed as small placeholders (any shape) and never read.

Inputs: x (B, T, I), dt (B, T, 1), h (B, U), w_in (I+U, Z), b_in (Z), w_bb (Lx', Z, Z),
b_bb (Lx', Z) with Lx' >= n_bb - 1 (when n_bb > 1), w_head (Z or I+U, K), b_head (K), p (2, U),
cfg (4,); all float32. Outputs: y (B, T, U) = h after every step, h_out (B, U).
The `.out` overload may update h in place (h_out is h): h is read in full before the
first write of each step. Any other overlap between outputs and inputs is rejected.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "cfc_step"
MODES = ("default", "no_gate", "pure")
ACTIVATIONS = {"lecun_tanh": (1.7159, 0.666), "tanh": (1.0, 1.0)}
MAX_WIDTH = 4096   # kernels/cfc_step.cpp kCfcMaxWidth: its scratch buffers hold I+U, Z and K floats

def make_cfg(mode: str, backbone_layers: int, activation: str) -> torch.Tensor:
    scale, slope = ACTIVATIONS[activation]
    return torch.tensor([float(MODES.index(mode)), float(backbone_layers), scale, slope], dtype=torch.float32)


def _shape(t) -> tuple:
    return tuple(t.shape)


def check(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, cfg) -> None:
    """The weights' shapes for the configuration cfg holds (after the spec's checks). The C++
    kernel (kernels/cfc_step.cpp) uses the same words."""
    B, T, I = x.shape
    U = h.shape[1]
    mode, n_bb = int(cfg[0]), int(cfg[1])
    if mode not in (0, 1, 2) or n_bb < 0:
        raise ValueError(f"cfc_step: cfg holds mode {mode} and n_bb {n_bb}; expected mode 0, 1 or 2 and n_bb >= 0")
    K, Z = (U if mode == 2 else 4 * U), 0
    if n_bb > 0:
        Z = w_in.shape[-1]
        if _shape(w_in) != (I + U, Z) or _shape(b_in) != (Z,):
            raise ValueError(f"cfc_step: w_in must be (I+U, Z) = ({I + U}, Z) and b_in (Z,); "
                             f"got {_shape(w_in)} and {_shape(b_in)}")
        if n_bb > 1 and (w_bb.dim() != 3 or w_bb.shape[0] < n_bb - 1 or _shape(w_bb)[1:] != (Z, Z)
                         or _shape(b_bb) != (w_bb.shape[0], Z)):
            raise ValueError(f"cfc_step: w_bb must be (Lx, Z, Z) and b_bb (Lx, Z) with Lx >= {n_bb - 1}, "
                             f"Z = {Z}; got {_shape(w_bb)} and {_shape(b_bb)}")
        d_in = Z
    else:
        d_in = I + U
    if _shape(w_head) != (d_in, K) or _shape(b_head) != (K,):
        raise ValueError(f"cfc_step: w_head must be ({d_in}, {K}) and b_head ({K},); "
                         f"got {_shape(w_head)} and {_shape(b_head)}")
    if max(I + U, Z, K) > MAX_WIDTH:
        raise ValueError(f"cfc_step: widths I+U = {I + U}, Z = {Z}, K = {K} exceed {MAX_WIDTH}")


def cell_loop(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, *, mode: str, n_bb: int,
              act: tuple[float, float]):
    """Plain loop over T, straight from the equations above, with the configuration as
    Python values: the decomposed export path (no data-dependent control flow)."""
    scale, slope = act
    U = h.shape[-1]
    ys = []
    for t in range(x.shape[1]):
        z = torch.cat([x[:, t], h], dim=-1)                              # (B, I+U)
        if n_bb > 0:
            z = scale * torch.tanh(slope * (z @ w_in + b_in))            # (B, Z)
            for layer in range(n_bb - 1):
                z = scale * torch.tanh(slope * (z @ w_bb[layer] + b_bb[layer]))
        heads = z @ w_head + b_head                                      # (B, K)
        d = dt[:, t]                                                     # (B, 1)
        if mode == "pure":
            A, tau = p[0], p[1]
            h = A - A * torch.exp(-d * (tau + torch.abs(heads))) * heads
        else:
            f1, f2, ta, tb = heads.split(U, dim=-1)                      # 4 x (B, U)
            g = torch.sigmoid(ta * d + tb)
            c = 1.0 if mode == "default" else 0.0
            h = torch.tanh(f1) * (1.0 - c * g) + g * torch.tanh(f2)
        ys.append(h)
    return torch.stack(ys, dim=1), h


def decode_cfg(cfg) -> dict:
    mode, n_bb, scale, slope = cfg.tolist() if isinstance(cfg, torch.Tensor) else cfg
    return {"mode": MODES[int(mode)], "n_bb": int(n_bb), "act": (scale, slope)}


def reference(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, cfg):
    """The op's reference: decode cfg, run `cell_loop`."""
    return cell_loop(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, **decode_cfg(cfg))


def decomposition(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, cfg: list):
    """The reference with cfg as a Python list (the decompose pass)."""
    return cell_loop(x, dt, h, w_in, b_in, w_bb, b_bb, w_head, b_head, p, **decode_cfg(cfg))


def sample_inputs(T: int, seed: int = 0, mode: str = "default", n_bb: int = 2, B: int = 2, I: int = 5,
                  U: int = 9, Z: int = 13, scale: float = 0.25):
    """A CfC cell's arguments (weights scaled so activations stay in tanh's working range).
    Two backbone layers; U = 9 and Z = 13 reach the kernel's vector tails."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * scale  # noqa: E731
    K = U if mode == "pure" else 4 * U
    d_in = Z if n_bb > 0 else I + U
    x, h = torch.randn(B, T, I, generator=g), torch.randn(B, U, generator=g) * 0.5
    dt = 0.1 + torch.rand(B, T, 1, generator=g)
    p = torch.stack([torch.randn(U, generator=g), torch.rand(U, generator=g) + 0.1])
    lx = max(n_bb - 1, 1)
    return (x, dt, h, r(I + U, Z), r(Z), r(lx, Z, Z), r(lx, Z), r(d_in, K), r(K), p,
            make_cfg(mode, n_bb, "lecun_tanh"))


# ---- ONNX: a node `edgekit::CfcStep` whose model-local function body stock ORT inlines ----
@onnx_body
def CfcStep(x: FLOAT, dt: FLOAT, h: FLOAT, w_in: FLOAT, b_in: FLOAT, w_bb: FLOAT, b_bb: FLOAT,
            w_head: FLOAT, b_head: FLOAT, p: FLOAT, cfg: FLOAT) -> tuple[FLOAT, FLOAT]:
    ax1 = op.Constant(value_ints=[1])
    zero = op.Constant(value_float=0.0)
    mode = op.Gather(cfg, op.Constant(value_int=0), axis=0)
    n_bb = op.Gather(cfg, op.Constant(value_int=1), axis=0)
    scale = op.Gather(cfg, op.Constant(value_int=2), axis=0)
    slope = op.Gather(cfg, op.Constant(value_int=3), axis=0)
    n_more = op.Cast(op.Max(op.Sub(n_bb, op.Constant(value_float=1.0)), zero), to=7)   # int64
    c = op.Cast(op.Equal(mode, zero), to=1)             # 1 "default", 0 "no_gate"
    A = op.Gather(p, op.Constant(value_int=0), axis=0)
    tau = op.Gather(p, op.Constant(value_int=1), axis=0)
    T = op.Shape(x, start=1, end=2)
    # One Loop over t serves T = 1 (decode) and T > 1 (prefill). A straight-line T = 1
    # branch (If on T, as rwkv7_wkv has) crashes ORT 1.31's graph optimizer here: it
    # folds the If on the static T and then the nested If/Loop on the constant cfg.
    hn = h
    y = op.Slice(op.Unsqueeze(h, ax1), op.Constant(value_ints=[0]), op.Constant(value_ints=[0]), ax1)  # (B, 0, U)
    for t in range(op.Squeeze(T)):
        dtt = op.Gather(dt, t, axis=1)                                      # (B, 1)
        z = op.Concat(op.Gather(x, t, axis=1), hn, axis=-1)                 # (B, I+U)
        if op.Greater(n_bb, zero):
            zb = op.Mul(scale, op.Tanh(op.Mul(slope, op.Add(op.MatMul(z, w_in), b_in))))   # (B, Z)
            for layer in range(n_more):
                wl = op.Gather(w_bb, layer, axis=0)
                bl = op.Gather(b_bb, layer, axis=0)
                zb = op.Mul(scale, op.Tanh(op.Mul(slope, op.Add(op.MatMul(zb, wl), bl))))
            zh = zb
        else:
            zh = op.Identity(z)
        heads = op.Add(op.MatMul(zh, w_head), b_head)                       # (B, K)
        if op.Equal(mode, op.Constant(value_float=2.0)):
            e = op.Exp(op.Neg(op.Mul(dtt, op.Add(tau, op.Abs(heads)))))
            hs = op.Sub(A, op.Mul(op.Mul(A, e), heads))
        else:
            f1, f2, ta, tb = op.Split(heads, axis=-1, num_outputs=4)        # 4 x (B, U)
            g = op.Sigmoid(op.Add(op.Mul(ta, dtt), tb))
            hs = op.Add(op.Mul(op.Tanh(f1), op.Sub(op.Constant(value_float=1.0), op.Mul(c, g))),
                        op.Mul(g, op.Tanh(f2)))
        hn = op.Identity(hs)
        y = op.Concat(y, op.Unsqueeze(hs, ax1), axis=1)
    return y, hn


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "B T I"), Arg("dt", "B T 1"), Arg("h", "B U"), *(Arg(n, None) for n in (
        "w_in", "b_in", "w_bb", "b_bb", "w_head", "b_head")), Arg("p", "2 U"),
            Arg("cfg", "4", form="(4,) [mode, n_bb, act_scale, act_slope]")),
    outputs=(Arg("y", "B T U"), Arg("h_out", "B U")),
    state_args=(2,), check=check, reference=reference, sample_inputs=sample_inputs, onnx_function=CfcStep,
    config_args=(10,), decomposition=decomposition))
