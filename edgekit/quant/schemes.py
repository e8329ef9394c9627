"""Weight quantization schemes, and the one packed layout every quantized Linear is stored in.

Layout (ONNX Runtime's `com.microsoft.MatMulNBits`, so an ONNX export stores the very bytes
the ExecuTorch kernel reads): a weight W (N outputs, K inputs) is cut into blocks of G
consecutive inputs per output row, KB = K / G blocks per row. Each block has a float scale
and an integer zero point; the weight is W[n, k] = (code[n, k] - zp[n, k // G]) * scale[n, k // G]
with `bits`-bit unsigned codes.
- codes: uint8 (N, KB, G * bits / 8); element j of a block sits in byte j * bits // 8, at
  bit (j * bits) % 8 (low bits first);
- scales: float32 (N, KB);
- zero points: uint8 (N, ceil(KB * bits / 8)), packed the same way along the row's blocks.

Activations are quantized the way MatMulNBits' accuracy_level 4 does it (int8 activations,
its fast path): each token's inputs in the same blocks of G, symmetric absmax,
q = rint(x * 127 / max|x|) (round half to even). Checked on the pinned ORT 1.31.1
(bits 2, 4 and 8, K 768, G 128): its outputs match this reference to 1.0-1.2e-6 of the
output's std, and the fp32-activation reference only to 3.5-4.7e-2.

Schemes:
- ternary (BitNet b1.58, arXiv 2402.17764): one scale per tensor, gamma = mean|W|;
  W~ = RoundClip(W / gamma, -1, 1); codes W~ + 1 in 2 bits, zero point 1, every block's
  scale gamma. The paper quantizes activations per token; here per block of G (finer), which
  is what ORT's kernel computes, and edgekit's ExecuTorch kernel computes the same.
- int8: asymmetric per block (NNCF's INT8_ASYM rule, per block rather than per channel):
  scale = (max - min) / 255, zp = rint(-min / scale), codes clip(rint(W / scale + zp), 0, 255)
  (rounded after adding zp, as NNCF does: bit-identical to nncf.compress_weights, tests/test_quant_nncf.py).
- int4: symmetric per block with a signed scale (NNCF's INT4_SYM): the block's value of
  largest magnitude, w*, maps to -8 exactly, scale = w* / -8 (negative when w* > 0; on a tie
  between min and max, w* = min, as NNCF decides; a scale under fp32's eps becomes eps), codes
  clip(rint(W / scale), -8, 7) + 8, zero point 8. All 16 levels are used. Bit-identical to
  nncf.compress_weights (tests/test_quant_nncf.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEMES = {"ternary": 2, "int8": 8, "int4": 4}          # scheme -> bits
DEFAULT_GROUP = {"ternary": 128, "int8": 128, "int4": 32}
ACT_LEVELS = 127
EPS = 1e-8


@dataclass(frozen=True)
class Packed:
    """A quantized (N, K) weight in the MatMulNBits layout (module docstring)."""

    codes: torch.Tensor        # uint8 (N, KB, G * bits / 8)
    scales: torch.Tensor       # float32 (N, KB)
    zero_points: torch.Tensor  # uint8 (N, ceil(KB * bits / 8))
    bits: int
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape[0], self.codes.shape[1] * self.group

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scales, self.zero_points))


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., L) integers in [0, 2**bits) -> uint8 (..., ceil(L * bits / 8)), low bits first."""
    per = 8 // bits
    L = values.shape[-1]
    pad = (-L) % per
    v = torch.nn.functional.pad(values.to(torch.int32), (0, pad)).reshape(*values.shape[:-1], -1, per)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (v << shifts).sum(-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, length: int) -> torch.Tensor:
    """pack_bits inverted: uint8 (..., B) -> int32 (..., length)."""
    per = 8 // bits
    # floor division and remainder, not shifts: the decomposed exports trace this, and the
    # ONNX exporter has no translation for aten.__rshift__
    divisors = torch.tensor([1 << (bits * i) for i in range(per)], dtype=torch.int32)
    v = torch.remainder(torch.div(packed.to(torch.int32).unsqueeze(-1), divisors, rounding_mode="floor"), 1 << bits)
    return v.reshape(*packed.shape[:-1], -1)[..., :length]


def _blocks(w: torch.Tensor, group: int) -> torch.Tensor:
    N, K = w.shape
    if group < 16 or group & (group - 1) or K % group:
        raise ValueError(f"group size {group} must be a power of 2, at least 16, dividing the width {K}")
    return w.float().reshape(N, K // group, group)


def ternary_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W~ in {-1, 0, 1} as int8, gamma = mean|W|) of an (N, K) weight: BitNet b1.58's absmean.

    A weight that is already ternary, every nonzero of one magnitude a (what `edgekit quantize`
    writes: gamma * W~, exact in bf16), gives back W~ and gamma = a exactly: its absmean would
    be a times the fraction of nonzeros, the wrong scale."""
    w = w.float()
    mags = w.abs()
    nz = mags[mags > 0]
    if nz.numel() and bool(nz.max() == nz.min()):
        return torch.sign(w).to(torch.int8), nz.max()
    gamma = mags.mean().clamp_min(EPS)
    return (w / gamma).round().clamp(-1, 1).to(torch.int8), gamma


def quantize(w: torch.Tensor, scheme: str, group: int) -> Packed:
    """An (N, K) float weight -> Packed, by the scheme's rule (module docstring)."""
    bits = SCHEMES[scheme]
    b = _blocks(w, group)
    N, KB, G = b.shape
    if scheme == "ternary":
        t, gamma = ternary_codes(w)
        codes = t.reshape(N, KB, G).to(torch.int32) + 1
        scales = torch.full((N, KB), float(gamma))
        zp = torch.ones(N, KB, dtype=torch.int32)
    elif scheme == "int8":
        lo = b.amin(-1).clamp_max(0.0)
        hi = b.amax(-1).clamp_min(0.0)
        scales = ((hi - lo) / 255).clamp_min(EPS)
        zp = torch.round(-lo / scales).clamp(0, 255).to(torch.int32)
        codes = torch.round(b / scales[..., None] + zp[..., None]).clamp(0, 255).to(torch.int32)   # NNCF order
    elif scheme == "int4":
        lo, hi = b.amin(-1), b.amax(-1)              # NNCF's _calculate_signed_scale, ties included:
        scales = torch.where(lo.abs() >= hi, lo.abs(), -hi) / 8     # w* = min when |min| >= max
        eps = torch.finfo(torch.float32).eps
        scales = torch.where(scales.abs() < eps, torch.full_like(scales, eps), scales)
        codes = torch.round(b / scales[..., None]).clamp(-8, 7).to(torch.int32) + 8
        zp = torch.full((N, KB), 8, dtype=torch.int32)
    else:
        raise ValueError(f"unknown quantization scheme {scheme!r}; schemes: {', '.join(SCHEMES)}")
    return Packed(pack_bits(codes, bits), scales.float().contiguous(), pack_bits(zp, bits), bits, group)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, K: int) -> torch.Tensor:
    """The (N, K) float weight the packed tensors stand for; bits and G follow from the shapes."""
    N, KB, blob = codes.shape
    G = K // KB
    bits = blob * 8 // G
    c = unpack_bits(codes, bits, G).float()                                  # (N, KB, G)
    z = unpack_bits(zero_points, bits, KB).float()                           # (N, KB)
    return ((c - z[..., None]) * scales[..., None]).reshape(N, K)


def quantize_activations(x: torch.Tensor, group: int) -> torch.Tensor:
    """x (..., K) as int8 per block of `group` (symmetric absmax, round half to even), returned
    dequantized in float32: what MatMulNBits' accuracy_level 4 multiplies the weight with."""
    b = x.float().reshape(*x.shape[:-1], x.shape[-1] // group, group)
    amax = b.abs().amax(-1, keepdim=True)
    scale = amax / ACT_LEVELS
    inv = torch.where(amax > 0, ACT_LEVELS / amax.clamp_min(1e-30), torch.zeros_like(amax))
    q = torch.round(b * inv).clamp(-ACT_LEVELS, ACT_LEVELS)
    return (q * scale).reshape(x.shape)


def bits_per_weight(p: Packed) -> float:
    N, K = p.shape
    return 8 * p.nbytes / (N * K)
