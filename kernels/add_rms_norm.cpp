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

namespace edgekit::kernels {
namespace {

// Row by row: h = x + r, then y = h / sqrt(mean(h^2) + eps) * w.
void add_rms_norm_core(const checks::add_rms_norm_dims& dims, const float* xp, const float* rp, const float* wp,
                       const float* eps, float* hp, float* yp) {
  const int64_t D = dims.D, M = dims.lead_numel;
  const float e = eps[0];
  for (int64_t m = 0; m < M; ++m, xp += D, rp += D, hp += D, yp += D) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) hp[d] = xp[d] + rp[d];
    rms_scale(hp, wp, e, yp, D);
  }
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_add_rms_norm(edgekit::kernels::add_rms_norm_core);
