// ExecuTorch kernel for `edgekit::add_rms_norm.out` — a pre-norm block's residual add and the
// next RMSNorm in one call. Schema, reference and validator: edgekit/ops/add_rms_norm.py.
//
//   add_rms_norm.out(Tensor x, Tensor r, Tensor w, Tensor eps, *,
//                    Tensor(a!) h, Tensor(b!) y) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: M rows (the leading dims of x flattened), D the normalized width.
// x, r, h, y: (..., D); w: (D,); eps: (1,); float32, contiguous.
//
//   h = x + r;   y = h / sqrt(mean(h^2) + eps) * w        (per row)
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"

#include <cmath>

namespace edgekit {
namespace kernels {
namespace {

void add_rms_norm_out(const checks::add_rms_norm_dims& dims, const Tensor& x, const Tensor& r, const Tensor& w,
                      const Tensor& eps, Tensor& h, Tensor& y) {
  const int64_t D = dims.D;

  // ---- compute, row by row ----
  const float* xp = x.const_data_ptr<float>();
  const float* rp = r.const_data_ptr<float>();
  const float* wp = w.const_data_ptr<float>();
  const float e = eps.const_data_ptr<float>()[0];
  float* hp = h.mutable_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  const int64_t M = D > 0 ? x.numel() / D : 0;
  for (int64_t m = 0; m < M; ++m, xp += D, rp += D, hp += D, yp += D) {
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t d = 0; d < D; ++d) {
      const float v = xp[d] + rp[d];
      hp[d] = v;
      ss += v * v;
    }
    const float denom = std::sqrt(ss / (float)D + e);
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) yp[d] = hp[d] / denom * wp[d];
  }
}

// Boxed entry point. Stack: x, r, w, eps, h, y, then the returned (h, y) list (ignored).
void add_rms_norm_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::add_rms_norm_dims dims;
  if (!checks::check_add_rms_norm(ctx, stack, dims)) return;
  add_rms_norm_out(dims, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(), stack[3]->toTensor(),
                   stack[4]->toTensor(), stack[5]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("add_rms_norm.out", edgekit::kernels::add_rms_norm_out_boxed);
