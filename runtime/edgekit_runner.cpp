// edgekit's native step runner: one ExecuTorch Method driven from C++, with a C ABI the
// Python session calls through ctypes (edgekit/runtimes/executorch.py).
//
// Why: a step of a small model (a 64-unit CfC computes for ~1-2 us) was dominated by the
// Python binding's call cost (~10 us per `Method.execute`: inputs boxed into EValues, every
// output copied into a fresh ATen tensor). Here the session writes its inputs straight into
// the method's planned input memory, one C call runs the method and copies output 0 into a
// buffer the session owns, and state tensors (mutable buffers) are read and written through
// pointers obtained once. `edgekit_runner_run` steps a whole input sequence in C++ (what
// `edgekit run --input data.csv` does), with no Python between steps.
//
// The runner uses the wheel's libexecutorch.so (this library links it by SONAME), so the
// stock kernels (libexecutorch_kernels_optimized.so: portable and optimized ATen kernels),
// the XNNPACK backend (libexecutorch_backend_xnnpack.so) and edgekit's own kernels (this
// library) are all in one registry. edgekit/kernels.py loads those torch-free libraries from
// the wheel's lib/ before this one; the wheel's Python module (`executorch.runtime`, whose
// binding links libtorch) links the same files, so importing it later reuses them.
//
// Nothing here allocates per step. The C API and its contract: edgekit_runner.h.
#include "edgekit_runner.h"

#include <executorch/extension/data_loader/mmap_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <dlfcn.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

namespace {

using executorch::aten::Tensor;
using executorch::extension::MallocMemoryAllocator;
using executorch::extension::MmapDataLoader;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::Program;
using executorch::runtime::Span;

thread_local std::string tls_error;

bool fail(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  tls_error = buf;
  return false;
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

// One loaded method and everything it points into. Members are destroyed in reverse order:
// the method before its memory, the memory before the program, the program before its loader.
struct Runner {
  std::optional<MmapDataLoader> loader;
  std::optional<Program> program;
  MallocMemoryAllocator method_allocator;
  MallocMemoryAllocator temp_allocator;
  std::vector<std::unique_ptr<uint8_t, AlignedFree>> planned;
  std::vector<Span<uint8_t>> planned_spans;
  std::optional<HierarchicalAllocator> planned_memory;
  std::optional<MemoryManager> memory;
  std::optional<Method> method;
  // inputs the program does not plan memory for: the runner owns their data
  std::vector<std::unique_ptr<uint8_t, AlignedFree>> own_inputs;
  void* y_out = nullptr;  // edgekit_runner_bind_output
  int64_t y_nbytes = 0;
};

const char* err_name(Error e) {
  switch (e) {
    case Error::Ok: return "Ok";
    case Error::Internal: return "Internal";
    case Error::InvalidState: return "InvalidState";
    case Error::EndOfMethod: return "EndOfMethod";
    case Error::NotSupported: return "NotSupported";
    case Error::NotImplemented: return "NotImplemented";
    case Error::InvalidArgument: return "InvalidArgument";
    case Error::InvalidType: return "InvalidType";
    case Error::OperatorMissing: return "OperatorMissing";
    case Error::NotFound: return "NotFound";
    case Error::MemoryAllocationFailed: return "MemoryAllocationFailed";
    case Error::AccessFailed: return "AccessFailed";
    case Error::InvalidProgram: return "InvalidProgram";
    case Error::InvalidExternalData: return "InvalidExternalData";
    case Error::OutOfResources: return "OutOfResources";
    case Error::DelegateInvalidCompatibility: return "DelegateInvalidCompatibility";
    case Error::DelegateMemoryAllocationFailed: return "DelegateMemoryAllocationFailed";
    case Error::DelegateInvalidHandle: return "DelegateInvalidHandle";
    default: return "Error";
  }
}

uint8_t* aligned_bytes(size_t n) {
  const size_t a = 64;
  void* p = std::aligned_alloc(a, ((n + a - 1) / a) * a + a);
  if (p != nullptr) std::memset(p, 0, n);
  return static_cast<uint8_t*>(p);
}

// Input i's tensor, which the method reads in place. Method::get_input is deprecated in
// favour of set_input, which copies the data in and validates it on every call; the runner
// binds each input once and lets the session write into it (executorch is pinned, 1.5.1:
// there get_input also marks the input as set, which execute() checks).
Tensor input_tensor(const Method& m, size_t i) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  return m.get_input(i).toTensor();
#pragma GCC diagnostic pop
}

bool open_runner(Runner& r, const char* path, const char* method_name) {
  executorch::runtime::runtime_init();
  // As the executorch Python binding loads: mapped, and locked in memory where the process
  // may lock it (root, or RLIMIT_MEMLOCK). Locking also faults every page in now, so resident
  // memory does not creep up while a stream first touches each embedding row (measured: RWKV-7
  // test model, +9.9 MB over 20k random tokens with NoMlock). Where locking is refused, pages
  // still come in on first touch, bounded by the file's size.
  auto loader = MmapDataLoader::from(path, MmapDataLoader::MlockConfig::UseMlockIgnoreErrors);
  if (!loader.ok()) return fail("cannot map '%s' (%s)", path, err_name(loader.error()));
  r.loader.emplace(std::move(loader.get()));
  auto program = Program::load(&*r.loader, Program::Verification::InternalConsistency);
  if (!program.ok()) {
    return fail("'%s' is not a loadable ExecuTorch program (%s)", path, err_name(program.error()));
  }
  r.program.emplace(std::move(program.get()));
  auto meta = r.program->method_meta(method_name);
  if (!meta.ok()) return fail("the program has no method '%s' (%s)", method_name, err_name(meta.error()));
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    const size_t n = static_cast<size_t>(meta->memory_planned_buffer_size(i).get());
    uint8_t* p = aligned_bytes(n);
    if (p == nullptr) return fail("cannot allocate %zu bytes of planned memory", n);
    r.planned.emplace_back(p);
    r.planned_spans.emplace_back(p, n);
  }
  r.planned_memory.emplace(Span<Span<uint8_t>>(r.planned_spans.data(), r.planned_spans.size()));
  r.memory.emplace(&r.method_allocator, &*r.planned_memory, &r.temp_allocator);
  auto method = r.program->load_method(method_name, &*r.memory);
  if (!method.ok()) {
    return fail("method '%s' could not be loaded (%s)", method_name, err_name(method.error()));
  }
  r.method.emplace(std::move(method.get()));
  // Inputs the program planned memory for already point into it; any other input gets a
  // zeroed buffer of the runner's, bound once (set_input of an unplanned tensor takes its
  // data pointer). The session then writes inputs in place, with no set_input per step.
  for (size_t i = 0; i < r.method->inputs_size(); ++i) {
    if (r.method->method_meta().input_tag(i).get() != executorch::runtime::Tag::Tensor) {
      return fail("input %zu is not a tensor; edgekit programs take tensors only", i);
    }
    Tensor t = input_tensor(*r.method, i);
    if (t.const_data_ptr() != nullptr) continue;
    uint8_t* p = aligned_bytes(t.nbytes());
    if (p == nullptr) return fail("cannot allocate input %zu", i);
    r.own_inputs.emplace_back(p);
    executorch::aten::TensorImpl impl(t.scalar_type(), t.dim(),
                                      const_cast<executorch::aten::SizesType*>(t.sizes().data()), p,
                                      const_cast<executorch::aten::DimOrderType*>(t.dim_order().data()),
                                      const_cast<executorch::aten::StridesType*>(t.strides().data()));
    Error e = r.method->set_input(EValue(Tensor(&impl)), i);
    if (e != Error::Ok) return fail("input %zu could not be bound (%s)", i, err_name(e));
  }
  return true;
}

Runner* as_runner(void* h) { return static_cast<Runner*>(h); }

// One execute; then output 0 copied to out (NULL: no copy), which holds out_nbytes.
int step_into(Runner& r, void* out, int64_t out_nbytes) {
  Error e = r.method->execute();
  if (e != Error::Ok) {
    fail("execute failed (%s)", err_name(e));
    return (int)e;
  }
  if (out == nullptr) return 0;
  const EValue& v = r.method->get_output(0);
  if (!v.isTensor() || (int64_t)v.toTensor().nbytes() != out_nbytes) {
    fail("output 0 has %zu bytes, the caller expected %lld", v.isTensor() ? v.toTensor().nbytes() : 0,
         (long long)out_nbytes);
    return (int)Error::InvalidArgument;
  }
  std::memcpy(out, v.toTensor().const_data_ptr(), (size_t)out_nbytes);
  return 0;
}

// ExecuTorch's threadpool (the one XNNPACK and the optimized ATen kernels use) lives in the
// wheel's libexecutorch_threadpool.so, which ships no header for it and which this library
// does not link. Its two entry points are looked up at run time by their C++ (Itanium ABI)
// names in the copy already in the process (RTLD_NOLOAD: never a second copy); the member
// functions take `this` first. Declared in executorch 1.5.1's extension/threadpool/threadpool.h:
//   ThreadPool* get_threadpool();
//   size_t ThreadPool::get_thread_count() const;
//   bool ThreadPool::_unsafe_reset_threadpool(uint32_t);
struct EtThreadpool {
  void* (*get)() = nullptr;
  size_t (*count)(const void*) = nullptr;
  bool (*reset)(void*, uint32_t) = nullptr;
};

bool et_threadpool(EtThreadpool& tp) {
  void* lib = dlopen("libexecutorch_threadpool.so", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) {
    return fail("libexecutorch_threadpool.so is not loaded; load the executorch wheel's lib/ first "
                "(edgekit.kernels.load_executorch_runtime)");
  }
  tp.get = reinterpret_cast<void* (*)()>(dlsym(lib, "_ZN10executorch9extension10threadpool14get_threadpoolEv"));
  tp.count = reinterpret_cast<size_t (*)(const void*)>(
      dlsym(lib, "_ZNK10executorch9extension10threadpool10ThreadPool16get_thread_countEv"));
  tp.reset = reinterpret_cast<bool (*)(void*, uint32_t)>(
      dlsym(lib, "_ZN10executorch9extension10threadpool10ThreadPool24_unsafe_reset_threadpoolEj"));
  dlclose(lib);  // drops the reference NOLOAD took; the library stays loaded
  if (tp.get == nullptr || tp.count == nullptr || tp.reset == nullptr) {
    return fail("libexecutorch_threadpool.so lacks get_threadpool / ThreadPool::_unsafe_reset_threadpool "
                "(an executorch other than 1.5.1?)");
  }
  return true;
}

}  // namespace

extern "C" {

// Threads of ExecuTorch's threadpool, after resizing it to n (n <= 0: leave it). Creating
// the pool the first time also starts cpuinfo, which logs to stderr. -1 on failure.
__attribute__((visibility("default"))) int64_t edgekit_runner_threadpool(int64_t n) {
  EtThreadpool tp;
  if (!et_threadpool(tp)) return -1;
  void* pool = tp.get();
  if (pool == nullptr) {
    fail("ExecuTorch's threadpool could not be created");
    return -1;
  }
  if (n > 0 && !tp.reset(pool, (uint32_t)n)) {
    fail("ExecuTorch's threadpool could not be resized to %lld threads", (long long)n);
    return -1;
  }
  return (int64_t)tp.count(pool);
}

__attribute__((visibility("default"))) const char* edgekit_runner_last_error() {
  return tls_error.c_str();
}

// Load `method_name` of the .pte at `path`. NULL on failure (see edgekit_runner_last_error).
__attribute__((visibility("default"))) void* edgekit_runner_open(const char* path, const char* method_name) {
  auto* r = new (std::nothrow) Runner();
  if (r == nullptr) {
    fail("out of memory");
    return nullptr;
  }
  if (!open_runner(*r, path, method_name)) {
    delete r;
    return nullptr;
  }
  return r;
}

__attribute__((visibility("default"))) void edgekit_runner_close(void* h) { delete as_runner(h); }

__attribute__((visibility("default"))) int64_t edgekit_runner_num_inputs(void* h) {
  return (int64_t)as_runner(h)->method->inputs_size();
}

__attribute__((visibility("default"))) int64_t edgekit_runner_num_outputs(void* h) {
  return (int64_t)as_runner(h)->method->outputs_size();
}

// Where input i lives (the session writes it there before each execute) and its size.
__attribute__((visibility("default"))) void* edgekit_runner_input(void* h, int64_t i, int64_t* nbytes) {
  Runner& r = *as_runner(h);
  if (i < 0 || (size_t)i >= r.method->inputs_size()) {
    fail("input %lld out of range (the method has %zu)", (long long)i, r.method->inputs_size());
    return nullptr;
  }
  Tensor t = input_tensor(*r.method, (size_t)i);
  *nbytes = (int64_t)t.nbytes();
  return t.mutable_data_ptr();
}

// Output i of the last execute: its data and size (valid until the next execute).
__attribute__((visibility("default"))) const void* edgekit_runner_output(void* h, int64_t i, int64_t* nbytes) {
  Runner& r = *as_runner(h);
  if (i < 0 || (size_t)i >= r.method->outputs_size()) {
    fail("output %lld out of range (the method has %zu)", (long long)i, r.method->outputs_size());
    return nullptr;
  }
  const EValue& v = r.method->get_output((size_t)i);
  if (!v.isTensor()) {
    fail("output %lld is not a tensor", (long long)i);
    return nullptr;
  }
  Tensor t = v.toTensor();
  *nbytes = (int64_t)t.nbytes();
  return t.const_data_ptr();
}

// A mutable buffer (the state, with state_style buffers) by its name in the program: the live
// tensor the method reads and writes, so writing it sets the state. NULL if there is none.
__attribute__((visibility("default"))) void* edgekit_runner_attribute(void* h, const char* name, int64_t* nbytes) {
  auto t = as_runner(h)->method->get_attribute(name);
  if (!t.ok()) {
    fail("the program has no attribute '%s' (%s); export with edgekit to name its state buffers", name,
         err_name(t.error()));
    return nullptr;
  }
  *nbytes = (int64_t)t->nbytes();
  return t->mutable_data_ptr();
}

// Where edgekit_runner_step copies output 0 after each execute (NULL: no copy). The buffer
// is the caller's and must outlive the runner or the next call here.
__attribute__((visibility("default"))) void edgekit_runner_bind_output(void* h, void* out, int64_t nbytes) {
  as_runner(h)->y_out = out;
  as_runner(h)->y_nbytes = nbytes;
}

// One execute, then output 0 copied to the bound buffer. 0 on success. One argument: a
// step from Python through ctypes costs ~0.3 us of call overhead per argument.
__attribute__((visibility("default"))) int edgekit_runner_step(void* h) {
  Runner& r = *as_runner(h);
  return step_into(r, r.y_out, r.y_nbytes);
}

// n steps in one call (edgekit_runner.h). Every input is written every step: ExecuTorch's
// memory plan may reuse an input's memory once the graph has read it.
__attribute__((visibility("default"))) int edgekit_runner_run(void* h, int64_t n, int64_t n_in,
                                                              const void* const* ins, const int64_t* in_nbytes,
                                                              void* out, int64_t out_nbytes, int64_t* n_done) {
  Runner& r = *as_runner(h);
  if (n_done != nullptr) *n_done = 0;
  if (n_in != (int64_t)r.method->inputs_size()) {
    fail("%lld inputs given per step, the method takes %zu", (long long)n_in, r.method->inputs_size());
    return (int)Error::InvalidArgument;
  }
  std::vector<uint8_t*> dst((size_t)n_in);
  for (int64_t i = 0; i < n_in; ++i) {
    Tensor t = input_tensor(*r.method, (size_t)i);
    if ((int64_t)t.nbytes() != in_nbytes[i]) {
      fail("input %lld has %zu bytes per step, the caller gave %lld", (long long)i, t.nbytes(),
           (long long)in_nbytes[i]);
      return (int)Error::InvalidArgument;
    }
    dst[(size_t)i] = static_cast<uint8_t*>(t.mutable_data_ptr());
  }
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t i = 0; i < n_in; ++i) {
      std::memcpy(dst[(size_t)i], static_cast<const uint8_t*>(ins[i]) + s * in_nbytes[i], (size_t)in_nbytes[i]);
    }
    int rc = step_into(r, static_cast<uint8_t*>(out) + s * out_nbytes, out_nbytes);
    if (rc != 0) return rc;
    if (n_done != nullptr) *n_done = s + 1;
  }
  return 0;
}

}  // extern "C"
