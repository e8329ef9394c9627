"""RWKV-7 "Goose" (x070): config, BlinkDL checkpoint mapping, sequence and step forms.

Paper: B. Peng et al., "RWKV-7 Goose with Expressive Dynamic State Evolution",
arXiv:2503.14456. Reference code: BlinkDL/RWKV-LM `RWKV-v7/rwkv_v7_demo.py` and the
`rwkv` pip package (`RWKV_V7_ON=1`), which is our parity oracle.

State layout, per layer i (B batch, C width, H heads, N head size = 64):

    layers.i.shift_att  (B, C)        float32  last input of time-mix (token shift)
    layers.i.wkv        (B, H, N, N)  float32  the matrix-valued WKV state; row = value
                                               channel, column = key channel
    layers.i.shift_ffn  (B, C)        float32  last input of channel-mix

The step form is the sequence form at T = 1: every function below takes (B, T, C) and
branches on T only where the token shift reads the previous step (a static shape, so
the exported graph has no data-dependent control flow).

Conversion-time transforms (STYLE.md §9): `blocks.0.ln0` is folded into the embedding;
bf16 weights are widened to fp32 once; the six token-shift mixes are stacked into one
(6, C) tensor so the graph does one multiply-add instead of six.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import edgekit.ops  # noqa: F401  (registers torch.ops.edgekit.*)
from edgekit.errors import EdgekitError
from edgekit.models import _checkpoint
from edgekit.models.base import RecurrentModel, StateSpec, TokenizerRef, register_arch
from edgekit.models.layers import Linear, LowRank

edgekit_ops = torch.ops.edgekit   # the custom ops (edgekit/ops/): the math of each recurrence

EXP_M05 = math.exp(-0.5)   # w = exp(-e^{-0.5} · sigmoid(w0 + lora(x)))  (decay in (e^{-0.607}, 1))
LN_X_EPS = 64e-5           # GroupNorm eps of ln_x (head_size_divisor 8 -> 1e-5 * 8^2)
MIX_NAMES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")


@dataclass(frozen=True)
class RWKV7Config:
    vocab_size: int
    n_embd: int          # C
    n_layer: int         # L
    head_size: int       # N
    d_decay: int         # LoRA ranks of w, a, v, g
    d_aaa: int
    d_mv: int
    d_gate: int
    d_ffn: int

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @staticmethod
    def default_lora(n_embd: int) -> dict:
        """LoRA ranks as RWKV-LM's train script chooses them for width C."""
        r = lambda f, p: max(32, int(round(f * n_embd ** p / 32) * 32))  # noqa: E731
        return {"d_decay": r(1.8, 0.5), "d_aaa": r(1.8, 0.5), "d_mv": r(1.3, 0.5),
                "d_gate": r(0.6, 0.8), "d_ffn": 4 * n_embd}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of a BlinkDL x070 .pth and its shape."""
        C, V, H, N = self.n_embd, self.vocab_size, self.n_head, self.head_size
        s = {"emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,),
             "ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)}
        for i in range(self.n_layer):
            b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            for n in ("ln1", "ln2"):
                s[f"{b}{n}.weight"] = s[f"{b}{n}.bias"] = (C,)
            for n in MIX_NAMES + ("w0", "a0", "k_k", "k_a"):
                s[a + n] = (1, 1, C)
            for n, d in (("w", self.d_decay), ("a", self.d_aaa), ("g", self.d_gate)):
                s[f"{a}{n}1"], s[f"{a}{n}2"] = (C, d), (d, C)
            if i > 0:   # layer 0 makes v_first; its v0..v2 exist in some files and are unused
                s[a + "v0"], s[a + "v1"], s[a + "v2"] = (1, 1, C), (C, self.d_mv), (self.d_mv, C)
            s[a + "r_k"] = (H, N)
            for n in ("receptance", "key", "value", "output"):
                s[f"{a}{n}.weight"] = (C, C)
            s[a + "ln_x.weight"] = s[a + "ln_x.bias"] = (C,)
            s[f + "x_k"] = (1, 1, C)
            s[f + "key.weight"], s[f + "value.weight"] = (self.d_ffn, C), (C, self.d_ffn)
        return s

    @classmethod
    def from_state_dict(cls, sd: dict, source: str) -> "RWKV7Config":
        for key in ("emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1",
                    "blocks.0.att.g1", "blocks.0.ffn.key.weight"):
            if key not in sd:
                raise EdgekitError(f"checkpoint '{source}' has no key '{key}'",
                                   expected="a BlinkDL RWKV-7 (x070) .pth",
                                   fix="pass an RWKV-7 checkpoint; RWKV-4/5/6 files are not x070")
        for key in ("emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1",
                    "blocks.0.att.g1", "blocks.0.ffn.key.weight"):
            if sd[key].dim() != 2:
                raise EdgekitError(f"checkpoint '{source}' key '{key}' has shape {tuple(sd[key].shape)}",
                                   expected="a 2-D tensor", fix="the file is corrupt or not an RWKV-7 checkpoint")
        V, C = sd["emb.weight"].shape
        H, N = sd["blocks.0.att.r_k"].shape
        if min(V, C, H, N) == 0 or H * N != C:
            raise EdgekitError(f"checkpoint '{source}' has emb.weight ({V}, {C}) and blocks.0.att.r_k ({H}, {N})",
                               expected="non-empty tensors with heads x head size = width (r_k is (C / N, N))",
                               fix="the file is corrupt or not an RWKV-7 checkpoint")
        layers = set()
        for k in sd:
            if k.startswith("blocks."):
                idx = k.split(".")[1]
                if not idx.isdigit():
                    raise EdgekitError(f"checkpoint '{source}' has a key '{k}' with no layer index",
                                       expected="blocks.<int>.<name>", fix="the file is not a BlinkDL RWKV-7 checkpoint")
                layers.add(int(idx))
        if max(layers) >= len(sd):      # every layer holds tensors: a larger index is no layer of this file
            raise EdgekitError(f"checkpoint '{source}' has a key for layer {max(layers):,}",
                               expected=f"layer indices below the {len(sd):,} tensors the file holds",
                               fix="the file is corrupt or crafted; use the original checkpoint")
        d_mv = sd["blocks.1.att.v1"].shape[1] if "blocks.1.att.v1" in sd else \
            cls.default_lora(C)["d_mv"]
        return cls(vocab_size=V, n_embd=C, n_layer=max(layers) + 1, head_size=N,
                   d_decay=sd["blocks.0.att.w1"].shape[1], d_aaa=sd["blocks.0.att.a1"].shape[1],
                   d_mv=d_mv, d_gate=sd["blocks.0.att.g1"].shape[1],
                   d_ffn=sd["blocks.0.ffn.key.weight"].shape[0])


def _shape_ok(got: tuple, exp: tuple) -> bool:
    """Exact shape, except that BlinkDL's (1, 1, C) vectors may also be stored as (C,)."""
    return got == exp or (len(exp) == 3 and exp[:2] == (1, 1) and got == exp[2:])


def check_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, tuple], source: str) -> None:
    missing = [k for k in expected if k not in sd]
    bad = [(k, tuple(sd[k].shape), expected[k]) for k in expected
           if k in sd and not _shape_ok(tuple(sd[k].shape), expected[k])]
    not_float = [k for k in expected if k in sd and not sd[k].is_floating_point()]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise EdgekitError(f"checkpoint '{source}' is missing {len(missing)} key(s): "
                           + ", ".join(missing[:3]) + more,
                           fix="the file is incomplete or from another architecture/version")
    if bad:
        k, got, exp = bad[0]
        raise EdgekitError(f"checkpoint '{source}' key '{k}' has shape {got}",
                           expected=f"{exp} (from the config inferred from emb.weight and r_k)",
                           fix="the file is corrupt or mixes weights of different models")
    if not_float:
        k = not_float[0]
        raise EdgekitError(f"checkpoint '{source}' key '{k}' has dtype {sd[k].dtype}",
                           expected="a floating-point tensor (bf16, fp16 or fp32)",
                           fix="the file is corrupt or quantized in a format edgekit does not read")


class _TimeMix(nn.Module):
    def __init__(self, cfg: RWKV7Config, layer_id: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.layer_id = layer_id
        self.maa = nn.Parameter(torch.zeros(6, 1, 1, C))       # x_r, x_w, x_k, x_v, x_a, x_g
        self.w0, self.a0, self.k_k, self.k_a = (nn.Parameter(torch.zeros(C)) for _ in range(4))
        self.w1, self.w2 = LowRank(C, cfg.d_decay), LowRank(cfg.d_decay, C)
        self.a1, self.a2 = LowRank(C, cfg.d_aaa), LowRank(cfg.d_aaa, C)
        self.g1, self.g2 = LowRank(C, cfg.d_gate), LowRank(cfg.d_gate, C)
        if layer_id > 0:
            self.v0 = nn.Parameter(torch.zeros(C))
            self.v1, self.v2 = LowRank(C, cfg.d_mv), LowRank(cfg.d_mv, C)
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance, self.key, self.value, self.output = (Linear(C, C) for _ in range(4))
        self.ln_x_weight, self.ln_x_bias = nn.Parameter(torch.ones(C)), nn.Parameter(torch.zeros(C))


class _ChannelMix(nn.Module):
    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.x_k = nn.Parameter(torch.zeros(cfg.n_embd))
        self.key = Linear(cfg.n_embd, cfg.d_ffn)
        self.value = Linear(cfg.d_ffn, cfg.n_embd)


class _Block(nn.Module):
    def __init__(self, cfg: RWKV7Config, layer_id: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.att, self.ffn = _TimeMix(cfg, layer_id), _ChannelMix(cfg)


def _shifted(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Token shift: the previous step's input for every t. x (B, T, C), last (B, C)."""
    if x.shape[1] == 1:                                   # step form
        return last[:, None]
    return torch.cat([last[:, None], x[:, :-1]], dim=1)   # sequence form


@register_arch
class RWKV7(RecurrentModel):
    arch = "rwkv7"
    checkpoint = "RWKV-7 x070 BlinkDL .pth (torch.load weights_only)"

    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)   # ln0 folded in
        self.blocks = nn.ModuleList(_Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = Linear(cfg.n_embd, cfg.vocab_size)

    # -- contract ----------------------------------------------------------------------
    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        C, H, N = self.cfg.n_embd, self.cfg.n_head, self.cfg.head_size
        spec = []
        for i in range(self.cfg.n_layer):
            spec += [StateSpec(f"layers.{i}.shift_att", (batch, C), torch.float32),
                     StateSpec(f"layers.{i}.wkv", (batch, H, N, N), torch.float32),
                     StateSpec(f"layers.{i}.shift_ffn", (batch, C), torch.float32)]
        return spec

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def tokenizer(self) -> TokenizerRef | None:
        """The RWKV World vocabulary (shipped with the `rwkv` package) for the released vocab
        size; None otherwise."""
        from edgekit.tokenizer import WORLD_VOCAB
        if self.cfg.vocab_size == 65536:
            return TokenizerRef(WORLD_VOCAB)
        f = getattr(self, "tokenizer_file", None)       # a tokenizer.json beside the .pth
        return TokenizerRef(f.name, f) if f is not None else None

    def forward(self, x, state=None):
        """tokens (B, T) int64 -> logits (B, T, V)."""
        if state is None:
            state = self.init_state(x.shape[0])
        new_state = {}
        h = self.emb(x)                                                      # (B, T, C)
        v_first = h                                                          # set by layer 0
        for i, blk in enumerate(self.blocks):
            p = f"layers.{i}."
            y, new_state[p + "shift_att"], new_state[p + "wkv"], v_first = self._time_mix(
                blk.att, blk.ln1(h), state[p + "shift_att"], state[p + "wkv"], v_first)
            h = h + y
            y, new_state[p + "shift_ffn"] = self._channel_mix(blk.ffn, blk.ln2(h), state[p + "shift_ffn"])
            h = h + y
        return self.head(self.ln_out(h)), new_state

    # -- the two mixes -----------------------------------------------------------------
    def _time_mix(self, att: _TimeMix, x, shift, wkv, v_first):
        B, T, C = x.shape
        H, N = self.cfg.n_head, self.cfg.head_size
        xx = _shifted(x, shift) - x
        xr, xw, xk, xv, xa, xg = (x + xx * att.maa).unbind(0)               # 6 x (B, T, C)

        r, k, v = att.receptance(xr), att.key(xk), att.value(xv)
        w = att.w2(torch.tanh(att.w1(xw)))
        a = torch.sigmoid(att.a0 + att.a2(att.a1(xa)))
        g = att.g2(torch.sigmoid(att.g1(xg)))

        kk = (k * att.k_k).view(B, T, H, N)
        kk = kk / kk.square().sum(-1, keepdim=True).sqrt().clamp_min(1e-12)  # F.normalize
        k = k * (1 + (a - 1) * att.k_a)
        if att.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(att.v0 + att.v2(att.v1(xv)))
        w = torch.exp(-EXP_M05 * torch.sigmoid(att.w0 + w))

        r4, w4, k4, v4, a4 = (t.view(B, T, H, N) for t in (r, w, k, v, a))   # (B, T, H, N)
        y, wkv = self._wkv(r4, w4, k4, v4, -kk, kk * a4, wkv)

        # ln_x: GroupNorm with one group per head, over N.
        mean = y.mean(-1, keepdim=True)
        var = (y - mean).square().mean(-1, keepdim=True)
        y = ((y - mean) / torch.sqrt(var + LN_X_EPS)).reshape(B, T, C) * att.ln_x_weight + att.ln_x_bias
        y = y + ((r4 * k4 * att.r_k).sum(-1, keepdim=True) * v4).reshape(B, T, C)
        return att.output(y * g), x[:, -1], wkv, v_first

    @staticmethod
    def _wkv(r, w, k, v, a, b, state):
        return edgekit_ops.rwkv7_wkv(r, w, k, v, a, b, state)

    @staticmethod
    def _channel_mix(ffn: _ChannelMix, x, shift):
        xx = _shifted(x, shift) - x
        k = torch.relu(ffn.key(x + xx * ffn.x_k)).square()
        return ffn.value(k), x[:, -1]

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and path.suffix == ".pth"

    @classmethod
    def from_pretrained(cls, path) -> "RWKV7":
        path = Path(path)
        sd = _checkpoint.read_tensors(path)        # plain dense tensors within the file's size, finite
        cfg = RWKV7Config.from_state_dict(sd, str(path))
        check_state_dict(sd, cfg.expected_shapes(), str(path))
        model = cls(cfg)
        model.load_blink_state_dict(sd)
        beside = path.parent / "tokenizer.json"           # e.g. a byte-level model's tokenizer
        model.tokenizer_file = beside if cfg.vocab_size != 65536 and beside.is_file() else None
        return model.eval().requires_grad_(False)

    @classmethod
    def write_random(cls, path, seed: int = 0, **shape) -> Path:
        """A BlinkDL x070 .pth (bf16) at path; tiny (vocab 256, C 128, 2 layers) by default."""
        return write_random_checkpoint(path, **{"vocab_size": 256, "n_embd": 128, "n_layer": 2, "head_size": 64,
                                                "seed": seed, **shape})

    @classmethod
    def oracle(cls, path):
        """The `rwkv` pip package in RWKV-7 mode, strategy "cpu fp32" (it reads `<path>.pth`)."""
        import os
        os.environ["RWKV_V7_ON"] = "1"
        os.environ.setdefault("RWKV_JIT_ON", "1")
        from rwkv.model import RWKV
        model, state = RWKV(model=str(Path(path).with_suffix("")), strategy="cpu fp32"), [None]

        def step(tok):
            logits, state[0] = model.forward([int(tok)], state[0])
            return logits.float().numpy()
        return "rwkv pip package (cpu fp32)", step

    @torch.no_grad()
    def load_blink_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        f32 = lambda k: sd[k].to(torch.float32)  # noqa: E731
        C = self.cfg.n_embd
        emb = F.layer_norm(f32("emb.weight"), (C,), f32("blocks.0.ln0.weight"), f32("blocks.0.ln0.bias"))
        self.emb.weight.copy_(emb)
        self.ln_out.weight.copy_(f32("ln_out.weight")); self.ln_out.bias.copy_(f32("ln_out.bias"))
        self.head.load(f32("head.weight"))
        for i, blk in enumerate(self.blocks):
            b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            for ln in ("ln1", "ln2"):
                getattr(blk, ln).weight.copy_(f32(f"{b}{ln}.weight"))
                getattr(blk, ln).bias.copy_(f32(f"{b}{ln}.bias"))
            att = blk.att
            att.maa.copy_(torch.stack([f32(a + n).reshape(C) for n in MIX_NAMES]).view(6, 1, 1, C))
            names = ["w0", "a0", "k_k", "k_a", "w1", "w2", "a1", "a2", "g1", "g2", "r_k"]
            if i > 0:
                names += ["v0", "v1", "v2"]
            for n in names:
                p = getattr(att, n)
                if isinstance(p, LowRank):
                    p.load_in_out(f32(a + n))            # x070 stores them (in, out), as LowRank does
                else:
                    p.copy_(f32(a + n).reshape(p.shape))
            for n in ("receptance", "key", "value", "output"):
                getattr(att, n).load(f32(f"{a}{n}.weight"))
            att.ln_x_weight.copy_(f32(a + "ln_x.weight")); att.ln_x_bias.copy_(f32(a + "ln_x.bias"))
            blk.ffn.x_k.copy_(f32(f + "x_k").reshape(C))
            blk.ffn.key.load(f32(f + "key.weight"))
            blk.ffn.value.load(f32(f + "value.weight"))


def random_state_dict(vocab_size: int, n_embd: int, n_layer: int, head_size: int = 64,
                      seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A random-weight x070 state_dict in BlinkDL's key names and shapes.

    Scales keep activations in the range trained models see (unit-variance residual
    stream, decays spread over (0.55, 1)), so parity checks exercise real numerics.
    """
    g = torch.Generator().manual_seed(seed)
    cfg = RWKV7Config(vocab_size, n_embd, n_layer, head_size, **RWKV7Config.default_lora(n_embd))
    C = n_embd
    sd = {}
    for key, shape in cfg.expected_shapes().items():
        name = key.rsplit(".", 1)[-1] if not key.endswith((".weight", ".bias")) else key.split(".")[-2] + "." + key.split(".")[-1]
        fan_in = shape[-1] if len(shape) == 2 else C
        rn = lambda s=1.0: torch.randn(shape, generator=g) * s  # noqa: E731
        if name.startswith(("ln", "ln_")) and name.endswith(".weight") or name == "ln_x.weight":
            t = 1 + rn(0.1)
        elif name.endswith(".bias"):
            t = rn(0.1)
        elif name in MIX_NAMES or name == "x_k":
            t = torch.rand(shape, generator=g)
        elif name == "w0":
            t = torch.rand(shape, generator=g) * 4 - 3
        elif name in ("a0", "r_k"):
            t = rn(0.5)
        elif name == "v0":
            t = 1 + rn(0.3)
        elif name in ("k_k",):
            t = 0.85 + rn(0.1)
        elif name == "k_a":
            t = 1 + rn(0.1)
        elif name in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
            t = rn(0.2 / math.sqrt(shape[0]) * 4)
        elif key == "emb.weight":
            t = rn(1.0)
        else:                                             # Linear weights (out, in)
            t = rn(1 / math.sqrt(shape[1]))
        sd[key] = t.to(dtype).contiguous()
    return sd


def write_random_checkpoint(path, **kw) -> Path:
    """Write a BlinkDL-format .pth (bf16 by default) with random weights."""
    from edgekit._io import atomic_path
    path = Path(path)
    sd = random_state_dict(**kw)
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)
    return path
