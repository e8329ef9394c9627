// ExecuTorch kernels for `edgekit::silu_mul.out` and `edgekit::gelu_tanh_mul.out` — an
// activated gate times a value. Schemas, references and validator: edgekit/ops/gated.py.
//
//   silu_mul.out(Tensor a, Tensor b, *, Tensor(a!) y) -> Tensor(a!)         y = a * sigmoid(a) * b
//   gelu_tanh_mul.out(Tensor a, Tensor b, *, Tensor(a!) y) -> Tensor(a!)    y = a * sigmoid(2u) * b,
//                                                       u = sqrt(2/pi) (a + 0.044715 a^3)
//
// a, b, y: the same shape, float32, contiguous. sigmoid(s) = 1 / (1 + e^-s), one exp per
// element (exp256 under AVX2, within 2 ulp of expf: sigmoid is 0 below s = -88 and 1 above
// s = 87, as in float32 arithmetic; NaN stays NaN).
#include "edgekit_kernel.h"

#include <cmath>

namespace edgekit {
namespace kernels {
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
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) {
    const __m256 av = _mm256_loadu_ps(a + i);
    __m256 s = av;
    if (A == Act::kGeluTanh) {
      const __m256 a3 = _mm256_mul_ps(_mm256_mul_ps(av, av), av);
      s = _mm256_mul_ps(_mm256_set1_ps(2.f * kGeluC), _mm256_fmadd_ps(_mm256_set1_ps(kGeluA), a3, av));
    }
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(av, sigmoid256(s)), _mm256_loadu_ps(b + i)));
  }
#endif
  for (; i < n; ++i) y[i] = a[i] * sigmoid1(gate_arg<A>(a[i])) * b[i];
}

template <Act A>
void gated_out(KernelRuntimeContext& ctx, const char* op, const Tensor& a, const Tensor& b, Tensor& y) {
  // ---- validate: the same words as edgekit/ops/gated.py `validate_for` ----
  ET_KERNEL_CHECK_MSG(ctx, a.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "%s: a must be float32; got %s %s", op, ShapeStr(a).c_str(), dtype_name(a.scalar_type()));
  bool b_ok = b.dim() == a.dim() && b.scalar_type() == ScalarType::Float;
  for (ssize_t d = 0; b_ok && d < a.dim(); ++d) b_ok = b.size(d) == a.size(d);
  ET_KERNEL_CHECK_MSG(ctx, b_ok, InvalidArgument, , "%s: b must be the shape of a = %s float32; got %s %s", op,
                      ShapeStr(a).c_str(), ShapeStr(b).c_str(), dtype_name(b.scalar_type()));
  ET_KERNEL_CHECK_MSG(ctx,
                      executorch::runtime::tensor_is_default_dim_order(a) &&
                          executorch::runtime::tensor_is_default_dim_order(b),
                      InvalidArgument, , "%s: a and b must be contiguous", op);
  ET_KERNEL_CHECK_MSG(ctx,
                      y.scalar_type() == ScalarType::Float &&
                          executorch::runtime::resize_tensor(y, a.sizes()) == executorch::runtime::Error::Ok,
                      InvalidArgument, , "%s: y must be the shape of a = %s float32; got %s %s", op,
                      ShapeStr(a).c_str(), ShapeStr(y).c_str(), dtype_name(y.scalar_type()));
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, a), InvalidArgument, , "%s: y must not alias input a", op);
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, b), InvalidArgument, , "%s: y must not alias input b", op);
  gated<A>(a.const_data_ptr<float>(), b.const_data_ptr<float>(), y.mutable_data_ptr<float>(), a.numel());
}

// Boxed entry points. Stack: a, b, y, then the returned y (ignored).
template <Act A>
void gated_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack, const char* op) {
  if (!tensor_args(ctx, stack, 3, op)) return;
  gated_out<A>(ctx, op, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor());
}

void silu_mul_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  gated_out_boxed<Act::kSilu>(ctx, stack, "silu_mul");
}

void gelu_tanh_mul_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  gated_out_boxed<Act::kGeluTanh>(ctx, stack, "gelu_tanh_mul");
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("silu_mul.out", edgekit::kernels::silu_mul_out_boxed);
EDGEKIT_OUT_KERNEL("gelu_tanh_mul.out", edgekit::kernels::gelu_tanh_mul_out_boxed);
