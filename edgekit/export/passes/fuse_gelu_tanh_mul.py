"""fuse_gelu_tanh_mul: Hawk's GeGLU gates, gelu_tanh(a) · b (MLP and recurrent branch), stay
one `edgekit::gelu_tanh_mul` kernel call.

Why: two XNNPACK delegate calls (~20 µs each) per block otherwise; part of the glue kernels'
paired A/B, Hawk -0.55 ms per token (commit 77c0e1d, docs/benchmarks.md).
"""

from edgekit.export.passes import FuseGlue


class FuseGeluTanhMul(FuseGlue):
    name = "fuse_gelu_tanh_mul"
    op = "gelu_tanh_mul"


PASS = FuseGeluTanhMul
