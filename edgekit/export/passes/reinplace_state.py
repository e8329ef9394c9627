"""reinplace_state: a stateful edgekit op whose state arguments are the program's own mutable
state (a `.pte` with `--state-style buffers`) calls its in-place form `<op>_inplace`, whose
state arguments are `Tensor(a!)`: ExecuTorch keeps them pointing at the buffers, so the
kernel reads and writes each state once and no copy back into the buffer follows.

Why: the functional form writes a new state that the program then copies into its buffer;
for Mamba-2 that is 19 MB per token more to move (commit of the in-place forms,
docs/benchmarks.md).
"""

import torch

from edgekit.export.passes import Pass, edgekit_op
from edgekit.ops import REGISTRY, in_place_name


class ReinplaceState(Pass):
    name = "reinplace_state"

    def rewrite(self, func, args, kwargs, ctx):
        op = edgekit_op(func)
        info = REGISTRY.get(op) if op else None
        if info is None or not info.state_args or kwargs:
            return NotImplemented
        if not all(id(args[i]) in ctx.state_buffers for i in info.state_args):
            return NotImplemented          # a state derived in the graph, not the buffer itself
        y = getattr(torch.ops.edgekit, in_place_name(op))(*args)
        return (y, *(args[i] for i in info.state_args))


PASS = ReinplaceState
