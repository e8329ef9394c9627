"""Hawk and Griffin (RecurrentGemma): config, HF checkpoint mapping, sequence and step forms.

Paper: S. De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for
Efficient Language Models", arXiv:2402.19427. Hawk = every temporal block is a recurrent
(RG-LRU) block; Griffin = the config's `block_types` pattern, cycled over the layers
(default recurrent, recurrent, attention), whose attention blocks are local (sliding
window) multi-query attention. Reference code: google-deepmind/recurrentgemma and
transformers' `RecurrentGemmaForCausalLM` (our parity oracle), whose save_pretrained
directories (config.json + safetensors) we read.

Dimensions (see edgekit.models.base): B batch, T time, C hidden width, D lru width,
K conv width, NH query heads, KVH key/value heads, G = NH / KVH, E head dim,
R rotary dims, S attention window (ring slots), V vocab.

State layout (all zeros is the start of a stream):

    layers.i.conv     (B, D, K-1)      float32  recurrent block: the last K-1 inputs of the
                                                temporal Conv1D, oldest first
    layers.i.rg_lru   (B, D)           float32  recurrent block: the RG-LRU hidden state h
    layers.i.k_cache  (B, KVH, S, E)   float32  attention block: ring buffer of the last S
    layers.i.v_cache  (B, KVH, S, E)   float32  keys (rotated) and values; position p lives
                                                in slot p mod S
    position          (B,)             int64    tokens seen so far (the next token's position)

`position` tells the step graph which ring slot to write (p mod S), which slots hold a
token yet (their position is >= 0) and where the RG-LRU resets (position 0, where the
reference skips the sqrt(1-a²) normalization). The attention window matches
transformers': a query at position p sees keys at positions p-S+1 .. p. Memory is
constant at any stream length: S is fixed.

The step form is the sequence form at T = 1; the graph has no data-dependent control
flow: slot choice and validity are integer arithmetic, masks and a gather.

Conversion-time transforms (STYLE.md §9): an untied embedding is multiplied by the
reference's normalizer (sqrt(C) rounded to bfloat16, a transformers quirk kept for parity)
once; a tied one is stored once, as the head's (C, V) matrix, its rows read by the
embedding (`Linear.rows`) and scaled after the gather (the same fp32 product, so exact:
C multiplies per token instead of a second V x C copy in every export, 98 MB at hawk-100m's
32000 x 768); the RMSNorm scales (1 + w) are folded; Linear weights are stored (in, out);
the RG-LRU's two gate weights are concatenated per block and its log decay -8·softplus(Λ) is
precomputed; bf16/fp16 weights are widened to fp32 once.
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
from edgekit.models import _checkpoint, hf
from edgekit.models._checkpoint import Limits, config_bool, config_dict, config_float, config_int
from edgekit.models.base import RecurrentModel, StateSpec, register_arch
from edgekit.models.layers import Linear, RMSNorm, add_rms_norm   # RMSNorm weights: 1 + the checkpoint's (folded at load)
from edgekit.units import human_bytes

edgekit_ops = torch.ops.edgekit   # the custom ops (edgekit/ops/): the math of each recurrence

MODEL_TYPE = "recurrent_gemma"
BLOCK_TYPES = ("recurrent", "attention")
ACTIVATIONS = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu": "none"}
LOG_A_SCALE = 8.0     # c in log a_t = -c · softplus(Λ) · r_t (paper eq. 3)


@dataclass(frozen=True)
class GriffinConfig:
    vocab_size: int
    hidden_size: int           # C
    intermediate_size: int     # the config's value; the MLP width is intermediate_size // 2
    num_hidden_layers: int
    num_attention_heads: int   # NH (also the RG-LRU gate blocks)
    num_key_value_heads: int   # KVH
    lru_width: int             # D
    conv1d_width: int          # K
    attention_window_size: int  # S
    layer_types: tuple[str, ...]  # per layer: "recurrent" | "attention"
    rms_norm_eps: float
    logits_soft_cap: float | None
    rope_theta: float
    partial_rotary_factor: float
    hidden_activation: str
    attention_bias: bool
    tie_word_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def variant(self) -> str:
        return "hawk" if all(t == "recurrent" for t in self.layer_types) else "griffin"

    @property
    def embed_scale(self) -> float:
        """transformers keeps the normalizer sqrt(C) as a bfloat16 buffer and casts it to the
        activation dtype: the model multiplies by sqrt(C) rounded to bf16 (6.9375 for C=48)."""
        return float(torch.tensor(self.hidden_size ** 0.5, dtype=torch.bfloat16))

    @classmethod
    def from_hf(cls, c: dict, source: str, lim: Limits) -> "GriffinConfig":
        """From config.json, every option checked by name; sizes bounded by the weights
        present (`lim`), the attention window by the state it would allocate."""
        def unsupported(option, value, expected):
            raise EdgekitError(f"config '{source}' sets {option} = {_checkpoint.json_text(value)}, which edgekit "
                               "does not support",
                               expected=expected, fix="convert the model to a supported configuration")

        def size(key, default=_checkpoint.REQUIRED):    # a dimension: no larger than the largest weight
            return config_int(c, key, source, default, limit=lim.dim())

        hidden = size("hidden_size")
        heads = size("num_attention_heads", 10)
        kv = size("num_key_value_heads", heads)            # null: one key/value head per query head
        lru = size("lru_width", hidden)
        L = config_int(c, "num_hidden_layers", source, limit=lim.count())
        blocks = c.get("block_types") or ["recurrent", "recurrent", "attention"]
        if not isinstance(blocks, list):
            raise EdgekitError(f"config '{source}' has block_types = {_checkpoint.json_text(blocks)}",
                               expected="a list of 'recurrent' / 'attention'", fix="restore the original config.json")
        for b in blocks:
            if b not in BLOCK_TYPES:
                unsupported("block_types", b, "'recurrent' or 'attention' blocks")
        rope = config_dict(c, "rope_parameters", source) or config_dict(c, "rope_scaling", source)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            unsupported("rope_parameters.rope_type", rope_type, "'default' (plain RoPE)")
        act = c.get("hidden_activation", "gelu_pytorch_tanh")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            unsupported("hidden_activation", act, " or ".join(ACTIVATIONS))
        if hidden % heads:
            unsupported("num_attention_heads", heads, f"a divisor of hidden_size {hidden}")
        if heads % kv:
            unsupported("num_key_value_heads", kv, f"a divisor of num_attention_heads {heads}")
        if lru % heads:
            unsupported("lru_width", lru, f"a multiple of num_attention_heads {heads}")
        rotary = config_float(rope, "partial_rotary_factor", source,
                              config_float(c, "partial_rotary_factor", source, 0.5, minimum=0, maximum=1),
                              minimum=0, maximum=1)
        if int(hidden // heads * rotary) % 2:
            unsupported("partial_rotary_factor", rotary, f"a factor giving an even number of the {hidden // heads} "
                        "head dims (RoPE rotates pairs)")
        soft_cap = None if c.get("logits_soft_cap", 30.0) is None else \
            config_float(c, "logits_soft_cap", source, 30.0, minimum=1e-6)      # null: no soft cap
        cfg = cls(
            vocab_size=size("vocab_size"), hidden_size=hidden,
            intermediate_size=size("intermediate_size", 3 * hidden), num_hidden_layers=L,
            num_attention_heads=heads, num_key_value_heads=kv, lru_width=lru,
            conv1d_width=size("conv1d_width", 4),
            attention_window_size=config_int(c, "attention_window_size", source, 2048),
            layer_types=tuple(blocks[i % len(blocks)] for i in range(L)),
            rms_norm_eps=config_float(c, "rms_norm_eps", source, 1e-6, minimum=0),
            logits_soft_cap=soft_cap,
            rope_theta=config_float(rope, "rope_theta", source,
                                    config_float(c, "rope_theta", source, 10000.0, minimum=1), minimum=1),
            partial_rotary_factor=rotary,
            hidden_activation=act, attention_bias=config_bool(c, "attention_bias", source, False),
            tie_word_embeddings=config_bool(c, "tie_word_embeddings", source, True))
        # The window sizes the key/value ring buffers (state) and is in no weight's shape: bound
        # the state it allocates by the weights (or 256 MB, for small models with long windows).
        n_attn = sum(t == "attention" for t in cfg.layer_types)
        kv_bytes = 2 * n_attn * kv * cfg.head_dim * cfg.attention_window_size * 4
        budget = max(lim.nbytes, 256_000_000)
        if kv_bytes > budget:
            raise EdgekitError(f"config '{source}' has attention_window_size = {cfg.attention_window_size:,}, "
                               f"a key/value state of {human_bytes(kv_bytes)}",
                               expected=f"a state of at most {human_bytes(budget)} (the larger of the "
                                        "weights' size and 256 MB)",
                               fix="config.json does not describe these weights (or was crafted); restore the original")
        return cfg

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of a RecurrentGemmaForCausalLM safetensors file and its shape."""
        C, V, D, K = self.hidden_size, self.vocab_size, self.lru_width, self.conv1d_width
        NH, KVH, E = self.num_attention_heads, self.num_key_value_heads, self.head_dim
        M, Wb = self.intermediate_size // 2, D // NH
        s = {"model.embed_tokens.weight": (V, C), "model.final_norm.weight": (C,)}
        if not self.tie_word_embeddings:
            s["lm_head.weight"] = (V, C)
        for i, kind in enumerate(self.layer_types):
            p = f"model.layers.{i}."
            s[p + "temporal_pre_norm.weight"] = s[p + "channel_pre_norm.weight"] = (C,)
            for n, shape in (("gate_proj", (M, C)), ("up_proj", (M, C)), ("down_proj", (C, M))):
                s[f"{p}mlp_block.{n}.weight"], s[f"{p}mlp_block.{n}.bias"] = shape, shape[:1]
            t = p + "temporal_block."
            if kind == "recurrent":
                for n, shape in (("linear_x", (D, C)), ("linear_y", (D, C)), ("linear_out", (C, D))):
                    s[f"{t}{n}.weight"], s[f"{t}{n}.bias"] = shape, shape[:1]
                s[t + "conv_1d.weight"], s[t + "conv_1d.bias"] = (D, 1, K), (D,)
                g = t + "rg_lru."
                s[g + "recurrent_param"] = (D,)
                for n in ("input_gate", "recurrent_gate"):
                    s[f"{g}{n}_weight"], s[f"{g}{n}_bias"] = (NH, Wb, Wb), (NH, Wb)
            else:
                for n, rows in (("q_proj", NH * E), ("k_proj", KVH * E), ("v_proj", KVH * E)):
                    s[f"{t}{n}.weight"] = (rows, C)
                    if self.attention_bias:
                        s[f"{t}{n}.bias"] = (rows,)
                s[t + "o_proj.weight"], s[t + "o_proj.bias"] = (C, NH * E), (C,)
        return s


def check_shapes(sd: dict[str, torch.Tensor], expected: dict[str, tuple], source: str) -> None:
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise EdgekitError(f"checkpoint '{source}' is missing {len(missing)} key(s): " + ", ".join(missing[:3]) + more,
                           fix="the weights are incomplete or belong to another architecture/config")
    for k, exp in expected.items():
        if tuple(sd[k].shape) != tuple(exp):
            raise EdgekitError(f"checkpoint '{source}' key '{k}' has shape {tuple(sd[k].shape)}",
                               expected=f"{tuple(exp)} (from config.json)",
                               fix="config.json and the weights belong to different models; pair them correctly")


class _Recurrent(nn.Module):
    """Griffin's recurrent block (paper Fig. 2): GeLU(W_y x) ⊙ RG-LRU(Conv1D(W_x x)), then W_out."""

    def __init__(self, cfg: GriffinConfig):
        super().__init__()
        C, D, K, NH = cfg.hidden_size, cfg.lru_width, cfg.conv1d_width, cfg.num_attention_heads
        Wb = D // NH
        self.linear_x, self.linear_y, self.linear_out = Linear(C, D, bias=True), Linear(C, D, bias=True), Linear(D, C, bias=True)
        self.conv_w = nn.Parameter(torch.zeros(K, D))              # taps, oldest first
        self.conv_b = nn.Parameter(torch.zeros(D))
        self.gate_w = nn.Parameter(torch.zeros(NH, Wb, 2 * Wb))   # [input | recurrence] (in, out)
        self.gate_b = nn.Parameter(torch.zeros(NH, 2 * Wb))
        self.log_a = nn.Parameter(torch.zeros(D))                 # -8 · softplus(Λ)


class _Attention(nn.Module):
    """Griffin's local multi-query attention block with partial RoPE."""

    def __init__(self, cfg: GriffinConfig):
        super().__init__()
        C, NH, KVH, E = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        b = cfg.attention_bias
        self.q_proj, self.k_proj, self.v_proj = Linear(C, NH * E, b), Linear(C, KVH * E, b), Linear(C, KVH * E, b)
        self.o_proj = Linear(NH * E, C, bias=True)
        R = cfg.rotary_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, R, 2, dtype=torch.float) / R))  # (R/2,)
        self.register_buffer("inv_freq", inv_freq)


class _Block(nn.Module):
    def __init__(self, cfg: GriffinConfig, kind: str):
        super().__init__()
        C, M = cfg.hidden_size, cfg.intermediate_size // 2
        self.kind = kind
        self.temporal_pre_norm = RMSNorm(C, cfg.rms_norm_eps)
        self.channel_pre_norm = RMSNorm(C, cfg.rms_norm_eps)
        self.temporal = _Recurrent(cfg) if kind == "recurrent" else _Attention(cfg)
        self.gate_proj, self.up_proj, self.down_proj = Linear(C, M, bias=True), Linear(C, M, bias=True), Linear(M, C, bias=True)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


@register_arch
class RecurrentGemma(hf.HfCheckpoint, RecurrentModel):
    arch = "recurrent_gemma"
    checkpoint = "Hawk / Griffin: RecurrentGemma save_pretrained folder (config.json + safetensors)"

    def __init__(self, cfg: GriffinConfig):
        super().__init__()
        self.cfg = cfg
        # untied: its own table, normalizer folded in; tied: the head's rows (self.embed)
        self.emb = None if cfg.tie_word_embeddings else nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(_Block(cfg, kind) for kind in cfg.layer_types)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.head = Linear(cfg.hidden_size, cfg.vocab_size)
        self.tokenizer_file = None

    # -- contract ----------------------------------------------------------------------
    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        c = self.cfg
        spec = []
        for i, kind in enumerate(c.layer_types):
            p = f"layers.{i}."
            if kind == "recurrent":
                spec += [StateSpec(p + "conv", (batch, c.lru_width, c.conv1d_width - 1), torch.float32),
                         StateSpec(p + "rg_lru", (batch, c.lru_width), torch.float32)]
            else:
                kv = (batch, c.num_key_value_heads, c.attention_window_size, c.head_dim)
                spec += [StateSpec(p + "k_cache", kv, torch.float32), StateSpec(p + "v_cache", kv, torch.float32)]
        return spec + [StateSpec("position", (batch,), torch.int64)]

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["layer_types"] = list(d["layer_types"])
        d["variant"] = self.cfg.variant
        return d

    def forward(self, x, state=None):
        """tokens (B, T) int64 -> logits (B, T, V)."""
        B, T = x.shape
        if state is None:
            state = self.init_state(B)
        pos0 = state["position"]                                              # (B,)
        pos = pos0[:, None] + torch.arange(T, dtype=torch.int64)              # (B, T)
        new_state = {}
        h, y = self.embed(x), None                                            # (B, T, C)
        for i, blk in enumerate(self.blocks):
            p = f"layers.{i}."
            h, xn = add_rms_norm(h, y, blk.temporal_pre_norm)                 # h += y; xn = norm(h)
            if blk.kind == "recurrent":
                y, new_state[p + "conv"], new_state[p + "rg_lru"] = self._recurrent(
                    blk.temporal, xn, pos, state[p + "conv"], state[p + "rg_lru"])
            else:
                y, new_state[p + "k_cache"], new_state[p + "v_cache"] = self._attention(
                    blk.temporal, xn, pos, state[p + "k_cache"], state[p + "v_cache"])
            h, xn = add_rms_norm(h, y, blk.channel_pre_norm)
            y = blk.down_proj(self._act_mul(blk.gate_proj(xn), blk.up_proj(xn)))
        h, xn = add_rms_norm(h, y, self.final_norm)
        logits = self.head(xn)
        if self.cfg.logits_soft_cap is not None:
            cap = self.cfg.logits_soft_cap
            logits = torch.tanh(logits / cap) * cap
        new_state["position"] = pos0 + T
        return logits, new_state

    def embed(self, x):
        """tokens (B, T) -> (B, T, C), times the normalizer: the head's rows when tied."""
        if self.emb is None:
            return self.head.rows(x) * self.cfg.embed_scale
        return self.emb(x)                                                    # scale folded in

    def _act_mul(self, a, b):
        """act(a) · b (GeGLU); the tanh GELU as the `edgekit::gelu_tanh_mul` glue op."""
        if ACTIVATIONS[self.cfg.hidden_activation] == "tanh":
            return edgekit_ops.gelu_tanh_mul(a, b)
        return F.gelu(a) * b

    # -- the two temporal blocks -------------------------------------------------------
    def _recurrent(self, rec: _Recurrent, x, pos, conv, h):
        y_branch = rec.linear_y(x)                                            # (B, T, D), before act
        reset = (pos == 0).to(torch.float32)                                  # (B, T)
        args = (rec.linear_x(x), reset, rec.conv_w, rec.conv_b, rec.gate_w, rec.gate_b, rec.log_a, conv, h)
        u, conv, h = edgekit_ops.rglru_step(*args)
        return rec.linear_out(self._act_mul(y_branch, u)), conv, h

    def _attention(self, att: _Attention, x, pos, k_cache, v_cache):
        """Local attention over the ring buffer plus this call's T keys.

        Slot s of the ring holds the latest position q ≡ s (mod S) before this call,
        q = p0 - 1 - ((p0 - 1 - s) mod S), a token only if q >= 0. A query at position p
        sees keys at positions p-S+1 .. p (transformers' sliding window)."""
        c = self.cfg
        B, T, _ = x.shape
        NH, KVH, E, S, R = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.attention_window_size, c.rotary_dim
        G = NH // KVH
        q = att.q_proj(x).view(B, T, NH, E).transpose(1, 2)                   # (B, NH, T, E)
        k = att.k_proj(x).view(B, T, KVH, E).transpose(1, 2)                  # (B, KVH, T, E)
        v = att.v_proj(x).view(B, T, KVH, E).transpose(1, 2)
        # partial RoPE on the first R dims of q and k
        freqs = pos.to(torch.float32)[..., None] * att.inv_freq               # (B, T, R/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]                      # (B, 1, T, R)
        cos, sin = emb.cos(), emb.sin()
        q = torch.cat([q[..., :R] * cos + _rotate_half(q[..., :R]) * sin, q[..., R:]], dim=-1)
        k = torch.cat([k[..., :R] * cos + _rotate_half(k[..., :R]) * sin, k[..., R:]], dim=-1)

        p0 = pos[:, :1]                                                       # (B, 1)
        slots = torch.arange(S, dtype=torch.int64)                            # (S,)
        # operands kept >= 0 (+S): runtimes differ on the sign of an integer remainder
        slot_pos = p0 - 1 - torch.remainder(p0 - 1 - slots + S, S)            # (B, S)
        kpos = torch.cat([slot_pos, pos], dim=1)                              # (B, S+T)
        qp, kp = pos[:, :, None], kpos[:, None, :]                            # (B, T, 1), (B, 1, S+T)
        allowed = (kp >= 0) & (kp <= qp) & (kp > qp - S)                      # (B, T, S+T)

        keys = torch.cat([k_cache, k], dim=2)                                 # (B, KVH, S+T, E)
        vals = torch.cat([v_cache, v], dim=2)
        q5 = q.reshape(B, KVH, G, T, E)
        scores = (q5 @ keys[:, :, None].transpose(-1, -2)) * (E ** -0.5)      # (B, KVH, G, T, S+T)
        scores = torch.where(allowed[:, None, None], scores, torch.finfo(torch.float32).min)
        out = torch.softmax(scores, dim=-1) @ vals[:, :, None]                # (B, KVH, G, T, E)
        out = out.reshape(B, NH, T, E).transpose(1, 2).reshape(B, T, NH * E)

        # ring update: slot s takes the last of this call's tokens that maps to it, if any
        t_last = (T - 1) - torch.remainder(p0 + (T - 1) - slots + S, S)       # (B, S)
        wrote = (t_last >= 0)[:, None, :, None]                               # (B, 1, S, 1)
        idx = t_last.clamp(min=0)[:, None, :, None].expand(B, KVH, S, E)
        k_cache = torch.where(wrote, torch.gather(k, 2, idx), k_cache)
        v_cache = torch.where(wrote, torch.gather(v, 2, idx), v_cache)
        return att.o_proj(out), k_cache, v_cache

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if hf.is_hf_dir(path, (MODEL_TYPE,)):
            return True
        # a weights folder without its config.json: from_pretrained says what is missing
        return path.is_dir() and not (path / "config.json").exists() and \
            any(path.glob("*.safetensors"))

    @classmethod
    def from_pretrained(cls, path) -> "RecurrentGemma":
        path = Path(path)
        raw = hf.read_config(path)
        if raw.get("model_type") != MODEL_TYPE:
            mt = _checkpoint.json_text(raw.get("model_type"))
            raise EdgekitError(f"'{path / 'config.json'}' has model_type {mt}",
                               expected=f"'{MODEL_TYPE}'", fix="pass a RecurrentGemma (Hawk/Griffin) directory")
        sd = hf.read_weights(path)           # checked: plain dense tensors within the files' sizes, finite
        cfg = GriffinConfig.from_hf(raw, str(path / "config.json"), Limits.of(sd, str(path)))
        if cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        check_shapes(sd, cfg.expected_shapes(), str(path))
        model = cls(cfg)
        model.load_hf_state_dict(sd)
        model.tokenizer_file = hf.tokenizer_file(path)
        return model.eval().requires_grad_(False)

    @classmethod
    def write_random(cls, path, seed: int = 0, **shape) -> Path:
        """transformers' own save_pretrained directory (write_random_hf_dir); by default a tiny
        Griffin: recurrent, recurrent, local attention over a window of 8 tokens."""
        tiny = dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_attention_heads=4,
                    num_key_value_heads=2, lru_width=64, num_hidden_layers=3, attention_window_size=8)
        return write_random_hf_dir(path, seed=seed, **{**tiny, **shape})

    @classmethod
    def oracle(cls, path):
        """transformers' RecurrentGemmaForCausalLM (eager, fp32), stepping with its own cache."""
        from transformers import RecurrentGemmaForCausalLM
        from transformers.cache_utils import DynamicCache
        model = RecurrentGemmaForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                          dtype=torch.float32).eval()
        hawk = all(t == "recurrent" for t in model.config.block_types[:model.config.num_hidden_layers])
        model._setup_cache(model.config, 1, "cpu", torch.float32)
        for layer in model.model.layers:     # transformers' quirk: a hidden_size-wide conv state
            tb = layer.temporal_block
            if hasattr(tb, "conv1d_state"):
                tb.conv1d_state = torch.zeros(1, tb.lru_width, tb.conv1d_width - 1)
        cache, pos = DynamicCache(config=model.config), [0]

        @torch.inference_mode()
        def step(tok):
            # With no attention layer (Hawk), transformers' mask creation fails on the cache; a
            # prepared (empty) mask dict skips it (the RG-LRU does not read it).
            out = model(input_ids=torch.tensor([[int(tok)]]), position_ids=torch.tensor([[pos[0]]]),
                        past_key_values=cache, use_cache=True,
                        attention_mask={"sliding_attention": None} if hawk else None)
            pos[0] += 1
            return out.logits[0, 0].numpy()
        return "transformers RecurrentGemmaForCausalLM (eager, fp32, own cache)", step

    @torch.no_grad()
    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        c = self.cfg
        f32 = {k: v.to(torch.float32) for k, v in sd.items()}
        emb = f32["model.embed_tokens.weight"]
        if self.emb is not None:
            self.emb.weight.copy_(emb * c.embed_scale)
        self.final_norm.weight.copy_(1.0 + f32["model.final_norm.weight"])
        self.head.load(emb if c.tie_word_embeddings else f32["lm_head.weight"])
        for i, blk in enumerate(self.blocks):
            p = f"model.layers.{i}."
            blk.temporal_pre_norm.weight.copy_(1.0 + f32[p + "temporal_pre_norm.weight"])
            blk.channel_pre_norm.weight.copy_(1.0 + f32[p + "channel_pre_norm.weight"])
            for n in ("gate_proj", "up_proj", "down_proj"):
                getattr(blk, n).load_from(f32, f"{p}mlp_block.{n}")
            t, m = p + "temporal_block.", blk.temporal
            if blk.kind == "recurrent":
                for n in ("linear_x", "linear_y", "linear_out"):
                    getattr(m, n).load_from(f32, t + n)
                m.conv_w.copy_(f32[t + "conv_1d.weight"][:, 0, :].t())          # (D, 1, K) -> (K, D)
                m.conv_b.copy_(f32[t + "conv_1d.bias"])
                g = t + "rg_lru."
                m.gate_w.copy_(torch.cat([f32[g + "input_gate_weight"], f32[g + "recurrent_gate_weight"]], -1))
                m.gate_b.copy_(torch.cat([f32[g + "input_gate_bias"], f32[g + "recurrent_gate_bias"]], -1))
                m.log_a.copy_(-LOG_A_SCALE * F.softplus(f32[g + "recurrent_param"]))
            else:
                for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    getattr(m, n).load_from(f32, t + n)


def write_random_hf_dir(path, *, seed: int = 0, dtype: torch.dtype = torch.float32, **config) -> Path:
    """A RecurrentGemmaForCausalLM with random weights, written by transformers' own
    save_pretrained (config.json + model.safetensors). `config` goes to RecurrentGemmaConfig.

    Scales keep activations in the range trained models see (norm scales around 1, gate
    pre-activations of order 1, decays a in (0.9, 0.999) as the reference initializes
    them), so parity checks exercise real numerics rather than near-zero outputs."""
    from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM
    path = Path(path)
    torch.manual_seed(seed)
    model = RecurrentGemmaForCausalLM(RecurrentGemmaConfig(**config)).to(torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            rn = torch.randn(p.shape, generator=g)
            if name.endswith("recurrent_param") or name == "lm_head.weight":
                continue                                     # reference init / tied
            if "norm" in name:
                p.copy_(rn * 0.1)
            elif name.endswith("embed_tokens.weight"):     # small: the model scales it by sqrt(C)
                p.copy_(rn * 0.1)
            elif name.endswith("bias"):
                p.copy_(rn * 0.1)
            elif name.endswith("conv_1d.weight"):
                p.copy_(rn * 0.5)
            elif p.dim() == 3:                               # RG-LRU gate blocks (H, W, W)
                p.copy_(rn / math.sqrt(p.shape[1]))
            else:                                            # Linear (out, in)
                p.copy_(rn / math.sqrt(p.shape[1]))
    model.to(dtype).save_pretrained(path)
    return path
