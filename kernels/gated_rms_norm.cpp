// ExecuTorch kernel for `edgekit::gated_rms_norm.out` — Mamba-2's gated RMSNorm over groups.
// Schema, reference and validator: edgekit/ops/gated_rms_norm.py.
//
//   gated_rms_norm.out(Tensor y, Tensor z, Tensor w, Tensor eps, *, Tensor(a!) out) -> Tensor(a!)
//
// Dimensions: M rows (the leading dims), D = G * S. y, z, out: (..., D); w: (G, S); eps: (1,);
// float32, contiguous.
//
//   g = y * silu(z);  out[j*S:(j+1)*S] = g_j / sqrt(mean(g_j^2) + eps) * w[j]    (per row, group j)
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"

#include <cmath>

namespace edgekit::kernels {
namespace {

// g = y * silu(z) over n floats
void gate(const float* y, const float* z, float* g, int64_t n) {
  int64_t i = 0;
#if defined(EDGEKIT_F8)
  for (; i + 8 <= n; i += 8) {
    const simd::f8 zv = simd::load8(z + i);
    simd::store8(g + i, simd::load8(y + i) * (zv * simd::sigmoid8(zv)));
  }
#endif
  for (; i < n; ++i) g[i] = y[i] * (z[i] * sigmoid1(z[i]));
}

// Gate into out, then normalize each group of S in place.
void gated_rms_norm_core(const checks::gated_rms_norm_dims& dims, const float* y, const float* z, const float* wp,
                         const float* eps, float* op) {
  const int64_t D = dims.D, G = dims.G, S = dims.S, M = dims.lead_numel;
  const float e = eps[0];
  gate(y, z, op, M * D);
  for (int64_t r = 0; r < M * G; ++r) rms_scale(op + r * S, wp + (r % G) * S, e, op + r * S, S);
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_gated_rms_norm(edgekit::kernels::gated_rms_norm_core);
