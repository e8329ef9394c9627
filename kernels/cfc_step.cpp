// ExecuTorch kernel for `edgekit::cfc_step.out` — the CfC cell (arXiv:2106.13898, eq. 10;
// "pure" mode eq. 5) over T >= 1 steps. Schema, reference and validator:
// edgekit/ops/cfc_step.py.
//
//   cfc_step.out(Tensor x, Tensor dt, Tensor h, Tensor w_in, Tensor b_in, Tensor w_bb,
//                Tensor b_bb, Tensor w_head, Tensor b_head, Tensor p, Tensor cfg, *,
//                Tensor(a!) y, Tensor(b!) h_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, I inputs, U units, Z backbone width, K head width (4U, or U
// for "pure"). x (B, T, I), dt (B, T, 1), h (B, U), w_in (I+U, Z), b_in (Z), w_bb (Lx, Z, Z),
// b_bb (Lx, Z), w_head (Z or I+U, K), b_head (K), p (2, U), cfg (4,) = [mode, n_bb,
// act_scale, act_slope]; y (B, T, U), h_out (B, U); all float32, contiguous, weights (in, out).
//
// Per step: z = [x_t, h]; n_bb times z = scale * tanh(slope * (z W + b)); heads = z W_head + b;
//   gated: g = sigmoid(ta * dt + tb); h = tanh(f1) * (1 - c g) + g * tanh(f2)  (c = mode == 0)
//   pure:  h = A - A * exp(-dt * (|w_tau| + |f1|)) * f1                       (p = [A; |w_tau|])
// Matrix-vector products run row-by-row as axpy (z_j += x_i * W[i, :]), which vectorizes
// over the output. Scratch space is a fixed stack buffer: the step allocates nothing.
// h_out may be h itself (in-place): [x_t, h] is copied into scratch before h is written.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <cmath>
#include <cstring>

namespace edgekit {
namespace kernels {
namespace {

constexpr int kCfcMaxWidth = 4096;  // max of I+U, Z and K (the scratch buffers' size)

// out[j] = b[j] + sum_i in[i] * W[i, j] for j in [j0, j1), W (n_in, n_out) row-major. Under
// AVX2 or NEON (simd::f8) the output is kept in registers, 64 (then 8) columns at a time, while the rows of W
// stream past: one load per FMA and no store in the inner loop. The sum runs over i in
// order, as the scalar loop does.
inline void affine_cols(const float* __restrict in, int64_t n_in, const float* __restrict W,
                        const float* __restrict b, int64_t n_out, float* __restrict out, int64_t j0,
                        int64_t j1) {
  int64_t j = j0;
#if defined(EDGEKIT_F8)
  using namespace simd;
  for (; j + 64 <= j1; j += 64) {
    f8 acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = load8(b + j + 8 * k);
    for (int64_t i = 0; i < n_in; ++i) {
      const f8 xi = set8(in[i]);
      const float* w = W + i * n_out + j;
      for (int k = 0; k < 8; ++k) acc[k] = fma8(xi, load8(w + 8 * k), acc[k]);
    }
    for (int k = 0; k < 8; ++k) store8(out + j + 8 * k, acc[k]);
  }
  for (; j + 8 <= j1; j += 8) {
    f8 acc = load8(b + j);
    for (int64_t i = 0; i < n_in; ++i) acc = fma8(set8(in[i]), load8(W + i * n_out + j), acc);
    store8(out + j, acc);
  }
#endif
  for (; j < j1; ++j) {
    float acc = b[j];
    for (int64_t i = 0; i < n_in; ++i) acc = std::fma(in[i], W[i * n_out + j], acc);
    out[j] = acc;
  }
}

// The same over all n_out columns, in blocks of 64 split over the kernel pool: each thread
// reads its own columns of W (a 64-unit CfC's 183 KB of weights stream from two cores' L2
// at once). Small products (< 8k multiply-adds) run inline: a pool wake-up would cost more.
inline void affine(const float* in, int64_t n_in, const float* W, const float* b, int64_t n_out,
                   float* out) {
  const int64_t blocks = n_out / 64;
  if (blocks < 2 || n_in * n_out < 8192) {
    affine_cols(in, n_in, W, b, n_out, out, 0, n_out);
    return;
  }
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    affine_cols(in, n_in, W, b, n_out, out, 64 * b0, 64 * b1);
  });
  if (64 * blocks < n_out) affine_cols(in, n_in, W, b, n_out, out, 64 * blocks, n_out);
}

// z[j] <- scale * tanh(slope * u[j]) (the backbone's activation), n floats; z may be u.
inline void scaled_tanh(const float* u, int64_t n, float scale, float slope, float* z) {
  int64_t j = 0;
#if defined(EDGEKIT_F8)
  const simd::f8 sc = simd::set8(scale), sl = simd::set8(slope);
  for (; j + 8 <= n; j += 8) simd::store8(z + j, sc * simd::tanh8(sl * simd::load8(u + j)));
#endif
  for (; j < n; ++j) z[j] = scale * std::tanh(slope * u[j]);
}

inline float sigmoidf(float v) { return 1.f / (1.f + std::exp(-v)); }

// What the math core needs beyond the spec's dims: the configuration tensor's values and the
// widths they imply.
struct CfcShape {
  int64_t B, T, I, U, Z, K, d_in;
  int mode, n_bb;
  float scale, slope;
};

// The configuration's checks (edgekit/ops/cfc_step.py `check`; the spec's are generated):
// false, with the context failed, when cfg or the weights' shapes disagree.
bool cfc_step_shape(KernelRuntimeContext& ctx, const checks::cfc_step_dims& dims, const Tensor& w_in,
                    const Tensor& b_in, const Tensor& w_bb, const Tensor& b_bb, const Tensor& w_head,
                    const Tensor& b_head, const Tensor& cfg, CfcShape& sh) {
  const int64_t I = dims.I, U = dims.U;
  const float* c = cfg.const_data_ptr<float>();
  const int mode = (int)c[0], n_bb = (int)c[1];
  ET_KERNEL_CHECK_MSG(ctx, (mode == 0 || mode == 1 || mode == 2) && n_bb >= 0, InvalidArgument, false,
                      "cfc_step: cfg holds mode %d and n_bb %d; expected mode 0, 1 or 2 and n_bb >= 0",
                      mode, n_bb);
  const int64_t K = mode == 2 ? U : 4 * U;
  int64_t Z = 0, d_in = I + U;
  if (n_bb > 0) {
    Z = w_in.dim() == 2 ? w_in.size(1) : -1;
    ET_KERNEL_CHECK_MSG(ctx, has_shape(w_in, {I + U, Z}) && has_shape(b_in, {Z}), InvalidArgument, false,
                        "cfc_step: w_in must be (I+U, Z) = (%d, Z) and b_in (Z,); got %s and %s",
                        (int)(I + U), ShapeStr(w_in).c_str(), ShapeStr(b_in).c_str());
    const int64_t Lx = w_bb.dim() == 3 ? w_bb.size(0) : -1;   // unread placeholders when n_bb <= 1
    ET_KERNEL_CHECK_MSG(ctx, n_bb <= 1 || (Lx >= n_bb - 1 && has_shape(w_bb, {Lx, Z, Z}) && has_shape(b_bb, {Lx, Z})),
                        InvalidArgument, false,
                        "cfc_step: w_bb must be (Lx, Z, Z) and b_bb (Lx, Z) with Lx >= %d, Z = %d; "
                        "got %s and %s", n_bb - 1, (int)Z, ShapeStr(w_bb).c_str(),
                        ShapeStr(b_bb).c_str());
    d_in = Z;
  }
  ET_KERNEL_CHECK_MSG(ctx, has_shape(w_head, {d_in, K}) && has_shape(b_head, {K}), InvalidArgument, false,
                      "cfc_step: w_head must be (%d, %d) and b_head (%d,); got %s and %s", (int)d_in,
                      (int)K, (int)K, ShapeStr(w_head).c_str(), ShapeStr(b_head).c_str());
  ET_KERNEL_CHECK_MSG(ctx, I + U <= kCfcMaxWidth && Z <= kCfcMaxWidth && K <= kCfcMaxWidth,
                      InvalidArgument, false, "cfc_step: widths I+U = %d, Z = %d, K = %d exceed %d",
                      (int)(I + U), (int)Z, (int)K, kCfcMaxWidth);
  sh = {dims.B, dims.T, I, U, Z, K, d_in, mode, n_bb, c[2], c[3]};
  return true;
}

// The math core, on raw pointers: T steps of the cell for each of B sequences. h_out may be h
// itself (step 0 copies h's row before writing it).
void cfc_step_core(const CfcShape& sh, const float* X, const float* DT, const float* H0, const float* w_in,
                   const float* b_in, const float* w_bb, const float* b_bb, const float* w_head,
                   const float* b_head, const float* A, float* Y, float* HO) {
  const int64_t B = sh.B, T = sh.T, I = sh.I, U = sh.U, Z = sh.Z, K = sh.K, d_in = sh.d_in;
  const int mode = sh.mode, n_bb = sh.n_bb;
  const float scale = sh.scale, slope = sh.slope;
  float zbuf[kCfcMaxWidth], zb2[kCfcMaxWidth], heads[kCfcMaxWidth];
  const float* tau = A + U;
  const float gate_c = mode == 0 ? 1.f : 0.f;
  for (int64_t bi = 0; bi < B; ++bi) {
    const float* hprev = H0 + bi * U;          // step 0 reads h, later steps h_out
    float* hcur = HO + bi * U;
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(zbuf, X + (bi * T + t) * I, I * sizeof(float));
      std::memcpy(zbuf + I, hprev, U * sizeof(float));   // before h_out (maybe == h) is written
      const float* z = zbuf;
      if (n_bb > 0) {
        affine(zbuf, I + U, w_in, b_in, Z, zb2);
        scaled_tanh(zb2, Z, scale, slope, zb2);
        for (int l = 0; l < n_bb - 1; ++l) {
          affine(zb2, Z, w_bb + l * Z * Z, b_bb + l * Z, Z, zbuf);
          scaled_tanh(zbuf, Z, scale, slope, zb2);
        }
        z = zb2;
      }
      affine(z, d_in, w_head, b_head, K, heads);
      const float d = DT[bi * T + t];
      float* yt = Y + (bi * T + t) * U;
      if (mode == 2) {
        for (int64_t j = 0; j < U; ++j) {
          const float f1 = heads[j];
          yt[j] = A[j] - A[j] * std::exp(-(d * (tau[j] + std::fabs(f1)))) * f1;
        }
      } else {
        const float *f1 = heads, *f2 = heads + U, *ta = heads + 2 * U, *tb = heads + 3 * U;
        int64_t j = 0;
#if defined(EDGEKIT_F8)
        // g = 1 / (1 + e^-s) with no clamp to 0 (unlike sigmoid8), so a NaN gate stays NaN
        using namespace simd;
        const f8 one = set8(1.f), dv = set8(d), cv = set8(gate_c);
        for (; j + 8 <= U; j += 8) {
          const f8 s = fma8(load8(ta + j), dv, load8(tb + j));
          const f8 g = one / (one + exp8(zero8() - s));
          const f8 keep = fnma8(cv, g, one);                       // 1 - c g
          store8(yt + j, fma8(tanh8(load8(f1 + j)), keep, g * tanh8(load8(f2 + j))));
        }
#endif
        for (; j < U; ++j) {
          const float g = sigmoidf(ta[j] * d + tb[j]);
          yt[j] = std::tanh(f1[j]) * (1.f - gate_c * g) + g * std::tanh(f2[j]);
        }
      }
      std::memcpy(hcur, yt, U * sizeof(float));
      hprev = hcur;
    }
    if (T == 0 && HO != H0) std::memcpy(hcur, H0 + bi * U, U * sizeof(float));
  }
}

// Boxed entry point. Stack: the 11 inputs, y, h_out, then the TensorList the emitter
// appends for the returned (y, h_out) — ignored.
// The ExecuTorch adapter: the generated checks, the configuration's, then the core.
void cfc_step_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::cfc_step_dims dims;
  if (!checks::check_cfc_step(ctx, stack, dims)) return;
  auto t = [&](int i) -> const Tensor& { return stack[i]->toTensor(); };
  auto f = [&](int i) { return stack[i]->toTensor().const_data_ptr<float>(); };
  CfcShape sh;
  if (!cfc_step_shape(ctx, dims, t(3), t(4), t(5), t(6), t(7), t(8), t(10), sh)) return;
  cfc_step_core(sh, f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9),
                stack[11]->toTensor().mutable_data_ptr<float>(), stack[12]->toTensor().mutable_data_ptr<float>());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("cfc_step.out", edgekit::kernels::cfc_step_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("cfc_step", edgekit::kernels::cfc_step_out_boxed, 11, 2);
