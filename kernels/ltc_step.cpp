// ExecuTorch kernel for `edgekit::ltc_step.out` — the LTC cell's fused ODE solver
// (arXiv:2006.04439, eq. 1 with the fused Euler step, eq. 3), T >= 1 input steps of
// `ode_unfolds` solver steps each. Schema, reference and validator: edgekit/ops/ltc_step.py.
//
//   ltc_step.out(x, dt, v, s_mu, s_sigma, s_w, s_werev, mu, sigma, w, werev, cm, gleak,
//                gvleak, cfg, *, Tensor(a!) y, Tensor(b!) v_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, I sensory inputs, U neurons. x (B, T, I), dt (B, T, 1),
// v (B, U), s_* (I, U), mu/sigma/w/werev (U, U) [source, target], cm/gleak/gvleak (U),
// cfg (2,) = [ode_unfolds, eps]; y (B, T, U), v_out (B, U); all float32, contiguous.
//
// Per step: sensory sums num_s, den_s over i of sigmoid(s_sigma (x_i - s_mu)) * (s_werev, s_w);
// cm_t = cm / (dt / n); n times, for each target j, over sources i:
//   a = sigmoid(sigma (v_i - mu)); v_j = (cm_t v_j + gvleak_j + (sum a werev + num_s_j)) /
//                                         (cm_t + gleak_j + (sum a w + den_s_j) + eps)
// Sources are the outer loop so the target loop (j) is contiguous and vectorizes. Each
// unfold reads the old v (copied to scratch) and writes the new one: v_out may be v.
#include "edgekit_kernel.h"

#include <cmath>
#include <cstring>

namespace edgekit {
namespace kernels {
namespace {

constexpr int kLtcMaxUnits = 4096;  // scratch size (U)
constexpr const char* kLtcNames[15] = {"x",  "dt",    "v",  "s_mu",  "s_sigma", "s_w",  "s_werev", "mu",
                                       "sigma", "w", "werev", "cm", "gleak", "gvleak", "cfg"};

void ltc_step_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  const Tensor* ins[15];
  for (int i = 0; i < 15; ++i) ins[i] = &stack[i]->toTensor();
  const Tensor &x = *ins[0], &dt = *ins[1], &v = *ins[2];
  Tensor& y = stack[15]->toTensor();
  Tensor& v_out = stack[16]->toTensor();

  // ---- validate: the same words as edgekit/ops/ltc_step.py `validate` / `check_out` ----
  for (int i = 0; i < 15; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, ins[i]->scalar_type() == ScalarType::Float, InvalidArgument, ,
                        "ltc_step: %s must be float32; got %s", kLtcNames[i],
                        dtype_name(ins[i]->scalar_type()));
    ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(*ins[i]),
                        InvalidArgument, , "ltc_step: %s must be contiguous", kLtcNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 3, InvalidArgument, ,
                      "ltc_step: x must be (B, T, I); got %d dims", (int)x.dim());
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2);
  ET_KERNEL_CHECK_MSG(ctx, v.dim() == 2 && v.size(0) == B, InvalidArgument, ,
                      "ltc_step: v must be (B, U) with B = %d; got %s", (int)B, ShapeStr(v).c_str());
  const int64_t U = v.size(1);
  ET_KERNEL_CHECK_MSG(ctx, has_shape(dt, {B, T, 1}), InvalidArgument, ,
                      "ltc_step: dt must be (%d, %d, 1); got %s", (int)B, (int)T, ShapeStr(dt).c_str());
  for (int i = 3; i < 7; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, has_shape(*ins[i], {I, U}), InvalidArgument, ,
                        "ltc_step: %s must be (%d, %d); got %s", kLtcNames[i], (int)I, (int)U,
                        ShapeStr(*ins[i]).c_str());
  }
  for (int i = 7; i < 11; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, has_shape(*ins[i], {U, U}), InvalidArgument, ,
                        "ltc_step: %s must be (%d, %d); got %s", kLtcNames[i], (int)U, (int)U,
                        ShapeStr(*ins[i]).c_str());
  }
  for (int i = 11; i < 14; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, has_shape(*ins[i], {U}), InvalidArgument, ,
                        "ltc_step: %s must be (%d,); got %s", kLtcNames[i], (int)U,
                        ShapeStr(*ins[i]).c_str());
  }
  ET_KERNEL_CHECK_MSG(ctx, has_shape(*ins[14], {2}), InvalidArgument, ,
                      "ltc_step: cfg must be (2,); got %s", ShapeStr(*ins[14]).c_str());
  ET_KERNEL_CHECK_MSG(ctx, U <= kLtcMaxUnits, InvalidArgument, ,
                      "ltc_step: U = %d exceeds %d", (int)U, kLtcMaxUnits);
  const SizesType y_sizes[3] = {(SizesType)B, (SizesType)T, (SizesType)U};
  ET_KERNEL_CHECK_MSG(
      ctx,
      y.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(y, {y_sizes, 3}) == executorch::runtime::Error::Ok,
      InvalidArgument, , "ltc_step: y must be (B, T, U) = (%d, %d, %d) float32; got %s %s", (int)B,
      (int)T, (int)U, ShapeStr(y).c_str(), dtype_name(y.scalar_type()));
  ET_KERNEL_CHECK_MSG(
      ctx,
      v_out.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(v_out, v.sizes()) == executorch::runtime::Error::Ok,
      InvalidArgument, , "ltc_step: v_out must be (B, U) = (%d, %d) float32; got %s %s", (int)B,
      (int)U, ShapeStr(v_out).c_str(), dtype_name(v_out.scalar_type()));
  for (int i = 0; i < 15; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, *ins[i]), InvalidArgument, ,
                        "ltc_step: y must not alias input %s", kLtcNames[i]);
    if (i == 2) continue;
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(v_out, *ins[i]), InvalidArgument, ,
                        "ltc_step: v_out must not alias input %s", kLtcNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(v_out, v) || same_data(v_out, v), InvalidArgument, ,
                      "ltc_step: v_out must be v itself or not overlap it");
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, v_out), InvalidArgument, , "ltc_step: y must not alias v_out");

  // ---- compute ----
  const float* cfg = ins[14]->const_data_ptr<float>();
  const int n = (int)cfg[0];
  const float eps = cfg[1];
  const float *s_mu = ins[3]->const_data_ptr<float>(), *s_sigma = ins[4]->const_data_ptr<float>(),
              *s_w = ins[5]->const_data_ptr<float>(), *s_werev = ins[6]->const_data_ptr<float>(),
              *mu = ins[7]->const_data_ptr<float>(), *sigma = ins[8]->const_data_ptr<float>(),
              *w = ins[9]->const_data_ptr<float>(), *werev = ins[10]->const_data_ptr<float>(),
              *cm = ins[11]->const_data_ptr<float>(), *gleak = ins[12]->const_data_ptr<float>(),
              *gvleak = ins[13]->const_data_ptr<float>();
  float vold[kLtcMaxUnits], num_s[kLtcMaxUnits], den_s[kLtcMaxUnits], num[kLtcMaxUnits],
      den[kLtcMaxUnits], cm_t[kLtcMaxUnits];
  const float* X = x.const_data_ptr<float>();
  const float* DT = dt.const_data_ptr<float>();
  float* VO = v_out.mutable_data_ptr<float>();
  float* Y = y.mutable_data_ptr<float>();
  for (int64_t bi = 0; bi < B; ++bi) {
    std::memcpy(vold, v.const_data_ptr<float>() + bi * U, U * sizeof(float));
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = X + (bi * T + t) * I;
      std::memset(num_s, 0, U * sizeof(float));
      std::memset(den_s, 0, U * sizeof(float));
      for (int64_t i = 0; i < I; ++i) {
        const float xi = xt[i];
        const int64_t o = i * U;
        for (int64_t j = 0; j < U; ++j) {
          const float a = 1.f / (1.f + std::exp(-(s_sigma[o + j] * (xi - s_mu[o + j]))));
          num_s[j] += a * s_werev[o + j];
          den_s[j] += a * s_w[o + j];
        }
      }
      const float step = DT[bi * T + t] / (float)n;
      for (int64_t j = 0; j < U; ++j) cm_t[j] = cm[j] / step;
      for (int k = 0; k < n; ++k) {
        std::memset(num, 0, U * sizeof(float));
        std::memset(den, 0, U * sizeof(float));
        for (int64_t i = 0; i < U; ++i) {
          const float vi = vold[i];
          const int64_t o = i * U;
          for (int64_t j = 0; j < U; ++j) {
            const float a = 1.f / (1.f + std::exp(-(sigma[o + j] * (vi - mu[o + j]))));
            num[j] += a * werev[o + j];
            den[j] += a * w[o + j];
          }
        }
        for (int64_t j = 0; j < U; ++j) {
          const float nj = cm_t[j] * vold[j] + gvleak[j] + (num[j] + num_s[j]);
          const float dj = cm_t[j] + gleak[j] + (den[j] + den_s[j]);
          num[j] = nj / (dj + eps);
        }
        std::memcpy(vold, num, U * sizeof(float));
      }
      std::memcpy(Y + (bi * T + t) * U, vold, U * sizeof(float));
    }
    std::memcpy(VO + bi * U, vold, U * sizeof(float));
  }
}

// Boxed entry point. Stack: the 15 inputs, y, v_out, then the TensorList the emitter
// appends for the returned (y, v_out) — ignored.
void ltc_step_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  if (!tensor_args(ctx, stack, 17, "ltc_step")) return;
  ltc_step_out(ctx, stack);
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("ltc_step.out", edgekit::kernels::ltc_step_out_boxed);
