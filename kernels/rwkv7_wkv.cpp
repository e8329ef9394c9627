// ExecuTorch kernel for `edgekit::rwkv7_wkv.out` — the RWKV-7 generalized delta-rule
// state update (arXiv:2503.14456, §4). Schema, reference and validator: edgekit/ops/rwkv7_wkv.py.
//
//   rwkv7_wkv.out(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, *,
//                 Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, H heads, N head size. r, w, k, v, a, b, y: (B, T, H, N);
// state, state_out: (B, H, N, N); all float32, contiguous.
//
// Per step t and head, with S the N x N state (row i = value channel, column j = key channel):
//   sa[i]   = sum_l S[i, l] a[l]
//   S[i, j] = S[i, j] w[j] + sa[i] b[j] + v[i] k[j]
//   y[i]    = sum_j S[i, j] r[j]
// Row i of the new S depends only on row i of the old S, so each row takes one dot (sa) and
// one fused update + dot (y) pass, reading row i of state and writing row i of state_out —
// which may be the same buffer (in-place update; no separate copy either way). Four rows go
// together so their reductions overlap. T is looped inside, so a head's state (16 KiB at
// N = 64) stays in L1 across steps.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"

#include <cstring>

namespace edgekit::kernels {
namespace {

// Four rows i0..i0+3 of one head at one step: read from `src`, write to `dst` (which may be
// `src`: element j is read before it is written, and rows are independent). Four rows give
// four independent reduction chains; a single row's 64-term dot is latency-bound. The j
// loops are the SIMD loops (written out per row so the compiler vectorizes j, not rows).
template <int NC>
inline void wkv_rows4(const float* src, float* dst, const float* __restrict rt,
                      const float* __restrict wt, const float* __restrict kt,
                      const float* __restrict vt, const float* __restrict at,
                      const float* __restrict bt, float* __restrict yt, int64_t i0, int64_t n) {
  const int64_t N = NC > 0 ? NC : n;
  const float* s0 = src + (i0 + 0) * N;
  const float* s1 = src + (i0 + 1) * N;
  const float* s2 = src + (i0 + 2) * N;
  const float* s3 = src + (i0 + 3) * N;
  float* d0 = dst + (i0 + 0) * N;
  float* d1 = dst + (i0 + 1) * N;
  float* d2 = dst + (i0 + 2) * N;
  float* d3 = dst + (i0 + 3) * N;
  // sa[i] = sum_l S[i, l] a[l]
  float sa0 = 0.f, sa1 = 0.f, sa2 = 0.f, sa3 = 0.f;
#pragma omp simd reduction(+ : sa0, sa1, sa2, sa3)
  for (int64_t j = 0; j < N; ++j) {
    sa0 += s0[j] * at[j];
    sa1 += s1[j] * at[j];
    sa2 += s2[j] * at[j];
    sa3 += s3[j] * at[j];
  }
  // S[i, j] = S[i, j] w[j] + sa[i] b[j] + v[i] k[j];  y[i] = sum_j S[i, j] r[j]
  const float v0 = vt[i0], v1 = vt[i0 + 1], v2 = vt[i0 + 2], v3 = vt[i0 + 3];
  float y0 = 0.f, y1 = 0.f, y2 = 0.f, y3 = 0.f;
#pragma omp simd reduction(+ : y0, y1, y2, y3)
  for (int64_t j = 0; j < N; ++j) {
    const float x0 = s0[j] * wt[j] + sa0 * bt[j] + v0 * kt[j];
    const float x1 = s1[j] * wt[j] + sa1 * bt[j] + v1 * kt[j];
    const float x2 = s2[j] * wt[j] + sa2 * bt[j] + v2 * kt[j];
    const float x3 = s3[j] * wt[j] + sa3 * bt[j] + v3 * kt[j];
    d0[j] = x0;
    d1[j] = x1;
    d2[j] = x2;
    d3[j] = x3;
    y0 += x0 * rt[j];
    y1 += x1 * rt[j];
    y2 += x2 * rt[j];
    y3 += x3 * rt[j];
  }
  yt[i0] = y0;
  yt[i0 + 1] = y1;
  yt[i0 + 2] = y2;
  yt[i0 + 3] = y3;
}

// One row (the N % 4 remainder of a generic N).
inline void wkv_row1(const float* src, float* dst, const float* __restrict rt,
                     const float* __restrict wt, const float* __restrict kt,
                     const float* __restrict vt, const float* __restrict at,
                     const float* __restrict bt, float* __restrict yt, int64_t i, int64_t N) {
  const float* s = src + i * N;
  float* d = dst + i * N;
  float sa = 0.f;
#pragma omp simd reduction(+ : sa)
  for (int64_t j = 0; j < N; ++j) sa += s[j] * at[j];
  const float v = vt[i];
  float y = 0.f;
#pragma omp simd reduction(+ : y)
  for (int64_t j = 0; j < N; ++j) {
    const float x = s[j] * wt[j] + sa * bt[j] + v * kt[j];
    d[j] = x;
    y += x * rt[j];
  }
  yt[i] = y;
}

// One head, all T steps. Step 0 reads the state from S0 (the input state, possibly == S),
// later steps from S; every step writes S. x_t vectors are `stride` floats apart.
// NC > 0 fixes N at compile time (full unroll, no remainder); NC == 0 is generic.
template <int NC>
void wkv_head(const float* S0, float* S, const float* r, const float* w, const float* k,
              const float* v, const float* a, const float* b, float* y, int64_t T, int64_t n,
              int64_t stride) {
  const int64_t N = NC > 0 ? NC : n;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t o = t * stride;
    const float* src = t == 0 ? S0 : S;
    int64_t i = 0;
    for (; i + 4 <= N; i += 4) {
      wkv_rows4<NC>(src, S, r + o, w + o, k + o, v + o, a + o, b + o, y + o, i, N);
    }
    for (; i < N; ++i) {
      wkv_row1(src, S, r + o, w + o, k + o, v + o, a + o, b + o, y + o, i, N);
    }
  }
}

void rwkv7_wkv_core(const checks::rwkv7_wkv_dims& dims, const float* r, const float* w, const float* k,
                    const float* v, const float* a, const float* b, const float* S0, float* y, float* S) {
  const int64_t B = dims.B, T = dims.T, H = dims.H, N = dims.N;
  // state_out (S) is written row by row from state (S0; no separate copy)
  const int64_t stride = H * N;  // between consecutive t of one (b, h)
  auto run = N == 64 ? wkv_head<64> : wkv_head<0>;
  for (int64_t bi = 0; bi < B; ++bi) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = bi * T * H * N + h * N;      // x[bi, 0, h, :]
      const int64_t so = (bi * H + h) * N * N;       // state[bi, h, :, :]
      run(S0 + so, S + so, r + o, w + o, k + o, v + o, a + o, b + o, y + o, T, N, stride);
    }
  }
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_rwkv7_wkv(edgekit::kernels::rwkv7_wkv_core);
