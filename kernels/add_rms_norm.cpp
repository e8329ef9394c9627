// ExecuTorch kernel for `edgekit::add_rms_norm.out` — a pre-norm block's residual add and the
// next RMSNorm in one call. Schema, reference and validator: edgekit/ops/add_rms_norm.py.
//
//   add_rms_norm.out(Tensor x, Tensor r, Tensor w, Tensor eps, *,
//                    Tensor(a!) h, Tensor(b!) y) -> (Tensor(a!), Tensor(b!))
//
// Dimensions: M rows (the leading dims of x flattened), D the normalized width.
// x, r, h, y: (..., D); w: (D,); eps: (1,); float32, contiguous.
//
//   h = x + r;   y = h / sqrt(mean(h^2) + eps) * w        (per row)
#include "edgekit_kernel.h"

#include <cmath>

namespace edgekit {
namespace kernels {
namespace {

constexpr const char* kNames[4] = {"x", "r", "w", "eps"};

void add_rms_norm_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& r, const Tensor& w,
                      const Tensor& eps, Tensor& h, Tensor& y) {
  // ---- validate: the same words as edgekit/ops/add_rms_norm.py `validate` / `check_out` ----
  ET_KERNEL_CHECK_MSG(ctx, x.dim() >= 1 && x.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "add_rms_norm: x must be (..., D) float32; got %s %s", ShapeStr(x).c_str(),
                      dtype_name(x.scalar_type()));
  const int64_t D = x.size(x.dim() - 1);
  bool r_ok = r.dim() == x.dim() && r.scalar_type() == ScalarType::Float;
  for (ssize_t d = 0; r_ok && d < x.dim(); ++d) r_ok = r.size(d) == x.size(d);
  ET_KERNEL_CHECK_MSG(ctx, r_ok, InvalidArgument, ,
                      "add_rms_norm: r must be the shape of x = %s float32; got %s %s", ShapeStr(x).c_str(),
                      ShapeStr(r).c_str(), dtype_name(r.scalar_type()));
  ET_KERNEL_CHECK_MSG(ctx, has_shape(w, {D}) && w.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "add_rms_norm: w must be (D,) = (%d,) float32; got %s %s", (int)D, ShapeStr(w).c_str(),
                      dtype_name(w.scalar_type()));
  ET_KERNEL_CHECK_MSG(ctx, has_shape(eps, {1}) && eps.scalar_type() == ScalarType::Float, InvalidArgument, ,
                      "add_rms_norm: eps must be (1,) = (1,) float32; got %s %s", ShapeStr(eps).c_str(),
                      dtype_name(eps.scalar_type()));
  const Tensor* ins[4] = {&x, &r, &w, &eps};
  for (int i = 0; i < 4; ++i) {
    ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_default_dim_order(*ins[i]), InvalidArgument, ,
                        "add_rms_norm: %s must be contiguous", kNames[i]);
  }
  Tensor* outs[2] = {&h, &y};
  const char* out_names[2] = {"h", "y"};
  for (int o = 0; o < 2; ++o) {
    ET_KERNEL_CHECK_MSG(ctx,
                        outs[o]->scalar_type() == ScalarType::Float &&
                            executorch::runtime::resize_tensor(*outs[o], x.sizes()) == executorch::runtime::Error::Ok,
                        InvalidArgument, , "add_rms_norm: %s must be the shape of x = %s float32; got %s %s",
                        out_names[o], ShapeStr(x).c_str(), ShapeStr(*outs[o]).c_str(),
                        dtype_name(outs[o]->scalar_type()));
    for (int i = 0; i < 4; ++i) {
      ET_KERNEL_CHECK_MSG(ctx, !overlaps(*outs[o], *ins[i]), InvalidArgument, ,
                          "add_rms_norm: %s must not alias input %s", out_names[o], kNames[i]);
    }
  }
  ET_KERNEL_CHECK_MSG(ctx, !overlaps(h, y), InvalidArgument, , "add_rms_norm: h must not alias y");

  // ---- compute, row by row ----
  const float* xp = x.const_data_ptr<float>();
  const float* rp = r.const_data_ptr<float>();
  const float* wp = w.const_data_ptr<float>();
  const float e = eps.const_data_ptr<float>()[0];
  float* hp = h.mutable_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  const int64_t M = D > 0 ? x.numel() / D : 0;
  for (int64_t m = 0; m < M; ++m, xp += D, rp += D, hp += D, yp += D) {
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t d = 0; d < D; ++d) {
      const float v = xp[d] + rp[d];
      hp[d] = v;
      ss += v * v;
    }
    const float denom = std::sqrt(ss / (float)D + e);
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) yp[d] = hp[d] / denom * wp[d];
  }
}

// Boxed entry point. Stack: x, r, w, eps, h, y, then the returned (h, y) list (ignored).
void add_rms_norm_out_boxed(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  if (!tensor_args(ctx, stack, 6, "add_rms_norm")) return;
  add_rms_norm_out(ctx, stack[0]->toTensor(), stack[1]->toTensor(), stack[2]->toTensor(), stack[3]->toTensor(),
                   stack[4]->toTensor(), stack[5]->toTensor());
}

}  // namespace
}  // namespace kernels
}  // namespace edgekit

EDGEKIT_OUT_KERNEL("add_rms_norm.out", edgekit::kernels::add_rms_norm_out_boxed);
