// ExecuTorch kernel for `edgekit::qlinear.out` — a quantized Linear, y = q8(x) Wᵀ + b, with W in
// 2, 4 or 8 bits per weight. Schema, reference, layout and validator: edgekit/ops/qlinear.py and
// edgekit/quant/schemes.py.
//
//   qlinear.out(Tensor x, Tensor w, Tensor scales, Tensor zero_points, Tensor b, *,
//               Tensor(a!) out) -> Tensor(a!)
//
// Dimensions: M rows (every leading dim of x flattened; 1 at decode), K inputs, N outputs, KB
// blocks of G inputs per row (G = K / KB, a power of 2 >= 16), bits = 8 * BLOB / G in {2, 4, 8}.
// x (..., K) float32; w (N, KB, BLOB) uint8; scales (N, KB) float32; zero_points (N, ZB) uint8,
// ZB = ceil(KB * bits / 8); b (N,) float32; out (..., N) float32; all contiguous.
//
// Layout (ONNX Runtime's MatMulNBits): element j of a block is in byte j * bits / 8 at bit
// (j * bits) % 8, low bits first; the zero points are packed the same way along a row's blocks.
// W[n, k] = (code[n, k] - zp[n, k / G]) * scales[n, k / G].
//
// Arithmetic. Each row of x is quantized once per call, per block of G, bit for bit as
// edgekit/quant/schemes.py `quantize_activations` does it in float32: amax = max|x|,
// inv = (1 / amax) * 127 (torch's `127 / t` is `t.reciprocal() * 127`: two roundings, and
// 127.0f / amax differs for ~1 q in 10^6), q = round-half-even(x * inv) clamped to [-127, 127],
// sx = amax / 127. A block holding NaN or Inf gets sx = NaN, so the outputs are NaN as the
// reference's are. Then per output n and block kb, both halves of
//     D = Σ_j q[j] · code[j] − zp · Σ_j q[j]
// are exact integers (int32 lanes; a block is summed in parts of at most 16384 inputs, so no
// sum can reach 2^31 whatever G), and they meet in float32:
//     y[n] = b[n] + Σ_kb cs[kb] · Σ_j q[j] · code[j] − Σ_kb cs[kb] · zp[kb] · Σ_j q[j],
// cs[kb] = scales[n, kb] · sx[kb]; the first sum 8 lanes at a time, the second (the zero
// points' term) 8 blocks at a time alongside it.
//   AVX2: 32 bytes of codes per step (128, 64 or 32 weights). The row of x is stored permuted,
//   so that shift-and-mask unpacking of a step lines up with 32 contiguous int8 activations per
//   bit plane (2 bits: plane s holds elements 4i + s of the step). _mm256_maddubs_epi16 never
//   saturates here: 2 bits, planes v & 3, v & 12, (v >> 4) & 3, (v >> 4) & 12 (two of them 4x
//   the code: the sum is 4 Σ q·code, and the 1/4 goes exactly into the float scale), pairs
//   <= 12 * 127 * 2, the four planes' sum <= 12192; 4 bits, v & 15 and (v >> 4) & 15, pairs
//   <= 3810; 8 bits, where codes 0..255 times int8 would saturate (255 * 127 * 2 > 32767), the
//   code − 128 as int8 and the sign trick, maddubs(|c'|, sign(q, c')), pairs <= 128 * 127 * 2
//   = 32512, the zero point becoming zp − 128. Then _mm256_madd_epi16 to int32.
//   AVX-VNNI or AVX512-VNNI (chosen at run time, the first the CPU has; inline asm, so the
//   library's -mavx2 flags suffice): vpdpbusd (u8 · i8 summed in int32, no int16 stage,
//   nothing to saturate) on the unpacked codes, VEX-encoded, or EVEX-encoded on the same ymm
//   registers for CPUs with AVX512_VNNI + VL and no AVX-VNNI (Cascade Lake, Ice Lake, Zen 4);
//   8-bit codes go in as they are. edgekit_qlinear_set_vnni picks a path (the tests run all
//   three where the CPU has them).
//   Four output rows at a time share each activation load; their per-row constants (cs, the
//   zero points' term, 2-bit zero points by table) are computed 8 blocks at a time between
//   the dot products, and the next group's rows are prefetched.
//   NEON (__ARM_FEATURE_DOTPROD): 16 bytes per step, vdotq_s32, one row at a time; the
//   activations quantized 16 at a time (vrndnq, saturating narrows). Built for aarch64 and run
//   under qemu-aarch64 by tests/test_kernels_arm64.py (make test-arm64): the battery's cases
//   within its tolerance, the exact cases bit for bit equal to the exact answer and to x86.
//   Scalar (EDGEKIT_SIMD=off, other CPUs): the same integer sums on x in natural order.
// Output rows go over edgekit's pool in groups of 4; a row's arithmetic does not depend on the
// split, so the result is identical at any thread count.
//
// Measured on the development machine (Xeon, Sapphire Rapids class, 2 cores, idle;
// `python benchmarks/quant_gemv.py --threads 1 --rounds 9`, 2026-12-06): a 2048 x 2048 GEMV,
// batch 1, 1 thread, ms per GEMV in an ExecuTorch program of 64 chained calls (weights
// constants of the program), the median of 9 runs; GB/s of weight bytes (codes, scales and
// zero points). ORT 1.31.1 MatMulNBits, accuracy_level 4, 1 intra-op thread, on the same bytes
// (prepacked by ORT at load).
//   kernel                         bits/w   ms       GB/s
//   edgekit dense, fp32            32       0.480    35.0
//   qlinear 2-bit G=128, AVX-VNNI  2.27     0.0470   25.3
//   qlinear 2-bit G=128, AVX512-VNNI        0.0471   25.2
//   qlinear 2-bit G=128, AVX2               0.0589   20.2
//   ORT 2-bit G=128                         0.0466   25.5
//   qlinear 4-bit G=32, AVX-VNNI   5.12     0.0913   29.4
//   qlinear 4-bit G=32, AVX512-VNNI         0.0915   29.4
//   qlinear 4-bit G=32, AVX2                0.1003   26.8
//   ORT 4-bit G=32                          0.0846   31.8
//   qlinear 8-bit G=128, AVX-VNNI  8.31     0.120    36.2
//   qlinear 8-bit G=128, AVX512-VNNI        0.120    36.3
//   qlinear 8-bit G=128, AVX2               0.115    37.9
//   ORT 8-bit G=128                         0.127    34.4
// 2 bits fit the 2 MB L2 and are compute-bound: per 32 bytes of codes and output row, AVX2
// spends 16 vector uops (9 of them on ports 0/1), AVX-VNNI 13 (9): the AVX2 path cannot go
// much below ~5 cycles per 128 weights. 4 and 8 bits stream from L3 (a software prefetch of the
// next group of rows helps 4 bits by ~15%); 8 bits run at the read bandwidth, as ORT does.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#define EDGEKIT_QLINEAR_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#include <arm_neon.h>
#define EDGEKIT_QLINEAR_NEON 1
#endif

#if defined(__GNUC__)
#define EDGEKIT_QLINEAR_INLINE inline __attribute__((always_inline))
#else
#define EDGEKIT_QLINEAR_INLINE inline
#endif

namespace edgekit::kernels {
namespace {

// Bytes of codes per SIMD step; the activations are permuted within steps of this many code
// bytes. 0: natural order (the scalar path).
#if defined(EDGEKIT_QLINEAR_AVX2)
constexpr int64_t kChunk = 32;
#elif defined(EDGEKIT_QLINEAR_NEON)
constexpr int64_t kChunk = 16;
#else
constexpr int64_t kChunk = 0;
#endif

constexpr int64_t kMaxPart = 16384;             // inputs per exact int32 part of a block
constexpr int kRows = 4;                        // output rows per group
constexpr int64_t kMinMacsPerThread = 1 << 18;  // below this a second thread costs more than it saves
// A row's fixed work (its constants, the horizontal sums, the store), counted as this many
// multiply-adds when splitting: Mamba-130m's dt_proj (1536 rows of 48, int8) is 74k MACs but
// took 15.7 us a call on one thread and 8.9 us on two (ternary Mamba-130m .pte, etdump medians):
// ~10 ns a row, the time of ~900 multiply-adds in a long row (a 2048-wide row: 11 ps a MAC).
constexpr int64_t kRowCostMacs = 1024;

struct Plan {
  int64_t M, K, N, KB, G, bits, blob, ZB;
  int64_t per;        // codes per byte, 8 / bits
  int64_t part;       // inputs per part: min(G, kMaxPart)
  int64_t fpart;      // parts per block
  int64_t KP;         // parts per row, KB * fpart
  int64_t pblob;      // bytes of codes per part
  int64_t row_bytes;  // bytes of codes per row, KB * BLOB
  int64_t qstride;    // bytes of quantized activations per row
  int64_t kppad;      // KP rounded up to 8, plus 8: room for 8-wide loads past the end
};

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// How a path's integer sum S relates to Σ q · code: S = zmul · Σ q · (code − zoff), and
// unit = 1 / zmul goes into the float scale.
struct Arith {
  float unit;
  int zmul;
  int zoff;
};

#if defined(EDGEKIT_QLINEAR_AVX2)
// The int8 dot product in use: -1 until first asked, then kAvx2 (maddubs), kAvxVnni (VEX
// vpdpbusd, Alder Lake / Sapphire Rapids and later) or kAvx512Vnni (the same instruction
// EVEX-encoded on 256-bit registers, AVX512_VNNI + AVX512VL: Cascade Lake, Ice Lake, Zen 4,
// which lack the VEX form). edgekit_qlinear_set_vnni picks one.
enum Vnni : int { kAvx2 = 0, kAvxVnni = 1, kAvx512Vnni = 2 };
std::atomic<int> g_vnni{-1};

bool cpu_has(int which) {
#if (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || (defined(__clang__) && __clang_major__ >= 12)
  __builtin_cpu_init();
  if (which == kAvxVnni) return __builtin_cpu_supports("avxvnni");
  if (which == kAvx512Vnni) return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
  return true;
#else
  return which == kAvx2;
#endif
}

int best_vnni() { return cpu_has(kAvxVnni) ? kAvxVnni : cpu_has(kAvx512Vnni) ? kAvx512Vnni : kAvx2; }

int use_vnni() {
  int v = g_vnni.load(std::memory_order_relaxed);
  if (v < 0) {
    v = best_vnni();
    g_vnni.store(v, std::memory_order_relaxed);
  }
  return v;
}
#endif

inline Arith arith_for(int64_t bits, bool vnni) {
  (void)vnni;
#if defined(EDGEKIT_QLINEAR_AVX2)
  if (vnni) return {1.f, 1, 0};
  if (bits == 2) return {0.25f, 4, 0};
  if (bits == 8) return {1.f, 1, 128};
  return {1.f, 1, 0};
#elif defined(EDGEKIT_QLINEAR_NEON)
  return {1.f, 1, bits == 8 ? 128 : 0};
#else
  (void)bits;
  return {1.f, 1, 0};
#endif
}

// ------------------------------------------------------------ activation quantization --

// max|x| over n floats (n a multiple of 8), and whether any is NaN.
inline float block_absmax(const float* x, int64_t n, bool& nan) {
#if defined(EDGEKIT_QLINEAR_AVX2)
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  nan = _mm256_movemask_ps(bad) != 0;
  return _mm_cvtss_f32(h);
#elif defined(EDGEKIT_QLINEAR_NEON)
  float32x4_t m = vdupq_n_f32(0.f);
  uint32x4_t bad = vdupq_n_u32(0);
  for (int64_t i = 0; i < n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    m = vmaxq_f32(m, vabsq_f32(v));
    bad = vorrq_u32(bad, vmvnq_u32(vceqq_f32(v, v)));     // NaN != NaN
  }
  nan = vmaxvq_u32(bad) != 0;
  return vmaxvq_f32(m);
#else
  float m = 0.f;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;
    bad |= std::isnan(a);
  }
  nan = bad;
  return m;
#endif
}

// q[i] = clamp(round-half-even(x[i] * inv), -127, 127) for n floats (n a multiple of 16);
// returns Σ q.
inline int32_t quantize_span(const float* x, int64_t n, float inv, int8_t* q) {
#if defined(EDGEKIT_QLINEAR_AVX2)
  const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  __m256i sum = _mm256_setzero_si256();
  for (int64_t i = 0; i < n; i += 16) {
    const int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256 a = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), r);
    __m256 b = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv), r);
    const __m256i ia = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(a, lo), hi));
    const __m256i ib = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(b, lo), hi));
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(ia, ib));
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(ia, ib), 0xD8);  // 16 int16 in order
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
#elif defined(EDGEKIT_QLINEAR_NEON)
  const float32x4_t vinv = vdupq_n_f32(inv), lo = vdupq_n_f32(-127.f), hi = vdupq_n_f32(127.f);
  int32x4_t sum = vdupq_n_s32(0);
  for (int64_t i = 0; i < n; i += 16) {
    int32x4_t r[4];
    for (int k = 0; k < 4; ++k) {   // round half to even, then clamp (as the AVX2 path)
      r[k] = vcvtq_s32_f32(vminq_f32(vmaxq_f32(vrndnq_f32(vmulq_f32(vld1q_f32(x + i + 4 * k), vinv)), lo), hi));
    }
    sum = vaddq_s32(sum, vaddq_s32(vaddq_s32(r[0], r[1]), vaddq_s32(r[2], r[3])));
    const int16x8_t a = vcombine_s16(vqmovn_s32(r[0]), vqmovn_s32(r[1]));
    const int16x8_t b = vcombine_s16(vqmovn_s32(r[2]), vqmovn_s32(r[3]));
    vst1q_s8(q + i, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
  }
  return vaddvq_s32(sum);
#else
  int32_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float r = std::min(std::max(std::nearbyint(x[i] * inv), -127.f), 127.f);
    q[i] = (int8_t)r;
    sum += q[i];
  }
  return sum;
#endif
}

// One row of x -> q (K int8, natural order), sx (per part: its block's amax / 127) and qs
// (per part: Σ q), as edgekit/quant/schemes.py `quantize_activations` computes it.
void quantize_row(const float* x, const Plan& p, int8_t* q, float* sx, int32_t* qs) {
  for (int64_t kb = 0; kb < p.KB; ++kb) {
    const float* xb = x + kb * p.G;
    int8_t* qb = q + kb * p.G;
    bool nan = false;
    const float amax = block_absmax(xb, p.G, nan);
    if (nan || amax == std::numeric_limits<float>::infinity()) {
      // the reference's block is NaN (x * 0 with x = Inf, or q * Inf): make every output NaN
      std::memset(qb, 0, (size_t)p.G);
      for (int64_t f = 0; f < p.fpart; ++f) {
        sx[kb * p.fpart + f] = std::numeric_limits<float>::quiet_NaN();
        qs[kb * p.fpart + f] = 0;
      }
      continue;
    }
    // torch: where(amax > 0, 127 / amax.clamp_min(1e-30), 0), and `127 / t` is t.reciprocal() * 127
    const float inv = amax > 0.f ? (1.f / std::max(amax, 1e-30f)) * 127.f : 0.f;
    const float s = amax / 127.f;
    for (int64_t f = 0; f < p.fpart; ++f) {
      sx[kb * p.fpart + f] = s;
      qs[kb * p.fpart + f] = quantize_span(xb + f * p.part, p.part, inv, qb + f * p.part);
    }
  }
}

// The activations of a row in the SIMD steps' order: for the code bytes c*kChunk + i of step
// c, plane s (bits s*bits of each byte) lines up with qp[c*kChunk*per + s*kChunk + i] =
// q[(c*kChunk + i)*per + s]; a last partial step is zero-padded.
void permute_row(const int8_t* q, const Plan& p, int8_t* qp) {
  if constexpr (kChunk > 0) {
  const int64_t per = p.per, step = kChunk * per;
  int64_t c = 0;
#if defined(EDGEKIT_QLINEAR_AVX2)
  const int64_t full = p.row_bytes / kChunk;
  if (per == 1) {
    std::memcpy(qp, q, (size_t)(full * step));
    c = full;
  } else if (per == 2) {
    // per 128-bit lane: even bytes, then odd bytes; then the 4 quadwords of a plane in order
    const __m256i sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    for (; c < full; ++c) {
      const __m256i a = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(q + c * step)), sh);
      const __m256i b = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(q + c * step + 32)), sh);
      _mm256_storeu_si256((__m256i*)(qp + c * step), _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(a, b), 0xD8));
      _mm256_storeu_si256((__m256i*)(qp + c * step + 32),
                          _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(a, b), 0xD8));
    }
  } else {
    // per == 4: per 128-bit lane, the 4 bytes of each plane as a dword; then a 8x4 dword transpose
    const __m256i sh = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (; c < full; ++c) {
      const int8_t* s = q + c * step;
      const __m256i a = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)s), sh);
      const __m256i b = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(s + 32)), sh);
      const __m256i cc = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(s + 64)), sh);
      const __m256i d = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(s + 96)), sh);
      const __m256i ab0 = _mm256_unpacklo_epi32(a, b), ab1 = _mm256_unpackhi_epi32(a, b);
      const __m256i cd0 = _mm256_unpacklo_epi32(cc, d), cd1 = _mm256_unpackhi_epi32(cc, d);
      int8_t* o = qp + c * step;
      _mm256_storeu_si256((__m256i*)o, _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi64(ab0, cd0), order));
      _mm256_storeu_si256((__m256i*)(o + 32), _mm256_permutevar8x32_epi32(_mm256_unpackhi_epi64(ab0, cd0), order));
      _mm256_storeu_si256((__m256i*)(o + 64), _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi64(ab1, cd1), order));
      _mm256_storeu_si256((__m256i*)(o + 96), _mm256_permutevar8x32_epi32(_mm256_unpackhi_epi64(ab1, cd1), order));
    }
  }
#endif
  const int64_t chunks = (p.row_bytes + kChunk - 1) / kChunk;
  for (; c < chunks; ++c) {
    int8_t* o = qp + c * step;
    std::memset(o, 0, (size_t)step);
    const int64_t n = std::min<int64_t>(kChunk, p.row_bytes - c * kChunk);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < per; ++s) o[s * kChunk + i] = q[(c * kChunk + i) * per + s];
    }
  }
  } else {
    (void)q, (void)p, (void)qp;
  }
}

// ------------------------------------------------------------------------ the row sums --
// rows<D, Big, R>(in, p, zoff, sums): for R output rows against one row of x,
//   sums[r] = Σ_k cs[r][k] · S[r][k] − Σ_k cs[r][k] · (zp[r][k] − zoff) · wz[k],
// cs[r][k] = scales[r][block(k)] · sxu[k], over the KP parts k; S the part's exact integer sum
// (Arith: zmul · Σ q · (code − zoff)); sxu = sx · unit and wz = zmul · Σ q come with the row of x.
// The per-row constants are computed 8 parts at a time, between the dot products that use them.
struct RowsIn {
  const uint8_t* const* w;   // [R] the rows' codes
  const float* const* sc;    // [R] the rows' scales
  const uint8_t* const* zp;  // [R] the rows' zero points
  const uint8_t* zp_end;     // the end of the zero points tensor
  const int8_t* qp;          // the row of x, quantized (and permuted)
  const float* sxu;          // [KP] sx * unit
  const float* wz;           // [KP] zmul * Σ q
};

inline int zero_point(const uint8_t* zp, int64_t kb, int64_t bits) {
  const int64_t bit = kb * bits;
  return (zp[bit / 8] >> (bit % 8)) & ((1 << bits) - 1);
}

#if defined(EDGEKIT_QLINEAR_AVX2)
// A 32-byte step of codes against its activations: `load` the step's activation planes, then
// for each row, acc + the int32 sums, lane j over bytes 4j..4j+3 of the step.
template <int Bits>
struct Dot;

template <>
struct Dot<2> {  // 4 Σ q · code (maddubs; the mask trick of the header)
  static constexpr int kBits = 2;
  __m256i q0, q1, q2, q3;
  const __m256i m3 = _mm256_set1_epi8(3), m12 = _mm256_set1_epi8(12), ones = _mm256_set1_epi16(1);
  EDGEKIT_QLINEAR_INLINE void load(const int8_t* q) {
    q0 = _mm256_loadu_si256((const __m256i*)q);
    q1 = _mm256_loadu_si256((const __m256i*)(q + 32));
    q2 = _mm256_loadu_si256((const __m256i*)(q + 64));
    q3 = _mm256_loadu_si256((const __m256i*)(q + 96));
  }
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    const __m256i v = _mm256_loadu_si256((const __m256i*)w);
    const __m256i h = _mm256_srli_epi16(v, 4);
    const __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(v, m3), q0);   // code0
    const __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(v, m12), q1);  // 4 code1
    const __m256i p2 = _mm256_maddubs_epi16(_mm256_and_si256(h, m3), q2);   // code2
    const __m256i p3 = _mm256_maddubs_epi16(_mm256_and_si256(h, m12), q3);  // 4 code3
    const __m256i s = _mm256_add_epi16(_mm256_slli_epi16(_mm256_add_epi16(p0, p2), 2), _mm256_add_epi16(p1, p3));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, ones));
  }
};

template <>
struct Dot<4> {  // Σ q · code
  static constexpr int kBits = 4;
  __m256i q0, q1;
  const __m256i m15 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  EDGEKIT_QLINEAR_INLINE void load(const int8_t* q) {
    q0 = _mm256_loadu_si256((const __m256i*)q);
    q1 = _mm256_loadu_si256((const __m256i*)(q + 32));
  }
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    const __m256i v = _mm256_loadu_si256((const __m256i*)w);
    const __m256i p0 = _mm256_maddubs_epi16(_mm256_and_si256(v, m15), q0);
    const __m256i p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m15), q1);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones));
  }
};

template <>
struct Dot<8> {  // Σ q · (code − 128)
  static constexpr int kBits = 8;
  __m256i q0;
  const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
  EDGEKIT_QLINEAR_INLINE void load(const int8_t* q) { q0 = _mm256_loadu_si256((const __m256i*)q); }
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    const __m256i c = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)w), flip);  // code − 128, int8
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(q0, c)),
                                                   ones));
  }
};

// acc + Σ_4 a[u8] · b[i8] per int32 lane, in int32: vpdpbusd, VEX-encoded (AVX-VNNI) or
// EVEX-encoded (AVX512_VNNI + VL) on the same ymm registers; the caller checks the CPU. Inline
// asm, so the library's -mavx2 flags suffice.
template <bool Evex>
EDGEKIT_QLINEAR_INLINE __m256i dpbusd(__m256i acc, __m256i a, __m256i b) {
  if constexpr (Evex) {
    asm("%{evex%} vpdpbusd %[b], %[a], %[acc]" : [acc] "+x"(acc) : [a] "x"(a), [b] "x"(b));
  } else {
    asm("%{vex%} vpdpbusd %[b], %[a], %[acc]" : [acc] "+x"(acc) : [a] "x"(a), [b] "x"(b));
  }
  return acc;
}

template <int Bits, bool Evex>
struct VnniDotT;

template <bool Evex>
struct VnniDotT<2, Evex> : Dot<2> {  // Σ q · code
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    const __m256i v = _mm256_loadu_si256((const __m256i*)w);
    acc = dpbusd<Evex>(acc, _mm256_and_si256(v, m3), q0);
    acc = dpbusd<Evex>(acc, _mm256_and_si256(_mm256_srli_epi16(v, 2), m3), q1);
    acc = dpbusd<Evex>(acc, _mm256_and_si256(_mm256_srli_epi16(v, 4), m3), q2);
    return dpbusd<Evex>(acc, _mm256_and_si256(_mm256_srli_epi16(v, 6), m3), q3);
  }
};

template <bool Evex>
struct VnniDotT<4, Evex> : Dot<4> {  // Σ q · code
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    const __m256i v = _mm256_loadu_si256((const __m256i*)w);
    acc = dpbusd<Evex>(acc, _mm256_and_si256(v, m15), q0);
    return dpbusd<Evex>(acc, _mm256_and_si256(_mm256_srli_epi16(v, 4), m15), q1);
  }
};

template <bool Evex>
struct VnniDotT<8, Evex> : Dot<8> {  // Σ q · code, the codes as they are
  EDGEKIT_QLINEAR_INLINE __m256i operator()(const uint8_t* w, __m256i acc) const {
    return dpbusd<Evex>(acc, _mm256_loadu_si256((const __m256i*)w), q0);
  }
};

template <int Bits>
using VnniDot = VnniDotT<Bits, false>;
template <int Bits>
using Avx512VnniDot = VnniDotT<Bits, true>;

// 2-bit zero points: byte -> its 4 values as floats (a table instead of variable shifts, which
// would compete with the dot products for ports 0 and 1).
struct ZeroPoints2 {
  float v[256][4];
  constexpr ZeroPoints2() : v() {
    for (int b = 0; b < 256; ++b) {
      for (int i = 0; i < 4; ++i) v[b][i] = (float)((b >> (2 * i)) & 3);
    }
  }
};
constexpr ZeroPoints2 kZeroPoints2{};

// The zero points of parts k0..k0+7 as floats (k0 a multiple of 8, the 8 within the row).
template <int Bits>
EDGEKIT_QLINEAR_INLINE __m256 zero_points8(const uint8_t* zp, int64_t k0) {
  if constexpr (Bits == 2) {
    const float* lo = kZeroPoints2.v[zp[k0 / 4]];
    const float* hi = kZeroPoints2.v[zp[k0 / 4 + 1]];
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(lo)), _mm_loadu_ps(hi), 1);
  } else if constexpr (Bits == 4) {
    uint32_t v;
    std::memcpy(&v, zp + k0 / 2, 4);
    const __m256i z = _mm256_srlv_epi32(_mm256_set1_epi32((int)v), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_cvtepi32_ps(_mm256_and_si256(z, _mm256_set1_epi32(15)));
  } else {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(zp + k0))));
  }
}

// The constants of parts k0..k0+7 (fewer at the row's end: zero scales past it): cs[r][i] for
// i < 8, and the zero points' term added to c8[r] (8 lanes) or corr[r].
// A row's last parts, k0..KP-1 (fewer than 8), take the same 8-lane path with the lanes past
// the row masked: the scales by a masked load and a zero mask on cs (sxu and wz are padded
// buffers, so their loads stay inside; their padding may hold a NaN, which the mask clears),
// the zero points from a copy of the row's last bytes. Before this, such rows went
// through the scalar loop below, which cost as much as the dot products of a 768-wide ternary
// row (K 768 at G 128 is 6 parts: every row of Mamba's in_proj and of Hawk's layers).
template <int Bits, int R>
EDGEKIT_QLINEAR_INLINE void constants8(const RowsIn& in, const Plan& p, int zoff, int64_t k0, float (*cs)[16],
                                       __m256* c8, float* corr) {
  if (p.fpart == 1) {
    const int64_t n = std::min<int64_t>(8, p.KP - k0);
    const __m256 sx8 = _mm256_loadu_ps(in.sxu + k0), wz8 = _mm256_loadu_ps(in.wz + k0);
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int r = 0; r < R; ++r) {
      __m256 s;
      __m256 z;
      if (n == 8) {
        s = _mm256_mul_ps(_mm256_loadu_ps(in.sc[r] + k0), sx8);
        z = zero_points8<Bits>(in.zp[r], k0);
      } else {
        s = _mm256_and_ps(_mm256_mul_ps(_mm256_maskload_ps(in.sc[r] + k0, lanes), sx8), _mm256_castsi256_ps(lanes));
        // 8 bytes from the row's zero points on (a fixed-size copy: one load), or only the row's
        // own where that would pass the tensor's end; lanes past the row are cleared by cs = 0
        uint8_t zcopy[8] = {};
        const uint8_t* zsrc = in.zp[r] + k0 * Bits / 8;
        if (in.zp_end - zsrc >= 8) {
          std::memcpy(zcopy, zsrc, 8);
        } else {
          for (int64_t i = 0; i < p.ZB - k0 * Bits / 8; ++i) zcopy[i] = zsrc[i];
        }
        z = zero_points8<Bits>(zcopy, 0);
      }
      _mm256_store_ps(cs[r], s);
      if (zoff != 0) z = _mm256_sub_ps(z, _mm256_set1_ps((float)zoff));
      c8[r] = _mm256_fmadd_ps(_mm256_mul_ps(s, z), wz8, c8[r]);
    }
    return;
  }
  for (int r = 0; r < R; ++r) {
    for (int64_t i = 0; i < 8; ++i) {
      const int64_t k = k0 + i, kb = k / p.fpart;
      if (k >= p.KP) {
        cs[r][i] = 0.f;
        continue;
      }
      cs[r][i] = in.sc[r][kb] * in.sxu[k];
      corr[r] += cs[r][i] * (float)(zero_point(in.zp[r], kb, Bits) - zoff) * in.wz[k];
    }
  }
}

// sums[r] = Σ lanes of (acc[r] − c8[r]) − corr[r]; four rows in one horizontal-add tree.
template <int R>
EDGEKIT_QLINEAR_INLINE void finish(const __m256* acc, const __m256* c8, const float* corr, float* sums) {
  if constexpr (R == 4) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(_mm256_sub_ps(acc[0], c8[0]), _mm256_sub_ps(acc[1], c8[1])),
                                    _mm256_hadd_ps(_mm256_sub_ps(acc[2], c8[2]), _mm256_sub_ps(acc[3], c8[3])));
    _mm_storeu_ps(sums, _mm_sub_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)),
                                   _mm_loadu_ps(corr)));
  } else {
    for (int r = 0; r < R; ++r) sums[r] = simd::hsum8({_mm256_sub_ps(acc[r], c8[r])}) - corr[r];
  }
}

// Parts of >= 32 bytes: whole steps per part, one scale per part.
template <class D, int R>
EDGEKIT_QLINEAR_INLINE void rows_big(const RowsIn& in, const Plan& p, int zoff, float* sums) {
  constexpr int64_t per = 8 / D::kBits;
  const int64_t steps = p.pblob / 32, ahead = R * p.row_bytes;  // prefetch: the next group's rows
  D dot;
  __m256 acc[R], c8[R];
  float corr[R];
  alignas(32) float cs[R][16];
  for (int r = 0; r < R; ++r) acc[r] = c8[r] = _mm256_setzero_ps(), corr[r] = 0.f;
  for (int64_t k0 = 0; k0 < p.KP; k0 += 8) {
    constants8<D::kBits, R>(in, p, zoff, k0, cs, c8, corr);
    const int64_t k1 = std::min(k0 + 8, p.KP);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c0 = k * steps;
      __m256i d[R];
      if ((c0 & 1) == 0) {
        for (int r = 0; r < R; ++r) _mm_prefetch((const char*)(in.w[r] + c0 * 32 + ahead), _MM_HINT_T0);
      }
      dot.load(in.qp + c0 * 32 * per);
      for (int r = 0; r < R; ++r) d[r] = dot(in.w[r] + c0 * 32, _mm256_setzero_si256());
      for (int64_t c = c0 + 1; c < c0 + steps; ++c) {
        if ((c & 1) == 0) {
          for (int r = 0; r < R; ++r) _mm_prefetch((const char*)(in.w[r] + c * 32 + ahead), _MM_HINT_T0);
        }
        dot.load(in.qp + c * 32 * per);
        for (int r = 0; r < R; ++r) d[r] = dot(in.w[r] + c * 32, d[r]);
      }
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r]), _mm256_broadcast_ss(&cs[r][k - k0]), acc[r]);
      }
    }
  }
  finish<R>(acc, c8, corr, sums);
}

// Parts of 4, 8 or 16 bytes: a step holds ppc = 32 / pblob parts, lane j part 4j / pblob's.
template <class D, int R>
EDGEKIT_QLINEAR_INLINE void rows_small(const RowsIn& in, const Plan& p, int zoff, float* sums) {
  constexpr int64_t per = 8 / D::kBits;
  const int64_t ppc = 32 / p.pblob, ahead = R * p.row_bytes;
  const int64_t steps = (p.row_bytes + 31) / 32, full = p.row_bytes / 32;
  alignas(32) int32_t idx_a[8];
  for (int j = 0; j < 8; ++j) idx_a[j] = (4 * j) / (int)p.pblob;
  const __m256i idx = _mm256_load_si256((const __m256i*)idx_a);
  // a last partial step comes from zero-padded copies: zero codes meet zero activations (and
  // zero scales) past the row's end
  // (a masked load: the tail is whole parts of 4, 8 or 16 bytes; a memcpy of a run-time size
  // here was a library call per row, a third of a 48-wide layer's time)
  alignas(32) uint8_t tail[R][32];
  if (full < steps) {
    const __m256i words = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((p.row_bytes - full * 32) / 4)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int r = 0; r < R; ++r) {
      _mm256_store_si256((__m256i*)tail[r], _mm256_maskload_epi32((const int*)(in.w[r] + full * 32), words));
    }
  }
  D dot;
  __m256 acc[R], c8[R];
  float corr[R];
  alignas(32) float cs[R][16];  // [8, 16) stays zero: the last step of a group loads past 8
  for (int r = 0; r < R; ++r) {
    acc[r] = c8[r] = _mm256_setzero_ps(), corr[r] = 0.f;
    _mm256_store_ps(cs[r] + 8, _mm256_setzero_ps());
  }
  int64_t c = 0;
  for (int64_t k0 = 0; k0 < p.KP; k0 += 8) {
    constants8<D::kBits, R>(in, p, zoff, k0, cs, c8, corr);
    for (int64_t i = 0; i < 8 && c < steps; i += ppc, ++c) {
      const uint8_t* wc[R];
      for (int r = 0; r < R; ++r) wc[r] = c < full ? in.w[r] + c * 32 : tail[r];
      if ((c & 1) == 0) {
        for (int r = 0; r < R; ++r) _mm_prefetch((const char*)(in.w[r] + c * 32 + ahead), _MM_HINT_T0);
      }
      dot.load(in.qp + c * 32 * per);
      for (int r = 0; r < R; ++r) {
        const __m256 s = _mm256_permutevar8x32_ps(_mm256_loadu_ps(cs[r] + i), idx);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot(wc[r], _mm256_setzero_si256())), s, acc[r]);
      }
    }
  }
  finish<R>(acc, c8, corr, sums);
}

template <class D, bool Big, int R>
EDGEKIT_QLINEAR_INLINE void rows(const RowsIn& in, const Plan& p, int zoff, float* sums) {
  if constexpr (Big) {
    rows_big<D, R>(in, p, zoff, sums);
  } else {
    rows_small<D, R>(in, p, zoff, sums);
  }
}

constexpr int kGroupRows = kRows;

#elif defined(EDGEKIT_QLINEAR_NEON)
// 16-byte steps, vdotq_s32 (lane j = bytes
// 4j..4j+3 of the step, as on AVX2); one output row at a time; 8-bit codes as code − 128.
template <int Bits>
struct Dot {
  static constexpr int kBits = Bits;
};

template <int Bits>
inline int32x4_t dot16(const uint8_t* w, const int8_t* q, int32x4_t acc) {
  const uint8x16_t v = vld1q_u8(w);
  if (Bits == 2) {
    const uint8x16_t m = vdupq_n_u8(3);
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vandq_u8(v, m)), vld1q_s8(q));
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m)), vld1q_s8(q + 16));
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m)), vld1q_s8(q + 32));
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), vld1q_s8(q + 48));
  } else if (Bits == 4) {
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), vld1q_s8(q));
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vld1q_s8(q + 16));
  } else {
    acc = vdotq_s32(acc, vreinterpretq_s8_u8(veorq_u8(v, vdupq_n_u8(0x80))), vld1q_s8(q));
  }
  return acc;
}

template <class D, bool Big, int R>
void rows(const RowsIn& in, const Plan& p, int zoff, float* sums) {
  static_assert(R == 1, "the NEON path runs one row at a time");
  constexpr int Bits = D::kBits;
  constexpr int64_t per = 8 / Bits;
  const uint8_t* w = in.w[0];
  float acc = 0.f, corr = 0.f;
  auto scale = [&](int64_t k) {  // cs of part k; adds its zero points' term
    const int64_t kb = k / p.fpart;
    const float c = in.sc[0][kb] * in.sxu[k];
    corr += c * (float)(zero_point(in.zp[0], kb, Bits) - zoff) * in.wz[k];
    return c;
  };
  if (p.pblob >= 16) {
    const int64_t steps = p.pblob / 16;
    for (int64_t k = 0; k < p.KP; ++k) {
      int32x4_t d = vdupq_n_s32(0);
      for (int64_t c = k * steps; c < (k + 1) * steps; ++c) d = dot16<Bits>(w + c * 16, in.qp + c * 16 * per, d);
      acc += scale(k) * (float)vaddvq_s32(d);
    }
  } else {
    const int64_t steps = (p.row_bytes + 15) / 16, ppc = 16 / p.pblob;
    for (int64_t c = 0; c < steps; ++c) {
      alignas(16) uint8_t tail[16] = {};
      const int64_t n = std::min<int64_t>(16, p.row_bytes - c * 16);
      const uint8_t* wc = w + c * 16;
      if (n < 16) {
        std::memcpy(tail, wc, (size_t)n);
        wc = tail;
      }
      int32_t lanes[4];
      vst1q_s32(lanes, dot16<Bits>(wc, in.qp + c * 16 * per, vdupq_n_s32(0)));
      int32_t part[4] = {0, 0, 0, 0};
      for (int j = 0; j < 4; ++j) part[(4 * j) / p.pblob] += lanes[j];
      for (int64_t i = 0; i < ppc && c * ppc + i < p.KP; ++i) acc += scale(c * ppc + i) * (float)part[i];
    }
  }
  sums[0] = acc - corr;
}

constexpr int kGroupRows = 1;

#else
// Scalar: x in natural order, one output row at a time.
template <int Bits>
struct Dot {
  static constexpr int kBits = Bits;
};

template <int Bits>
inline int32_t part_dot(const uint8_t* w, const int8_t* q, int64_t bytes) {
  constexpr int per = 8 / Bits, mask = (1 << Bits) - 1;
  int32_t acc = 0;
  for (int64_t i = 0; i < bytes; ++i) {
    const int v = w[i];
    for (int s = 0; s < per; ++s) acc += q[i * per + s] * ((v >> (s * Bits)) & mask);
  }
  return acc;
}

template <class D, bool Big, int R>
void rows(const RowsIn& in, const Plan& p, int zoff, float* sums) {
  static_assert(R == 1, "the scalar path runs one row at a time");
  constexpr int Bits = D::kBits;
  float acc = 0.f, corr = 0.f;
  for (int64_t k = 0; k < p.KP; ++k) {
    const int64_t kb = k / p.fpart;
    const float c = in.sc[0][kb] * in.sxu[k];
    acc += c * (float)part_dot<Bits>(in.w[0] + k * p.pblob, in.qp + k * p.part, p.pblob);
    corr += c * (float)(zero_point(in.zp[0], kb, Bits) - zoff) * in.wz[k];
  }
  sums[0] = acc - corr;
}

constexpr int kGroupRows = 1;
#endif

// ------------------------------------------------------------------------------ driver --

struct Job {
  Plan p;
  int zoff;
  const int8_t* q;      // M rows of qstride bytes
  const float* sxu;     // M rows of kppad: sx * unit
  const float* wz;      // M rows of kppad: zmul * Σ q
  const uint8_t* w;
  const float* scales;
  const uint8_t* zp;
  const float* b;
  float* y;
};

// Output rows [n0, n1) (group-aligned, but for the end at N) for every row of x.
template <class D, bool Big>
void row_range(const Job& j, int64_t n0, int64_t n1) {
  const Plan& p = j.p;
  const float* sc[kRows];
  const uint8_t* w[kRows];
  const uint8_t* zp[kRows];
  for (int64_t n = n0; n < n1;) {
    const int rows_here = n1 - n >= kGroupRows ? kGroupRows : 1;
    for (int r = 0; r < rows_here; ++r) {
      w[r] = j.w + (n + r) * p.row_bytes, sc[r] = j.scales + (n + r) * p.KB, zp[r] = j.zp + (n + r) * p.ZB;
    }
    for (int64_t m = 0; m < p.M; ++m) {
      const RowsIn in{w, sc, zp, j.zp + p.N * p.ZB, j.q + m * p.qstride, j.sxu + m * p.kppad, j.wz + m * p.kppad};
      float sums[kRows];
      if (rows_here == kGroupRows) {
        rows<D, Big, kGroupRows>(in, p, j.zoff, sums);
      } else {
        rows<D, Big, 1>(in, p, j.zoff, sums);
      }
      for (int r = 0; r < rows_here; ++r) j.y[m * p.N + n + r] = sums[r] + j.b[n + r];
    }
    n += rows_here;
  }
}

using RangeFn = void (*)(const Job&, int64_t, int64_t);

template <template <int> class D>
RangeFn pick_range(int64_t bits, bool big) {
  if (bits == 2) return big ? row_range<D<2>, true> : row_range<D<2>, false>;
  if (bits == 4) return big ? row_range<D<4>, true> : row_range<D<4>, false>;
  return big ? row_range<D<8>, true> : row_range<D<8>, false>;
}

// The layout's checks (edgekit/ops/qlinear.py `check`; the spec's own are generated): false,
// with the context failed, when the blocks, the codes' width or the zero points disagree.
bool qlinear_layout_ok(KernelRuntimeContext& ctx, const checks::qlinear_dims& d) {
  const int64_t K = d.K, KB = d.KB, blob = d.BLOB;
  const int64_t G = KB > 0 ? K / KB : 0;
  ET_KERNEL_CHECK_MSG(ctx, KB > 0 && G * KB == K && G >= 16 && (G & (G - 1)) == 0, InvalidArgument, false,
                      "qlinear: K = %lld must be KB = %lld blocks of a power of 2 G >= 16", (long long)K,
                      (long long)KB);
  ET_KERNEL_CHECK_MSG(ctx, blob * 8 == 2 * G || blob * 8 == 4 * G || blob * 8 == 8 * G, InvalidArgument, false,
                      "qlinear: w's last dim must be G * bits / 8 for bits 2, 4 or 8 (G = %lld); got %lld",
                      (long long)G, (long long)blob);
  const int64_t bits = blob * 8 / G;
  ET_KERNEL_CHECK_MSG(ctx, d.ZB == (KB * bits + 7) / 8, InvalidArgument, false,
                      "qlinear: zero_points must be (N, %lld) at %lld bits; got (N, %lld)",
                      (long long)((KB * bits + 7) / 8), (long long)bits, (long long)d.ZB);
  return true;
}

// The math core, on raw pointers (a layout qlinear_layout_ok accepted).
void qlinear_core(const checks::qlinear_dims& d, const float* x, const uint8_t* w, const float* scales,
                  const uint8_t* zero_points, const float* b, float* out) {
  const int64_t K = d.K, KB = d.KB, blob = d.BLOB;
  const int64_t G = K / KB, bits = blob * 8 / G;

  Plan p;
  p.M = d.lead_numel, p.K = K, p.N = d.N, p.KB = KB, p.G = G, p.bits = bits, p.blob = blob, p.ZB = d.ZB;
  p.per = 8 / bits;
  p.part = std::min(G, kMaxPart);
  p.fpart = G / p.part;
  p.KP = KB * p.fpart;
  p.pblob = p.part * bits / 8;
  p.row_bytes = KB * blob;
  p.qstride = kChunk > 0 ? round_up(p.row_bytes, kChunk) * p.per : K;
  p.kppad = round_up(p.KP, 8) + 8;
  if (p.M == 0 || p.N == 0) return;

#if defined(EDGEKIT_QLINEAR_AVX2)
  const int path = use_vnni();
  const bool vnni = path != kAvx2, big = p.pblob >= 32;
  const RangeFn range = path == kAvxVnni      ? pick_range<VnniDot>(bits, big)
                        : path == kAvx512Vnni ? pick_range<Avx512VnniDot>(bits, big)
                                              : pick_range<Dot>(bits, big);
#else
  const bool vnni = false;
  const RangeFn range = pick_range<Dot>(bits, true);
#endif
  const Arith ar = arith_for(bits, vnni);

  // ---- the rows of x, quantized once ----
  thread_local std::vector<int8_t> q_buf, nat_buf;
  thread_local std::vector<float> sxu_buf, wz_buf;
  thread_local std::vector<int32_t> qs_buf;
  q_buf.resize((size_t)(p.M * p.qstride));
  sxu_buf.resize((size_t)(p.M * p.kppad));
  wz_buf.resize((size_t)(p.M * p.kppad));
  qs_buf.resize((size_t)p.KP);
  if (kChunk > 0) nat_buf.resize((size_t)K);
  for (int64_t m = 0; m < p.M; ++m) {
    int8_t* qm = q_buf.data() + m * p.qstride;
    int8_t* nat = kChunk > 0 ? nat_buf.data() : qm;
    float* sxu = sxu_buf.data() + m * p.kppad;
    float* wz = wz_buf.data() + m * p.kppad;
    quantize_row(x + m * K, p, nat, sxu, qs_buf.data());
    permute_row(nat, p, qm);
    for (int64_t k = 0; k < p.KP; ++k) sxu[k] *= ar.unit, wz[k] = (float)(qs_buf[k] * ar.zmul);
  }

  const Job job{p, ar.zoff, q_buf.data(), sxu_buf.data(), wz_buf.data(), w, scales, zero_points, b, out};
  const int64_t groups = (p.N + kGroupRows - 1) / kGroupRows;
  const int64_t group_macs = std::max<int64_t>(1, kGroupRows * (K + kRowCostMacs) * p.M);
  parallel_for(groups, std::max<int64_t>(1, kMinMacsPerThread / group_macs), [&job, range](int64_t g0, int64_t g1) {
    range(job, g0 * kGroupRows, std::min(job.p.N, g1 * kGroupRows));
  });
}

// The generated argument checks (edgekit_op_checks.h, run_qlinear), then the core. Registered
// by hand rather than with EDGEKIT_REGISTER_qlinear(core) because the core needs the context
// to refuse a layout that the shapes alone do not rule out (as cfc_step.cpp does).
void qlinear_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::run_qlinear(ctx, stack, [&ctx](const checks::qlinear_dims& d, const float* x, const uint8_t* w,
                                         const float* scales, const uint8_t* zp, const float* b, float* out) {
    if (qlinear_layout_ok(ctx, d)) qlinear_core(d, x, w, scales, zp, b, out);
  });
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_OUT_KERNEL("qlinear.out", edgekit::kernels::qlinear_out);

// edgekit_qlinear_set_vnni(on): the dot products from the next call on: on = 1 the best VNNI
// form the CPU has (AVX-VNNI, else AVX512-VNNI; the default), 2 the AVX512-VNNI (EVEX) form,
// 0 the AVX2 one. Returns the path now in use: 1 AVX-VNNI, 2 AVX512-VNNI, 0 AVX2 (also when
// the CPU lacks the one asked for). Builds without AVX2 return 0. For tests and benchmarks
// (edgekit's tests run every path the CPU has).
extern "C" __attribute__((visibility("default"))) int edgekit_qlinear_set_vnni(int on) {
#if defined(EDGEKIT_QLINEAR_AVX2)
  using namespace edgekit::kernels;
  const int v = on == 1 ? best_vnni() : on == 2 && cpu_has(kAvx512Vnni) ? kAvx512Vnni : kAvx2;
  g_vnni.store(v, std::memory_order_relaxed);
  return v;
#else
  (void)on;
  return 0;
#endif
}

// The dot-product path this build compiled: "avx2" (with AVX-VNNI chosen at run time where the
// CPU has it), "neon" (vdotq_s32) or "scalar". The replay driver prints it (make test-arm64).
extern "C" __attribute__((visibility("default"))) const char* edgekit_qlinear_isa() {
#if defined(EDGEKIT_QLINEAR_AVX2)
  return "avx2";
#elif defined(EDGEKIT_QLINEAR_NEON)
  return "neon";
#else
  return "scalar";
#endif
}
