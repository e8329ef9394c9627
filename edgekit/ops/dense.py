"""`edgekit::dense` — y = x Wᵀ + b, a Linear layer: the matrix-vector product of decode,
with W packed once, at export, into the tile order its kernel streams.
(Not named `linear`: XNNPACK's partitioner claims any node whose target is `linear.default`.)

Not a recurrence, but the op that decides decode speed: at batch 1 a step reads every
weight once. On the development machine ExecuTorch's XNNPACK fp32 GEMV reads weights at
~1.4x the memory floor; a row-dot over W's rows four at a time (four concurrent read
streams per thread) at 1.16-1.53x a 2-thread read of memory; the same arithmetic over W
packed so that each thread reads ONE contiguous stream at 1.07-1.15x
(benchmarks/gemv_layout.py, docs/benchmarks.md). So `.pte`
exports with `--ops fused` run every `layers.Linear` through this op and its C++ kernel
(kernels/dense.cpp, with edgekit's own thread pool); `--ops decomposed` keeps XNNPACK.
ONNX exports keep a stock MatMul; the ONNX function body below is the op's definition for
any runtime that meets the node.

Dimensions: M rows (the leading dims of x), K inputs, N outputs; N4 = ceil(N / 4),
K8 = ceil(K / 8).

Packed W ("4x8 tiles"): w[i, j, r, c] = W[4i + r, 8j + c], zero where 4i + r >= N or
8j + c >= K; shape (N4, K8, 4, 8). Rows 4i..4i+3 are one contiguous run of K8 tiles, so a
thread that owns a block of row groups reads one stream front to back. `pack` / `unpack`
below convert; transform at export (STYLE.md §9), never in the graph.

Inputs: x (..., K); w (N4, K8, 4, 8) packed; b (N,), zeros for a layer without bias
(b gives N); float32. Output: y (..., N), float32. The `.out` overload rejects an output
that overlaps an input.
"""

from __future__ import annotations

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import DOMAIN, LIB, ONNX_OPSET, OpInfo, register
from edgekit.ops.registry import overlaps

NAME = "dense"
TILE_ROWS, TILE_COLS = 4, 8   # kernels/dense.cpp: kTileRows, kTileCols

LIB.define(f"{NAME}(Tensor x, Tensor w, Tensor b) -> Tensor")
LIB.define(f"{NAME}.out(Tensor x, Tensor w, Tensor b, *, Tensor(a!) out) -> Tensor(a!)")

_INPUTS = ("x", "w", "b")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def pack(w: torch.Tensor) -> torch.Tensor:
    """(N, K) nn.Linear weight -> (N4, K8, 4, 8) tiles, zero-padded."""
    N, K = w.shape
    N4, K8 = _ceil(N, TILE_ROWS), _ceil(K, TILE_COLS)
    padded = w.new_zeros(N4 * TILE_ROWS, K8 * TILE_COLS)
    padded[:N, :K] = w
    return padded.reshape(N4, TILE_ROWS, K8, TILE_COLS).permute(0, 2, 1, 3).contiguous()


def unpack(w: torch.Tensor, N: int, K: int) -> torch.Tensor:
    """(N4, K8, 4, 8) tiles -> the (N, K) weight."""
    N4, K8 = w.shape[0], w.shape[1]
    return w.permute(0, 2, 1, 3).reshape(N4 * TILE_ROWS, K8 * TILE_COLS)[:N, :K]


def validate(x, w, b) -> None:
    """Shape/dtype contract. The C++ kernel (kernels/dense.cpp) uses the same words."""
    if x.dim() < 1:
        raise ValueError(f"{NAME}: x must be (..., K); got 0 dims")
    if b.dim() != 1 or b.dtype != torch.float32:
        raise ValueError(f"{NAME}: b must be (N,) float32; got {tuple(b.shape)} {b.dtype}")
    N, K = b.shape[0], x.shape[-1]
    if x.dtype != torch.float32:
        raise ValueError(f"{NAME}: x must be (..., K) float32; got {tuple(x.shape)} {x.dtype}")
    want = (_ceil(N, TILE_ROWS), _ceil(K, TILE_COLS), TILE_ROWS, TILE_COLS)
    if tuple(w.shape) != want or w.dtype != torch.float32:
        raise ValueError(f"{NAME}: w must be the packed (N4, K8, 4, 8) = {want} float32 for N = {N}, "
                         f"K = {K}; got {tuple(w.shape)} {w.dtype}")


def reference(x, w, b):
    """y[..., n] = b[n] + Σ_k x[..., k] · W[n, k], W = unpack(w)."""
    validate(x, w, b)
    return x @ unpack(w, b.shape[0], x.shape[-1]).t() + b


@torch.library.impl(LIB, NAME, "CompositeExplicitAutograd")
def _functional(x, w, b):
    return reference(x, w, b).contiguous()


@torch.library.impl(LIB, f"{NAME}.out", "CompositeExplicitAutograd")
def _out(x, w, b, *, out):
    for name, t in zip(_INPUTS, (x, w, b)):
        if overlaps(out, t):
            raise ValueError(f"{NAME}: out must not alias input {name}")
    y = reference(x, w, b)
    out.resize_(y.shape).copy_(y)
    return out


@torch.library.register_fake(f"{DOMAIN}::{NAME}")
def _fake(x, w, b):
    return x.new_empty((*x.shape[:-1], b.shape[0]))


# ---- ONNX: a node `edgekit::Dense` whose model-local function body stock ORT inlines ----
_opset = onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


@onnxscript.script(_opset, default_opset=op)
def Dense(x: FLOAT, w: FLOAT, b: FLOAT) -> FLOAT:
    """Unpack the tiles to (N, K), then x Wᵀ + b."""
    rows = op.Mul(op.Shape(w, start=0, end=1), op.Constant(value_ints=[4]))
    cols = op.Mul(op.Shape(w, start=1, end=2), op.Constant(value_ints=[8]))
    W = op.Reshape(op.Transpose(w, perm=[0, 2, 1, 3]), op.Concat(rows, cols, axis=0))
    NK = op.Concat(op.Shape(b), op.Shape(x, start=-1), axis=0)
    W = op.Slice(W, op.Constant(value_ints=[0, 0]), NK, op.Constant(value_ints=[0, 1]))
    return op.Add(op.MatMul(x, op.Transpose(W, perm=[1, 0])), b)


INFO = register(OpInfo(name=NAME, reference=reference, onnx_function=Dense,
                       cpp_kernel=f"{NAME}.out", validate=validate))
