// ExecuTorch kernel for `edgekit::rglru_step.out` — Griffin/Hawk's temporal Conv1D + RG-LRU
// (arXiv:2402.19427, §2.4 eqs. 1-4). Schema, reference and validator: edgekit/ops/rglru_step.py.
//
//   rglru_step.out(Tensor x, Tensor reset, Tensor conv_w, Tensor conv_b, Tensor gate_w,
//                  Tensor gate_b, Tensor log_a, Tensor conv_state, Tensor h_state, *,
//                  Tensor(a!) y, Tensor(b!) conv_state_out, Tensor(c!) h_state_out)
//
// Dimensions: B batch, T time, D lru width, K conv width, H gate blocks, W = D / H.
// x, y: (B, T, D); reset: (B, T); conv_w: (K, D); conv_b, log_a: (D,); gate_w: (H, W, 2W);
// gate_b: (H, 2W); conv_state(_out): (B, D, K-1); h_state(_out): (B, D). All float32.
//
// Per step t:
//   u    = conv_b + sum_k conv_w[k] * x_{t-K+1+k}                (depthwise, history in conv_state)
//   g    = u . blockdiag(gate_w) + gate_b;  i = sigmoid(g[:W]), r = sigmoid(g[W:])  per block
//   la   = log_a * r;  a = exp(la);  mult = reset ? 1 : sqrt(1 - exp(2 la))
//   h    = a (1 - reset) h + u i mult;   y_t = h
// conv_state_out / h_state_out may be conv_state / h_state themselves (in-place update):
// every channel's history and h are read before they are written. `u` is staged in y's row
// for step t (overwritten by h), the gate pre-activations in a per-thread scratch buffer
// that grows once (nothing is allocated per step after the first call).
#include "edgekit_kernel.h"
#include "edgekit_op_checks.h"
#include "edgekit_threadpool.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace edgekit::kernels {
namespace {

inline float sigmoidf(float v) { return 1.f / (1.f + std::exp(-v)); }

void rglru_step_core(const checks::rglru_step_dims& dims, const float* xp, const float* rp, const float* cw,
                     const float* cb, const float* gw, const float* gb, const float* la_base,
                     const float* conv_state, const float* h_state, float* yp, float* cso, float* hso) {
  const int64_t B = dims.B, T = dims.T, D = dims.D, K = dims.K, H = dims.H, W = dims.W;
  const int64_t KH = K - 1;  // history length
  if (T == 0) {               // no steps: the state passes through
    if (cso != conv_state) std::memcpy(cso, conv_state, sizeof(float) * B * D * KH);
    if (hso != h_state) std::memcpy(hso, h_state, sizeof(float) * B * D);
    return;
  }

  // Gate blocks are independent (block-diagonal gates, per-channel conv and recurrence):
  // split them over the pool; each block runs all T steps for its W channels.
  parallel_for(H, 2, [&](int64_t h0, int64_t h1) {
    thread_local std::vector<float> scratch;  // gate pre-activations of one block (2W)
    if ((int64_t)scratch.size() < 2 * W) scratch.resize(2 * W);
    float* acc = scratch.data();
    for (int64_t b = 0; b < B; ++b) {
      const float* hist_in = conv_state + b * D * KH;
      const float* h_in = h_state + b * D;
      float* hist = cso + b * D * KH;
      float* h = hso + b * D;
      for (int64_t hh = h0; hh < h1; ++hh) {
        const int64_t d0 = hh * W, d1 = d0 + W;
        const float* bias = gb + hh * 2 * W;
        for (int64_t t = 0; t < T; ++t) {
          const float* xt = xp + (b * T + t) * D;
          float* u = yp + (b * T + t) * D;  // staged here, overwritten by h below
          const float* hsrc = t == 0 ? hist_in : hist;
          // temporal depthwise conv; shift the history (in place is safe: k reads k+1 first)
          for (int64_t d = d0; d < d1; ++d) {
            const float* hs = hsrc + d * KH;
            float* hd = hist + d * KH;
            float s = 0.f;
            for (int64_t k = 0; k < KH; ++k) s += hs[k] * cw[k * D + d];
            s += xt[d] * cw[KH * D + d];
            for (int64_t k = 0; k + 1 < KH; ++k) hd[k] = hs[k + 1];
            if (KH > 0) hd[KH - 1] = xt[d];
            u[d] = s + cb[d];
          }
          const float rs = rp[b * T + t], keep = 1.f - rs;
          const float* hprev = t == 0 ? h_in : h;
          // gates of block hh: acc = u[hh] . gate_w[hh] + gate_b[hh]  (row axpys, SIMD over j)
          for (int64_t j = 0; j < 2 * W; ++j) acc[j] = 0.f;
          for (int64_t i = 0; i < W; ++i) {
            const float ui = u[d0 + i];
            const float* row = gw + (d0 + i) * 2 * W;
#pragma omp simd
            for (int64_t j = 0; j < 2 * W; ++j) acc[j] += ui * row[j];
          }
          for (int64_t i = 0; i < W; ++i) {
            const int64_t d = d0 + i;
            const float gi = sigmoidf(acc[i] + bias[i]);
            const float gr = sigmoidf(acc[W + i] + bias[W + i]);
            const float la = la_base[d] * gr;
            const float a = std::exp(la);
            const float mult = rs + keep * std::sqrt(1.f - std::exp(2.f * la));
            const float hn = a * keep * hprev[d] + u[d] * gi * mult;
            h[d] = hn;
            u[d] = hn;  // y_t = h_t
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace edgekit::kernels

EDGEKIT_REGISTER_rglru_step(edgekit::kernels::rglru_step_core);
