// ExecuTorch kernel for `edgekit::softplus_bias.out` — the SSM step size softplus(x + b).
// Schema, reference and validator: edgekit/ops/softplus_bias.py.
//
//   softplus_bias.out(Tensor x, Tensor b, *, Tensor(a!) y) -> Tensor(a!)
//
// Dimensions: M rows (the leading dims), C channels. x, y: (..., C); b: (C,); float32, contiguous.
//
//   v = x + b;  y = max(v, 0) + log1p(u),  u = e^-|v| in (0, 1]
//   log1p(u) = ln(1 + u) * u / ((1 + u) - 1)  (Goldberg), = u where 1 + u rounds to 1
// No overflow for any v; below v = -87 (e^v < 1.7e-38) 0; +Inf -> +Inf, -Inf -> 0, NaN -> NaN.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"

#include <cmath>

namespace edgekit::kernels {
namespace {

inline float softplus1(float v) {
  const float u = std::exp(-std::fabs(v));
  const float w = 1.f + u, d = w - 1.f;
  return std::fmax(v, 0.f) + (d == 0.f ? u : std::log(w) * u / d);
}

void softplus_rows(const float* x, const float* b, float* y, int64_t M, int64_t C) {
  for (int64_t m = 0; m < M; ++m, x += C, y += C) {
    int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (; c + 8 <= C; c += 8) {
      const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(b + c));
      const __m256 u = exp256(_mm256_sub_ps(zero, _mm256_and_ps(v, abs_mask)));   // (0, 1]; NaN stays
      const __m256 w = _mm256_add_ps(one, u), d = _mm256_sub_ps(w, one);
      const __m256 exact = _mm256_cmp_ps(d, zero, _CMP_EQ_OQ);                    // 1 + u rounded to 1
      // d is 0 or >= 2^-24: the max keeps the division finite where the blend discards it
      const __m256 l = _mm256_div_ps(_mm256_mul_ps(log256_1to2(w), u), _mm256_max_ps(d, _mm256_set1_ps(1e-30f)));
      // below v = -87 e^v is under float's normal range, where exp256 saturates at 1.2e-38:
      // there softplus(v) = e^v < 1.7e-38 is returned as 0
      const __m256 lp = _mm256_and_ps(_mm256_blendv_ps(l, u, exact), _mm256_cmp_ps(v, _mm256_set1_ps(-87.f), _CMP_GT_OQ));
      // max(v, 0): max returns its second operand on NaN, so v second keeps NaN
      _mm256_storeu_ps(y + c, _mm256_add_ps(_mm256_max_ps(zero, v), lp));
    }
#endif
    for (; c < C; ++c) y[c] = softplus1(x[c] + b[c]);
  }
}

// The boxed kernel's core: every row of x.
void softplus_bias_core(const checks::softplus_bias_dims& d, const float* x, const float* b, float* y) {
  softplus_rows(x, b, y, d.lead_numel, d.C);
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_softplus_bias(edgekit::kernels::softplus_bias_core);
