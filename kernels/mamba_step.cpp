// ExecuTorch kernel for `edgekit::mamba_step.out` — the Mamba (S6) selective state-space
// recurrence (arXiv:2312.00752, eq. 2a/2b, ZOH for A, Euler for B). Schema, reference and
// validator: edgekit/ops/mamba_step.py.
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
#include "edgekit_threadpool.h"

#include <cmath>
#include <cstring>

namespace edgekit {
namespace kernels {
namespace {

constexpr const char* kMambaInputNames[6] = {"x", "dt", "A", "Bm", "C", "D"};

void mamba_step_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& dt, const Tensor& A,
                    const Tensor& Bm, const Tensor& C, const Tensor& Dp, const Tensor& state,
                    Tensor& y, Tensor& state_out) {
  // ---- validate: the same words as edgekit/ops/mamba_step.py `validate` / `check_out` ----
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 3, InvalidArgument, ,
                      "mamba_step: x must be (B, T, D); got %d dims", (int)x.dim());
  ET_KERNEL_CHECK_MSG(ctx, A.dim() == 2, InvalidArgument, ,
                      "mamba_step: A must be (D, N); got %d dims", (int)A.dim());
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), N = A.size(1);
  struct Want {
    const Tensor* t;
    const char* name;
    const char* form;
    std::initializer_list<int64_t> shape;
  };
  const Want wants[7] = {{&x, "x", "(B, T, D)", {B, T, D}},    {&dt, "dt", "(B, T, D)", {B, T, D}},
                         {&A, "A", "(D, N)", {D, N}},          {&Bm, "Bm", "(B, T, N)", {B, T, N}},
                         {&C, "C", "(B, T, N)", {B, T, N}},    {&Dp, "D", "(D,)", {D}},
                         {&state, "state", "(B, D, N)", {B, D, N}}};
  for (const Want& w : wants) {
    char want[64];
    size_t n = std::snprintf(want, sizeof(want), "(");
    size_t i = 0;
    for (int64_t s : w.shape) {
      n += std::snprintf(want + n, sizeof(want) - n, i++ ? ", %d" : "%d", (int)s);
    }
    std::snprintf(want + n, sizeof(want) - n, w.shape.size() == 1 ? ",)" : ")");
    ET_KERNEL_CHECK_MSG(ctx, has_shape(*w.t, w.shape) && w.t->scalar_type() == ScalarType::Float,
                        InvalidArgument, , "mamba_step: %s must be %s = %s float32; got %s %s",
                        w.name, w.form, want, ShapeStr(*w.t).c_str(),
                        dtype_name(w.t->scalar_type()));
    ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(*w.t),
                        InvalidArgument, , "mamba_step: %s must be contiguous", w.name);
  }
  ET_KERNEL_CHECK_MSG(
      ctx,
      y.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(y, x.sizes()) == executorch::runtime::Error::Ok,
      InvalidArgument, , "mamba_step: y must be (B, T, D) = (%d, %d, %d) float32; got %s %s",
      (int)B, (int)T, (int)D, ShapeStr(y).c_str(), dtype_name(y.scalar_type()));
  ET_KERNEL_CHECK_MSG(
      ctx,
      state_out.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(state_out, state.sizes()) ==
              executorch::runtime::Error::Ok,
      InvalidArgument, , "mamba_step: state_out must be (B, D, N) = (%d, %d, %d) float32; got %s %s",
      (int)B, (int)D, (int)N, ShapeStr(state_out).c_str(), dtype_name(state_out.scalar_type()));
  const Tensor* ins[6] = {&x, &dt, &A, &Bm, &C, &Dp};
  for (int i = 0; i < 6; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, *ins[i]), InvalidArgument, ,
                        "mamba_step: y must not alias input %s", kMambaInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state), InvalidArgument, ,
                      "mamba_step: y must not alias input state");
  for (int i = 0; i < 6; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, *ins[i]), InvalidArgument, ,
                        "mamba_step: state_out must not alias input %s", kMambaInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, state) || same_data(state_out, state),
                      InvalidArgument, ,
                      "mamba_step: state_out must be state itself or not overlap it");
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state_out), InvalidArgument, ,
                      "mamba_step: y must not alias state_out");

  // ---- compute: step 0 reads `state` and writes `state_out` (the same memory when in
  // place: each element is read before it is written), later steps update state_out ----
  if (T == 0 && !same_data(state_out, state) && state.nbytes() > 0) {
    std::memcpy(state_out.mutable_data_ptr<float>(), state.const_data_ptr<float>(), state.nbytes());
  }
  if (B * T * D * N == 0) return;
  const float* S0 = state.const_data_ptr<float>();
  const float* xp = x.const_data_ptr<float>();
  const float* dtp = dt.const_data_ptr<float>();
  const float* Ap = A.const_data_ptr<float>();
  const float* Bp = Bm.const_data_ptr<float>();
  const float* Cp = C.const_data_ptr<float>();
  const float* Dpp = Dp.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  float* S = state_out.mutable_data_ptr<float>();
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
#if defined(__AVX2__) && defined(__FMA__)
          __m256 av = _mm256_setzero_ps();
          const __m256 dtb = _mm256_set1_ps(dtv), dxb = _mm256_set1_ps(dx);
          for (; n + 8 <= N; n += 8) {
            const __m256 hn = _mm256_fmadd_ps(exp256(_mm256_mul_ps(dtb, _mm256_loadu_ps(a + n))),
                                              _mm256_loadu_ps(hin + n), _mm256_mul_ps(dxb, _mm256_loadu_ps(bt + n)));
            _mm256_storeu_ps(h + n, hn);
            av = _mm256_fmadd_ps(hn, _mm256_loadu_ps(ct + n), av);
          }
          acc = hsum256(av);
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

// Boxed entry point. Stack: x, dt, A, Bm, C, D, state, y, state_out, then the TensorList the
// emitter appends for the returned (y, state_out) — ignored.
void mamba_step_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  if (!tensor_args(ctx, stack, 9, "mamba_step")) return;
  mamba_step_out(ctx, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
                 stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor(),
                 stack[6]->toTensor(), stack[7]->toTensor(), stack[8]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("mamba_step.out", edgekit::kernels::mamba_step_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("mamba_step", edgekit::kernels::mamba_step_out_boxed, 7, 6);
