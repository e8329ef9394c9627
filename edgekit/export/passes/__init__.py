"""Lowering passes: everything that depends on where a model will run, as named rewrites
applied while an exporter traces the model (STYLE.md §13). Model files write the math once;
they call edgekit's ops (the recurrences, and the glue composites such as
`add_rms_norm`) and plain torch, and never ask what they are exported for.

A pass rewrites the traced program in one of two ways:
* call rewrites (`Pass.rewrite`): while the exporter traces, every torch call goes through
  the active passes in pipeline order (a `TorchFunctionMode`); a pass may replace a call by
  other calls (its replacement is traced with the later passes still active), or keep it;
* module rewrites (`Pass.modules`): before tracing, a pass may swap submodules (for
  example `pack_dense` swaps each `layers.Linear` for the packed `edgekit::dense` layer)
  and restores them after.

Glue composites (ops whose `OpInfo.composite` is set) are kept as one kernel call only when
their fusion pass (`fuse_<op>`) is in the pipeline; otherwise the trace records their
composite, the stock form (what ONNX Runtime fuses itself).

A target's pipeline is data: an ordered list of pass names (`pipeline_for`), recorded in the
manifest (`"passes"`) with how often each fired. Each pass module says in its docstring
what it rewrites and the measurement that justified it.
"""

from __future__ import annotations

import importlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch.overrides import TorchFunctionMode

from edgekit.ops import REGISTRY

@dataclass
class Pass:
    """One named lowering pass. Subclasses override `rewrite` and/or `modules`."""

    name: ClassVar[str]
    fired: int = field(default=0, init=False)

    def rewrite(self, func, args: tuple, kwargs: dict, ctx: "Lowering"):
        """A replacement result, or NotImplemented (this pass does not touch the call)."""
        return NotImplemented

    def observe(self, func, args: tuple, out) -> None:
        """Sees every call no pass rewrote, with its result (for rewrites that match a
        pattern of two calls, e.g. a mean of squares)."""

    @contextmanager
    def modules(self, model: torch.nn.Module, ctx: "Lowering"):
        """Module rewrites in place for the duration of the trace, restored after."""
        yield


@dataclass
class FuseGlue(Pass):
    """A glue fusion: keeps every call of the glue op `op` as one edgekit kernel call
    (without it, the trace records the op's composite, `OpInfo.composite`)."""

    op: ClassVar[str]


# The passes, by name, in the order a pipeline lists them. One module per pass.
PASS_MODULES = ("decompose", "fuse_add_rms_norm", "fuse_gated_rms_norm", "fuse_silu_mul",
                "fuse_gelu_tanh_mul", "fuse_softplus_bias", "fuse_conv_silu", "reinplace_state",
                "pack_dense", "xnnpack_forms", "xnnpack_slices")

GLUE_FUSIONS = ("fuse_add_rms_norm", "fuse_gated_rms_norm", "fuse_silu_mul", "fuse_gelu_tanh_mul",
                "fuse_softplus_bias", "fuse_conv_silu")


def get(name: str) -> type[Pass]:
    if name not in PASS_MODULES:
        raise KeyError(f"unknown lowering pass {name!r}; passes: {', '.join(PASS_MODULES)}")
    return importlib.import_module(f"edgekit.export.passes.{name}").PASS


def pipeline_for(fmt: str, ops: str, state_style: str = "io") -> list[str]:
    """The ordered pass names of a target. fmt: "onnx" | "pte"; ops: "fused" | "decomposed";
    state_style (pte): "buffers" keeps the state in the program's mutable buffers."""
    if ops == "decomposed":
        return ["decompose"] + (["xnnpack_forms", "xnnpack_slices"] if fmt == "pte" else [])
    if fmt == "onnx":
        return []                  # edgekit nodes for the recurrences; ORT fuses the stock glue
    return [*GLUE_FUSIONS, *(["reinplace_state"] if state_style == "buffers" else []),
            "pack_dense", "xnnpack_forms"]


def edgekit_op(func) -> str | None:
    """The registry name of `torch.ops.edgekit.<name>` (packet or overload), else None."""
    qual = getattr(func, "_qualified_op_name", None) or getattr(func, "_name", None)
    if not isinstance(qual, str) or not qual.startswith("edgekit::"):
        return None
    name = qual.removeprefix("edgekit::")
    return name if name in REGISTRY else None


class Lowering(TorchFunctionMode):
    """The active pipeline while a model is traced: routes every torch call through the
    passes in order. `state_buffers`: ids of the tensors that are the program's own mutable
    state (set by the exporter's step wrapper, `note_state_buffers`)."""

    def __init__(self, passes: list[Pass]):
        super().__init__()
        self.passes = passes
        self.fusions = {p.op: p for p in passes if isinstance(p, FuseGlue)}
        self.state_buffers: set[int] = set()
        self._skip: list[Pass] = []          # passes whose own replacement is being traced

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = edgekit_op(func)
        if op is not None and REGISTRY[op].composite is not None:
            if op not in self.fusions:                 # no fusion pass: the stock form
                return self._trace(None, REGISTRY[op].composite, args, kwargs)
            self.fusions[op].fired += 1                # kept as one kernel call
        for p in self.passes:
            if p in self._skip:
                continue
            out = p.rewrite(func, args, kwargs, self)
            if out is not NotImplemented:
                p.fired += 1
                return out
        out = func(*args, **kwargs)
        for p in self.passes:
            if p not in self._skip:
                p.observe(func, args, out)
        return out

    def _trace(self, p: Pass | None, fn: Callable, args, kwargs):
        """Run fn (a replacement) with the pipeline active, less pass p."""
        if p is not None:
            self._skip.append(p)
        try:
            with self:
                return fn(*args, **kwargs)
        finally:
            if p is not None:
                self._skip.pop()

    def replace(self, p: Pass, fn: Callable, *args, **kwargs):
        """For a pass's rewrite: the traced result of fn(*args, **kwargs), itself lowered by the
        other passes of the pipeline."""
        return self._trace(p, fn, args, kwargs)


_ACTIVE: list[Lowering] = []


def note_state_buffers(tensors) -> None:
    """Called by the exporter's step wrapper while tracing: these tensors are the program's
    mutable state (ExecuTorch buffers), which `reinplace_state` may update in place."""
    if _ACTIVE:
        _ACTIVE[-1].state_buffers.update(id(t) for t in tensors)


def trace(step: torch.nn.Module, args: tuple, model: torch.nn.Module, pipeline: list[str]):
    """torch.export of step(*args) (a wrapper around model) with the pipeline applied:
    (ExportedProgram, {pass name: calls it rewrote}). Only this trace runs under the passes;
    what a format does with the program afterwards (ExecuTorch's edge passes, the ONNX
    translation) sees the lowered graph and no pass."""
    with torch.no_grad(), lowered(model, pipeline) as fired:
        ep = torch.export.export(step, args, strict=False)
    return ep, dict(fired)


@contextmanager
def lowered(model: torch.nn.Module, pipeline: list[str]):
    """Trace-time context: the pipeline's module rewrites applied to model, its call rewrites
    active. Yields a Counter {pass name: times fired}, filled when the context exits."""
    passes = [get(n)() for n in pipeline]
    ctx = Lowering(passes)
    report: Counter = Counter()
    with ExitStack() as stack:
        for p in passes:
            stack.enter_context(p.modules(model, ctx))
        _ACTIVE.append(ctx)
        try:
            with ctx:
                yield report
        finally:
            _ACTIVE.pop()
    report.update({p.name: p.fired for p in passes})
