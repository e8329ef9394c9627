"""Hugging Face's BitNet packing (transformers `integrations/bitnet.py`), written and read by
edgekit's own code: a ternary (out, in) weight W~ in {-1, 0, 1} is stored as uint8 of shape
(ceil(out / 4), in) holding W~ + 1 in 2-bit fields; with R = ceil(out / 4), packed row r holds
original rows r, r + R, r + 2R, r + 3R in bit pairs 0-1, 2-3, 4-5, 6-7. One `weight_scale`
per tensor, whose meaning depends on the config's `linear_class`:
- "bitlinear" stores 1 / mean|W| and DIVIDES the output by it;
- "autobitlinear" stores mean|W| and multiplies.
tests/test_quant.py checks both directions bit for bit against transformers' functions.
"""

from __future__ import annotations

import math

import torch

from edgekit.errors import EdgekitError

VALUES_PER_BYTE = 4
LINEAR_CLASSES = ("bitlinear", "autobitlinear")


def pack_hf(ternary: torch.Tensor) -> torch.Tensor:
    """(out, in) values in {-1, 0, 1} -> uint8 (ceil(out / 4), in)."""
    out = ternary.shape[0]
    R = -(-out // VALUES_PER_BYTE)
    codes = (ternary.to(torch.int32) + 1)
    padded = torch.zeros((R * VALUES_PER_BYTE, *ternary.shape[1:]), dtype=torch.int32)
    padded[:out] = codes
    planes = padded.reshape(VALUES_PER_BYTE, R, *ternary.shape[1:])
    packed = sum(planes[i] << (2 * i) for i in range(VALUES_PER_BYTE))
    return packed.to(torch.uint8)


def unpack_hf(packed: torch.Tensor, out: int) -> torch.Tensor:
    """pack_hf inverted: uint8 (R, in) -> int8 (out, in) in {-1, 0, 1}. Refuses a packed shape
    that cannot hold `out` rows and a field holding 3 (not a ternary code)."""
    R = packed.shape[0]
    if R != -(-out // VALUES_PER_BYTE):
        raise EdgekitError(f"a BitNet-packed weight has {R} packed rows, which hold {R * VALUES_PER_BYTE} rows, "
                           f"not the {out} the config gives",
                           expected=f"{-(-out // VALUES_PER_BYTE)} packed rows (ceil({out} / 4))",
                           fix="the checkpoint's config and weights disagree; re-export the checkpoint")
    p = packed.to(torch.int32)
    fields = torch.cat([(p >> (2 * i)) & 3 for i in range(VALUES_PER_BYTE)])[:out]
    if bool((fields == 3).any()):
        raise EdgekitError("a BitNet-packed weight holds the 2-bit code 3, which is no ternary value",
                           expected="codes 0, 1, 2 (for -1, 0, +1)", fix="the checkpoint is damaged; re-export it")
    return (fields - 1).to(torch.int8)


def scale_to_hf(gamma: float, linear_class: str) -> float:
    """The `weight_scale` transformers stores for absmean gamma."""
    return 1.0 / gamma if linear_class == "bitlinear" else gamma


def scale_from_hf(weight_scale: torch.Tensor, linear_class: str, name: str = "weight_scale") -> float:
    """gamma from a checkpoint's `weight_scale`; refuses zero, negative, NaN or inf, and an
    unknown linear_class."""
    if linear_class not in LINEAR_CLASSES:
        raise EdgekitError(f"BitNet linear_class {linear_class!r}", expected=" or ".join(LINEAR_CLASSES),
                           fix="the checkpoint's quantization_config is not one edgekit reads")
    if weight_scale.numel() != 1:
        raise EdgekitError(f"'{name}' has {weight_scale.numel()} values", expected="one per tensor",
                           fix="the checkpoint is not BitNet-packed as transformers writes it")
    v = float(weight_scale.reshape(()))
    if not math.isfinite(v) or v <= 0:
        raise EdgekitError(f"'{name}' is {v}", expected="a finite scale > 0",
                           fix="the checkpoint is damaged; re-export it")
    return 1.0 / v if linear_class == "bitlinear" else v
