"""fuse_silu_mul: Mamba's output gate y · silu(z) stays one `edgekit::silu_mul` kernel call.

Why: one XNNPACK delegate call (~20 µs) per block otherwise; part of the glue kernels'
paired A/B, Mamba -1.03 ms per token (commit 77c0e1d, docs/benchmarks.md).
"""

from edgekit.export.passes import FuseGlue


class FuseSiluMul(FuseGlue):
    name = "fuse_silu_mul"
    op = "silu_mul"


PASS = FuseSiluMul
