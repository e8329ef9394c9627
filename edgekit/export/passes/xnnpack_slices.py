"""xnnpack_slices (`.pte` with decomposed ops): a split of the last dim into listed sizes
becomes slices. Slices stay inside the XNNPACK call that computes their input (Mamba-2: the
SiLU after the conv, then its x / B / C split); a split does not, and cuts the delegate in
two. Measured on Mamba-2 (commit ef1a361): 4 -> 3 XNNPACK calls per layer, A/B 1.10x vs
1.22x the weight-read floor. Not used with fused ops, whose glue kernels leave slices alone
in a partition of their own (a delegate call of ~20 µs that only slices).
"""

import torch

from edgekit.export.passes import Pass


def slices(x: torch.Tensor, sizes):
    out, start = [], 0
    for n in sizes:
        out.append(x[..., start:start + n])
        start += n
    return tuple(out)


class XnnpackSlices(Pass):
    name = "xnnpack_slices"

    def rewrite(self, func, args, kwargs, ctx):
        if func is not torch.Tensor.split or len(args) < 2 or not isinstance(args[1], (list, tuple)):
            return NotImplemented
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if dim % args[0].dim() != args[0].dim() - 1:
            return NotImplemented
        return ctx.replace(self, slices, args[0], args[1])


PASS = XnnpackSlices
