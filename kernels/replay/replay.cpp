// The replay driver: runs recorded op calls through the kernels' registered entry points (the
// generated argument checks, then the math core) without ExecuTorch, and writes every tensor
// back. Built for this host and, cross-compiled, for aarch64 (run under qemu-aarch64):
// kernels/replay/build.sh; tests/test_kernels_arm64.py records the cases and compares.
//
//   replay IN OUT
//   replay --isa      prints the SIMD paths this build compiled: "f8=<avx2|neon|scalar>
//                     qlinear=<avx2|neon|scalar>" (the float kernels', qlinear's dot products)
//
// IN:  "EKREPLY1", u32 cases, then per case: u32 name length, the kernel's registered name
//      ("edgekit::mamba_step.out"), u32 threads, u32 values, then per value: i8 dtype (c10
//      code), u8 rank, i64 sizes[rank], the contiguous bytes (inputs as they are, outputs
//      pre-sized). The stack is the values in order, then the empty return slot.
// OUT: "EKREPLY1", u32 cases, then per case: u8 ok (0: the kernel refused it; its message is
//      on stderr), u32 values, then every value as in IN, after the call (states updated in
//      place included). Little-endian, as every machine this runs on.
#include "edgekit_kernel.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

extern "C" void edgekit_kernels_set_threads(int n);
extern "C" const char* edgekit_qlinear_isa();

namespace {

namespace et = executorch::runtime;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;

constexpr char kMagic[8] = {'E', 'K', 'R', 'E', 'P', 'L', 'Y', '1'};
constexpr uint64_t kMaxBytes = uint64_t(1) << 30;   // one value; the recorded cases are small

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "replay: %s\n", what);
  std::exit(2);
}

struct Reader {
  FILE* f;
  template <class T> T get() {
    T v;
    if (std::fread(&v, sizeof(T), 1, f) != 1) die("truncated input");
    return v;
  }
  void bytes(void* p, size_t n) {
    if (n && std::fread(p, 1, n, f) != n) die("truncated input");
  }
};

struct Writer {
  FILE* f;
  template <class T> void put(T v) {
    if (std::fwrite(&v, sizeof(T), 1, f) != 1) die("cannot write the output");
  }
  void bytes(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) die("cannot write the output");
  }
};

struct Value {
  std::unique_ptr<unsigned char[]> buf;
  Tensor t;
};

void read_value(Reader& r, Value& v) {
  const auto st = (ScalarType)r.get<int8_t>();
  const int rank = r.get<uint8_t>();
  if (rank > Tensor::kMaxDims) die("a value has more than 16 dims");
  int64_t sizes[Tensor::kMaxDims];
  uint64_t n = executorch::aten::element_size(st);
  for (int i = 0; i < rank; ++i) {
    sizes[i] = r.get<int64_t>();
    if (sizes[i] < 0 || sizes[i] > (int64_t)kMaxBytes) die("a size is out of range");
    n *= (uint64_t)sizes[i];
    if (n > kMaxBytes) die("a value is over 1 GiB");
  }
  v.buf.reset(new unsigned char[n ? n : 1]);
  r.bytes(v.buf.get(), n);
  v.t = Tensor(st, rank, sizes, v.buf.get(), n);
}

void write_value(Writer& w, const Tensor& t) {
  w.put<int8_t>((int8_t)t.scalar_type());
  w.put<uint8_t>((uint8_t)t.dim());
  for (ssize_t i = 0; i < t.dim(); ++i) w.put<int64_t>(t.size(i));
  w.bytes(t.const_data_ptr(), t.nbytes());
}

et::BoxedFn find(const std::string& name) {
  for (const auto& k : et::registered_kernels()) {
    if (name == k.name) return k.fn;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--isa") == 0) {
#if defined(EDGEKIT_F8)
    std::printf("f8=%s qlinear=%s\n", EDGEKIT_F8_ISA, edgekit_qlinear_isa());
#else
    std::printf("f8=scalar qlinear=%s\n", edgekit_qlinear_isa());
#endif
    return 0;
  }
  if (argc != 3) die("usage: replay IN OUT  |  replay --isa");
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) die("cannot open IN");
  FILE* out = std::fopen(argv[2], "wb");
  if (!out) die("cannot open OUT");
  Reader r{in};
  Writer w{out};
  char magic[8];
  r.bytes(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0) die("IN is not a replay file");
  const uint32_t cases = r.get<uint32_t>();
  w.bytes(kMagic, 8);
  w.put<uint32_t>(cases);
  int failed = 0;
  for (uint32_t c = 0; c < cases; ++c) {
    const uint32_t len = r.get<uint32_t>();
    if (len > 256) die("a kernel name is over 256 bytes");
    std::string name(len, '\0');
    r.bytes(&name[0], len);
    const uint32_t threads = r.get<uint32_t>();
    const uint32_t n = r.get<uint32_t>();
    if (n > 64) die("a case has over 64 values");
    std::unique_ptr<Value[]> values(new Value[n]);
    for (uint32_t i = 0; i < n; ++i) read_value(r, values[i]);
    const auto fn = find(name);
    if (!fn) {
      std::fprintf(stderr, "replay: no kernel registered as %s\n", name.c_str());
      return 2;
    }
    std::unique_ptr<et::EValue[]> ev(new et::EValue[n + 1]);
    std::unique_ptr<et::EValue*[]> stack(new et::EValue*[n + 1]);
    for (uint32_t i = 0; i < n; ++i) ev[i] = et::EValue(&values[i].t);
    for (uint32_t i = 0; i <= n; ++i) stack[i] = &ev[i];
    edgekit_kernels_set_threads((int)threads);
    et::KernelRuntimeContext ctx;
    fn(ctx, et::Span<et::EValue*>(stack.get(), n + 1));
    const bool ok = ctx.failure_state() == et::Error::Ok;
    failed += !ok;
    w.put<uint8_t>(ok);
    w.put<uint32_t>(n);
    for (uint32_t i = 0; i < n; ++i) write_value(w, values[i].t);
  }
  std::fclose(in);
  if (std::fclose(out) != 0) die("cannot write the output");
  std::fprintf(stderr, "replay: %u case(s), %d refused\n", cases, failed);
  return 0;
}
