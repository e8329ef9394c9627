"""`edgekit::bitlinear`, `edgekit::qlinear4`, `edgekit::qlinear8` — a quantized Linear:
y = q8(x) Wᵀ + b with W stored in 2, 4 or 8 bits per weight (BitNet b1.58 ternary, int4,
int8), in ONNX Runtime's MatMulNBits layout (edgekit/quant/schemes.py), and x quantized to
int8 per block of G inputs, as MatMulNBits' accuracy_level 4 does it.

Decode at batch 1 reads every weight once per token, so bits per weight set the speed: a
ternary layer is 2.27 bits per weight at G = 128 against 32 for fp32 (edgekit/quant/).

Dimensions: M rows (the leading dims of x), K inputs, N outputs, KB = K / G blocks per row,
BLOB = G * bits / 8 bytes per block, ZB = ceil(KB * bits / 8) bytes of zero points per row.

Inputs: x (..., K) float32; w (N, KB, BLOB) uint8, the codes; scales (N, KB) float32;
zero_points (N, ZB) uint8; b (N,) float32 (zeros for a layer without bias). Output: y (..., N)
float32. G = K / KB is a power of 2, at least 16; the bits are the op's.

Reference (what every kernel computes; the sum's order is the kernel's own):
    xq = dequant(q8(x)): per token and block of G, s = max|x| / 127, q = rint(x * 127 / max|x|)
         (round half to even; 0 where the block is all zeros), xq = q * s
    y[n] = b[n] + Σ_k xq[k] · (code[n, k] − zp[n, k / G]) · scale[n, k / G]

ONNX: an exported graph holds `com.microsoft.MatMulNBits` (accuracy_level 4) for these nodes
(edgekit/export/onnx.py rewrites them): ORT's own int8-dot kernels. The function body below
is the op's definition in stock ops, for any other runtime.
"""

from __future__ import annotations

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register
from edgekit.quant.schemes import dequantize, pack_bits, quantize_activations

NAME = "qlinear"


def reference(x, w, scales, zero_points, b):
    """y = dequant(q8(x)) @ dequant(W)ᵀ + b (module docstring)."""
    K = x.shape[-1]
    W = dequantize(w, scales, zero_points, K)
    return quantize_activations(x, K // w.shape[1]) @ W.t() + b


def layout(K: int, w_shape) -> tuple[int, int]:
    """(bits, G) of a weight of shape (N, KB, BLOB) over K inputs."""
    _, KB, blob = w_shape
    G = K // KB
    return blob * 8 // G, G


def check(x, w, scales, zero_points, b):
    K, (N, KB, blob) = x.shape[-1], w.shape
    G = K // KB
    if G * KB != K or G < 16 or G & (G - 1):
        raise ValueError(f"qlinear: K = {K} must be KB = {KB} blocks of a power of 2 G >= 16")
    if blob * 8 not in (2 * G, 4 * G, 8 * G):
        raise ValueError(f"qlinear: w's last dim must be G * bits / 8 for bits 2, 4 or 8 (G = {G}); got {blob}")
    bits = blob * 8 // G
    if zero_points.shape[1] != (KB * bits + 7) // 8:
        raise ValueError(f"qlinear: zero_points must be (N, {(KB * bits + 7) // 8}) at {bits} bits; "
                         f"got (N, {zero_points.shape[1]})")


def sample_inputs(T: int, seed: int = 0, B: int = 2, K: int = 96, N: int = 37, G: int = 32, bits: int | None = None):
    """N = 37 outputs (off every kernel's row tile), K = 96 = 3 blocks of G = 32 (an odd number
    of blocks, so 2-bit zero points end mid-byte), on (B, T, K) rows; codes over the whole range,
    scales of both signs, a block of zeros in x. bits: 2 (ternary codes 0..2), 4 or 8; by
    default 2, 4, 8 for seeds 0, 1, 2 (mod 3), so the battery's seeds reach all three."""
    bits = bits or (2, 4, 8)[seed % 3]
    g = torch.Generator().manual_seed(seed)
    KB = K // G
    codes = torch.randint(0, 3 if bits == 2 else 1 << bits, (N, KB, G), generator=g)
    zp = torch.randint(0, 1 << bits, (N, KB), generator=g)
    scales = (torch.rand(N, KB, generator=g) + 0.5) * torch.where(torch.rand(N, KB, generator=g) < 0.2, -1.0, 1.0)
    x = torch.randn(B, T, K, generator=g)
    x[0, :, :G] = 0.0
    return (x, pack_bits(codes, bits).reshape(N, KB, G * bits // 8), (scales / K).float(),
            pack_bits(zp, bits), torch.randn(N, generator=g))


# ---- ONNX: the definition in stock ops (an exported graph holds MatMulNBits instead) ----
@onnx_body
def QLinear(x: FLOAT, w, scales: FLOAT, zero_points, b: FLOAT) -> FLOAT:
    """Unpack the bit fields (bits = 8 * BLOB / G), dequantize W; int8-quantize x per block of
    G (symmetric absmax, Round is half to even); MatMul; + b."""
    zero_i = op.Constant(value_ints=[0])
    one_i = op.Constant(value_ints=[1])
    minus1 = op.Constant(value_ints=[-1])
    N = op.Shape(w, start=0, end=1)
    KB = op.Shape(w, start=1, end=2)
    BLOB = op.Shape(w, start=2, end=3)
    K = op.Shape(x, start=-1)
    G = op.Div(K, KB)
    per = op.Div(G, BLOB)                                   # fields per byte: 4, 2 or 1
    bits = op.Div(op.Constant(value_ints=[8]), per)
    two = op.Constant(value_float=2.0)
    divisors = op.Pow(two, op.Cast(op.Mul(op.Range(op.Squeeze(zero_i), op.Squeeze(per), op.Squeeze(one_i)),
                                          op.Squeeze(bits)), to=FLOAT.dtype))         # (per,)
    modulus = op.Pow(two, op.Cast(bits, to=FLOAT.dtype))
    wf = op.Cast(op.Unsqueeze(w, minus1), to=FLOAT.dtype)                              # (N, KB, BLOB, 1)
    codes = op.Mod(op.Floor(op.Div(wf, divisors)), modulus, fmod=1)                   # (N, KB, BLOB, per)
    codes = op.Reshape(codes, op.Concat(N, KB, G, axis=0))
    zf = op.Cast(op.Unsqueeze(zero_points, minus1), to=FLOAT.dtype)
    z = op.Reshape(op.Mod(op.Floor(op.Div(zf, divisors)), modulus, fmod=1), op.Concat(N, minus1, axis=0))
    z = op.Unsqueeze(op.Slice(z, zero_i, KB, one_i), minus1)                           # (N, KB, 1)
    W = op.Reshape(op.Mul(op.Sub(codes, z), op.Unsqueeze(scales, minus1)), op.Concat(N, K, axis=0))
    lead = op.Shape(x, start=0, end=-1)
    xb = op.Reshape(x, op.Concat(lead, KB, G, axis=0))
    amax = op.ReduceMax(op.Abs(xb), minus1, keepdims=1)
    zero = op.Constant(value_float=0.0)
    levels = op.Constant(value_float=127.0)
    inv = op.Where(op.Greater(amax, zero), op.Div(levels, op.Max(amax, op.Constant(value_float=1e-30))), zero)
    q = op.Clip(op.Round(op.Mul(xb, inv)), op.Neg(levels), levels)
    xq = op.Reshape(op.Mul(q, op.Div(amax, levels)), op.Shape(x))
    return op.Add(op.MatMul(xq, op.Transpose(W, perm=[1, 0])), b)


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "... K"), Arg("w", "N KB BLOB", dtype="uint8"), Arg("scales", "N KB"),
            Arg("zero_points", "N ZB", dtype="uint8"), Arg("b", "N")),
    outputs=(Arg("out", "... N"),),
    reference=reference, sample_inputs=sample_inputs, onnx_function=QLinear, check=check))
