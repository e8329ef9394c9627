// ExecuTorch kernels for `edgekit::causal_conv1d.out` — a depthwise causal conv over time that
// carries its last K inputs (Mamba / Mamba-2's short conv) — and `edgekit::causal_conv1d_silu.out`,
// the same followed by SiLU (y = v * sigmoid(v)). Schemas, references and validator:
// edgekit/ops/causal_conv1d.py.
//
//   causal_conv1d.out(Tensor x, Tensor w, Tensor b, Tensor state, *,
//                     Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, C channels, K taps. x, y: (B, T, C); w: (C, K), oldest tap
// first; b: (C,); state, state_out: (B, C, K), newest input in column K-1; float32, contiguous.
//
//   y_t[c] = b[c] + sum_k w[c, k] u_{t-K+1+k}[c],  u = the inputs with the state's K-1 newest in front
//
// Channel c's window depends only on its own previous window, so state_out may be state
// itself (in-place update): each channel's K-window is read into registers first.
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"


namespace edgekit::kernels {
namespace {

constexpr int kMaxTaps = 64;

// KK > 0: K == KK at compile time (unrolled); KK == 0: any K <= kMaxTaps. The window is
// read whole before anything is written, so state_out may be state itself.
template <int KK>
void conv_channels(const float* xp, const float* wp, const float* bp, const float* sp, float* yp,
                   float* so, int64_t B, int64_t T, int64_t C, int64_t Kdyn) {
  const int64_t K = KK > 0 ? KK : Kdyn;
  for (int64_t bi = 0; bi < B; ++bi) {
    for (int64_t c = 0; c < C; ++c) {
      float win[KK > 0 ? KK : kMaxTaps];
      const float* s = sp + (bi * C + c) * K;
      for (int64_t k = 0; k < K; ++k) win[k] = s[k];
      const float* wc = wp + c * K;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t k = 0; k + 1 < K; ++k) win[k] = win[k + 1];
        win[K - 1] = xp[(bi * T + t) * C + c];
        float acc = bp[c];
        for (int64_t k = 0; k < K; ++k) acc += wc[k] * win[k];
        yp[(bi * T + t) * C + c] = acc;
      }
      float* o = so + (bi * C + c) * K;
      for (int64_t k = 0; k < K; ++k) o[k] = win[k];
    }
  }
}

// Dims: the generated checks' dims of causal_conv1d or causal_conv1d_silu (the same letters).
// Per channel, slide a K-window over its T inputs; Silu: then y <- y * sigmoid(y) (y still in
// cache). Dims: the generated checks' dims of causal_conv1d or causal_conv1d_silu.
template <bool Silu, typename Dims>
void causal_conv1d_core(const Dims& dims, const float* xp, const float* wp, const float* bp, const float* sp,
                        float* yp, float* so) {
  const int64_t B = dims.B, T = dims.T, C = dims.C, K = dims.K;
  switch (K) {  // the window lives in registers when K is known at compile time
    case 4: conv_channels<4>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    case 3: conv_channels<3>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    case 2: conv_channels<2>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    default: conv_channels<0>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
  }
  if (Silu) silu_in_place(yp, B * T * C);
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_causal_conv1d(edgekit::kernels::causal_conv1d_core<false, edgekit::kernels::checks::causal_conv1d_dims>);
EDGEKIT_REGISTER_causal_conv1d_silu(edgekit::kernels::causal_conv1d_core<true, edgekit::kernels::checks::causal_conv1d_silu_dims>);
