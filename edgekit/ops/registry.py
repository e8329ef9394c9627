"""The op registry: `OpInfo` (what exporters, passes and tests need to know about one
custom op), `register`, the torch.library `LIB` of domain `edgekit`, and the helpers every
op module shares. Op modules import this module, never the package `edgekit.ops`, so
registration runs one way: the package imports the op modules, each registers itself here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

DOMAIN = "edgekit"
ONNX_OPSET = 1  # version of the `edgekit` ONNX domain
LIB = torch.library.Library(DOMAIN, "DEF")


@dataclass(frozen=True)
class OpInfo:
    """What every exporter and test needs to know about one custom op."""

    name: str                 # e.g. "rwkv7_wkv"  -> torch.ops.edgekit.rwkv7_wkv
    reference: Callable       # plain torch, loops over T; the decomposed export path
    onnx_function: object     # onnxscript OnnxFunction (domain edgekit)
    cpp_kernel: str           # symbol registered with EXECUTORCH_LIBRARY, e.g. "rwkv7_wkv.out"
    validate: Callable        # raises ValueError with the same words as the C++ kernel
    # Optional second body for graphs whose T is statically 1 (the exported step graph):
    # straight-line, no Loop/If. Stored under onnx_function's name, with the same inputs and
    # outputs; onnx_function stays correct for every T (prefill graphs, the battery at T > 1). Decode is bound by per-node
    # overhead once the weights are read, so the step body is written for the fewest nodes.
    onnx_step_function: object | None = None
    # Positions of the state arguments. Outputs are (y, one new state per state argument, in
    # argument order). An op with state arguments also gets `<name>_inplace` (defined by
    # `register`): the same computation, each new state written into its state argument,
    # returning y. An ExecuTorch program that keeps its state in mutable buffers calls that
    # form, so the state is read and written once per step, with no write-back copy after
    # the op (ExecuTorch keeps `Tensor(a!)` arguments of custom ops in place).
    state_args: tuple[int, ...] = ()
    # A glue op (the elementwise work between two GEMVs, kept as one kernel call by its
    # fusion pass, edgekit/export/passes/fuse_*.py): the same math written in stock torch ops
    # and lower edgekit ops, which is what an exported graph holds without that pass (the
    # forms ONNX Runtime fuses itself). None: not a glue op, the op is the recurrence itself.
    composite: Callable | None = None
    # Positions of arguments that hold the op's configuration as a small tensor (the C++
    # kernel reads it at run time), and the reference that takes those arguments as Python
    # lists instead: the decompose pass calls it with the values read before the trace, so
    # the configuration is constant in a decomposed graph rather than data it depends on.
    config_args: tuple[int, ...] = ()
    decomposition: Callable | None = None

    @property
    def torch_op(self):
        return getattr(torch.ops.edgekit, self.name)

    @property
    def qualname(self) -> str:
        return f"{DOMAIN}::{self.name}"

    @property
    def onnx_op_type(self) -> str:
        return self.onnx_function.name

    def onnx_function_proto(self, step: bool = False):
        """The function body to store in a model; step=True: the graph's T is 1."""
        if not (step and self.onnx_step_function is not None):
            return self.onnx_function.to_function_proto()
        proto = self.onnx_step_function.to_function_proto()
        proto.name = self.onnx_function.name            # the node's op type
        return proto

    def onnx_node(self, *inputs):
        """Emit one `edgekit::<OpType>` node (used by the ONNX exporter's translation table)."""
        return _onnx_node_ops[self.name](*inputs)


REGISTRY: dict[str, OpInfo] = {}


_onnx_node_ops: dict = {}


def register(info: OpInfo) -> OpInfo:
    """Register an op once: with edgekit's registry and, as a schema, with onnx.defs.

    The ONNX schema lets the exporter emit a single `edgekit::<OpType>` node; the
    function body is appended to the model afterwards, so stock runtimes inline it.
    """
    import onnx
    import onnxscript

    if info.name in REGISTRY:
        raise RuntimeError(f"op {info.qualname} registered twice")
    fp = info.onnx_function.to_function_proto()
    if info.onnx_step_function is not None:
        sp = info.onnx_step_function.to_function_proto()
        sig = lambda p: (p.domain, list(p.input), len(p.output))  # noqa: E731  (outputs bind by position)
        if sig(sp) != sig(fp):
            raise RuntimeError(f"op {info.qualname}: step body signature {sig(sp)} != general {sig(fp)}")
    formal = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        fp.name, DOMAIN, ONNX_OPSET, doc=f"edgekit custom op {info.qualname}",
        inputs=[formal(n, "T") for n in fp.input], outputs=[formal(n, "T") for n in fp.output],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")])
    try:
        onnx.defs.register_schema(schema)
    except Exception:  # already registered in this process (module reloaded)
        pass
    _onnx_node_ops[info.name] = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, ONNX_OPSET), fp.name, schema)
    if info.state_args:
        _define_in_place(info)
    REGISTRY[info.name] = info
    return info


def in_place_name(name: str) -> str:
    return f"{name}_inplace"


def _define_in_place(info: OpInfo) -> None:
    """`<name>_inplace(...) -> Tensor` and its `.out`: the op with `Tensor(a!)` state
    arguments, updated in place. Its C++ kernel (EDGEKIT_IN_PLACE_KERNEL) calls the op's
    `.out` kernel with each state as its own state_out, which every kernel supports."""
    fn = info.torch_op.default._schema
    if any(str(a.type) != "Tensor" for a in fn.arguments) or len(fn.returns) != 1 + len(info.state_args):
        raise RuntimeError(f"op {info.qualname}: an in-place form needs Tensor arguments and "
                           f"outputs (y, *new states); schema is {fn}")
    alias = iter("abcdefghijklmnop")
    sig = ", ".join(f"Tensor({next(alias)}!) {a.name}" if i in info.state_args else f"Tensor {a.name}"
                    for i, a in enumerate(fn.arguments))
    name, op = in_place_name(info.name), info.torch_op
    LIB.define(f"{name}({sig}) -> Tensor")
    LIB.define(f"{name}.out({sig}, *, Tensor(z!) y) -> Tensor(z!)")

    def run(*args):
        y, *new = op(*args)
        for i, s in zip(info.state_args, new):
            args[i].copy_(s)
        return y

    def run_out(*args, y):
        out = run(*args)
        y.resize_(out.shape).copy_(out)
        return y

    torch.library.impl(LIB, name, "CompositeExplicitAutograd")(run)
    torch.library.impl(LIB, f"{name}.out", "CompositeExplicitAutograd")(run_out)
    torch.library.register_fake(f"{DOMAIN}::{name}")(lambda *args: torch.empty_like(op(*args)[0]))


def impl_one_output(name: str, inputs: tuple[str, ...], reference: Callable, out: str = "y") -> None:
    """The torch impls of a stateless op with one output `out`, like its input 0 in shape:
    functional, `.out` (rejecting an output that overlaps an input, in the C++ kernel's
    words) and fake."""
    def functional(*args):
        return reference(*args).contiguous()

    def out_variant(*args, **kw):
        y = kw[out]
        for n, t in zip(inputs, args):
            if overlaps(y, t):
                raise ValueError(f"{name}: {out} must not alias input {n}")
        r = reference(*args)
        y.resize_(r.shape).copy_(r)
        return y

    torch.library.impl(LIB, name, "CompositeExplicitAutograd")(functional)
    torch.library.impl(LIB, f"{name}.out", "CompositeExplicitAutograd")(out_variant)
    torch.library.register_fake(f"{DOMAIN}::{name}")(lambda *args: torch.empty_like(args[0]))


def call(name: str, *args, in_place: bool = False):
    """The outputs of `edgekit::<name>` (y, *new states). With in_place (an op that has
    state arguments) its in-place form runs instead: each state argument is updated and
    returned as its new state."""
    info = REGISTRY[name]
    if not (in_place and info.state_args):
        return info.torch_op(*args)
    y = getattr(torch.ops.edgekit, in_place_name(name))(*args)
    return (y, *(args[i] for i in info.state_args))


def overlaps(a, b) -> bool:
    """True if the memory of tensors a and b overlaps (an aliasing `.out` call)."""
    as_, ae = a.data_ptr(), a.data_ptr() + a.numel() * a.element_size()
    bs, be = b.data_ptr(), b.data_ptr() + b.numel() * b.element_size()
    return as_ < be and bs < ae
