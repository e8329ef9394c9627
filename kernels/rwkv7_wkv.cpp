// ExecuTorch kernel for `edgekit::rwkv7_wkv.out` — the RWKV-7 generalized delta-rule
// state update (arXiv:2503.14456, §4). Schema, reference and validator: edgekit/ops/rwkv7_wkv.py.
//
//   rwkv7_wkv.out(Tensor r, Tensor w, Tensor k, Tensor v, Tensor a, Tensor b, Tensor state, *,
//                 Tensor(a!) y, Tensor(b!) state_out) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: B batch, T time, H heads, N head size. r, w, k, v, a, b, y: (B, T, H, N);
// state, state_out: (B, H, N, N); all float32, contiguous.
//
// Per step t and head, with S the N x N state (row i = value channel, column j = key channel):
//   sa[i]   = sum_l S[i, l] a[l]
//   S[i, j] = S[i, j] w[j] + sa[i] b[j] + v[i] k[j]
//   y[i]    = sum_j S[i, j] r[j]
// Row i of the new S depends only on row i of the old S, so each row takes one dot (sa) and
// one fused update + dot (y) pass, reading row i of state and writing row i of state_out —
// which may be the same buffer (in-place update; no separate copy either way). Four rows go
// together so their reductions overlap. T is looped inside, so a head's state (16 KiB at
// N = 64) stays in L1 across steps.
#include "edgekit_kernel.h"

#include <cstring>

namespace edgekit {
namespace kernels {
namespace {

constexpr const char* kInputNames[6] = {"r", "w", "k", "v", "a", "b"};

// Rows [i0, i0 + R) of one head at one step: read from `src`, write to `dst` (which may be
// `src`: element j is read before it is written, and rows are independent). R rows at once
// give R independent reduction chains; one row's 64-term dot is otherwise latency-bound.
template <int R, int NC>
inline void wkv_rows(const float* src, float* dst, const float* __restrict rt,
                     const float* __restrict wt, const float* __restrict kt,
                     const float* __restrict vt, const float* __restrict at,
                     const float* __restrict bt, float* __restrict yt, int64_t i0, int64_t n) {
  const int64_t N = NC > 0 ? NC : n;
  const float* s[R];
  float* d[R];
  float sa[R], vi[R], acc[R];
  for (int q = 0; q < R; ++q) {
    s[q] = src + (i0 + q) * N;
    d[q] = dst + (i0 + q) * N;
    sa[q] = 0.f;
    acc[q] = 0.f;
    vi[q] = vt[i0 + q];
  }
  // sa[i] = sum_l S[i, l] a[l]
#pragma omp simd reduction(+ : sa[:R])
  for (int64_t j = 0; j < N; ++j) {
    for (int q = 0; q < R; ++q) sa[q] += s[q][j] * at[j];
  }
  // S[i, j] = S[i, j] w[j] + sa[i] b[j] + v[i] k[j];  y[i] = sum_j S[i, j] r[j]
#pragma omp simd reduction(+ : acc[:R])
  for (int64_t j = 0; j < N; ++j) {
    for (int q = 0; q < R; ++q) {
      const float x = s[q][j] * wt[j] + sa[q] * bt[j] + vi[q] * kt[j];
      d[q][j] = x;
      acc[q] += x * rt[j];
    }
  }
  for (int q = 0; q < R; ++q) yt[i0 + q] = acc[q];
}

// One head, all T steps. Step 0 reads the state from S0 (the input state, possibly == S),
// later steps from S; every step writes S. x_t vectors are `stride` floats apart.
// NC > 0 fixes N at compile time (full unroll, no remainder); NC == 0 is generic.
template <int NC>
void wkv_head(const float* S0, float* S, const float* r, const float* w, const float* k,
              const float* v, const float* a, const float* b, float* y, int64_t T, int64_t n,
              int64_t stride) {
  constexpr int R = 4;
  const int64_t N = NC > 0 ? NC : n;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t o = t * stride;
    const float* src = t == 0 ? S0 : S;
    int64_t i = 0;
    for (; i + R <= N; i += R) {
      wkv_rows<R, NC>(src, S, r + o, w + o, k + o, v + o, a + o, b + o, y + o, i, N);
    }
    for (; i < N; ++i) {
      wkv_rows<1, NC>(src, S, r + o, w + o, k + o, v + o, a + o, b + o, y + o, i, N);
    }
  }
}

void rwkv7_wkv_out(KernelRuntimeContext& ctx, const Tensor& r, const Tensor& w, const Tensor& k,
                   const Tensor& v, const Tensor& a, const Tensor& b, const Tensor& state,
                   Tensor& y, Tensor& state_out) {
  // ---- validate: the same words as edgekit/ops/rwkv7_wkv.py `validate` / `_check_out` ----
  ET_KERNEL_CHECK_MSG(ctx, r.dim() == 4, InvalidArgument, ,
                      "rwkv7_wkv: r must be (B, T, H, N); got %d dims", (int)r.dim());
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const Tensor* ins[6] = {&r, &w, &k, &v, &a, &b};
  for (int i = 0; i < 6; ++i) {
    const Tensor& x = *ins[i];
    ET_KERNEL_CHECK_MSG(
        ctx, has_shape(x, {B, T, H, N}) && x.scalar_type() == ScalarType::Float,
        InvalidArgument, ,
        "rwkv7_wkv: %s must be (B, T, H, N) = (%d, %d, %d, %d) float32; got %s %s",
        kInputNames[i], (int)B, (int)T, (int)H, (int)N, ShapeStr(x).c_str(),
        dtype_name(x.scalar_type()));
    ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(x),
                        InvalidArgument, , "rwkv7_wkv: %s must be contiguous", kInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(
      ctx, has_shape(state, {B, H, N, N}) && state.scalar_type() == ScalarType::Float,
      InvalidArgument, ,
      "rwkv7_wkv: state must be (B, H, N, N) = (%d, %d, %d, %d) float32; got %s %s", (int)B,
      (int)H, (int)N, (int)N, ShapeStr(state).c_str(), dtype_name(state.scalar_type()));
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(state),
                      InvalidArgument, , "rwkv7_wkv: state must be contiguous");

  // Outputs: float32, resized to the input shapes (fails if the planned buffer is too small).
  ET_KERNEL_CHECK_MSG(
      ctx,
      y.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(y, r.sizes()) == executorch::runtime::Error::Ok,
      InvalidArgument, , "rwkv7_wkv: y must be (B, T, H, N) = (%d, %d, %d, %d) float32; got %s %s",
      (int)B, (int)T, (int)H, (int)N, ShapeStr(y).c_str(), dtype_name(y.scalar_type()));
  ET_KERNEL_CHECK_MSG(
      ctx,
      state_out.scalar_type() == ScalarType::Float &&
          executorch::runtime::resize_tensor(state_out, state.sizes()) ==
              executorch::runtime::Error::Ok,
      InvalidArgument, ,
      "rwkv7_wkv: state_out must be (B, H, N, N) = (%d, %d, %d, %d) float32; got %s %s", (int)B,
      (int)H, (int)N, (int)N, ShapeStr(state_out).c_str(), dtype_name(state_out.scalar_type()));

  // Aliasing: y aliases nothing; state_out is state itself or disjoint from every input.
  for (int i = 0; i < 6; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, *ins[i]), InvalidArgument, ,
                        "rwkv7_wkv: y must not alias input %s", kInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state), InvalidArgument, ,
                      "rwkv7_wkv: y must not alias input state");
  for (int i = 0; i < 6; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, *ins[i]), InvalidArgument, ,
                        "rwkv7_wkv: state_out must not alias input %s", kInputNames[i]);
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(state_out, state) || same_data(state_out, state),
                      InvalidArgument, ,
                      "rwkv7_wkv: state_out must be state itself or not overlap it");
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(y, state_out), InvalidArgument, ,
                      "rwkv7_wkv: y must not alias state_out");

  if (B * T * H * N == 0) {  // no steps: state_out = state
    if (!same_data(state_out, state) && state.nbytes() > 0) {
      std::memcpy(state_out.mutable_data_ptr<float>(), state.const_data_ptr<float>(),
                  state.nbytes());
    }
    return;
  }

  // ---- compute: state_out is written row by row from state (no separate copy) ----
  const float* S0 = state.const_data_ptr<float>();
  float* S = state_out.mutable_data_ptr<float>();
  const int64_t stride = H * N;  // between consecutive t of one (b, h)
  auto run = N == 64 ? wkv_head<64> : wkv_head<0>;
  for (int64_t bi = 0; bi < B; ++bi) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = bi * T * H * N + h * N;      // x[bi, 0, h, :]
      const int64_t so = (bi * H + h) * N * N;       // state[bi, h, :, :]
      run(S0 + so, S + so, r.const_data_ptr<float>() + o, w.const_data_ptr<float>() + o,
          k.const_data_ptr<float>() + o, v.const_data_ptr<float>() + o,
          a.const_data_ptr<float>() + o, b.const_data_ptr<float>() + o,
          y.mutable_data_ptr<float>() + o, T, N, stride);
    }
  }
}

// Boxed entry point. Stack: r, w, k, v, a, b, state, y, state_out, then the TensorList the
// emitter appends for the returned (y, state_out) — ignored.
void rwkv7_wkv_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  ET_KERNEL_CHECK_MSG(ctx, stack.size() >= 9, InvalidProgram, ,
                      "rwkv7_wkv: expected at least 9 arguments, got %zu", stack.size());
  for (size_t i = 0; i < 9; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, stack[i]->isTensor(), InvalidProgram, ,
                        "rwkv7_wkv: argument %zu must be a Tensor", i);
  }
  rwkv7_wkv_out(ctx, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(),
                stack[3]->toTensor(), stack[4]->toTensor(), stack[5]->toTensor(),
                stack[6]->toTensor(), stack[7]->toTensor(), stack[8]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("rwkv7_wkv.out", edgekit::kernels::rwkv7_wkv_out_boxed);
