"""fuse_conv_silu: Mamba's and Mamba-2's short causal conv and the SiLU that always follows
it stay one `edgekit::causal_conv1d_silu` kernel call (updated in place with
reinplace_state).

Why: without it the SiLU is an XNNPACK delegate call of its own (~20 µs) per block; with
fuse_softplus_bias no XNNPACK call is left in a Mamba block (commit 368b515: Mamba -1.2 ms
per token, paired A/B). Without the pass the conv stays the `edgekit::causal_conv1d` op.
"""

from edgekit.export.passes import FuseGlue


class FuseConvSilu(FuseGlue):
    name = "fuse_conv_silu"
    op = "causal_conv1d_silu"


PASS = FuseConvSilu
