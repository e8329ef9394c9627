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


namespace edgekit {
namespace kernels {
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
template <typename Dims>
void causal_conv1d_out(const Dims& dims, bool silu, const Tensor& x, const Tensor& w, const Tensor& b,
                       const Tensor& state, Tensor& y, Tensor& state_out) {
  const int64_t B = dims.B, T = dims.T, C = dims.C, K = dims.K;
  // ---- compute: per channel, slide a K-window over its T inputs ----
  const float* xp = x.const_data_ptr<float>();
  const float* wp = w.const_data_ptr<float>();
  const float* bp = b.const_data_ptr<float>();
  const float* sp = state.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  float* so = state_out.mutable_data_ptr<float>();
  switch (K) {  // the window lives in registers when K is known at compile time
    case 4: conv_channels<4>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    case 3: conv_channels<3>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    case 2: conv_channels<2>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
    default: conv_channels<0>(xp, wp, bp, sp, yp, so, B, T, C, K); break;
  }
  if (silu) silu_in_place(yp, B * T * C);   // causal_conv1d_silu: y is still in cache
}

// Boxed entry points. Stack: x, w, b, state, y, state_out, then the TensorList the emitter
// appends for the returned (y, state_out) — ignored.
void conv_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::causal_conv1d_dims dims;
  if (!checks::check_causal_conv1d(ctx, stack, dims)) return;
  causal_conv1d_out(dims, false, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
                    stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor());
}

void conv_silu_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  checks::causal_conv1d_silu_dims dims;
  if (!checks::check_causal_conv1d_silu(ctx, stack, dims)) return;
  causal_conv1d_out(dims, true, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
                    stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("causal_conv1d.out", edgekit::kernels::conv_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("causal_conv1d", edgekit::kernels::conv_out_boxed, 4, 3);
EDGEKIT_OUT_KERNEL("causal_conv1d_silu.out", edgekit::kernels::conv_silu_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("causal_conv1d_silu", edgekit::kernels::conv_silu_out_boxed, 4, 3);
