"""Triton GEMV for decode: y = x @ W (+ b) with x fp32 (M ≤ MAX_ROWS rows), W fp16 (K, N)
row-major (`layers.Linear`'s (in, out)), fp32 accumulation and output. Not an edgekit op:
the CUDA backend's fp16 Linear (edgekit/runtimes/cuda.py `HalfLinear`) calls it.

Why not cuBLAS on fp16(x): the cast is one more kernel per layer, and an activation beyond
fp16's range (65,504) becomes inf — measured on the device: the random Mamba-1.4B's
mixers.14.out_proj input reaches 68,629 at step 1 and every logit after it is NaN, while
the fp32 path stays finite over 10,000 steps. Here x is read as fp32 and only W is fp16
(llama.cpp's CUDA mul_mat_vec does the same).

Grid: (ceil(N / BN), SPLIT). Column blocks alone do not fill the GPU when N is small
(Mamba-1.4B's out_proj: N = 2048 is 32 blocks of 64 for 132 SMs), so K is split into SPLIT
chunks whose partial sums are added atomically into y (zeroed first); with enough column
blocks SPLIT is 1 and each program stores its sums (one kernel, no memset).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROWS = 4          # decode: B·T rows; more (prefill) goes to cuBLAS
BN, BK = 64, 128


@triton.jit
def _gemv_kernel(x, w, b, y, M, K, N, sx, KCHUNK,
                 HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    mn = n < N
    k0 = tl.program_id(1) * KCHUNK
    for m in range(M):
        acc = tl.zeros((BN,), dtype=tl.float32)
        for kb in range(k0, k0 + KCHUNK, BK):
            k = kb + tl.arange(0, BK)
            mk = k < K
            xv = tl.load(x + m * sx + k, mask=mk, other=0.0).to(tl.float32)
            wt = tl.load(w + k[:, None] * N + n[None, :], mask=mk[:, None] & mn[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(xv[:, None] * wt, axis=0)
        if HAS_BIAS:
            if tl.program_id(1) == 0:
                acc += tl.load(b + n, mask=mn, other=0.0).to(tl.float32)
        if ATOMIC:
            tl.atomic_add(y + m * N + n, acc, mask=mn)
        else:
            tl.store(y + m * N + n, acc, mask=mn)


_SMS: dict = {}


def _sms(device) -> int:
    if device.type != "cuda":
        return 4
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SMS[device]


def gemv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) with at most MAX_ROWS rows, w (K, N) fp16 contiguous -> (..., N) fp32."""
    K, N = w.shape
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    blocks = triton.cdiv(N, BN)
    split = max(1, min(triton.cdiv(K, BK), (2 * _sms(x.device)) // blocks))
    kchunk = triton.cdiv(triton.cdiv(K, split), BK) * BK
    split = triton.cdiv(K, kchunk)
    y = (torch.zeros if split > 1 else torch.empty)((M, N), dtype=torch.float32, device=x.device)
    _gemv_kernel[(blocks, split)](x2, w, bias if bias is not None else y, y, M, K, N, x2.stride(0), kchunk,
                                  HAS_BIAS=bias is not None, ATOMIC=split > 1, BN=BN, BK=BK, num_warps=4)
    return y.view(*x.shape[:-1], N)
