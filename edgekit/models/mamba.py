"""Mamba (S6) and Mamba-2 (SSD): configs, HF / state-spaces checkpoint mapping, sequence and
step forms.

Papers: A. Gu, T. Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv:2312.00752; T. Dao, A. Gu, "Transformers are SSMs: Generalized Models and Efficient
Algorithms Through Structured State Space Duality", arXiv:2405.21060. Parity oracle:
transformers' `MambaForCausalLM` / `Mamba2ForCausalLM` (eager torch path) stepping with
their own cache.

On-disk formats: a Hugging Face `save_pretrained` directory (config.json with model_type
"mamba" / "mamba2", *.safetensors), or a state-spaces (mamba_ssm) directory (config.json
with d_model / n_layer / ssm_cfg; weights with `backbone.embedding.weight` and no
`lm_head.weight` when tied).

Dimensions: B batch, T time, D d_model, E d_inner (= expand · D), N d_state, K d_conv,
R dt_rank; Mamba-2: H heads, P head dim (H · P = E), G n_groups, X = E + 2·G·N (conv width).

State layout, per layer i:

    Mamba    layers.i.conv  (B, E, K)     float32  the last K inputs of the causal conv
             layers.i.ssm   (B, E, N)     float32  the selective SSM state h
    Mamba-2  layers.i.conv  (B, X, K)     float32  the last K inputs of the conv over [x, B, C]
             layers.i.ssm   (B, H, P, N)  float32  the SSD state, one P x N matrix per head

The conv state is transformers' layout (the newest input is column K-1), so a state can
be compared with, or moved to and from, its cache. The step form is the sequence form at
T = 1 (static shapes; no data-dependent control flow).

Conversion-time transforms (STYLE.md §9): A = -exp(A_log) once; linear weights are stored
(in, out); the conv weight (E, 1, K) is stored (E, K). A tied embedding is stored once, as
the head's (D, V) matrix, and the embedding reads its rows (`Linear.rows`): no
nn.Embedding, so an export holds the matrix once (Mamba-130m: 154 MB of its 517 MB; the
files were 671 MB with both copies). RMSNorm weights are NOT folded into the next linear layer: the explicit
x / sqrt(mean(x²) + eps) · w form is what ONNX Runtime fuses into one node (a folded norm
stays six nodes, ~40 µs per layer more at decode; models/layers.py).

Quirks of the oracle, checked here: residual_in_fp32 is moot (everything runs in fp32);
Mamba-2's gated RMSNorm normalizes over groups of E / G channels (not all E); B and C are
shared by the H / G heads of a group (repeat_interleave); dt = softplus(dt + dt_bias),
then the time_step_limit clamp — transformers' single-step path skips that clamp (only
its chunked prefill applies it); edgekit applies it in both forms, a no-op for the
default (0, inf) of every released checkpoint.
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
from edgekit.models.layers import Linear, RMSNorm, add_rms_norm

edgekit_ops = torch.ops.edgekit   # the custom ops (edgekit/ops/): the math of each recurrence

PREFIX = "backbone."


# ---- configs -------------------------------------------------------------------------
def _unsupported(source: str, option: str, value, supported: str) -> EdgekitError:
    return EdgekitError(f"config '{source}' sets {option} = {value!r}, which edgekit does not support",
                        expected=supported, fix="export a model with the standard Mamba block")


def _int(cfg: dict, key: str, source: str, lim: Limits, default=_checkpoint.REQUIRED, count=False) -> int:
    """A size option: a positive integer no larger than the weights present can back
    (`count`: a number of layers, bounded by the number of tensors)."""
    return config_int(cfg, key, source, default, limit=lim.count() if count else lim.dim())


def _expand(cfg: dict, source: str, D: int, lim: Limits) -> int:
    """d_inner = expand * hidden_size (expand may be fractional), bounded like a size."""
    e = config_float(cfg, "expand", source, 2, minimum=0)
    E = int(e * D)
    if E < 1 or E > lim.largest:
        raise EdgekitError(f"config '{source}' has expand = {e:g}, so d_inner = {E:,}",
                           expected=f"1 to {lim.largest:,} ({lim.dim()[1]})",
                           fix="config.json does not describe these weights; restore the original")
    return E


@dataclass(frozen=True)
class MambaConfig:
    vocab_size: int      # V
    d_model: int         # D
    n_layer: int         # L
    d_state: int         # N
    d_conv: int          # K
    d_inner: int         # E
    dt_rank: int         # R
    norm_eps: float
    use_bias: bool       # in_proj / out_proj bias
    use_conv_bias: bool
    tie_embeddings: bool

    def expected_shapes(self, with_head: bool) -> dict[str, tuple[int, ...]]:
        """Every weight key (HF names, without the embedding) and its shape."""
        D, E, N, K, R = self.d_model, self.d_inner, self.d_state, self.d_conv, self.dt_rank
        s = {f"{PREFIX}norm_f.weight": (D,)}
        for i in range(self.n_layer):
            m = f"{PREFIX}layers.{i}.mixer."
            s[f"{PREFIX}layers.{i}.norm.weight"] = (D,)
            s[m + "in_proj.weight"] = (2 * E, D)
            s[m + "conv1d.weight"] = (E, 1, K)
            s[m + "x_proj.weight"] = (R + 2 * N, E)
            s[m + "dt_proj.weight"], s[m + "dt_proj.bias"] = (E, R), (E,)
            s[m + "A_log"], s[m + "D"] = (E, N), (E,)
            s[m + "out_proj.weight"] = (D, E)
            if self.use_conv_bias:
                s[m + "conv1d.bias"] = (E,)
            if self.use_bias:
                s[m + "in_proj.bias"], s[m + "out_proj.bias"] = (2 * E,), (D,)
        if with_head:
            s["lm_head.weight"] = (self.vocab_size, D)
        return s


@dataclass(frozen=True)
class Mamba2Config:
    vocab_size: int      # V
    d_model: int         # D
    n_layer: int         # L
    d_state: int         # N
    d_conv: int          # K
    d_inner: int         # E = H * P
    n_heads: int         # H
    head_dim: int        # P
    n_groups: int        # G
    norm_eps: float
    use_bias: bool
    use_conv_bias: bool
    tie_embeddings: bool
    dt_limit: tuple[float, float]

    @property
    def conv_dim(self) -> int:   # X
        return self.d_inner + 2 * self.n_groups * self.d_state

    def expected_shapes(self, with_head: bool) -> dict[str, tuple[int, ...]]:
        D, E, H, K, X = self.d_model, self.d_inner, self.n_heads, self.d_conv, self.conv_dim
        s = {f"{PREFIX}norm_f.weight": (D,)}
        for i in range(self.n_layer):
            m = f"{PREFIX}layers.{i}.mixer."
            s[f"{PREFIX}layers.{i}.norm.weight"] = (D,)
            s[m + "in_proj.weight"] = (E + X + H, D)
            s[m + "conv1d.weight"] = (X, 1, K)
            s[m + "dt_bias"], s[m + "A_log"], s[m + "D"] = (H,), (H,), (H,)
            s[m + "norm.weight"] = (E,)
            s[m + "out_proj.weight"] = (D, E)
            if self.use_conv_bias:
                s[m + "conv1d.bias"] = (X,)
            if self.use_bias:
                s[m + "in_proj.bias"], s[m + "out_proj.bias"] = (E + X + H,), (D,)
        if with_head:
            s["lm_head.weight"] = (self.vocab_size, D)
        return s


def _is_state_spaces(cfg: dict) -> bool:
    return "model_type" not in cfg and "d_model" in cfg and "n_layer" in cfg


SS_LAYERS = {"Mamba1": "mamba", "Mamba2": "mamba2"}   # state-spaces ssm_cfg.layer -> architecture
BAD_LAYER = "state-spaces config with an unknown layer"


def _layer_kind(cfg: dict) -> str | None:
    """'mamba' | 'mamba2' for a config.json of either format; BAD_LAYER for a state-spaces
    config whose ssm_cfg.layer is neither (Mamba claims it, to say so); None otherwise."""
    if cfg.get("model_type") in ("mamba", "mamba2"):
        return cfg["model_type"]
    if _is_state_spaces(cfg):
        ssm = cfg.get("ssm_cfg") or {}
        layer = ssm.get("layer", "Mamba1") if isinstance(ssm, dict) else None
        return SS_LAYERS[layer] if isinstance(layer, str) and layer in SS_LAYERS else BAD_LAYER
    return None


def _normalize(cfg: dict, source: str, lim: Limits) -> dict:
    """A state-spaces (mamba_ssm) config.json in transformers' key names, unsupported
    options refused by name. HF configs pass through."""
    if not _is_state_spaces(cfg):
        if cfg.get("hidden_act", "silu") != "silu":
            raise _unsupported(source, "hidden_act", cfg["hidden_act"], "silu (every released Mamba)")
        return cfg
    ssm = dict(config_dict(cfg, "ssm_cfg", source))
    if not cfg.get("rms_norm", True):
        raise _unsupported(source, "rms_norm", False, "rms_norm = true (LayerNorm blocks are not supported)")
    if cfg.get("d_intermediate", 0):
        raise _unsupported(source, "d_intermediate", cfg["d_intermediate"], "0 (no MLP after the mixer)")
    if cfg.get("attn_layer_idx"):
        raise _unsupported(source, "attn_layer_idx", cfg["attn_layer_idx"], "[] (no attention layers)")
    if ssm.get("layer", "Mamba1") == "Mamba2":
        if not ssm.get("rmsnorm", True):
            raise _unsupported(source, "ssm_cfg.rmsnorm", False, "true (the gated RMSNorm)")
        if ssm.get("norm_before_gate", False):
            raise _unsupported(source, "ssm_cfg.norm_before_gate", True, "false (gate, then norm)")
    vocab = _int(cfg, "vocab_size", source, lim)
    pad = _int(cfg, "pad_vocab_size_multiple", source, lim, 8)
    vocab = -(-vocab // pad) * pad
    d_model = _int(cfg, "d_model", source, lim)
    expand = config_float(ssm, "expand", source, 2, minimum=0)
    out = {"vocab_size": vocab, "hidden_size": d_model,
           "num_hidden_layers": _int(cfg, "n_layer", source, lim, count=True),
           "conv_kernel": _int(ssm, "d_conv", source, lim, 4), "expand": expand, "layer_norm_epsilon": 1e-5,
           "use_bias": config_bool(ssm, "bias", source, False),
           "use_conv_bias": config_bool(ssm, "conv_bias", source, True),
           "tie_word_embeddings": config_bool(cfg, "tie_embeddings", source, True)}
    if ssm.get("layer", "Mamba1") == "Mamba2":
        head_dim = _int(ssm, "headdim", source, lim, 64)
        out.update(state_size=_int(ssm, "d_state", source, lim, 128), head_dim=head_dim,
                   num_heads=max(1, int(expand * d_model) // head_dim), n_groups=_int(ssm, "ngroups", source, lim, 1),
                   time_step_limit=ssm.get("dt_limit", (0.0, math.inf)))
    else:
        out.update(state_size=_int(ssm, "d_state", source, lim, 16), time_step_rank=ssm.get("dt_rank", "auto"))
    return out


def _mamba_config(cfg: dict, source: str, lim: Limits) -> MambaConfig:
    D = _int(cfg, "hidden_size", source, lim)
    rank = cfg.get("time_step_rank", "auto")
    return MambaConfig(
        vocab_size=_int(cfg, "vocab_size", source, lim), d_model=D,
        n_layer=_int(cfg, "num_hidden_layers", source, lim, count=True),
        d_state=_int(cfg, "state_size", source, lim, 16),
        d_conv=_int(cfg, "conv_kernel", source, lim, 4), d_inner=_expand(cfg, source, D, lim),
        dt_rank=math.ceil(D / 16) if rank == "auto" else _int(cfg, "time_step_rank", source, lim),
        norm_eps=config_float(cfg, "layer_norm_epsilon", source, 1e-5, minimum=0),
        use_bias=config_bool(cfg, "use_bias", source, False),
        use_conv_bias=config_bool(cfg, "use_conv_bias", source, True),
        tie_embeddings=config_bool(cfg, "tie_word_embeddings", source, True))


def _mamba2_config(cfg: dict, source: str, lim: Limits) -> Mamba2Config:
    D = _int(cfg, "hidden_size", source, lim)
    E = _expand(cfg, source, D, lim)
    H, P = _int(cfg, "num_heads", source, lim, 128), _int(cfg, "head_dim", source, lim, 64)
    G = _int(cfg, "n_groups", source, lim, 8)
    if H * P != E:
        raise EdgekitError(f"config '{source}' has num_heads * head_dim = {H} * {P} = {H * P}",
                           expected=f"expand * hidden_size = {E}", fix="restore the original config.json")
    if H % G:
        raise EdgekitError(f"config '{source}' has n_groups = {G}", expected=f"a divisor of num_heads = {H}",
                           fix="restore the original config.json")
    limit = cfg.get("time_step_limit", (0.0, math.inf))
    try:   # transformers 5 writes inf as {"__float__": "Infinity"}; older versions as Infinity
        lo, hi = (float(v["__float__"] if isinstance(v, dict) else v) for v in limit)
        if isinstance(limit, (str, dict)) or not 0 <= lo <= hi or math.isnan(hi):
            raise ValueError
    except (TypeError, ValueError, KeyError):
        raise EdgekitError(f"config '{source}' has time_step_limit = {_checkpoint.json_text(limit)}",
                           expected="two numbers [min, max], 0 <= min <= max",
                           fix="restore the original config.json") from None
    return Mamba2Config(
        vocab_size=_int(cfg, "vocab_size", source, lim), d_model=D,
        n_layer=_int(cfg, "num_hidden_layers", source, lim, count=True),
        d_state=_int(cfg, "state_size", source, lim, 128),
        d_conv=_int(cfg, "conv_kernel", source, lim, 4), d_inner=E, n_heads=H, head_dim=P, n_groups=G,
        norm_eps=config_float(cfg, "layer_norm_epsilon", source, 1e-5, minimum=0),
        use_bias=config_bool(cfg, "use_bias", source, False),
        use_conv_bias=config_bool(cfg, "use_conv_bias", source, True),
        tie_embeddings=config_bool(cfg, "tie_word_embeddings", source, False), dt_limit=(lo, hi))


# ---- checkpoint reading --------------------------------------------------------------
def _weights(sd: dict[str, torch.Tensor], cfg, source: str) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                       torch.Tensor]:
    """(layer weights, embedding (V, D), head (V, D)), in fp32, shapes checked against cfg."""
    emb_key = next((k for k in (f"{PREFIX}embeddings.weight", f"{PREFIX}embedding.weight") if k in sd), None)
    if emb_key is None:
        raise EdgekitError(f"checkpoint '{source}' has no key '{PREFIX}embeddings.weight'",
                           expected="a Mamba checkpoint (backbone.embeddings.weight, or "
                                    "backbone.embedding.weight in state-spaces files)",
                           fix="the weights are from another architecture or incomplete")
    has_head = "lm_head.weight" in sd and not cfg.tie_embeddings
    if not cfg.tie_embeddings and "lm_head.weight" not in sd:
        raise EdgekitError(f"checkpoint '{source}' is missing key lm_head.weight",
                           expected="an lm_head.weight, since config.json sets tie_word_embeddings = false",
                           fix="the file is incomplete; save the model again with save_pretrained")
    expected = {emb_key: (cfg.vocab_size, cfg.d_model), **cfg.expected_shapes(has_head)}
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise EdgekitError(f"checkpoint '{source}' is missing {len(missing)} key(s): "
                           + ", ".join(missing[:3]) + more,
                           fix="the weights are incomplete or belong to another config.json")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise EdgekitError(f"checkpoint '{source}' key '{k}' has shape {tuple(sd[k].shape)}",
                               expected=f"{shape} (from config.json)",
                               fix="config.json and the weights belong to different models")
    f32 = {k: sd[k].to(torch.float32) for k in expected}
    emb = f32.pop(emb_key)
    head = f32.pop("lm_head.weight") if has_head else emb
    return f32, emb, head


# ---- layers --------------------------------------------------------------------------
class _Mixer(nn.Module):
    """Mamba-1 mixer weights (post-transform)."""

    def __init__(self, c: MambaConfig):
        super().__init__()
        E, N, K = c.d_inner, c.d_state, c.d_conv
        self.in_proj = Linear(c.d_model, 2 * E, c.use_bias)
        self.conv_w = nn.Parameter(torch.zeros(E, K))
        self.conv_b = nn.Parameter(torch.zeros(E))          # zeros without use_conv_bias
        self.x_proj = Linear(E, c.dt_rank + 2 * N)
        self.dt_proj = Linear(c.dt_rank, E)                # its bias apart: Δ = softplus(dt_proj(·) + dt_bias)
        self.dt_bias = nn.Parameter(torch.zeros(E))
        self.A = nn.Parameter(torch.zeros(E, N))          # -exp(A_log)
        self.D = nn.Parameter(torch.zeros(E))
        self.out_proj = Linear(E, c.d_model, c.use_bias)


class _Mixer2(nn.Module):
    """Mamba-2 mixer weights (post-transform)."""

    def __init__(self, c: Mamba2Config):
        super().__init__()
        E, H, K, X = c.d_inner, c.n_heads, c.d_conv, c.conv_dim
        self.in_proj = Linear(c.d_model, E + X + H, c.use_bias)
        self.conv_w = nn.Parameter(torch.zeros(X, K))
        self.conv_b = nn.Parameter(torch.zeros(X))          # zeros without use_conv_bias
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.A = nn.Parameter(torch.zeros(H))              # -exp(A_log)
        self.D = nn.Parameter(torch.zeros(H))
        self.norm_w = nn.Parameter(torch.ones(E))           # the gated RMSNorm's weight
        self.register_buffer("norm_eps", torch.tensor([c.norm_eps], dtype=torch.float32), persistent=False)
        self.out_proj = Linear(E, c.d_model, c.use_bias)


class _MambaBase(hf.HfCheckpoint, RecurrentModel):
    """Shared by Mamba and Mamba-2: embedding, residual blocks, final norm, head, loading."""

    model_types: tuple[str, ...]

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        # tied: the embedding is the head's rows (self.head.rows), stored once
        self.emb = None if cfg.tie_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.norms = nn.ModuleList(RMSNorm(cfg.d_model, cfg.norm_eps) for _ in range(cfg.n_layer))
        self.mixers = nn.ModuleList(self._mixer(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = Linear(cfg.d_model, cfg.vocab_size)
        self.tokenizer_file: Path | None = None

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x, state=None):
        """tokens (B, T) int64 -> logits (B, T, V). Pre-norm residual blocks (fp32)."""
        if state is None:
            state = self.init_state(x.shape[0])
        new_state = {}
        h, y = self.embed(x), None                                           # (B, T, D)
        for i, (norm, mix) in enumerate(zip(self.norms, self.mixers)):
            p = f"layers.{i}."
            h, u = add_rms_norm(h, y, norm)                                  # h += y; u = norm(h)
            y, new_state[p + "conv"], new_state[p + "ssm"] = self._mix(
                mix, u, state[p + "conv"], state[p + "ssm"])
        h, u = add_rms_norm(h, y, self.norm_f)
        return self.head(u), new_state

    def embed(self, x):
        """tokens (B, T) -> (B, T, D): the embedding's rows, the head's when tied."""
        return self.head.rows(x) if self.emb is None else self.emb(x)

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def _kind(cls, path: Path) -> str | None:
        """The layer kind of a directory: from config.json, or (no config.json) from the
        weight names, so a directory that lost its config.json is still recognized and
        reported as such."""
        path = Path(path)
        if not path.is_dir():
            return None
        if (path / "config.json").is_file():
            try:
                return _layer_kind(hf.read_config(path))
            except EdgekitError:
                return None
        for f in sorted(path.glob("*.safetensors"))[:1]:
            try:
                from safetensors import safe_open
                with safe_open(str(f), "pt") as fh:
                    keys = list(fh.keys())
            except Exception:  # noqa: BLE001  (unreadable: not ours to claim)
                return None
            if any(k.endswith("mixer.dt_proj.weight") for k in keys):
                return "mamba"
            if any(k.endswith("mixer.dt_bias") for k in keys):
                return "mamba2"
        return None

    @classmethod
    def detect(cls, path: Path) -> bool:
        kind = cls._kind(path)
        return kind == cls.arch or (kind == BAD_LAYER and cls.arch == "mamba")

    @classmethod
    def from_pretrained(cls, path) -> "_MambaBase":
        path = Path(path)
        raw = hf.read_config(path)
        kind = _layer_kind(raw)
        if kind == BAD_LAYER:
            src = str(path / "config.json")
            layer = config_dict(raw, "ssm_cfg", src).get("layer")
            raise EdgekitError(f"config '{src}' has ssm_cfg.layer = {_checkpoint.json_text(layer)}",
                               expected=" or ".join(f'"{k}"' for k in SS_LAYERS),
                               fix="restore the original config.json")
        if kind != cls.arch:
            raise EdgekitError(f"config '{path / 'config.json'}' describes a {kind} model",
                               expected=cls.arch, fix="pass a directory of this architecture")
        sd = hf.read_weights(path)           # checked: plain dense tensors within the files' sizes, finite
        lim, src = Limits.of(sd, str(path)), str(path / "config.json")
        config = cls._config(_normalize(raw, src, lim), src, lim)
        weights, emb, head = _weights(sd, config, str(path))
        model = cls(config)
        model._load(config, weights, emb, head)
        model.tokenizer_file = hf.tokenizer_file(path)
        return model.eval().requires_grad_(False)

    # tiny configs of the two layer kinds (write_random's defaults)
    _TINY = {"mamba": dict(vocab_size=256, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, conv_kernel=4),
             "mamba2": dict(vocab_size=256, hidden_size=64, state_size=16, num_hidden_layers=2, num_heads=8,
                            head_dim=16, n_groups=2, expand=2)}

    @classmethod
    def write_random(cls, path, seed: int = 0, **shape) -> Path:
        """transformers' own save_pretrained directory (write_random_hf); tiny by default."""
        return write_random_hf(path, cls.arch, seed=seed, **{**cls._TINY[cls.arch], **shape})

    @classmethod
    def oracle(cls, path):
        """transformers' MambaForCausalLM / Mamba2ForCausalLM, eager, stepping with its own cache."""
        import transformers
        hf_cls = {"mamba": transformers.MambaForCausalLM, "mamba2": transformers.Mamba2ForCausalLM}[cls.arch]
        model, cache = hf_cls.from_pretrained(str(path)).eval(), [None]

        @torch.inference_mode()
        def step(tok):
            out = model(torch.tensor([[int(tok)]]), cache_params=cache[0], use_cache=True)
            cache[0] = out.cache_params
            return out.logits[0, 0].numpy()
        return f"transformers {hf_cls.__name__} (eager, own cache)", step

    @torch.no_grad()
    def _load(self, cfg, w: dict[str, torch.Tensor], emb: torch.Tensor, head: torch.Tensor) -> None:
        if self.emb is not None:
            self.emb.weight.copy_(emb)
        self.head.load(head)          # tied: _weights gave head = emb
        self.norm_f.weight.copy_(w[f"{PREFIX}norm_f.weight"])
        for i, mix in enumerate(self.mixers):
            m = f"{PREFIX}layers.{i}.mixer."
            get = lambda n: w.get(m + n)  # noqa: E731
            self.norms[i].weight.copy_(w[f"{PREFIX}layers.{i}.norm.weight"])
            mix.in_proj.load(get("in_proj.weight"), get("in_proj.bias"))
            mix.conv_w.copy_(get("conv1d.weight")[:, 0])
            if self.cfg.use_conv_bias:
                mix.conv_b.copy_(get("conv1d.bias"))
            mix.A.copy_(-torch.exp(get("A_log")))
            mix.D.copy_(get("D"))
            self._load_mixer(mix, get)


@register_arch
class Mamba(_MambaBase):
    arch = "mamba"
    checkpoint = "MambaForCausalLM save_pretrained folder, or a state-spaces/mamba folder"

    @staticmethod
    def _mixer(cfg):
        return _Mixer(cfg)

    @staticmethod
    def _config(cfg: dict, source: str, lim: Limits) -> MambaConfig:
        return _mamba_config(cfg, source, lim)

    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        c = self.cfg
        spec = []
        for i in range(c.n_layer):
            spec += [StateSpec(f"layers.{i}.conv", (batch, c.d_inner, c.d_conv), torch.float32),
                     StateSpec(f"layers.{i}.ssm", (batch, c.d_inner, c.d_state), torch.float32)]
        return spec

    def _mix(self, mix: _Mixer, u, conv, ssm):
        """u (B, T, D) normed -> (B, T, D). Mamba block, Fig. 3 / Alg. 2 of the paper."""
        c = self.cfg
        x, z = mix.in_proj(u).split(c.d_inner, dim=-1)                       # 2 x (B, T, E)
        x, conv = edgekit_ops.causal_conv1d_silu(x, mix.conv_w, mix.conv_b, conv)   # silu(conv(x))
        ts, Bm, C = mix.x_proj(x).split([c.dt_rank, c.d_state, c.d_state], dim=-1)
        dt = edgekit_ops.softplus_bias(mix.dt_proj(ts), mix.dt_bias)        # Δ = softplus(· + b) (B, T, E)
        y, ssm = edgekit_ops.mamba_step(x, dt, mix.A, Bm, C, mix.D, ssm)
        return mix.out_proj(edgekit_ops.silu_mul(z, y)), conv, ssm           # y · silu(z)

    @staticmethod
    def _load_mixer(mix: _Mixer, get) -> None:
        mix.x_proj.load(get("x_proj.weight"))
        mix.dt_proj.load(get("dt_proj.weight"))
        mix.dt_bias.copy_(get("dt_proj.bias"))
        mix.out_proj.load(get("out_proj.weight"), get("out_proj.bias"))


@register_arch
class Mamba2(_MambaBase):
    arch = "mamba2"
    checkpoint = "Mamba2ForCausalLM save_pretrained folder, or a state-spaces/mamba folder"

    @staticmethod
    def _mixer(cfg):
        return _Mixer2(cfg)

    @staticmethod
    def _config(cfg: dict, source: str, lim: Limits) -> Mamba2Config:
        return _mamba2_config(cfg, source, lim)

    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        c = self.cfg
        spec = []
        for i in range(c.n_layer):
            spec += [StateSpec(f"layers.{i}.conv", (batch, c.conv_dim, c.d_conv), torch.float32),
                     StateSpec(f"layers.{i}.ssm", (batch, c.n_heads, c.head_dim, c.d_state), torch.float32)]
        return spec

    def _mix(self, mix: _Mixer2, u, conv, ssm):
        """u (B, T, D) normed -> (B, T, D). Mamba-2 block (arXiv:2405.21060, §7, Fig. 6)."""
        c = self.cfg
        Bsz, T, _ = u.shape
        E, G, N, H, P = c.d_inner, c.n_groups, c.d_state, c.n_heads, c.head_dim
        z, xBC, dt = mix.in_proj(u).split([E, c.conv_dim, H], dim=-1)
        xBC, conv = edgekit_ops.causal_conv1d_silu(xBC, mix.conv_w, mix.conv_b, conv)
        x, Bm, C = xBC.split([E, G * N, G * N], dim=-1)
        dt = edgekit_ops.softplus_bias(dt, mix.dt_bias)                     # Δ (B, T, H)
        lo, hi = c.dt_limit
        if (lo, hi) != (0.0, math.inf):
            dt = dt.clamp(lo, hi)
        args = (x.reshape(Bsz, T, H, P), dt, mix.A, Bm.reshape(Bsz, T, G, N), C.reshape(Bsz, T, G, N), mix.D, ssm)
        y, ssm = edgekit_ops.ssd_step(*args)
        # Gated RMSNorm over groups of E / G channels: norm(y · silu(z)) · w.
        y = edgekit_ops.gated_rms_norm(y.reshape(Bsz, T, E), z, mix.norm_w.reshape(G, E // G), mix.norm_eps)
        return mix.out_proj(y), conv, ssm

    @staticmethod
    def _load_mixer(mix: _Mixer2, get) -> None:
        mix.dt_bias.copy_(get("dt_bias"))
        mix.norm_w.copy_(get("norm.weight"))
        mix.out_proj.load(get("out_proj.weight"), get("out_proj.bias"))


# ---- random-weight checkpoints (tests, benchmarks) -----------------------------------
def write_random_hf(path, arch: str, seed: int = 0, **config) -> Path:
    """Write a random-weight `save_pretrained` directory (safetensors) with transformers'
    own classes, so the files are exactly what transformers writes. Norm weights, D,
    A_log, dt_bias and conv biases are randomized too, so every conversion transform is
    exercised. Needs transformers (the parity oracle)."""
    import transformers
    path = Path(path)
    torch.manual_seed(seed)
    if arch == "mamba":
        model = transformers.MambaForCausalLM(transformers.MambaConfig(**config))
    elif arch == "mamba2":
        model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**config))
    else:
        raise ValueError(f"write_random_hf: arch must be mamba or mamba2, got {arch!r}")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".D"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("A_log"):
                p.copy_(torch.log(0.5 + 8 * torch.rand(p.shape, generator=g)))
            elif name.endswith("conv1d.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("embeddings.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
    model.eval().save_pretrained(str(path), safe_serialization=True)
    return path
