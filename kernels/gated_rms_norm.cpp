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

namespace edgekit {
namespace kernels {
namespace {

// g = y * silu(z) over n floats
void gate(const float* y, const float* z, float* g, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) {
    const __m256 zv = _mm256_loadu_ps(z + i);
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(zv, sigmoid256(zv))));
  }
#endif
  for (; i < n; ++i) g[i] = y[i] * (z[i] * sigmoid1(z[i]));
}

void gated_rms_norm_out(const checks::gated_rms_norm_dims& dims, const Tensor& y, const Tensor& z, const Tensor& w,
                        const Tensor& eps, Tensor& out) {
  const int64_t D = dims.D;

  // ---- compute: gate into out, then normalize each group of S in place ----
  const int64_t G = w.size(0), S = w.size(1), M = D > 0 ? y.numel() / D : 0;
  const float* wp = w.const_data_ptr<float>();
  const float e = eps.const_data_ptr<float>()[0];
  float* op = out.mutable_data_ptr<float>();
  gate(y.const_data_ptr<float>(), z.const_data_ptr<float>(), op, M * D);
  for (int64_t r = 0; r < M * G; ++r) {
    float* g = op + r * S;
    const float* wg = wp + (r % G) * S;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t s = 0; s < S; ++s) ss += g[s] * g[s];
    const float denom = std::sqrt(ss / (float)S + e);
#pragma omp simd
    for (int64_t s = 0; s < S; ++s) g[s] = g[s] / denom * wg[s];
  }
}

// Boxed entry point. Stack: y, z, w, eps, out, then the returned out (ignored).
void gated_rms_norm_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::gated_rms_norm_dims dims;
  if (!checks::check_gated_rms_norm(ctx, stack, dims)) return;
  gated_rms_norm_out(dims, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(), stack[3]->toTensor(),
                     stack[4]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("gated_rms_norm.out", edgekit::kernels::gated_rms_norm_out_boxed);
