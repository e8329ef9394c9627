// ExecuTorch kernel for `edgekit::mamba_step.out` — the Mamba (S6) selective state-space
// recurrence (arXiv:2312.00752, eq. 2a/2b, ZOH for A, Euler for B). Spec, reference and
// validator: edgekit/ops/mamba_step.py; argument checks generated from the spec (edgekit_op_checks.h).
//
//   mamba_step.out(Tensor x, Tensor dt, Tensor A, Tensor Bm, Tensor C, Tensor D, Tensor state, *,
//                  Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, D channels (d_inner), N state size. x, dt, y: (B, T, D);
// A: (D, N); Bm, C: (B, T, N); D: (D,); state, state_out: (B, D, N); float32, contiguous.
//
// Per step t and channel d:  h[d, n] = exp(dt[d] A[d, n]) h[d, n] + dt[d] x[d] B[n]
//                            y[d]    = sum_n h[d, n] C[n] + D[d] x[d]
// Channel d's row of h depends only on its own previous row, so state_out may be state
// itself (in-place update). T is looped inside a channel, so its row stays in L1.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <cmath>
#include <cstring>

namespace edgekit::kernels {
namespace {

void mamba_step_core(const checks::mamba_step_dims& dims, const float* xp, const float* dtp, const float* Ap,
                     const float* Bp, const float* Cp, const float* Dpp, const float* S0, float* yp, float* S) {
  const int64_t B = dims.B, T = dims.T, D = dims.D, N = dims.N;
  // step 0 reads `state` (S0) and writes `state_out` (S; the same memory when in place: each
  // element is read before it is written), later steps update S
  if (T == 0 && S != S0) std::memcpy(S, S0, sizeof(float) * B * D * N);
  if (B * T * D * N == 0) return;
  // Channels are independent: split them over the pool (a 1536 x 16 step is ~25k exps).
  parallel_for(D, 256, [&](int64_t d0, int64_t d1) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t d = d0; d < d1; ++d) {
        float* h = S + (b * D + d) * N;
        const float* __restrict a = Ap + d * N;
        for (int64_t t = 0; t < T; ++t) {
          const float* hin = t == 0 ? S0 + (b * D + d) * N : h;   // may equal h (in place)
          const int64_t o = (b * T + t) * D + d;
          const float* __restrict bt = Bp + (b * T + t) * N;
          const float* __restrict ct = Cp + (b * T + t) * N;
          const float dtv = dtp[o], xv = xp[o], dx = dtv * xv;
          float acc = 0.f;
          int64_t n = 0;
#if defined(EDGEKIT_F8)
          using namespace simd;
          f8 av = zero8();
          const f8 dtb = set8(dtv), dxb = set8(dx);
          for (; n + 8 <= N; n += 8) {
            const f8 hn = fma8(exp8(dtb * load8(a + n)), load8(hin + n), dxb * load8(bt + n));
            store8(h + n, hn);
            av = fma8(hn, load8(ct + n), av);
          }
          acc = hsum8(av);
#endif
          for (; n < N; ++n) {
            const float hn = std::exp(dtv * a[n]) * hin[n] + dx * bt[n];
            h[n] = hn;
            acc += hn * ct[n];
          }
          yp[o] = acc + Dpp[d] * xv;
        }
      }
    }
  });
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_mamba_step(edgekit::kernels::mamba_step_core);
