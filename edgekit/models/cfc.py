"""Liquid networks: CfC and LTC, as `ncps.torch.CfC` / `ncps.torch.LTC` define them.

Papers: R. Hasani et al., "Closed-form continuous-time neural networks" (Nature Machine
Intelligence 2022, arXiv:2106.13898) and "Liquid Time-constant Networks" (AAAI 2021,
arXiv:2006.04439). Reference code and parity oracle: the `ncps` package (ncps.torch).

Dimensions: B batch, T time, I input features, U units (state size), O outputs (motor
neurons; U for fully connected models), P projection size (CfC proj_size), Z backbone
width, L wired layers.

Every step takes the elapsed time Δt (ncps' `timespans`), since sensors sample
irregularly. Step inputs: x (B, I) float32 and dt (B, 1) float32; output y (B, O or P).

State layout (one tensor, ncps' own `hx` layout):

    h  (B, U) float32   CfC hidden state; wired (AutoNCP) models concatenate the layers
                        in ncps' order [inter | command | motor] (WiredCfCCell splits it
                        with torch.split by layer sizes).
    v  (B, U) float32   LTC membrane potentials, neuron order of the wiring.

On-disk format (docs/cfc.md): a directory with `config.json`
``{"framework": "ncps", "class": "CfC"|"LTC", "input_size": I, "units": U | {"wiring":
"AutoNCP", "units": U, "output_size": O}, ...}`` and `model.safetensors` (or a
`model.pt` / `state_dict.pt` state_dict, read with weights_only=True) holding the ncps
module's state_dict under its own key names. A live ncps module is accepted too
(`edgekit.export(module, outdir)`, through `from_module`).

Conversion-time transforms (STYLE.md §9): Linear weights are transposed to (in, out);
CfC's ff1/ff2/time_a/time_b are stacked into one (Z, 4U) head; wired CfC's sparsity
masks are multiplied into ff1/ff2; "pure" mode's |w_tau| is taken once; LTC's
positivity map (softplus) is applied to w, sensory_w, cm, gleak, its masks folded into
w and sensory_w, erev folded in (w·erev), and gleak·vleak precomputed. The recurrences
themselves run in the fused ops `edgekit::cfc_step` and `edgekit::ltc_step`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import edgekit.ops  # noqa: F401  (registers torch.ops.edgekit.*)
from edgekit.errors import EdgekitError
from edgekit.models import _checkpoint
from edgekit.models._checkpoint import Limits
from edgekit.models.base import RecurrentModel, StateSpec, register_arch
from edgekit.ops import cfc_step, ltc_step

FRAMEWORK = "ncps"
WEIGHT_FILES = ("model.safetensors", "model.pt", "state_dict.pt")
CFC_ACTIVATIONS = tuple(cfc_step.ACTIVATIONS)      # the activations the fused op computes
MAPPINGS = ("affine", "linear", "none")
# config keys that change nothing at inference (ncps constructor options about training
# or about the sequence API, which edgekit replaces with single steps)
_IGNORED = ("return_sequences", "batch_first", "backbone_dropout")
_CFC_KEYS = ("framework", "class", "input_size", "units", "mode", "activation", "backbone_units",
             "backbone_layers", "proj_size", "mixed_memory") + _IGNORED
_LTC_KEYS = ("framework", "class", "input_size", "units", "input_mapping", "output_mapping",
             "ode_unfolds", "epsilon", "implicit_param_constraints", "mixed_memory") + _IGNORED
MAX_ODE_UNFOLDS = 1000   # solver sub-steps per input step (ncps default 6); the step's cost grows with it


# ---- config --------------------------------------------------------------------------
def _bad(source: str, what: str, expected: str, fix: str) -> EdgekitError:
    return EdgekitError(f"'{source}': {what}", expected=expected, fix=fix)


def _int(raw: dict, key: str, source: str, default=None, minimum: int = 1, limit: tuple[int, str] | None = None):
    """An integer option >= minimum; with limit = (bound, why), <= bound (a size the weights
    present must back, checked before anything is allocated from it)."""
    v = raw.get(key, default)
    if v is None and default is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _bad(source, f"config option {key}={_checkpoint.json_text(v)} is not an integer >= {minimum}",
                   f"{key} as an integer", f"fix {key} in config.json")
    if limit is not None and v > limit[0]:
        raise _bad(source, f"config option {key}={v:,} is larger than the weights can hold",
                   f"at most {limit[0]:,} ({limit[1]})", "config.json does not describe these weights; fix it")
    return v


def autoncp_layer_sizes(units: int, output_size: int) -> list[int]:
    """[inter, command, motor] as ncps.wirings.AutoNCP sizes them."""
    inter_and_command = units - output_size
    command = max(int(0.4 * inter_and_command), 1)
    return [inter_and_command - command, command, output_size]


def parse_config(raw, source: str, lim: Limits | None = None) -> dict:
    """Check a config.json (or a module's options) and return it normalized: every
    supported option explicit, unsupported ones refused by name; with `lim` (the weights
    read), sizes bounded by the weights present."""
    dim = lim.dim() if lim else None
    count = lim.count() if lim else None
    if not isinstance(raw, dict):
        raise _bad(source, "config is not a JSON object", "{\"framework\": \"ncps\", ...}", "rewrite config.json")
    if raw.get("framework") != FRAMEWORK:
        raise _bad(source, f"config has framework {raw.get('framework')!r}", f"'{FRAMEWORK}'",
                   "set \"framework\": \"ncps\" in config.json")
    cls = raw.get("class")
    if cls not in ("CfC", "LTC"):
        raise _bad(source, f"config has class {cls!r}", "'CfC' or 'LTC'", "set \"class\" in config.json")
    known = _CFC_KEYS if cls == "CfC" else _LTC_KEYS
    for k in raw:
        if k not in known:
            raise _bad(source, f"unsupported config option '{k}' for {cls}", "one of " + ", ".join(known),
                       f"remove '{k}' from config.json (see docs/cfc.md)")
    if raw.get("mixed_memory", False):
        raise _bad(source, "unsupported config option mixed_memory=true", "mixed_memory false",
                   "export a model trained without the LSTM memory cell")
    cfg = {"framework": FRAMEWORK, "class": cls, "input_size": _int(raw, "input_size", source, limit=dim)}
    units = raw.get("units")
    if isinstance(units, dict):
        wiring = units.get("wiring")
        if wiring != "AutoNCP":
            raise _bad(source, f"unsupported config option units.wiring={wiring!r}", "'AutoNCP' (or an integer units)",
                       "use a fully connected model or an AutoNCP wiring")
        for k in units:
            if k not in ("wiring", "units", "output_size", "sparsity_level", "seed"):
                raise _bad(source, f"unsupported config option 'units.{k}'",
                           "wiring, units, output_size, sparsity_level, seed", f"remove units.{k}")
        U = _int(units, "units", source, limit=dim)
        O = _int(units, "output_size", source, limit=dim)
        if U is None or O is None or O >= U - 2:
            raise _bad(source, f"AutoNCP units={U} output_size={O}", "output_size < units - 2",
                       "fix units in config.json")
        sparsity = units.get("sparsity_level", 0.5)
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
            raise _bad(source, f"config option units.sparsity_level={_checkpoint.json_text(sparsity)}",
                       "a number in [0, 1)", "fix units.sparsity_level")
        cfg["units"] = {"wiring": "AutoNCP", "units": U, "output_size": O, "sparsity_level": sparsity,
                        "seed": _int(units, "seed", source, 22222, minimum=0)}
    else:
        cfg["units"] = _int(raw, "units", source, limit=dim)
        if cfg["units"] is None:
            raise _bad(source, "config has no units", "an integer or {\"wiring\": \"AutoNCP\", ...}", "add units")
    if cfg["input_size"] is None:
        raise _bad(source, "config has no input_size", "an integer", "add input_size to config.json")
    wired = isinstance(cfg["units"], dict)
    if cls == "CfC":
        mode = raw.get("mode", "default")
        if mode not in cfc_step.MODES:
            raise _bad(source, f"unsupported config option mode={mode!r}", " or ".join(cfc_step.MODES), "fix mode")
        cfg["mode"] = mode
        if wired:
            for k in ("backbone_units", "backbone_layers"):
                if raw.get(k) is not None:
                    raise _bad(source, f"config option {k} is set on a wired CfC", f"no {k} (ncps forbids it)",
                               f"remove {k}")
            cfg.update(activation="lecun_tanh", backbone_units=0, backbone_layers=0)
        else:
            act = raw.get("activation", "lecun_tanh")
            if act not in CFC_ACTIVATIONS:
                raise _bad(source, f"unsupported config option activation={act!r}", " or ".join(CFC_ACTIVATIONS),
                           "train with the default lecun_tanh backbone activation")
            cfg.update(activation=act, backbone_units=_int(raw, "backbone_units", source, 128, limit=dim),
                       backbone_layers=_int(raw, "backbone_layers", source, 1, minimum=0, limit=count))
        cfg["proj_size"] = _int(raw, "proj_size", source, limit=dim)
    else:
        for k in ("input_mapping", "output_mapping"):
            m = raw.get(k, "affine")
            if m not in MAPPINGS:
                raise _bad(source, f"unsupported config option {k}={m!r}", " or ".join(MAPPINGS), f"fix {k}")
            cfg[k] = m
        cfg["ode_unfolds"] = _int(raw, "ode_unfolds", source, 6,
                                  limit=(MAX_ODE_UNFOLDS, "solver sub-steps per input step; ncps' default is 6"))
        eps = raw.get("epsilon", 1e-8)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps < float("inf"):
            raise _bad(source, f"config option epsilon={eps!r}", "a number >= 0", "fix epsilon")
        cfg["epsilon"] = float(eps)
        ipc = raw.get("implicit_param_constraints", True)
        if not isinstance(ipc, bool):
            raise _bad(source, f"config option implicit_param_constraints={ipc!r}", "true or false", "fix it")
        cfg["implicit_param_constraints"] = ipc
    return cfg


def _units(cfg) -> int:
    return cfg["units"]["units"] if isinstance(cfg["units"], dict) else cfg["units"]


def _outputs(cfg) -> int:
    return cfg["units"]["output_size"] if isinstance(cfg["units"], dict) else cfg["units"]


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every key of the ncps module's state_dict and its shape."""
    I, U, O = cfg["input_size"], _units(cfg), _outputs(cfg)
    s: dict[str, tuple[int, ...]] = {}
    if cfg["class"] == "LTC":
        c = "rnn_cell."
        for n in ("gleak", "vleak", "cm"):
            s[c + n] = (U,)
        for n in ("sigma", "mu", "w", "erev", "sparsity_mask"):
            s[c + n] = (U, U)
        for n in ("sensory_sigma", "sensory_mu", "sensory_w", "sensory_erev", "sensory_sparsity_mask"):
            s[c + n] = (I, U)
        for side, n in (("input", I), ("output", O)):
            m = cfg[f"{side}_mapping"]
            if m in ("affine", "linear"):
                s[f"{c}{side}_w"] = (n,)
            if m == "affine":
                s[f"{c}{side}_b"] = (n,)
        return s
    heads = ("ff1",) if cfg["mode"] == "pure" else ("ff1", "ff2", "time_a", "time_b")
    if isinstance(cfg["units"], dict):
        d_in = I
        for i, n in enumerate(autoncp_layer_sizes(U, O)):
            c = f"rnn_cell.layer_{i}."
            s[c + "sparsity_mask"] = (n, d_in + n)
            for hd in heads:
                s[f"{c}{hd}.weight"], s[f"{c}{hd}.bias"] = (n, d_in + n), (n,)
            if cfg["mode"] == "pure":
                s[c + "w_tau"] = s[c + "A"] = (1, n)
            d_in = n
    else:
        Z, nbb = cfg["backbone_units"], cfg["backbone_layers"]
        d_in = I + U
        for i, idx in enumerate(_backbone_indices(nbb, 0.0)):
            s[f"rnn_cell.backbone.{idx}.weight"], s[f"rnn_cell.backbone.{idx}.bias"] = (Z, d_in), (Z,)
            d_in = Z
        for hd in heads:
            s[f"rnn_cell.{hd}.weight"], s[f"rnn_cell.{hd}.bias"] = (U, d_in), (U,)
        if cfg["mode"] == "pure":
            s["rnn_cell.w_tau"] = s["rnn_cell.A"] = (1, U)
    if cfg.get("proj_size"):
        s["fc.weight"], s["fc.bias"] = (cfg["proj_size"], O), (cfg["proj_size"],)
    return s


def _backbone_indices(n_layers: int, dropout: float) -> list[int]:
    """Positions of the Linear layers inside ncps' backbone nn.Sequential:
    [Linear, act] + n-1 x [Linear, act (, Dropout)]."""
    idx, pos = [], 0
    for i in range(n_layers):
        idx.append(pos)
        pos += 2 + (1 if i > 0 and dropout > 0 else 0)
    return idx


def check_state_dict(sd: dict, cfg: dict, source: str) -> dict[str, torch.Tensor]:
    """Check every key and shape against the config; return the weights as float32 with
    backbone Linear positions as a dropout-free backbone numbers them."""
    expected = expected_shapes(cfg)
    dropout = False
    if cfg["class"] == "CfC" and not isinstance(cfg["units"], dict) and cfg["backbone_layers"] > 2:
        # a backbone trained with dropout has a Dropout after every hidden Linear, which
        # shifts the Linear positions; tell the layouts apart by the last Linear's key
        last = _backbone_indices(cfg["backbone_layers"], 1.0)[-1]
        dropout = f"rnn_cell.backbone.{last}.weight" in sd
    if dropout:
        expected = {_renumber(k, cfg["backbone_layers"]): v for k, v in expected.items()}
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise EdgekitError(f"weights of '{source}' are missing {len(missing)} key(s): " + ", ".join(missing[:3]) + more,
                           expected=f"the state_dict of ncps.torch.{cfg['class']} built from config.json",
                           fix="save module.state_dict() of the same model whose options config.json lists")
    for k, shape in expected.items():
        got = tuple(sd[k].shape)
        if got != shape:
            raise EdgekitError(f"weights of '{source}': key '{k}' has shape {got}",
                               expected=f"{shape} (from config.json: input_size {cfg['input_size']}, "
                                        f"units {json.dumps(cfg['units'])})",
                               fix="config.json does not describe these weights; fix it or re-save the model")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise EdgekitError(f"weights of '{source}' have {len(extra)} key(s) config.json does not explain: "
                           + ", ".join(extra[:3]),
                           expected=f"exactly the state_dict of ncps.torch.{cfg['class']}",
                           fix="set the matching options (e.g. proj_size, mode) in config.json")
    if dropout:
        sd = {_renumber(k, cfg["backbone_layers"], back=True): v for k, v in sd.items()}
    return {k: v.detach().to(torch.float32) for k, v in sd.items()}


def _renumber(key: str, n_layers: int, back: bool = False) -> str:
    """Backbone Linear index without dropout <-> with dropout."""
    if not key.startswith("rnn_cell.backbone."):
        return key
    pre, idx, rest = key.split(".", 3)[:2], int(key.split(".")[2]), key.split(".", 3)[3]
    a, b = _backbone_indices(n_layers, 0.0), _backbone_indices(n_layers, 1.0)
    src, dst = (b, a) if back else (a, b)
    return ".".join(pre + [str(dst[src.index(idx)]), rest])


# ---- reading -------------------------------------------------------------------------
def _is_ncps_dir(path: Path, cls: str | None) -> bool:
    if not path.is_dir():
        return False
    cfg = path / "config.json"
    if not cfg.is_file():   # an ncps weights file with no config: claim it, to say what is missing
        return cls == "CfC" and any((path / f).is_file() for f in WEIGHT_FILES)
    raw = _checkpoint.peek_config(cfg)
    if raw is None or raw.get("framework") != FRAMEWORK:
        return False
    return raw.get("class") == "LTC" if cls == "LTC" else raw.get("class") != "LTC"


def read_ncps_dir(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from edgekit.models.hf import read_config
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EdgekitError(f"model directory '{path}' has no config.json",
                           expected="config.json with {\"framework\": \"ncps\", \"class\": \"CfC\"|\"LTC\", ...} "
                                    "beside the weights",
                           fix="write config.json as docs/cfc.md describes")
    raw = read_config(path)
    for name in WEIGHT_FILES:
        f = path / name
        if f.is_file():
            sd = _checkpoint.read_tensors(f)     # checked: plain dense tensors within the file's size, finite
            return parse_config(raw, str(path / "config.json"), Limits.of(sd, str(f))), sd
    parse_config(raw, str(path / "config.json"))         # a bad config is named before missing weights
    raise EdgekitError(f"model directory '{path}' has no weights",
                       expected=" or ".join(WEIGHT_FILES),
                       fix="save module.state_dict() with safetensors.torch.save_file as model.safetensors")


def module_config(module) -> dict | None:
    """config.json for a live ncps.torch.CfC / LTC module (None if it is neither)."""
    try:
        import ncps
        from ncps.torch import CfC as NcpsCfC, LTC as NcpsLTC
    except ImportError:
        return None
    if not isinstance(module, (NcpsCfC, NcpsLTC)):
        return None
    src = type(module).__name__

    def wiring_units(w):
        name = type(w).__name__
        if name == "AutoNCP":
            return {"wiring": "AutoNCP", "units": w.units, "output_size": w.output_dim,
                    "sparsity_level": w._sparsity_level, "seed": w._seed}
        if name == "FullyConnected" and isinstance(module, NcpsLTC) and w.output_dim == w.units:
            return w.units
        raise EdgekitError(f"ncps module {src} uses a {name} wiring, which edgekit does not support",
                           expected="integer units (fully connected) or ncps.wirings.AutoNCP",
                           fix="build the model with AutoNCP or plain units")
    raw = {"framework": FRAMEWORK, "class": src, "input_size": int(module.input_size),
           "mixed_memory": bool(module.use_mixed)}
    if isinstance(module, NcpsCfC):
        cell = module.rnn_cell
        if isinstance(module.wiring_or_units, ncps.wirings.Wiring):
            raw["units"] = wiring_units(module.wiring_or_units)
            raw["mode"] = cell._layers[0].mode
        else:
            raw["units"] = int(module.wiring_or_units)
            raw["mode"] = cell.mode
            raw["backbone_layers"] = cell.backbone_layers
            if cell.backbone_layers > 0:
                lin = [m for m in cell.backbone if isinstance(m, nn.Linear)]
                acts = {"LeCun": "lecun_tanh", "Tanh": "tanh", "ReLU": "relu", "SiLU": "silu", "GELU": "gelu"}
                raw["backbone_units"] = lin[0].out_features
                raw["activation"] = acts.get(type(cell.backbone[1]).__name__, type(cell.backbone[1]).__name__)
        if module.proj_size is not None:
            raw["proj_size"] = int(module.proj_size)
    else:
        cell = module.rnn_cell
        raw["units"] = wiring_units(module._wiring)
        raw.update(input_mapping=cell._input_mapping if cell._input_mapping in ("affine", "linear") else "none",
                   output_mapping=cell._output_mapping if cell._output_mapping in ("affine", "linear") else "none",
                   ode_unfolds=cell._ode_unfolds, epsilon=cell._epsilon,
                   implicit_param_constraints=cell._implicit_param_constraints)
    return raw


def save_ncps_dir(module, path, *, weights: str = "safetensors") -> Path:
    """Write an ncps module in the directory format edgekit reads (config.json +
    model.safetensors, or model.pt with weights="pt")."""
    from edgekit._io import atomic_path
    raw = module_config(module)
    if raw is None:
        raise EdgekitError(f"{type(module).__name__} is not an ncps.torch CfC or LTC module",
                           fix="pass an ncps.torch.CfC or ncps.torch.LTC")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path / ("model.safetensors" if weights == "safetensors" else "model.pt")) as tmp:
        if weights == "safetensors":
            from safetensors.torch import save_file
            save_file(sd, str(tmp))
        else:
            torch.save(sd, tmp)
    with atomic_path(path / "config.json") as tmp:
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
    return path


def _p(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().to(torch.float32).contiguous(), requires_grad=False)


# ---- CfC -----------------------------------------------------------------------------
class _CfcLayer(nn.Module):
    """The tensors of one `cfc_step` call (see edgekit/ops/cfc_step.py)."""

    def __init__(self, w_in, b_in, w_bb, b_bb, w_head, b_head, p, cfg: torch.Tensor, n_bb: int):
        super().__init__()
        self.w_in, self.b_in, self.w_bb, self.b_bb = _p(w_in), _p(b_in), _p(w_bb), _p(b_bb)
        self.w_head, self.b_head, self.p = _p(w_head), _p(b_head), _p(p)
        self.register_buffer("cfg", cfg)
        self.n_bb = n_bb
        self.units = p.shape[1]


def _stack_heads(sd, c, names, mask=None):
    w = torch.cat([sd[f"{c}{n}.weight"] * (mask if (mask is not None and n in ("ff1", "ff2")) else 1.0)
                   for n in names], 0)                           # (K, d_in)
    return w.t(), torch.cat([sd[f"{c}{n}.bias"] for n in names], 0)


class _NcpsModel(RecurrentModel):
    """What ncps' CfC and LTC share: inputs (x, dt) per step, one state tensor of all units
    (`state_name`), the config as read."""

    ncps_class: str          # the ncps.torch class (config.json "class")
    state_name: str
    input_kind = "features"
    output_name = "y"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.checkpoint = f"ncps.torch.{cls.ncps_class}: folder of config.json + model.safetensors (docs/cfc.md)"

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def input_spec(self, batch: int = 1) -> list[StateSpec]:
        return [StateSpec("x", (batch, self.cfg["input_size"]), torch.float32),
                StateSpec("dt", (batch, 1), torch.float32)]

    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        return [StateSpec(self.state_name, (batch, _units(self.cfg)), torch.float32)]

    def config_dict(self) -> dict:
        return dict(self.cfg)

    def step(self, x, state):
        """(x (B, I), dt (B, 1)) -> y (B, outputs)."""
        xt, dt = x
        y, state = self.forward((xt[:, None], dt[:, None]), state)
        return y[:, 0], state

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        return _is_ncps_dir(Path(path), cls.ncps_class)

    @classmethod
    def weight_files(cls, path) -> list[Path]:
        return [f for f in (Path(path) / n for n in WEIGHT_FILES) if f.is_file()][:1]

    @classmethod
    def from_pretrained(cls, path) -> RecurrentModel:
        cfg, sd = read_ncps_dir(Path(path))
        return _build(cfg, sd, str(path))

    @classmethod
    def write_random(cls, path, seed: int = 0, **shape) -> Path:
        """An ncps directory (config.json + model.safetensors) of a random ncps.torch module of
        this class: 6 inputs and 16 units by default; shape: input_size, units and the
        module's keyword arguments."""
        shape = {"input_size": 6, "units": 16, **shape}
        return save_ncps_dir(random_ncps_module(cls.ncps_class, shape.pop("input_size"), shape.pop("units"),
                                                seed=seed, **shape), path)

    @classmethod
    def oracle(cls, path):
        """ncps.torch's own module, rebuilt from the directory's config and weights."""
        model, h = ncps_module(path), [None]

        @torch.inference_mode()
        def step(x):
            feats, dt = x
            y, h[0] = model(torch.as_tensor(feats, dtype=torch.float32).reshape(1, 1, -1), h[0],
                            timespans=torch.as_tensor(dt, dtype=torch.float32).reshape(1, 1, 1))
            return y[0, 0].numpy()
        return f"ncps.torch.{cls.ncps_class} (eager, fp32, own hidden state)", step

    @classmethod
    def from_module(cls, obj) -> RecurrentModel | None:
        """An ncps.torch CfC or LTC module (either class: its config says which)."""
        raw = module_config(obj)
        if raw is None:
            return None
        _checkpoint.check_finite(obj.state_dict(), f"ncps.torch.{raw['class']} module")
        return _build(parse_config(raw, f"ncps.torch.{raw['class']} module"),
                      dict(obj.state_dict()), f"ncps.torch.{raw['class']} module")

    def _sequence(self, x, state):
        """(x (B, T, I), dt (B, T, 1) or (B, T)), state or None -> xs, dt (B, T, 1), state."""
        xs, dt = x
        if dt.dim() == 2:
            dt = dt[..., None]
        return xs, dt, self.init_state(xs.shape[0]) if state is None else state


@register_arch
class CfC(_NcpsModel):
    arch, ncps_class, state_name = "cfc", "CfC", "h"

    def __init__(self, cfg: dict, sd: dict[str, torch.Tensor]):
        super().__init__(cfg)
        I, U, mode = cfg["input_size"], _units(cfg), cfg["mode"]
        heads = ("ff1",) if mode == "pure" else ("ff1", "ff2", "time_a", "time_b")
        one = torch.zeros(1)
        self.layers = nn.ModuleList()
        if isinstance(cfg["units"], dict):                          # wired: one cell per layer
            self.layer_sizes = autoncp_layer_sizes(U, cfg["units"]["output_size"])
            for i, n in enumerate(self.layer_sizes):
                c = f"rnn_cell.layer_{i}."
                w, b = _stack_heads(sd, c, heads, sd[c + "sparsity_mask"])
                p = torch.cat([sd[c + "A"], sd[c + "w_tau"].abs()]) if mode == "pure" else torch.zeros(2, n)
                self.layers.append(_CfcLayer(one[:, None], one, one[:, None, None], one[:, None], w, b, p,
                                             cfc_step.make_cfg(mode, 0, "lecun_tanh"), 0))
        else:
            self.layer_sizes = [U]
            Z, nbb = cfg["backbone_units"], cfg["backbone_layers"]
            lin = [(sd[f"rnn_cell.backbone.{i}.weight"].t(), sd[f"rnn_cell.backbone.{i}.bias"])
                   for i in _backbone_indices(nbb, 0.0)]
            w_in, b_in = lin[0] if lin else (one[:, None], one)          # placeholders when nbb = 0
            # (Lx, Z, Z); a 1-float placeholder, never read, when there is no second layer
            w_bb = torch.stack([w for w, _ in lin[1:]]) if nbb > 1 else torch.zeros(1, 1, 1)
            b_bb = torch.stack([b for _, b in lin[1:]]) if nbb > 1 else torch.zeros(1, 1)
            w, b = _stack_heads(sd, "rnn_cell.", heads)
            p = torch.cat([sd["rnn_cell.A"], sd["rnn_cell.w_tau"].abs()]) if mode == "pure" else torch.zeros(2, U)
            self.layers.append(_CfcLayer(w_in, b_in, w_bb, b_bb, w, b, p,
                                         cfc_step.make_cfg(mode, nbb, cfg["activation"]), nbb))
        self.has_proj = bool(cfg.get("proj_size"))
        if self.has_proj:                                           # ncps' fc (proj_size)
            self.proj_w, self.proj_b = _p(sd["fc.weight"].t()), _p(sd["fc.bias"])

    # -- contract ----------------------------------------------------------------------
    def forward(self, x, state=None):
        """(x (B, T, I), dt (B, T, 1)) -> y (B, T, O or P)."""
        xs, dt, state = self._sequence(x, state)
        hs = torch.split(state["h"], self.layer_sizes, dim=1) if len(self.layers) > 1 else (state["h"],)
        new = []
        inp = xs
        for layer, h in zip(self.layers, hs):
            inp, h = self._cell(layer, inp, dt, h)
            new.append(h)
        y = inp
        if self.has_proj:
            y = y @ self.proj_w + self.proj_b
        return y, {"h": torch.cat(new, dim=1) if len(new) > 1 else new[0]}

    def _cell(self, L: _CfcLayer, x, dt, h):
        args = (x, dt, h, L.w_in, L.b_in, L.w_bb, L.b_bb, L.w_head, L.b_head, L.p)
        return torch.ops.edgekit.cfc_step(*args, L.cfg)


# ---- LTC -----------------------------------------------------------------------------
@register_arch
class LTC(_NcpsModel):
    arch, ncps_class, state_name = "ltc", "LTC", "v"

    def __init__(self, cfg: dict, sd: dict[str, torch.Tensor]):
        super().__init__(cfg)
        c = "rnn_cell."
        pos = F.softplus if cfg["implicit_param_constraints"] else (lambda t: t)
        w = pos(sd[c + "w"]) * sd[c + "sparsity_mask"]
        s_w = pos(sd[c + "sensory_w"]) * sd[c + "sensory_sparsity_mask"]
        gleak = pos(sd[c + "gleak"])
        self.s_mu, self.s_sigma = _p(sd[c + "sensory_mu"]), _p(sd[c + "sensory_sigma"])
        self.s_w, self.s_werev = _p(s_w), _p(s_w * sd[c + "sensory_erev"])
        self.mu, self.sigma = _p(sd[c + "mu"]), _p(sd[c + "sigma"])
        self.w, self.werev = _p(w), _p(w * sd[c + "erev"])
        self.cm, self.gleak, self.gvleak = _p(pos(sd[c + "cm"])), _p(gleak), _p(gleak * sd[c + "vleak"])
        self.register_buffer("solver", torch.tensor([float(cfg["ode_unfolds"]), cfg["epsilon"]]))
        I, O = cfg["input_size"], _outputs(cfg)
        self.in_w = _p(sd.get(c + "input_w", torch.ones(I)))
        self.in_b = _p(sd.get(c + "input_b", torch.zeros(I)))
        self.out_w = _p(sd.get(c + "output_w", torch.ones(O)))
        self.out_b = _p(sd.get(c + "output_b", torch.zeros(O)))

    def forward(self, x, state=None):
        """(x (B, T, I), dt (B, T, 1)) -> y (B, T, O). ncps' _map_inputs, ODE, _map_outputs."""
        xs, dt, state = self._sequence(x, state)
        im, om = self.cfg["input_mapping"], self.cfg["output_mapping"]
        if im in ("affine", "linear"):
            xs = xs * self.in_w
        if im == "affine":
            xs = xs + self.in_b
        args = (xs, dt, state["v"], self.s_mu, self.s_sigma, self.s_w, self.s_werev, self.mu, self.sigma,
                self.w, self.werev, self.cm, self.gleak, self.gvleak)
        vs, v = torch.ops.edgekit.ltc_step(*args, self.solver)
        y = vs[..., :_outputs(self.cfg)]                              # motor neurons first
        if om in ("affine", "linear"):
            y = y * self.out_w
        if om == "affine":
            y = y + self.out_b
        return y, {"v": v}


def _build(cfg: dict, sd: dict, source: str) -> RecurrentModel:
    sd = check_state_dict(sd, cfg, source)
    model = (CfC if cfg["class"] == "CfC" else LTC)(cfg, sd)
    return model.eval().requires_grad_(False)


def ncps_module(path):
    """The ncps.torch CfC / LTC module an ncps directory describes, its weights loaded (the
    oracle: ncps' own code). Needs ncps."""
    from ncps.torch import CfC as NcpsCfC, LTC as NcpsLTC
    from ncps.wirings import AutoNCP
    from edgekit.models.hf import read_config
    _, sd = read_ncps_dir(Path(path))
    cfg = read_config(Path(path))            # as module_config wrote it: ncps' own arguments
    units = cfg["units"]
    if isinstance(units, dict):
        units = AutoNCP(units["units"], units["output_size"], sparsity_level=units.get("sparsity_level", 0.5),
                        seed=units.get("seed", 22222))
    if cfg["class"] == "CfC":
        kw = {k: cfg[k] for k in ("mode", "proj_size", "backbone_units", "backbone_layers", "activation")
              if cfg.get(k) is not None}
        m = NcpsCfC(cfg["input_size"], units, mixed_memory=cfg.get("mixed_memory", False), **kw)
    else:
        m = NcpsLTC(cfg["input_size"], units, mixed_memory=cfg.get("mixed_memory", False),
                    input_mapping=cfg["input_mapping"], output_mapping=cfg["output_mapping"],
                    ode_unfolds=cfg["ode_unfolds"], epsilon=cfg["epsilon"],
                    implicit_param_constraints=cfg["implicit_param_constraints"])
    m.load_state_dict(sd)
    return m.eval()


def random_ncps_module(cls: str, input_size: int, units, seed: int = 0, **kw):
    """An ncps.torch.CfC / LTC with deterministic random weights (tests, benchmarks).
    `units` is an int or ("AutoNCP", units, output_size). Needs ncps."""
    from ncps.torch import CfC as NcpsCfC, LTC as NcpsLTC
    from ncps.wirings import AutoNCP
    torch.manual_seed(seed)
    u = AutoNCP(units[1], units[2]) if isinstance(units, tuple) else units
    m = (NcpsCfC if cls == "CfC" else NcpsLTC)(input_size, u, **kw)
    with torch.no_grad():   # ncps zero-initializes biases; random ones exercise more numerics
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    return m.eval()
