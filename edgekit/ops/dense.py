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

import torch
from onnxscript import FLOAT
from onnxscript import opset20 as op  # must match the exporter's opset (edgekit.export.onnx.OPSET)

from edgekit.ops.registry import Arg, OpInfo, onnx_body, register

NAME = "dense"
TILE_ROWS, TILE_COLS = 4, 8   # kernels/dense.cpp: kTileRows, kTileCols

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


def reference(x, w, b):
    """y[..., n] = b[n] + Σ_k x[..., k] · W[n, k], W = unpack(w)."""
    return x @ unpack(w, b.shape[0], x.shape[-1]).t() + b


def sample_inputs(T: int, seed: int = 0, B: int = 2, K: int = 37, N: int = 23):
    """A packed layer of N = 23 outputs over K = 37 inputs (both off the 4x8 tile grid, so the
    kernel's padded edges are reached), on (B, T, K) rows."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, K, generator=g), pack(torch.randn(N, K, generator=g) / K ** 0.5),
            torch.randn(N, generator=g))


# ---- ONNX: a node `edgekit::Dense` whose model-local function body stock ORT inlines ----
@onnx_body
def Dense(x: FLOAT, w: FLOAT, b: FLOAT) -> FLOAT:
    """Unpack the tiles to (N, K), then x Wᵀ + b."""
    rows = op.Mul(op.Shape(w, start=0, end=1), op.Constant(value_ints=[4]))
    cols = op.Mul(op.Shape(w, start=1, end=2), op.Constant(value_ints=[8]))
    W = op.Reshape(op.Transpose(w, perm=[0, 2, 1, 3]), op.Concat(rows, cols, axis=0))
    NK = op.Concat(op.Shape(b), op.Shape(x, start=-1), axis=0)
    W = op.Slice(W, op.Constant(value_ints=[0, 0]), NK, op.Constant(value_ints=[0, 1]))
    return op.Add(op.MatMul(x, op.Transpose(W, perm=[1, 0])), b)


INFO = register(OpInfo(
    name=NAME,
    inputs=(Arg("x", "... K"), Arg("w", f"(N+{TILE_ROWS - 1})//{TILE_ROWS} (K+{TILE_COLS - 1})//{TILE_COLS} "
                                     f"{TILE_ROWS} {TILE_COLS}", form="the packed (N4, K8, 4, 8)"), Arg("b", "N")),
    outputs=(Arg("out", "... N"),),
    reference=reference, sample_inputs=sample_inputs, onnx_function=Dense))
