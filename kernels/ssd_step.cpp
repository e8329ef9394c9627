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

namespace edgekit {
namespace kernels {
namespace {

void ssd_step_out(const checks::ssd_step_dims& dims, const Tensor& x, const Tensor& dt, const Tensor& A,
                  const Tensor& Bm, const Tensor& C, const Tensor& Dp, const Tensor& state,
                  Tensor& y, Tensor& state_out) {
  const int64_t B = dims.B, T = dims.T, H = dims.H, P = dims.P, G = dims.G, N = dims.N;

  // ---- compute: step 0 reads `state` and writes `state_out` (the same memory when in
  // place: each element is read before it is written), later steps update state_out ----
  if (T == 0 && !same_data(state_out, state) && state.nbytes() > 0) {
    std::memcpy(state_out.mutable_data_ptr<float>(), state.const_data_ptr<float>(), state.nbytes());
  }
  if (B * T * H * P * N == 0) return;
  const float* S0 = state.const_data_ptr<float>();
  const float* xp = x.const_data_ptr<float>();
  const float* dtp = dt.const_data_ptr<float>();
  const float* Ap = A.const_data_ptr<float>();
  const float* Bp = Bm.const_data_ptr<float>();
  const float* Cp = C.const_data_ptr<float>();
  const float* Dpp = Dp.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  float* S = state_out.mutable_data_ptr<float>();
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

// Boxed entry point. Stack: x, dt, A, Bm, C, D, state, y, state_out, then the TensorList the
// emitter appends for the returned (y, state_out) — ignored.
void ssd_step_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::ssd_step_dims dims;
  if (!checks::check_ssd_step(ctx, stack, dims)) return;
  ssd_step_out(dims, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
               stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor(),
               stack[6]->toTensor(), stack[7]->toTensor(), stack[8]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("ssd_step.out", edgekit::kernels::ssd_step_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("ssd_step", edgekit::kernels::ssd_step_out_boxed, 7, 6);
