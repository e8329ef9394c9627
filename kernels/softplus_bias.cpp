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
#if defined(EDGEKIT_F8)
    using namespace simd;
    const f8 one = set8(1.f), zero = zero8();
    for (; c + 8 <= C; c += 8) {
      const f8 v = load8(x + c) + load8(b + c);
      const f8 u = exp8(zero - abs8(v));                        // (0, 1]; NaN stays
      const f8 w = one + u, d = w - one;
      const m8 exact = eq8(d, zero);                            // 1 + u rounded to 1
      // d is 0 or >= 2^-24: the max keeps the division finite where the select discards it
      const f8 l = (log8_1to2(w) * u) / max8(d, set8(1e-30f));
      // below v = -87 e^v is under float's normal range, where exp8 saturates at 1.2e-38:
      // there softplus(v) = e^v < 1.7e-38 is returned as 0
      const f8 lp = keep8(select8(exact, u, l), gt8(v, set8(-87.f)));
      // max(v, 0) with v second keeps NaN (edgekit_simd.h)
      store8(y + c, max8(zero, v) + lp);
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
