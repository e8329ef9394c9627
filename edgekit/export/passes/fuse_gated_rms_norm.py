"""fuse_gated_rms_norm: Mamba-2's gated RMSNorm over groups, norm(y · silu(z)) · w, stays one
`edgekit::gated_rms_norm` kernel call.

Why: its stock form was 24 XNNPACK delegate calls per Mamba-2 token at ~20 µs each; a paired
A/B without them: -0.57 ms per token (commit 43fbffd, docs/benchmarks.md).
"""

from edgekit.export.passes import FuseGlue


class FuseGatedRmsNorm(FuseGlue):
    name = "fuse_gated_rms_norm"
    op = "gated_rms_norm"


PASS = FuseGatedRmsNorm
