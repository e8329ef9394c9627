// Which weight layout lets a 2-thread fp32 GEMV read at the memory floor? (edgekit::dense)
//
//   python benchmarks/gemv_layout.py [--rounds 15]     (builds this file, runs it)
//
// The matrices are Mamba-130m's 97 decode matmuls (24 x [768->3072, 1536->80, 48->1536,
// 1536->768] + the 768->50280 head, 517 MB fp32). Each round times, for every layout, a
// 2-thread read of 256 MiB (best of 2: the floor) right before 3 passes over all matrices
// through kernels/edgekit_threadpool.h, the pool the kernel uses; the table gives the
// median over rounds of pass time / floor time, so machine drift hits every layout alike.
//
// Layouts:
//   rows4   W (N, K) row-major; each thread dots 4 rows at a time: 4 read streams/thread
//   tiles   W packed 4x8 (edgekit/ops/dense.py `pack`): rows 4i..4i+3 as K/8 tiles of
//           4 x 8 floats, back to back: 1 read stream/thread (what kernels/dense.cpp runs)
//   tiles8  the same with 8-row groups
//   tiles+pf  tiles with a software prefetch 8 KiB ahead
#include "../kernels/edgekit_threadpool.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

using edgekit::kernels::parallel_for;
using edgekit::kernels::ThreadPool;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

void rows4(const float* W, const float* x, float* y, int64_t K, int64_t n0, int64_t n1) {
  for (int64_t r = n0; r + 4 <= n1; r += 4) {
    const float* w = W + r * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + K + k), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 2 * K + k), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 3 * K + k), xv, a3);
    }
    y[r] = hsum(a0), y[r + 1] = hsum(a1), y[r + 2] = hsum(a2), y[r + 3] = hsum(a3);
  }
}

template <int PF>
void tiles(const float* W, const float* x, float* y, int64_t K, int64_t n0, int64_t n1) {
  for (int64_t r = n0; r + 4 <= n1; r += 4) {
    const float* w = W + r * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K; k += 8, w += 32) {
      if (PF) {
        _mm_prefetch((const char*)(w + PF), _MM_HINT_T0);
        _mm_prefetch((const char*)(w + PF + 16), _MM_HINT_T0);
      }
      const __m256 xv = _mm256_loadu_ps(x + k);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w), xv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), xv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 16), xv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 24), xv, a3);
    }
    y[r] = hsum(a0), y[r + 1] = hsum(a1), y[r + 2] = hsum(a2), y[r + 3] = hsum(a3);
  }
}

void tiles8(const float* W, const float* x, float* y, int64_t K, int64_t n0, int64_t n1) {
  for (int64_t r = n0; r + 8 <= n1; r += 8) {
    const float* w = W + r * K;
    __m256 a[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8, w += 64) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8 * i), xv, a[i]);
    }
    for (int i = 0; i < 8; ++i) y[r + i] = hsum(a[i]);
  }
}

struct Mat {
  int64_t in, out;
  float* w;
};

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
  std::vector<Mat> mats;
  for (int l = 0; l < 24; ++l) {
    mats.push_back({768, 3072, nullptr});
    mats.push_back({1536, 80, nullptr});
    mats.push_back({48, 1536, nullptr});
    mats.push_back({1536, 768, nullptr});
  }
  mats.push_back({768, 50280, nullptr});
  size_t bytes = 0;
  for (auto& m : mats) {
    const size_t n = (size_t)(m.in * m.out);
    m.w = static_cast<float*>(std::aligned_alloc(64, (n * 4 + 63) / 64 * 64));
    for (size_t i = 0; i < n; ++i) m.w[i] = 1e-3f * (float)(i % 13);
    bytes += n * 4;
  }
  const size_t big_n = 64ull << 20;  // 256 MiB
  float* big = static_cast<float*>(std::aligned_alloc(64, big_n * 4));
  for (size_t i = 0; i < big_n; ++i) big[i] = 1e-3f * (float)(i % 7);
  static float x[4096], y[60000], sink[2];
  for (float& v : x) v = 0.5f;
  ThreadPool::get().set_threads(2);

  const char* names[] = {"rows4", "tiles", "tiles8", "tiles+pf"};
  const int n_layouts = 4;
  std::vector<std::vector<double>> ratio(n_layouts);
  std::vector<double> floors;
  for (int r = 0; r < rounds; ++r) {
    for (int layout = 0; layout < n_layouts; ++layout) {
      double best = 1e9;
      for (int q = 0; q < 2; ++q) {
        const double t0 = now();
        parallel_for((int64_t)(big_n / 32), 1, [&](int64_t a, int64_t b) {
          __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
          for (int64_t i = a * 32; i < b * 32; i += 32) {
            s0 = _mm256_add_ps(s0, _mm256_load_ps(big + i));
            s1 = _mm256_add_ps(s1, _mm256_load_ps(big + i + 8));
            s2 = _mm256_add_ps(s2, _mm256_load_ps(big + i + 16));
            s3 = _mm256_add_ps(s3, _mm256_load_ps(big + i + 24));
          }
          sink[a == 0 ? 0 : 1] += hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        });
        best = std::min(best, now() - t0);
      }
      const double floor_s = bytes / (big_n * 4 / best);
      floors.push_back(big_n * 4 / best / 1e9);
      const double t0 = now();
      for (int pass = 0; pass < 3; ++pass) {
        for (const Mat& m : mats) {
          const int64_t K = m.in, groups = (m.out + 7) / 8;
          parallel_for(groups, std::max<int64_t>(1, 16384 / (8 * K)), [&](int64_t g0, int64_t g1) {
            const int64_t a = 8 * g0, b = std::min(m.out, 8 * g1);
            switch (layout) {
              case 0: rows4(m.w, x, y, K, a, b); break;
              case 1: tiles<0>(m.w, x, y, K, a, b); break;
              case 2: tiles8(m.w, x, y, K, a, b); break;
              default: tiles<2048>(m.w, x, y, K, a, b); break;
            }
          });
        }
      }
      ratio[layout].push_back((now() - t0) / 3 / floor_s);
    }
  }
  std::sort(floors.begin(), floors.end());
  std::printf("%zu MB of weights; 2-thread read bandwidth over the run: median %.1f GB/s (%.1f-%.1f)\n\n",
              bytes / 1000000, floors[floors.size() / 2], floors.front(), floors.back());
  std::printf("| layout | x floor, median | min | max |\n|---|---:|---:|---:|\n");
  for (int layout = 0; layout < n_layouts; ++layout) {
    auto v = ratio[layout];
    std::sort(v.begin(), v.end());
    std::printf("| %s | %.3f | %.3f | %.3f |\n", names[layout], v[v.size() / 2], v.front(), v.back());
  }
  return sink[0] + sink[1] + y[7] == 12345.f;  // keep the work observable
}
