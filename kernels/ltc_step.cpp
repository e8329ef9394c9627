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
#include "edgekit_op_checks.h"

#include <cmath>
#include <cstring>

namespace edgekit {
namespace kernels {
namespace {

constexpr int kLtcMaxUnits = 4096;  // scratch size (U): edgekit/ops/ltc_step.py MAX_UNITS

// The synapses' currents into U units from n_src sources x: a[i, j] = sigmoid(sigma[i, j] ·
// (x[i] - mu[i, j])), num[j] = sum_i a[i, j] · werev[i, j], den[j] = sum_i a[i, j] · w[i, j].
inline void synapses(const float* x, int64_t n_src, const float* sigma, const float* mu, const float* werev,
                     const float* w, int64_t U, float* num, float* den) {
  std::memset(num, 0, U * sizeof(float));
  std::memset(den, 0, U * sizeof(float));
  for (int64_t i = 0; i < n_src; ++i) {
    const float xi = x[i];
    const int64_t o = i * U;
    for (int64_t j = 0; j < U; ++j) {
      const float a = 1.f / (1.f + std::exp(-(sigma[o + j] * (xi - mu[o + j]))));
      num[j] += a * werev[o + j];
      den[j] += a * w[o + j];
    }
  }
}

// The math core, on raw pointers: in[0..14] are the op's 15 inputs in schema order (x, dt, v,
// the sensory and recurrent synapses' parameters, cm, gleak, gvleak, cfg).
void ltc_step_core(const checks::ltc_step_dims& dims, const float* const* in, float* Y, float* VO) {
  const int64_t B = dims.B, T = dims.T, I = dims.I, U = dims.U;
  const float* cfg = in[14];
  const int n = (int)cfg[0];
  const float eps = cfg[1];
  const float *s_mu = in[3], *s_sigma = in[4], *s_w = in[5], *s_werev = in[6], *mu = in[7], *sigma = in[8],
              *w = in[9], *werev = in[10], *cm = in[11], *gleak = in[12], *gvleak = in[13];
  float vold[kLtcMaxUnits], num_s[kLtcMaxUnits], den_s[kLtcMaxUnits], num[kLtcMaxUnits],
      den[kLtcMaxUnits], cm_t[kLtcMaxUnits];
  const float* X = in[0];
  const float* DT = in[1];
  for (int64_t bi = 0; bi < B; ++bi) {
    std::memcpy(vold, in[2] + bi * U, U * sizeof(float));
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = X + (bi * T + t) * I;
      synapses(xt, I, s_sigma, s_mu, s_werev, s_w, U, num_s, den_s);       // sensory
      const float step = DT[bi * T + t] / (float)n;
      for (int64_t j = 0; j < U; ++j) cm_t[j] = cm[j] / step;
      for (int k = 0; k < n; ++k) {
        synapses(vold, U, sigma, mu, werev, w, U, num, den);               // recurrent
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
  checks::ltc_step_dims dims;
  if (!checks::check_ltc_step(ctx, stack, dims)) return;
  const float* in[15];
  for (int i = 0; i < 15; ++i) in[i] = stack[i]->toTensor().const_data_ptr<float>();
  ltc_step_core(dims, in, stack[15]->toTensor().mutable_data_ptr<float>(),
                stack[16]->toTensor().mutable_data_ptr<float>());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("ltc_step.out", edgekit::kernels::ltc_step_out_boxed);
EDGEKIT_IN_PLACE_KERNEL("ltc_step", edgekit::kernels::ltc_step_out_boxed, 15, 2);
