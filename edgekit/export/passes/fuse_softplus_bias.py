"""fuse_softplus_bias: the SSM step size Δ = softplus(dt + bias) stays one
`edgekit::softplus_bias` kernel call (vector exp/log, within 2.4 ulp of float64).

Why: torch decomposes softplus into log1p/gt/where, which only ExecuTorch's scalar portable
kernels run (Mamba-130m: 0.6 ms per token); as the kernel, part of the paired A/B of
commit 368b515 (Mamba -1.2 ms per token with the conv+SiLU fusion).
"""

from edgekit.export.passes import FuseGlue


class FuseSoftplusBias(FuseGlue):
    name = "fuse_softplus_bias"
    op = "softplus_bias"


PASS = FuseSoftplusBias
