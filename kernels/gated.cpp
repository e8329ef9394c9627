// ExecuTorch kernels for `edgekit::silu_mul.out` and `edgekit::gelu_tanh_mul.out` — an
// activated gate times a value. Schemas, references and validator: edgekit/ops/gated.py.
//
//   silu_mul.out(Tensor a, Tensor b, *, Tensor(a!) y) -> Tensor(a!)         y = a * sigmoid(a) * b
//   gelu_tanh_mul.out(Tensor a, Tensor b, *, Tensor(a!) y) -> Tensor(a!)    y = a * sigmoid(2u) * b,
//                                                       u = sqrt(2/pi) (a + 0.044715 a^3)
//
// a, b, y: the same shape, float32, contiguous. sigmoid(s) = 1 / (1 + e^-s), one exp per
// element (simd::exp8 under AVX2 or NEON, within 2 ulp of expf: sigmoid is 0 below s = -88 and 1 above
// s = 87, as in float32 arithmetic; NaN stays NaN).
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"

#include <cmath>

namespace edgekit::kernels {
namespace {

constexpr float kGeluC = 0.7978845608028654f;   // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

enum class Act { kSilu, kGeluTanh };

// s such that act(a) = a * sigmoid(s)
template <Act A>
inline float gate_arg(float a) {
  return A == Act::kSilu ? a : 2.f * kGeluC * (a + kGeluA * a * a * a);
}

template <Act A>
void gated(const float* a, const float* b, float* y, int64_t n) {
  int64_t i = 0;
#if defined(EDGEKIT_F8)
  using namespace simd;
  for (; i + 8 <= n; i += 8) {
    const f8 av = load8(a + i);
    f8 s = av;
    if (A == Act::kGeluTanh) s = set8(2.f * kGeluC) * fma8(set8(kGeluA), (av * av) * av, av);
    store8(y + i, (av * sigmoid8(s)) * load8(b + i));
  }
#endif
  for (; i < n; ++i) y[i] = a[i] * sigmoid1(gate_arg<A>(a[i])) * b[i];
}

// The boxed kernels' core: act(a) * b over every element.
template <Act A, typename Dims>
void gated_core(const Dims& d, const float* a, const float* b, float* y) {
  gated<A>(a, b, y, d.lead_numel);
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_silu_mul(edgekit::kernels::gated_core<edgekit::kernels::Act::kSilu, edgekit::kernels::checks::silu_mul_dims>);
EDGEKIT_REGISTER_gelu_tanh_mul(edgekit::kernels::gated_core<edgekit::kernels::Act::kGeluTanh, edgekit::kernels::checks::gelu_tanh_mul_dims>);
