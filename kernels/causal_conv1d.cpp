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


namespace edgekit {
namespace kernels {
namespace {

constexpr int kMaxTaps = 64;
constexpr const char* kConvInputNames[3] = {"x", "w", "b"};

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

void causal_conv1d_out(KernelRuntimeContext& ctx, const char* op, bool silu, const Tensor& x, const Tensor& w, const Tensor& b,
                       const Tensor& state, Tensor& y, Tensor& state_out) {
  // ---- validate: the same words as edgekit/ops/causal_conv1d.py `validate` / `check_out` ----
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 3, InvalidArgument, ,
                      "%s: x must be (B, T, C); got %d dims", op, (int)x.dim());
  ET_KERNEL_CHECK_MSG(ctx, w.dim() == 2 && w.size(1) >= 1, InvalidArgument, ,
                      "%s: w must be (C, K) with K >= 1; got %s", op, ShapeStr(w).c_str());
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  ET_KERNEL_CHECK_MSG(ctx, K <= kMaxTaps, InvalidArgument, ,
                      "%s: w has K = %d taps; this kernel supports up to %d", op, (int)K, kMaxTaps);
  struct Want {
    const Tensor* t;
    const char* name;
    const char* form;
    std::initializer_list<int64_t> shape;
  };
  const Want wants[4] = {{&x, "x", "(B, T, C)", {B, T, C}}, {&w, "w", "(C, K)", {C, K}},
                         {&b, "b", "(C,)", {C}}, {&state, "state", "(B, C, K)", {B, C, K}}};
  for (const Want& wt : wants) {
    char want[64];
    size_t n = std::snprintf(want, sizeof(want), "(");
    size_t i = 0;
    for (int64_t s : wt.shape) {
      n += std::snprintf(want + n, sizeof(want) - n, i++ ? ", %d" : "%d", (int)s);
    }
    std::snprintf(want + n, sizeof(want) - n, wt.shape.size() == 1 ? ",)" : ")");
    ET_KERNEL_CHECK_MSG(ctx, has_shape(*wt.t, wt.shape) && wt.t->scalar_type() == ScalarType::Float,
                        InvalidArgument, , "%s: %s must be %s = %s float32; got %s %s", op,
                        wt.name, wt.form, want, ShapeStr(*wt.t).c_str(), dtype_name(wt.t->scalar_type()));
    ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(*wt.t),
                        InvalidArgument, , "%s: %s must be contiguous", op, wt.name);
  }
  ET_KERNEL_CHECK_MSG(
      ctx,
      y.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(y, x.sizes()) == executorch::runtime::Error::Ok,
      InvalidArgument, , "%s: y must be (B, T, C) = (%d, %d, %d) float32; got %s %s", op,
      (int)B, (int)T, (int)C, ShapeStr(y).c_str(), dtype_name(y.scalar_type()));
  ET_KERNEL_CHECK_MSG(
      ctx,
      state_out.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(state_out, state.sizes()) ==
              executorch::runtime::Error::Ok,
      InvalidArgument, , "%s: state_out must be (B, C, K) = (%d, %d, %d) float32; got %s %s", op,
      (int)B, (int)C, (int)K, ShapeStr(state_out).c_str(), dtype_name(state_out.scalar_type()));
  const Tensor* ins[3] = {&x, &w, &b};
  for (int i = 0; i < 3; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, *ins[i]), InvalidArgument, ,
                        "%s: y must not alias input %s", op, kConvInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state), InvalidArgument, ,
                      "%s: y must not alias input state", op);
  for (int i = 0; i < 3; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, *ins[i]), InvalidArgument, ,
                        "%s: state_out must not alias input %s", op, kConvInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, state) || same_data(state_out, state),
                      InvalidArgument, ,
                      "%s: state_out must be state itself or not overlap it", op);
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state_out), InvalidArgument, ,
                      "%s: y must not alias state_out", op);

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
template <bool Silu>
void conv_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const char* op = Silu ? "causal_conv1d_silu" : "causal_conv1d";
  if (!tensor_args(ctx, stack, 6, op)) return;
  causal_conv1d_out(ctx, op, Silu, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
                    stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("causal_conv1d.out", edgekit::kernels::conv_out_boxed<false>);
EDGEKIT_IN_PLACE_KERNEL("causal_conv1d", edgekit::kernels::conv_out_boxed<false>, 4, 3);
EDGEKIT_OUT_KERNEL("causal_conv1d_silu.out", edgekit::kernels::conv_out_boxed<true>);
EDGEKIT_IN_PLACE_KERNEL("causal_conv1d_silu", edgekit::kernels::conv_out_boxed<true>, 4, 3);
