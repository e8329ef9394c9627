// Eight floats at a time, written once for x86 (AVX2 + FMA: one __m256) and for aarch64 (NEON:
// two float32x4_t), and the vector math the float kernels share (e^x, sigmoid, tanh, ln),
// each written once on top of them. EDGEKIT_F8 is defined where one of the two is compiled;
// elsewhere (a build without AVX2/FMA or without Advanced SIMD: EDGEKIT_SIMD=off in
// kernels/build.sh, other CPUs) the kernels run their scalar loops.
//
// Every wrapper is one instruction per half (AVX2 compiles to what the intrinsics did by
// hand). The few semantic differences are pinned down here:
// - min8 / max8 give NaN when x (the SECOND argument) is NaN on both ISAs: x86's min/max return
//   the second operand when either is NaN, NEON's propagate NaN; callers keep x second.
// - the comparisons are ordered (false for NaN), as _CMP_*_OQ.
// No ExecuTorch types: the math cores include this, not the runtime.
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define EDGEKIT_F8 1
#define EDGEKIT_F8_ISA "avx2"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define EDGEKIT_F8 1
#define EDGEKIT_F8_ISA "neon"
#endif

#if defined(EDGEKIT_F8)
namespace edgekit {
namespace simd {

#if defined(__AVX2__) && defined(__FMA__)
struct f8 {
  __m256 v;
};
using m8 = __m256;  // a lane mask

inline f8 load8(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store8(float* p, f8 a) { _mm256_storeu_ps(p, a.v); }
inline f8 set8(float s) { return {_mm256_set1_ps(s)}; }
inline f8 zero8() { return {_mm256_setzero_ps()}; }
inline f8 operator+(f8 a, f8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline f8 operator-(f8 a, f8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline f8 operator*(f8 a, f8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline f8 operator/(f8 a, f8 b) { return {_mm256_div_ps(a.v, b.v)}; }
inline f8 fma8(f8 a, f8 b, f8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }    // a b + c
inline f8 fnma8(f8 a, f8 b, f8 c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }  // c - a b
inline f8 min8(f8 a, f8 x) { return {_mm256_min_ps(a.v, x.v)}; }
inline f8 max8(f8 a, f8 x) { return {_mm256_max_ps(a.v, x.v)}; }
inline f8 abs8(f8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.f), a.v)}; }
inline f8 round8(f8 a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
// 2^n for integral n with n + 127 in [1, 254] (the exponent field set directly)
inline f8 pow2_8(f8 n) {
  return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23))};
}
inline m8 gt8(f8 a, f8 b) { return _mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ); }
inline m8 lt8(f8 a, f8 b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
inline m8 eq8(f8 a, f8 b) { return _mm256_cmp_ps(a.v, b.v, _CMP_EQ_OQ); }
inline f8 keep8(f8 a, m8 m) { return {_mm256_and_ps(a.v, m)}; }                      // m ? a : 0
inline f8 select8(m8 m, f8 a, f8 b) { return {_mm256_blendv_ps(b.v, a.v, m)}; }     // m ? a : b
inline f8 with_sign_of8(f8 mag, f8 s) {                                              // |mag| | sign(s)
  return {_mm256_or_ps(mag.v, _mm256_and_ps(_mm256_set1_ps(-0.f), s.v))};
}
// x = m 2^e with m in [0.5, 1): e as a float, m (positive normal x only)
inline void frexp8(f8 x, f8& e, f8& m) {
  const __m256i bits = _mm256_castps_si256(x.v);
  e = {_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)))};
  m = {_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                           _mm256_set1_epi32(0x3f000000)))};
}
inline float hsum8(f8 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#else  // NEON
struct f8 {
  float32x4_t lo, hi;
};
struct m8 {
  uint32x4_t lo, hi;
};

inline f8 load8(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
inline void store8(float* p, f8 a) {
  vst1q_f32(p, a.lo);
  vst1q_f32(p + 4, a.hi);
}
inline f8 set8(float s) { return {vdupq_n_f32(s), vdupq_n_f32(s)}; }
inline f8 zero8() { return set8(0.f); }
inline f8 operator+(f8 a, f8 b) { return {vaddq_f32(a.lo, b.lo), vaddq_f32(a.hi, b.hi)}; }
inline f8 operator-(f8 a, f8 b) { return {vsubq_f32(a.lo, b.lo), vsubq_f32(a.hi, b.hi)}; }
inline f8 operator*(f8 a, f8 b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
inline f8 operator/(f8 a, f8 b) { return {vdivq_f32(a.lo, b.lo), vdivq_f32(a.hi, b.hi)}; }
inline f8 fma8(f8 a, f8 b, f8 c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
inline f8 fnma8(f8 a, f8 b, f8 c) { return {vfmsq_f32(c.lo, a.lo, b.lo), vfmsq_f32(c.hi, a.hi, b.hi)}; }
inline f8 min8(f8 a, f8 x) { return {vminq_f32(a.lo, x.lo), vminq_f32(a.hi, x.hi)}; }
inline f8 max8(f8 a, f8 x) { return {vmaxq_f32(a.lo, x.lo), vmaxq_f32(a.hi, x.hi)}; }
inline f8 abs8(f8 a) { return {vabsq_f32(a.lo), vabsq_f32(a.hi)}; }
inline f8 round8(f8 a) { return {vrndnq_f32(a.lo), vrndnq_f32(a.hi)}; }
inline float32x4_t pow2_4(float32x4_t n) {
  return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23));
}
inline f8 pow2_8(f8 n) { return {pow2_4(n.lo), pow2_4(n.hi)}; }
inline m8 gt8(f8 a, f8 b) { return {vcgtq_f32(a.lo, b.lo), vcgtq_f32(a.hi, b.hi)}; }
inline m8 lt8(f8 a, f8 b) { return {vcltq_f32(a.lo, b.lo), vcltq_f32(a.hi, b.hi)}; }
inline m8 eq8(f8 a, f8 b) { return {vceqq_f32(a.lo, b.lo), vceqq_f32(a.hi, b.hi)}; }
inline f8 keep8(f8 a, m8 m) {
  return {vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a.lo), m.lo)),
          vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a.hi), m.hi))};
}
inline f8 select8(m8 m, f8 a, f8 b) { return {vbslq_f32(m.lo, a.lo, b.lo), vbslq_f32(m.hi, a.hi, b.hi)}; }
inline float32x4_t with_sign_of4(float32x4_t mag, float32x4_t s) {
  const uint32x4_t sign = vdupq_n_u32(0x80000000u);
  return vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(mag), vandq_u32(vreinterpretq_u32_f32(s), sign)));
}
inline f8 with_sign_of8(f8 mag, f8 s) { return {with_sign_of4(mag.lo, s.lo), with_sign_of4(mag.hi, s.hi)}; }
inline void frexp4(float32x4_t x, float32x4_t& e, float32x4_t& m) {
  const uint32x4_t bits = vreinterpretq_u32_f32(x);
  e = vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(vshrq_n_u32(bits, 23)), vdupq_n_s32(126)));
  m = vreinterpretq_f32_u32(vorrq_u32(vandq_u32(bits, vdupq_n_u32(0x007fffff)), vdupq_n_u32(0x3f000000)));
}
inline void frexp8(f8 x, f8& e, f8& m) {
  frexp4(x.lo, e.lo, m.lo);
  frexp4(x.hi, e.hi, m.hi);
}
inline float hsum8(f8 a) { return vaddvq_f32(vaddq_f32(a.lo, a.hi)); }
#endif

// ------------------------------------------------------------ the shared vector math --

// e^x: Cephes expf (range reduction by ln 2 in two parts, degree-6 polynomial). Inputs are
// clamped to [-87.3, 88.376] (Cephes' MAXLOGF: above it 2^n overflows the exponent field), so
// e^x below 1.2e-38 (a decay that has fully decayed) is returned as ~1.2e-38, not 0 or a
// denormal, and above 88.376 as ~2.4e38, not Inf; NaN stays NaN.
inline f8 exp8(f8 x) {
  x = min8(set8(88.3762626647949f), max8(set8(-87.3f), x));
  const f8 n = round8(x * set8(1.44269504088896341f));
  f8 r = fnma8(n, set8(0.693359375f), x);
  r = fnma8(n, set8(-2.12194440e-4f), r);
  f8 p = set8(1.9875691500e-4f);
  p = fma8(p, r, set8(1.3981999507e-3f));
  p = fma8(p, r, set8(8.3334519073e-3f));
  p = fma8(p, r, set8(4.1665795894e-2f));
  p = fma8(p, r, set8(1.6666665459e-1f));
  p = fma8(p, r, set8(5.0000001201e-1f));
  p = fma8(p, r * r, r + set8(1.0f));
  return p * pow2_8(n);
}

// sigmoid(s) = 1 / (1 + e^-s); 0 below s = -88, where e^-s saturates (the true value is
// < 6.1e-39), and 0 for NaN s: the callers multiply it by s or by a value of s, so NaN stays
// NaN in their result.
inline f8 sigmoid8(f8 s) {
  const f8 one = set8(1.f);
  return keep8(one / (one + exp8(zero8() - s)), gt8(s, set8(-88.f)));
}

// tanh: sign(x) (1 - e) / (1 + e) with e = e^(-2|x|), and for |x| < 0.3 the odd Taylor
// polynomial to x^13 (where 1 - e would cancel; truncation error < 1e-10 relative), both
// computed on |x| with x's sign put back, so tanh(-0) = -0. Within 2.7 ulp of float64 tanh
// over [1e-6, 12] (tests/test_op_cfc_step.py::test_tanh8_accuracy, both ISAs); +-1 from |x| = 9 on (exp8
// saturates, as float tanh does); NaN stays NaN.
inline f8 tanh8(f8 x) {
  const f8 one = set8(1.f);
  const f8 ax = abs8(x);
  const f8 e = exp8(ax * set8(-2.f));
  const f8 q = (one - e) / (one + e);
  const f8 x2 = ax * ax;
  f8 p = set8(21844.f / 6081075.f);
  p = fma8(p, x2, set8(-1382.f / 155925.f));
  p = fma8(p, x2, set8(62.f / 2835.f));
  p = fma8(p, x2, set8(-17.f / 315.f));
  p = fma8(p, x2, set8(2.f / 15.f));
  p = fma8(p, x2, set8(-1.f / 3.f));
  p = fma8(p * x2, ax, ax);
  return with_sign_of8(select8(lt8(ax, set8(0.3f)), p, q), x);
}

// ln x for x in [1, 2] (what log1p needs; Cephes logf: x = m 2^e with m in [sqrt(1/2),
// sqrt(2)), ln(1 + f) by its degree-9 polynomial, e ln 2 in two parts). Within 1 ulp of
// float64 on that range; not for x <= 0, denormals, Inf or NaN.
inline f8 log8_1to2(f8 x) {
  const f8 one = set8(1.f);
  f8 e, m;
  frexp8(x, e, m);                                           // m in [0.5, 1)
  const m8 small = lt8(m, set8(0.707106781186547524f));
  e = e - keep8(one, small);
  m = (m - one) + keep8(m, small);                           // m - 1, or 2m - 1
  const f8 z = m * m;
  f8 y = set8(7.0376836292e-2f);
  y = fma8(y, m, set8(-1.1514610310e-1f));
  y = fma8(y, m, set8(1.1676998740e-1f));
  y = fma8(y, m, set8(-1.2420140846e-1f));
  y = fma8(y, m, set8(1.4249322787e-1f));
  y = fma8(y, m, set8(-1.6668057665e-1f));
  y = fma8(y, m, set8(2.0000714765e-1f));
  y = fma8(y, m, set8(-2.4999993993e-1f));
  y = fma8(y, m, set8(3.3333331174e-1f));
  y = (y * m) * z;
  y = fma8(e, set8(-2.12194440e-4f), y);
  y = fnma8(set8(0.5f), z, y);
  return fma8(e, set8(0.693359375f), m + y);
}

}  // namespace simd
}  // namespace edgekit
#endif  // EDGEKIT_F8
