// ExecuTorch kernel for `edgekit::ssd_step.out` — the Mamba-2 SSD recurrence with a scalar A
// per head (arXiv:2405.21060, §3, recurrent form). Schema, reference and validator:
// edgekit/ops/ssd_step.py.
//
//   ssd_step.out(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state, *,
//                Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, H heads, P head dim, G groups (G divides H), N state size.
// x, y: (B, T, H, P); dt: (B, T, H); A, D: (H,); Bm, C: (B, T, G, N);
// state, state_out: (B, H, P, N); float32, contiguous.
//
// Per step t and head h, g = h / (H / G):
//   S[h, p, n] = exp(dt[h] A[h]) S[h, p, n] + dt[h] x[h, p] B[g, n]
//   y[h, p]    = sum_n S[h, p, n] C[g, n] + D[h] x[h, p]
// A head's state depends only on its own previous state, so state_out may be state itself
// (in-place update). T is looped inside a head, so its P x N state stays in cache.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <cmath>
#include <cstring>

namespace edgekit::kernels {
namespace {

void ssd_step_core(const checks::ssd_step_dims& dims, const float* xp, const float* dtp, const float* Ap,
                   const float* Bp, const float* Cp, const float* Dpp, const float* S0, float* yp, float* S) {
  const int64_t B = dims.B, T = dims.T, H = dims.H, P = dims.P, G = dims.G, N = dims.N;
  // step 0 reads `state` (S0) and writes `state_out` (S; the same memory when in place: each
  // element is read before it is written), later steps update S
  if (T == 0 && S != S0) std::memcpy(S, S0, sizeof(float) * B * H * P * N);
  if (B * T * H * P * N == 0) return;
  const int64_t rep = H / G;
  // Heads are independent: split them over the pool (Mamba2-130m: 24 heads x 64 x 128).
  parallel_for(H, 4, [&](int64_t h0, int64_t h1) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t g = h / rep;
        float* Sh = S + (b * H + h) * P * N;
        for (int64_t t = 0; t < T; ++t) {
          const float* Sin = t == 0 ? S0 + (b * H + h) * P * N : Sh;   // may equal Sh (in place)
          const float dtv = dtp[(b * T + t) * H + h];
          const float dA = std::exp(dtv * Ap[h]);
          const float* __restrict bt = Bp + ((b * T + t) * G + g) * N;
          const float* __restrict ct = Cp + ((b * T + t) * G + g) * N;
          const float* xt = xp + ((b * T + t) * H + h) * P;
          float* yt = yp + ((b * T + t) * H + h) * P;
          for (int64_t p = 0; p < P; ++p) {
            float* s = Sh + p * N;
            const float* sin = Sin + p * N;
            const float dx = dtv * xt[p];
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int64_t n = 0; n < N; ++n) {
              const float v = dA * sin[n] + dx * bt[n];
              s[n] = v;
              acc += v * ct[n];
            }
            yt[p] = acc + Dpp[h] * xt[p];
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_ssd_step(edgekit::kernels::ssd_step_core);
