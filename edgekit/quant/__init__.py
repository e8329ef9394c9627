"""Quantized exports: `edgekit export SRC --quant ternary|int8|int4 [--group-size G]`.

`quantize_model` rewrites a loaded model once, before any format traces it: each
`layers.Linear` becomes a `QuantLinear` (the `edgekit::qlinear` op over packed codes,
edgekit/ops/qlinear.py), and a tied embedding reads its rows from the head's packed codes.
Every format then exports the same quantized model, and the same model run eagerly is the
torch reference the artifacts are compared with (parity) and the model `edgekit eval`
measures. The recurrences and their state stay fp32 (the paper's choice for BitNet, and
the state is what a stream carries for hours).

The schemes' math and the packed layout: edgekit/quant/schemes.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.quant.schemes import DEFAULT_GROUP, SCHEMES, Packed, dequantize, quantize, unpack_bits

__all__ = ["SCHEMES", "DEFAULT_GROUP", "QUANTIZERS", "QuantLinear", "QuantReport", "quantize_model", "check_scheme"]

MIN_GROUP = 16
# ONNX Runtime's 2-bit MatMulNBits runs blocks of 16 ten times slower than blocks of 32+ (and
# than 4- and 8-bit blocks of 16): Mamba-130m's dt_proj (48 -> 1536) took 301 us a call at 2
# bits against 30 us at 4 (profiled, ORT 1.31.1, 2 threads). A ternary layer whose width no
# block of 32 divides stays float32 (~10 us a call there).
SCHEME_MIN_GROUP = {"ternary": 32}
# The head (and a tied embedding) of a ternary model is int4 unless asked otherwise: measured on
# the bundled Hawk after `edgekit quantize --ternary` (87 steps, held-out first 64 kB, fp32
# 1.8764 bits/byte): ternary head 2.2642 (+20.7%), int8 head 1.9237 (+2.5%), int4 head 1.9249
# (+2.6%). int4 is as good as int8 there and keeps a 50k-vocabulary head small (Mamba-130m's
# 38.6M-weight head: 24.7 MB at int4, 40.1 MB at int8, 11.0 MB ternary).
DEFAULT_HEAD = {"ternary": "int4"}
# A ternary layer no block of 32 divides (Mamba's dt_proj, 48 wide at 130m) is int8 in blocks
# of 16 instead: 24 such layers are 7.1 MB float32, 2.4 MB int8, and the ternary Mamba-130m
# export then fits in 60 MB.
FALLBACK = {"ternary": "int8"}


class QuantLinear(nn.Module):
    """y = q8(x) Wᵀ + b as one `edgekit::qlinear` call, W packed (edgekit/quant/schemes.py)."""

    def __init__(self, packed: Packed, bias: torch.Tensor | None, d_in: int, d_out: int):
        super().__init__()
        self.d_in, self.d_out, self.bits, self.group = d_in, d_out, packed.bits, packed.group
        self.register_buffer("codes", packed.codes)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zero_points", packed.zero_points)
        self.register_buffer("bias", bias.detach().float().clone() if bias is not None else torch.zeros(d_out))

    def forward(self, x):
        return torch.ops.edgekit.qlinear(x, self.codes, self.scales, self.zero_points, self.bias)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The dequantized weight rows of output units idx (a tied embedding read from the
        head's codes, so the matrix is stored once, quantized): idx.shape + (d_in,). Stock
        ops (index_select, floor division, remainder), no activation quantization."""
        flat = idx.reshape(-1)
        codes = self.codes.index_select(0, flat).to(torch.int32)             # (n, KB, BLOB)
        per, mask = 8 // self.bits, 1 << self.bits
        divisors = torch.tensor([1 << (self.bits * i) for i in range(per)], dtype=torch.int32)
        c = torch.remainder(torch.div(codes.unsqueeze(-1), divisors, rounding_mode="floor"), mask)
        c = c.reshape(flat.shape[0], self.codes.shape[1], self.group).float()
        KB = self.codes.shape[1]
        z = self.zero_points.index_select(0, flat).to(torch.int32)
        z = torch.remainder(torch.div(z.unsqueeze(-1), divisors, rounding_mode="floor"), mask)
        z = z.reshape(flat.shape[0], -1)[:, :KB].float()
        w = (c - z.unsqueeze(-1)) * self.scales.index_select(0, flat).unsqueeze(-1)
        return w.reshape(*idx.shape, self.d_in)

    def weight_float(self) -> torch.Tensor:
        """The (out, in) float weight the codes stand for."""
        return dequantize(self.codes, self.scales, self.zero_points, self.d_in)


@dataclass
class QuantReport:
    """What a quantization did: the manifest's `quantization` record."""

    scheme: str
    group_size: int | None
    head: str | None = None                        # the head's (and tied embedding's) scheme, if not scheme
    activations: str = "int8 per token, symmetric absmax per block of the layer's group size"
    layers: dict = field(default_factory=dict)     # name -> {"bits", "group_size", "shape"}
    kept: dict = field(default_factory=dict)       # name -> reason it stayed float32
    made_by: dict = field(default_factory=dict)    # layer scheme -> what made its codes

    def to_json(self) -> dict:
        kinds: dict = {}
        for name, d in self.layers.items():
            kinds.setdefault(_kind(name), set()).add(d["bits"])
        bits = sum(d["bits_per_weight"] * d["weights"] for d in self.layers.values())
        weights = sum(d["weights"] for d in self.layers.values())
        return {"scheme": self.scheme, "group_size": self.group_size, "head": self.head or self.scheme,
                "activations": self.activations,
                "bits_by_kind": {k: sorted(v) for k, v in sorted(kinds.items())},
                "bits_per_weight": round(bits / weights, 4) if weights else None,
                "layers": {k: {kk: vv for kk, vv in v.items() if kk != "weights"} for k, v in self.layers.items()},
                "kept_float32": dict(self.kept), "quantizer": dict(sorted(self.made_by.items()))}


def _kind(name: str) -> str:
    return "head" if name in ("head", "lm_head") or name.endswith(".head") else "linear"


def check_scheme(scheme: str, group_size: int | None) -> None:
    if scheme not in SCHEMES:
        raise EdgekitError(f"unknown quantization scheme {scheme!r}", expected=" | ".join(SCHEMES),
                           fix="pass --quant ternary, int8 or int4")
    if group_size is not None and (group_size < MIN_GROUP or group_size & (group_size - 1)):
        raise EdgekitError(f"--group-size {group_size} is not a power of 2 of at least {MIN_GROUP}",
                           expected="16, 32, 64, 128 or 256 (ONNX Runtime's MatMulNBits block sizes)",
                           fix=f"pass --group-size {DEFAULT_GROUP[scheme]} (the {scheme} default)")


def _group_for(K: int, want: int, minimum: int = MIN_GROUP) -> int | None:
    """The largest power of 2 <= want, >= minimum, that divides K; None if none does."""
    g = want
    while g >= minimum and K % g:
        g //= 2
    return g if g >= minimum else None


QUANTIZERS = ("auto", "nncf", "edgekit")
MADE_BY = {"ternary": "edgekit: BitNet b1.58 absmean, one scale per tensor (edgekit/quant/schemes.py)",
           "int8": "edgekit: NNCF's INT8_ASYM rule per block of G (NNCF's own is per channel, which "
                   "MatMulNBits blocks cannot hold; bit-identical where one block spans the row)",
           "int4": "edgekit: NNCF's INT4_SYM rule (bit-identical to nncf.compress_weights, tests/test_quant_nncf.py)"}


def quantize_model(model: nn.Module, scheme: str, group_size: int | None = None,
                   head: str | None = None, quantizer: str = "auto") -> QuantReport:
    """Rewrite every `layers.Linear` of model, in place, as a QuantLinear of `scheme` (the
    output head, and a tied embedding with it, in `head`'s scheme: by default the scheme's own,
    except ternary's int4, DEFAULT_HEAD).

    group_size None: the scheme's default (ternary 128, int8 128, int4 32), halved for a
    layer whose width it does not divide (down to 16; a layer no such size divides stays
    float32, recorded with the reason). An explicit group_size that does not divide a
    layer's width is refused, naming the layer. Models without Linear layers (the liquid
    networks keep their weights inside their fused step op) are refused by name.

    quantizer "nncf": the int4 layers' codes come from `nncf.compress_weights`
    (edgekit/quant/nncf_int4.py); "edgekit": from edgekit's own copy of NNCF's rule (the same
    bytes, without NNCF installed); "auto": NNCF where it is installed (`edgekit[quant]`), else
    edgekit's. The report says which made them. Ternary and int8 are edgekit's either way
    (MADE_BY)."""
    from edgekit.models.layers import Linear, LowRank
    check_scheme(scheme, group_size)
    if quantizer not in QUANTIZERS:
        raise EdgekitError(f"unknown quantizer {quantizer!r}", expected=" | ".join(QUANTIZERS),
                           fix="pass quantizer='auto' (the default), 'nncf' or 'edgekit'")
    if quantizer == "auto":
        import importlib.util
        quantizer = "nncf" if importlib.util.find_spec("nncf") is not None else "edgekit"
    head = head or DEFAULT_HEAD.get(scheme)
    if head is not None:
        check_scheme(head, None)
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear) and not isinstance(m, LowRank)]
    low_rank = {n: m.KEPT for n, m in model.named_modules() if isinstance(m, LowRank)}
    if not targets:
        arch = getattr(model, "arch", type(model).__name__)
        raise EdgekitError(f"--quant {scheme}: {arch} has no Linear layers to quantize",
                           expected="a token language model (rwkv7, mamba, mamba2, hawk, griffin)",
                           fix=f"export {arch} without --quant: its weights live inside its fused step op, "
                               "which has no quantized kernel")
    report = QuantReport(scheme, group_size, head=head)
    report.kept.update(low_rank)
    layer_scheme = lambda name: head if head and _kind(name) == "head" else scheme  # noqa: E731
    if group_size is not None:
        for name, m in targets:
            least = SCHEME_MIN_GROUP.get(layer_scheme(name), MIN_GROUP)
            if m.d_in % group_size and _group_for(m.d_in, group_size, least) is not None:  # else kept float32
                raise EdgekitError(f"--group-size {group_size} does not divide layer '{name}' (width {m.d_in})",
                                   expected=f"a group size that divides every quantized layer's input width",
                                   fix=f"pass a smaller power of 2 (e.g. {_group_for(m.d_in, group_size) or 16}), "
                                       "or leave --group-size out to let edgekit choose per layer")
    plan = []                                       # (name, module, layer scheme, G, fallback)
    for name, m in targets:
        ls = layer_scheme(name)
        least = SCHEME_MIN_GROUP.get(ls, MIN_GROUP)
        G = _group_for(m.d_in, group_size or DEFAULT_GROUP[ls], least)
        fallback = None
        if G is None and ls in FALLBACK and _group_for(m.d_in, DEFAULT_GROUP[FALLBACK[ls]]):
            fallback = (f"{FALLBACK[ls]}: its input width {m.d_in} is not a multiple of {least} "
                        "(ONNX Runtime's 2-bit kernel is ~10x slower on blocks of 16)")
            ls = FALLBACK[ls]
            G = _group_for(m.d_in, DEFAULT_GROUP[ls])
        if G is None:
            report.kept[name] = f"its input width {m.d_in} is not a multiple of {least}"
            continue
        plan.append((name, m, ls, G, fallback))
    by_nncf = {}
    int4 = [(name, m, G) for name, m, ls, G, _ in plan if ls == "int4"]
    if quantizer == "nncf" and int4:
        from edgekit.quant.nncf_int4 import compress_int4, nncf_version
        by_nncf = compress_int4({name: m.weight.t() for name, m, _ in int4}, {name: G for name, _, G in int4})
        report.made_by["int4"] = (f"nncf {nncf_version()}: compress_weights INT4_SYM, ratio 1, all layers "
                                  "(edgekit/quant/nncf_int4.py)")
    for name, m, ls, G, fallback in plan:
        report.made_by.setdefault(ls, MADE_BY[ls])
        with torch.no_grad():
            packed = by_nncf.get(name) or quantize(m.weight.t().contiguous(), ls, G)   # (out, in)
        q = QuantLinear(packed, m.bias, m.d_in, m.d_out)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, q)
        report.layers[name] = {"bits": packed.bits, "group_size": G, "shape": [m.d_out, m.d_in],
                               "bits_per_weight": round(8 * packed.nbytes / (m.d_in * m.d_out), 4),
                               "weights": m.d_in * m.d_out, **({"fallback": fallback} if fallback else {})}
    for name, p in model.named_parameters():
        reason = _float_matrix_reason(name, p)
        if reason:
            report.kept[name] = reason
    return report


def _float_matrix_reason(name: str, p: torch.Tensor) -> str | None:
    """Why a weight matrix that is not a layers.Linear stays float32 (None: not such a matrix)."""
    if p.dim() < 2:
        return None
    if name.split(".")[0] in ("emb", "embed", "embedding", "embeddings", "wte") or name.endswith("embedding.weight"):
        return "the embedding: one row is read per token, so it sets the file size, not the speed"
    if name.endswith("gate_w"):
        return "the RG-LRU's block-diagonal gate weights, inside the fused edgekit::rglru_step"
    return None


def unpacked_codes(q: QuantLinear) -> torch.Tensor:
    """The (out, in) integer codes of a QuantLinear."""
    return unpack_bits(q.codes, q.bits, q.group).reshape(q.d_out, q.d_in)
