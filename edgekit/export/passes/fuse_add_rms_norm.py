"""fuse_add_rms_norm: a pre-norm block's residual add and the next RMSNorm,
(h + y, norm(h + y)), stay one `edgekit::add_rms_norm` kernel call.

Why: in a `.pte` the stock form is an XNNPACK delegate call, ~20 µs however little it
computes, against ~1 µs for the kernel; one per block of Mamba, Mamba-2 and Hawk. With the
other glue fusions, paired A/B per token: Mamba -1.03 ms, Mamba-2 -0.80 ms, Hawk -0.55 ms
(commit 77c0e1d, docs/benchmarks.md). ONNX exports leave it out: ORT fuses the stock form
into one SkipSimplifiedLayerNormalization itself.
"""

from edgekit.export.passes import FuseGlue


class FuseAddRmsNorm(FuseGlue):
    name = "fuse_add_rms_norm"
    op = "add_rms_norm"


PASS = FuseAddRmsNorm
