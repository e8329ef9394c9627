// The few ExecuTorch types and macros the kernels and their generated argument checks use,
// without ExecuTorch: what kernels/edgekit_kernel.h includes under EDGEKIT_REPLAY, so that the
// kernels' math cores, with the same generated checks in front of them, build for a machine
// that has no ExecuTorch install (aarch64 under qemu-user; kernels/replay/replay.cpp).
// Only what the kernels call; the semantics are ExecuTorch's where the kernels depend on them
// (resize_tensor fails past the buffer's capacity; a failed check marks the context).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace executorch {
namespace aten {

// ExecuTorch's (c10's) codes, so a replay case names a dtype the same way.
enum class ScalarType : int8_t {
  Byte = 0, Char = 1, Short = 2, Int = 3, Long = 4, Half = 5, Float = 6, Double = 7, Bool = 11, BFloat16 = 15,
};
using SizesType = int32_t;

inline size_t element_size(ScalarType t) {
  switch (t) {
    case ScalarType::Byte: case ScalarType::Char: case ScalarType::Bool: return 1;
    case ScalarType::Short: case ScalarType::Half: case ScalarType::BFloat16: return 2;
    case ScalarType::Int: case ScalarType::Float: return 4;
    default: return 8;
  }
}

template <class T>
struct ArrayRef {
  const T* p;
  size_t n;
  ArrayRef(const T* data, size_t size) : p(data), n(size) {}
  size_t size() const { return n; }
  const T& operator[](size_t i) const { return p[i]; }
};

// A contiguous tensor over a buffer it does not own (the replay driver owns the bytes).
class Tensor {
 public:
  static constexpr int kMaxDims = 16;
  Tensor() = default;
  Tensor(ScalarType st, int ndim, const int64_t* sizes, void* data, size_t capacity)
      : st_(st), ndim_(ndim), data_(data), capacity_(capacity) {
    for (int i = 0; i < ndim; ++i) sizes_[i] = (SizesType)sizes[i];
  }
  ssize_t dim() const { return ndim_; }
  ssize_t size(ssize_t d) const { return sizes_[d]; }
  ssize_t numel() const {
    ssize_t n = 1;
    for (int i = 0; i < ndim_; ++i) n *= sizes_[i];
    return n;
  }
  size_t nbytes() const { return (size_t)numel() * element_size(st_); }
  size_t capacity() const { return capacity_; }
  ScalarType scalar_type() const { return st_; }
  const void* const_data_ptr() const { return data_; }
  void* mutable_data_ptr() const { return data_; }
  template <class T> const T* const_data_ptr() const { return static_cast<const T*>(data_); }
  template <class T> T* mutable_data_ptr() const { return static_cast<T*>(data_); }
  bool resize(ArrayRef<SizesType> s) {   // as ExecuTorch's resize_tensor: the rank stays
    if (s.size() != (size_t)ndim_) return false;
    size_t n = element_size(st_);
    for (size_t i = 0; i < s.size(); ++i) n *= (size_t)s[i];
    if (n > capacity_) return false;
    ndim_ = (int)s.size();
    for (size_t i = 0; i < s.size(); ++i) sizes_[i] = s[i];
    return true;
  }

 private:
  ScalarType st_ = ScalarType::Float;
  int ndim_ = 0;
  SizesType sizes_[kMaxDims] = {};
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace aten

namespace runtime {

enum class Error : uint32_t { Ok = 0, InvalidArgument = 0x12, InvalidProgram = 0x23 };

template <class T>
class Span {
 public:
  Span(T* data, size_t n) : p_(data), n_(n) {}
  T& operator[](size_t i) const { return p_[i]; }
  size_t size() const { return n_; }

 private:
  T* p_;
  size_t n_;
};

// A stack value: a tensor, or the empty slot the emitter passes for an op's return.
class EValue {
 public:
  EValue() = default;
  explicit EValue(aten::Tensor* t) : t_(t) {}
  bool isTensor() const { return t_ != nullptr; }
  aten::Tensor& toTensor() const { return *t_; }

 private:
  aten::Tensor* t_ = nullptr;
};

class KernelRuntimeContext {
 public:
  void fail(Error e) { failure_ = e; }
  Error failure_state() const { return failure_; }
  void* internal_event_tracer() { return nullptr; }

 private:
  Error failure_ = Error::Ok;
};

inline Error resize_tensor(aten::Tensor& t, aten::ArrayRef<aten::SizesType> s) {
  return t.resize(s) ? Error::Ok : Error::InvalidArgument;
}
inline bool tensor_is_default_dim_order(const aten::Tensor&) { return true; }   // replay tensors are contiguous

using BoxedFn = void (*)(KernelRuntimeContext&, Span<EValue*>);
struct Kernel {
  const char* name;
  BoxedFn fn;
  Kernel(const char* n, BoxedFn f) : name(n), fn(f) {}
};
// Every kernel the library registers (a function-local static: registration runs from other
// translation units' static initializers).
inline std::vector<Kernel>& registered_kernels() {
  static std::vector<Kernel> all;
  return all;
}
inline Error register_kernel(const Kernel& k) {
  registered_kernels().push_back(k);
  return Error::Ok;
}

namespace internal {
struct EventTracerProfileOpScope {
  EventTracerProfileOpScope(void*, const char*) {}
};
}  // namespace internal

}  // namespace runtime
}  // namespace executorch

#define ET_LOG(level, fmt, ...) std::fprintf(stderr, "[" #level "] " fmt "\n", ##__VA_ARGS__)
#define ET_KERNEL_CHECK_MSG(ctx, cond, error, retval, msg, ...)             \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ET_LOG(Error, msg, ##__VA_ARGS__);                                    \
      (ctx).fail(::executorch::runtime::Error::error);                      \
      return retval;                                                        \
    }                                                                       \
  } while (0)
