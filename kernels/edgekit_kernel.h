// Shared helpers for edgekit's ExecuTorch kernels (one .cpp per op, all linked into ONE
// shared library: two different .so files registering the same op abort the process).
//
// Why not EXECUTORCH_LIBRARY: its unboxing wrapper (make_boxed_from_unboxed_functor.h)
// static_asserts exactly ONE trailing `Tensor&` out argument, so a multi-output `.out`
// overload (`*, Tensor(a!) y, Tensor(b!) state_out`) does not compile. EDGEKIT_OUT_KERNEL
// registers a hand-written boxed function instead. The emitter's stack for an `.out` op
// is: every schema argument in order (inputs, then the out tensors), then ONE extra value
// for the return — the out tensor itself for one output, a TensorList of them for several.
#pragma once

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/core/event_tracer_hooks.h>

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace edgekit {
namespace kernels {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

// torch's spelling of a dtype, so the C++ messages read like the Python validator's.
inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "torch.float32";
    case ScalarType::Double: return "torch.float64";
    case ScalarType::Half: return "torch.float16";
    case ScalarType::BFloat16: return "torch.bfloat16";
    case ScalarType::Int: return "torch.int32";
    case ScalarType::Long: return "torch.int64";
    case ScalarType::Short: return "torch.int16";
    case ScalarType::Char: return "torch.int8";
    case ScalarType::Byte: return "torch.uint8";
    case ScalarType::Bool: return "torch.bool";
    default: return "torch.<other>";
  }
}

// Python's tuple repr of a shape: "(1, 3, 2, 64)", "(5,)", "()".
struct ShapeStr {
  char s[96];
  explicit ShapeStr(const Tensor& t) {
    size_t n = 0;
    n += std::snprintf(s + n, sizeof(s) - n, "(");
    for (ssize_t d = 0; d < t.dim() && n < sizeof(s); ++d) {
      n += std::snprintf(s + n, sizeof(s) - n, d ? ", %d" : "%d", (int)t.size(d));
    }
    if (t.dim() == 1 && n < sizeof(s)) n += std::snprintf(s + n, sizeof(s) - n, ",");
    if (n < sizeof(s)) std::snprintf(s + n, sizeof(s) - n, ")");
  }
  const char* c_str() const { return s; }
};

inline bool has_shape(const Tensor& t, std::initializer_list<int64_t> shape) {
  if ((size_t)t.dim() != shape.size()) return false;
  ssize_t d = 0;
  for (int64_t s : shape) {
    if (t.size(d++) != s) return false;
  }
  return true;
}

// Byte ranges of the two tensors' data intersect (the same test as the Python `_check_out`).
inline bool overlaps(const Tensor& x, const Tensor& z) {
  auto xs = reinterpret_cast<uintptr_t>(x.const_data_ptr());
  auto zs = reinterpret_cast<uintptr_t>(z.const_data_ptr());
  uintptr_t xe = xs + x.nbytes(), ze = zs + z.nbytes();
  return xs < ze && zs < xe;
}

inline bool same_data(const Tensor& x, const Tensor& z) {
  return x.const_data_ptr() == z.const_data_ptr();
}

// Fail the kernel's context with a printf-formatted message (logged, as ET_KERNEL_CHECK_MSG
// logs); returns false. The generated argument checks (edgekit_op_checks.h) use it.
__attribute__((format(printf, 2, 3))) inline bool fail(KernelRuntimeContext& ctx, const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  ET_LOG(Error, "%s", msg);
  ctx.fail(executorch::runtime::Error::InvalidArgument);
  return false;
}

// An expected shape: the leading dims of a tensor (an op's `...`), then sizes.
struct Want {
  SizesType v[16];
  size_t n = 0;
  void prefix(const Tensor* t, ssize_t k) {
    for (ssize_t i = 0; t != nullptr && i < k && n < 16; ++i) v[n++] = (SizesType)t->size(i);
  }
  void add(int64_t s) {
    if (n < 16) v[n++] = (SizesType)s;
  }
  bool matches(const Tensor& t) const {
    if ((size_t)t.dim() != n) return false;
    for (size_t i = 0; i < n; ++i) {
      if (t.size(i) != v[i]) return false;
    }
    return true;
  }
  // Python's tuple repr, like ShapeStr.
  void str(char* s, size_t cap) const {
    size_t k = std::snprintf(s, cap, "(");
    for (size_t i = 0; i < n && k < cap; ++i) k += std::snprintf(s + k, cap - k, i ? ", %d" : "%d", (int)v[i]);
    if (n == 1 && k < cap) k += std::snprintf(s + k, cap - k, ",");
    if (k < cap) std::snprintf(s + k, cap - k, ")");
  }
};

// t has shape w and dtype st, else fail with "<what><w> <dtype>; got <shape> <dtype>", the
// Python validator's "op: x must be (B, T, D) = (1, 2, 3) float32; got (1, 2) torch.float32".
inline bool expect(KernelRuntimeContext& ctx, const Tensor& t, const Want& w, ScalarType st, const char* what,
                   const char* dtype) {
  if (w.matches(t) && t.scalar_type() == st) return true;
  char want[96];
  w.str(want, sizeof(want));
  return fail(ctx, "%s%s %s; got %s %s", what, want, dtype, ShapeStr(t).c_str(), dtype_name(t.scalar_type()));
}

// An output resized to w (its dtype must be st), with expect's message when it cannot be.
inline bool resize_out(KernelRuntimeContext& ctx, Tensor& t, const Want& w, ScalarType st, const char* what,
                       const char* dtype) {
  if (t.scalar_type() == st && executorch::runtime::resize_tensor(
                                   t, executorch::aten::ArrayRef<SizesType>(w.v, w.n)) == executorch::runtime::Error::Ok) {
    return true;
  }
  char want[96];
  w.str(want, sizeof(want));
  return fail(ctx, "%s%s %s; got %s %s", what, want, dtype, ShapeStr(t).c_str(), dtype_name(t.scalar_type()));
}

#if defined(__AVX2__) && defined(__FMA__)
// e^x for 8 floats: Cephes expf (range reduction by ln 2 in two parts, degree-6 polynomial).
// Inputs are clamped to [-87.3, 88.376] (Cephes' MAXLOGF: above it 2^n overflows the
// exponent field), so e^x below 1.2e-38 (a decay that has fully decayed) is returned as
// ~1.2e-38, not 0 or a denormal, and above 88.376 as ~2.4e38, not Inf; NaN stays NaN.
inline __m256 exp256(__m256 x) {
  // max/min return their SECOND operand when either is NaN: keep x second so NaN propagates
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// sigmoid(s) = 1 / (1 + e^-s) for 8 floats; 0 below s = -88, where e^-s saturates (the true
// value is < 6.1e-39), and 0 for NaN s: the callers multiply it by s or by a value of s, so
// NaN stays NaN in their result.
inline __m256 sigmoid256(__m256 s) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), s))));
  return _mm256_and_ps(sig, _mm256_cmp_ps(s, _mm256_set1_ps(-88.f), _CMP_GT_OQ));
}

// tanh for 8 floats: sign(x) (1 - e) / (1 + e) with e = e^(-2|x|), and for |x| < 0.3 the odd
// Taylor polynomial to x^13 (where 1 - e would cancel; truncation error < 1e-10 relative),
// both computed on |x| with x's sign put back, so tanh(-0) = -0. Within 2.7 ulp of float64
// tanh over [1e-6, 12] (tests/test_op_cfc_step.py::test_tanh256_accuracy); +-1 from |x| = 9
// on (exp256 saturates, as float tanh does); NaN stays NaN.
inline __m256 tanh256(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f), one = _mm256_set1_ps(1.f);
  const __m256 ax = _mm256_andnot_ps(sign, x);
  const __m256 e = exp256(_mm256_mul_ps(ax, _mm256_set1_ps(-2.f)));
  const __m256 q = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  const __m256 x2 = _mm256_mul_ps(ax, ax);
  __m256 p = _mm256_set1_ps(21844.f / 6081075.f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1382.f / 155925.f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(62.f / 2835.f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-17.f / 315.f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.f / 15.f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.f / 3.f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), ax, ax);
  const __m256 t = _mm256_blendv_ps(q, p, _mm256_cmp_ps(ax, _mm256_set1_ps(0.3f), _CMP_LT_OQ));
  return _mm256_or_ps(t, _mm256_and_ps(sign, x));
}

// ln x for 8 floats, x in [1, 2] (what log1p needs; Cephes logf: x = m 2^e with m in
// [sqrt(1/2), sqrt(2)), ln(1 + f) by its degree-9 polynomial, e ln 2 in two parts). Within
// 1 ulp of float64 on that range; not for x <= 0, denormals, Inf or NaN.
inline __m256 log256_1to2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  // mantissa in [0.5, 1)
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                                 _mm256_set1_epi32(0x3f000000)));
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
  m = _mm256_add_ps(_mm256_sub_ps(m, one), _mm256_and_ps(m, small));    // m - 1, or 2m - 1
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
}

inline float hsum256(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}
#endif

// out[i] = in[i] / sqrt(mean(in^2) + eps) * w[i] over n floats (an RMSNorm of one row or
// group; out may be in).
inline void rms_scale(const float* in, const float* w, float eps, float* out, int64_t n) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < n; ++i) ss += in[i] * in[i];
  const float denom = std::sqrt(ss / (float)n + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] / denom * w[i];
}

inline float sigmoid1(float s) { return s > -88.f ? 1.f / (1.f + std::exp(-s)) : 0.f; }   // as sigmoid256

// x <- x * sigmoid(x) (SiLU) over n floats.
inline void silu_in_place(float* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(x + i, _mm256_mul_ps(v, sigmoid256(v)));
  }
#endif
  for (; i < n; ++i) x[i] *= sigmoid1(x[i]);
}

using BoxedKernel = void (*)(KernelRuntimeContext&, Span<EValue*>);

// A boxed `.out` stack starts with n tensors (the schema's inputs, then its outs); false
// (and the context failed) when it does not.
inline bool tensor_args(KernelRuntimeContext& ctx, Span<EValue*> stack, size_t n, const char* op) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= n, InvalidProgram, false,
                      "%s: expected at least %zu arguments, got %zu", op, n, stack.size());
  for (size_t i = 0; i < n; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, stack[i]->isTensor(), InvalidProgram, false,
                        "%s: argument %zu must be a Tensor", op, i);
  }
  return true;
}

// The in-place form `<op>_inplace.out(<inputs, each state Tensor(a!)>, *, Tensor(z!) y)` of an
// op whose `.out` is `(<inputs>, *, y, <one state_out per state, in order>)`: calls the op's
// boxed `.out` kernel with each state passed as its own state_out. Stack in: the n_args
// inputs, y, the return value; stack out: the inputs, y, the states again, the return value.
template <size_t NArgs, size_t NStates>
inline void call_in_place(KernelRuntimeContext& ctx, Span<EValue*> stack, const int (&states)[NStates],
                          BoxedKernel out_kernel, const char* op) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= NArgs + 1, InvalidProgram, ,
                      "%s: expected at least %zu arguments, got %zu", op, NArgs + 1, stack.size());
  EValue* s[NArgs + 1 + NStates + 1];
  for (size_t i = 0; i <= NArgs; ++i) s[i] = stack[i];        // inputs, then y
  for (size_t k = 0; k < NStates; ++k) s[NArgs + 1 + k] = stack[states[k]];
  s[NArgs + 1 + NStates] = stack[stack.size() > NArgs + 1 ? NArgs + 1 : NArgs];   // return slot
  out_kernel(ctx, Span<EValue*>(s, NArgs + 2 + NStates));
}

}  // namespace kernels
}  // namespace edgekit

// Registers `void fn(KernelRuntimeContext&, Span<EValue*> stack)` as "edgekit::<op_name>".
#define EDGEKIT_CONCAT_IMPL(a, b) a##b
#define EDGEKIT_CONCAT(a, b) EDGEKIT_CONCAT_IMPL(a, b)
// Each call is an ETDump profiling event named "edgekit::<op_name>" (when the program runs
// with an event tracer, e.g. `_load_for_executorch(..., enable_etdump=True)`).
#define EDGEKIT_OUT_KERNEL(op_name, boxed_fn)                                                 \
  static auto EDGEKIT_CONCAT(edgekit_kernel_reg_, __LINE__) =                                 \
      ::executorch::runtime::register_kernel(::executorch::runtime::Kernel(                   \
          "edgekit::" op_name,                                                                \
          [](::executorch::runtime::KernelRuntimeContext& ctx,                                \
             ::executorch::runtime::Span<::executorch::runtime::EValue*> stack) {             \
            ::executorch::runtime::internal::EventTracerProfileOpScope scope(                 \
                ctx.internal_event_tracer(), "edgekit::" op_name);                            \
            boxed_fn(ctx, stack);                                                             \
          }))

// Registers "edgekit::<op>_inplace.out" (edgekit/ops/__init__.py `_define_in_place`) on top of
// the op's boxed `.out` kernel; the trailing arguments are the state arguments' positions.
#define EDGEKIT_IN_PLACE_KERNEL(op, boxed_out_fn, n_args, ...)                                \
  static auto EDGEKIT_CONCAT(edgekit_in_place_reg_, __LINE__) =                               \
      ::executorch::runtime::register_kernel(::executorch::runtime::Kernel(                   \
          "edgekit::" op "_inplace.out",                                                      \
          [](::executorch::runtime::KernelRuntimeContext& ctx,                                \
             ::executorch::runtime::Span<::executorch::runtime::EValue*> stack) {             \
            ::executorch::runtime::internal::EventTracerProfileOpScope scope(                 \
                ctx.internal_event_tracer(), "edgekit::" op "_inplace");                      \
            static constexpr int kStates[] = {__VA_ARGS__};                                   \
            ::edgekit::kernels::call_in_place<n_args>(ctx, stack, kStates, boxed_out_fn, op); \
          }))
