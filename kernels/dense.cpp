// ExecuTorch kernel for `edgekit::dense.out` — y = x Wᵀ + b with W packed in 4x8 tiles, the
// decode GEMV. Schema, reference, packing and validator: edgekit/ops/dense.py.
//
//   dense.out(Tensor x, Tensor w, Tensor b, *, Tensor(a!) out) -> Tensor(a!)
//
// Dimensions: M rows (every leading dim of x flattened; 1 at decode), K inputs, N outputs,
// N4 = ceil(N/4), K8 = ceil(K/8). x: (..., K); w: (N4, K8, 4, 8), w[i, j, r, c] =
// W[4i + r, 8j + c], zero-padded; b: (N,); out: (..., N); float32, contiguous.
//
// Decode reads each weight once per token, so the kernel is one read stream per thread:
// the N4 row groups are split into contiguous blocks over edgekit's pool, and a group's
// K8 tiles lie back to back (4 rows x 8 columns = one 8-wide FMA per row). Measured on the
// development machine (2 threads, Mamba-130m's 97 matrices, interleaved with a 2-thread
// read of 256 MiB; benchmarks/gemv_layout.cpp, medians of 15-25 rounds, five runs): rows
// four at a time 1.16-1.53x that read's time, packed tiles 1.07-1.15x. (A software prefetch
// 8 KiB ahead measured 1.02-1.19x: not a consistent gain, so not used.)
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace edgekit::kernels {
namespace {

// Below this many weights a second thread's hand-off costs more than it saves.
constexpr int64_t kMinWeightsPerThread = 1 << 14;
constexpr int64_t kTileRows = 4, kTileCols = 8;  // edgekit/ops/dense.py: TILE_ROWS, TILE_COLS

struct Job {
  const float* x;  // M rows of x_stride floats (K8 * 8 when x had to be zero-padded)
  int64_t x_stride;
  const float* w;
  const float* b;
  float* y;
  int64_t M, N, K8;
};

// s[r] = W[4g + r, :] . x over one row group's K8 tiles (the padding is zero in w and x).
inline void tile_dot(const float* wt, const float* x, int64_t K8, float s[kTileRows]) {
#if defined(EDGEKIT_F8)
  using namespace simd;
  f8 a0 = zero8(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t j = 0; j < K8; ++j, wt += kTileRows * kTileCols) {
    const f8 xv = load8(x + j * kTileCols);
    a0 = fma8(load8(wt), xv, a0);
    a1 = fma8(load8(wt + 8), xv, a1);
    a2 = fma8(load8(wt + 16), xv, a2);
    a3 = fma8(load8(wt + 24), xv, a3);
  }
  s[0] = hsum8(a0), s[1] = hsum8(a1), s[2] = hsum8(a2), s[3] = hsum8(a3);
#else
  float acc[kTileRows][kTileCols] = {};
  for (int64_t j = 0; j < K8; ++j, wt += kTileRows * kTileCols) {
    for (int r = 0; r < kTileRows; ++r) {
#pragma omp simd
      for (int c = 0; c < kTileCols; ++c) acc[r][c] += wt[r * kTileCols + c] * x[j * kTileCols + c];
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    s[r] = 0.f;
    for (int c = 0; c < kTileCols; ++c) s[r] += acc[r][c];
  }
#endif
}

// Two adjacent row groups at once, s[0..3] for wa's rows and s[4..7] for wb's: two read
// streams per thread instead of one. On the development machine (2 threads, 4x8 tiles,
// matrices rotated past the caches; a standalone copy of these loops, medians of 15 rounds)
// one stream read 33.9-37.4 GB/s, as fast as a plain 2-thread sum over the same bytes, and two
// streams 39.2-42.2 GB/s (768x768, 3072x768, 768x3072); three, 40.1-43.3, not worth the
// registers NEON would need. Each row's sum is the same FMA chain as tile_dot's, so the
// result does not depend on which rows pair up.
inline void tile_dot2(const float* wa, const float* wb, const float* x, int64_t K8, float s[2 * kTileRows]) {
#if defined(EDGEKIT_F8)
  using namespace simd;
  f8 a0 = zero8(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  for (int64_t j = 0; j < K8; ++j, wa += kTileRows * kTileCols, wb += kTileRows * kTileCols) {
    const f8 xv = load8(x + j * kTileCols);
    a0 = fma8(load8(wa), xv, a0);
    a1 = fma8(load8(wa + 8), xv, a1);
    a2 = fma8(load8(wa + 16), xv, a2);
    a3 = fma8(load8(wa + 24), xv, a3);
    b0 = fma8(load8(wb), xv, b0);
    b1 = fma8(load8(wb + 8), xv, b1);
    b2 = fma8(load8(wb + 16), xv, b2);
    b3 = fma8(load8(wb + 24), xv, b3);
  }
  s[0] = hsum8(a0), s[1] = hsum8(a1), s[2] = hsum8(a2), s[3] = hsum8(a3);
  s[4] = hsum8(b0), s[5] = hsum8(b1), s[6] = hsum8(b2), s[7] = hsum8(b3);
#else
  tile_dot(wa, x, K8, s);
  tile_dot(wb, x, K8, s + kTileRows);
#endif
}

// Row groups [g0, g1), two at a time, for every one of the M inputs (the pair's tiles stay
// in cache across m).
void row_groups(const Job& j, int64_t g0, int64_t g1) {
  const int64_t group_floats = j.K8 * kTileRows * kTileCols;
  for (int64_t g = g0; g < g1;) {
    const int64_t pair = g + 1 < g1 ? 2 : 1;
    const float* wt = j.w + g * group_floats;
    const int64_t n0 = g * kTileRows, rows = std::min(pair * kTileRows, j.N - n0);
    for (int64_t m = 0; m < j.M; ++m) {
      float s[2 * kTileRows];
      if (pair == 2) {
        tile_dot2(wt, wt + group_floats, j.x + m * j.x_stride, j.K8, s);
      } else {
        tile_dot(wt, j.x + m * j.x_stride, j.K8, s);
      }
      float* y = j.y + m * j.N + n0;
      for (int64_t r = 0; r < rows; ++r) y[r] = s[r] + j.b[n0 + r];
    }
    g += pair;
  }
}

// Blocks of row groups over the pool.
void dense_core(const checks::dense_dims& dims, const float* xp, const float* w, const float* b, float* out) {
  const int64_t N = dims.N, K = dims.K, M = dims.lead_numel;
  const int64_t N4 = (N + kTileRows - 1) / kTileRows, K8 = (K + kTileCols - 1) / kTileCols;
  int64_t x_stride = K;
  if (K % kTileCols != 0) {
    // The last tile reads 8 columns: give it zeros past K (w's padding is zero, but
    // 0 * Inf is NaN, so whatever lies past x's end must not be read).
    thread_local std::vector<float> padded;
    x_stride = K8 * kTileCols;
    padded.assign((size_t)(M * x_stride), 0.f);
    for (int64_t m = 0; m < M; ++m) std::memcpy(padded.data() + m * x_stride, xp + m * K, K * sizeof(float));
    xp = padded.data();
  }
  const Job job{xp, x_stride, w, b, out, M, N, K8};
  const int64_t group_weights = K8 * kTileRows * kTileCols;
  parallel_for(N4, std::max<int64_t>(1, kMinWeightsPerThread / std::max<int64_t>(1, group_weights)),
               [&job](int64_t g0, int64_t g1) { row_groups(job, g0, g1); });
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_dense(edgekit::kernels::dense_core);
