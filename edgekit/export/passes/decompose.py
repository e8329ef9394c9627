"""decompose (`--ops decomposed`): every edgekit op becomes its plain reference (stock torch
ops, loops over T), so the artifact runs on any stock ONNX Runtime or ExecuTorch build
without edgekit's kernel library.

Why: portability, and a second path every parity test compares with the fused one. It is
slower: the fused `.pte` decode of Mamba-130m was 1.06x the weight-read floor, the
decomposed one 1.2-1.4x (docs/benchmarks.md).
"""

from contextlib import contextmanager

from edgekit.export.passes import Pass, edgekit_op
from edgekit.ops import REGISTRY


class Decompose(Pass):
    name = "decompose"

    @contextmanager
    def modules(self, model, ctx):
        self.model = model
        # configuration buffers as Python values, read before the trace swaps in fake tensors
        self.values = {n: b.tolist() for n, b in model.named_buffers() if b.numel() <= 64}
        yield

    def rewrite(self, func, args, kwargs, ctx):
        op = edgekit_op(func)
        if op is None:
            return NotImplemented
        info = REGISTRY[op]
        if not info.config_args:
            return ctx.replace(self, info.reference, *args, **kwargs)
        args = list(args)
        traced = {id(t): n for n, t in self.model.named_buffers()}
        for i in info.config_args:
            name = traced.get(id(args[i]))
            if name not in self.values:
                raise ValueError(f"decompose: {op}'s configuration argument {i} is not a small buffer "
                                 f"of the model, so its value is unknown at export")
            args[i] = self.values[name]
        return ctx.replace(self, info.decomposition, *args, **kwargs)


PASS = Decompose
