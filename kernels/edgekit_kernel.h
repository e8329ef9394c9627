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

#if defined(EDGEKIT_REPLAY)
// The replay driver's build (kernels/replay/): the same kernels and checks on a stand-in for
// the few ExecuTorch types they use, for a machine without ExecuTorch (aarch64 under qemu).
#include "replay/et_shim.h"
#else
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/core/event_tracer_hooks.h>
#endif

#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include "edgekit_simd.h"

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

inline float sigmoid1(float s) { return s > -88.f ? 1.f / (1.f + std::exp(-s)) : 0.f; }   // as simd::sigmoid8

// x <- x * sigmoid(x) (SiLU) over n floats.
inline void silu_in_place(float* x, int64_t n) {
  int64_t i = 0;
#if defined(EDGEKIT_F8)
  for (; i + 8 <= n; i += 8) {
    const simd::f8 v = simd::load8(x + i);
    simd::store8(x + i, v * simd::sigmoid8(v));
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
