"""The op registry: one declarative `OpInfo` per custom op, and what is derived from it.

An op module writes its math (`reference`), its ONNX bodies and its spec: the inputs and
outputs with their dimension letters (`Arg`), which inputs are state, the constraints
between dimensions, and `sample_inputs(T)`. `register` derives the rest, so no part is
written twice:
- the torch schema (functional and `.out`), and the `_inplace` form of a stateful op;
- the validator (`OpInfo.validate`), whose messages the C++ kernels repeat word for word:
  `edgekit/ops/cpp_checks.py` writes the same checks as C++ from the same spec
  (kernels/build.sh generates `edgekit_op_checks.h`);
- the aliasing rule of `.out` (an output overlaps no input, except a new state that is its
  own state argument, updated in place; outputs do not overlap each other);
- the fake, functional and `.out` impls;
- the ONNX schema of the `edgekit::<OpType>` node.

Dimension letters: an input's `dims` is a space-separated list of tokens, one per dimension:
a letter binds that size where it first appears (inputs in order) and must match after; an
integer is that size; an expression over letters (`K-1`, `2*W`, `(N+3)//4`, no spaces) is
computed; a leading `...` is any number of leading dimensions, the same for every input
that has it. Checks run in three passes: ranks (binding letters), `constraints`, then every
input's full shape and dtype, in argument order.

Op modules import this module, never the package `edgekit.ops`, so registration runs one
way: the package imports the op modules, each registers itself here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

import torch

DOMAIN = "edgekit"
ONNX_OPSET = 1  # version of the `edgekit` ONNX domain
LIB = torch.library.Library(DOMAIN, "DEF")


def onnx_opset():
    """The onnxscript opset of the `edgekit` domain, which every op's ONNX bodies belong to."""
    import onnxscript
    return onnxscript.values.Opset(DOMAIN, ONNX_OPSET)


def onnx_body(fn):
    """Decorator: fn (onnxscript, written with `op` = onnxscript's opset20, the exporter's
    opset, edgekit.export.onnx.OPSET) as a function of the `edgekit` domain."""
    import onnxscript
    from onnxscript import opset20
    return onnxscript.script(onnx_opset(), default_opset=opset20)(fn)

DTYPES = {"float32": torch.float32, "int32": torch.int32, "int8": torch.int8, "uint8": torch.uint8}
_LETTER = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Arg:
    """One tensor argument or output of an op: its name, its dimensions (module docstring),
    its dtype. dims None: any shape (the op's own `check` validates it). form: how messages
    name the expected shape, when "(B, T, D)" would not say it best."""

    name: str
    dims: str | None
    dtype: str = "float32"
    form: str | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.dims.split()) if self.dims is not None else ()

    @property
    def ellipsis(self) -> bool:
        return self.tokens[:1] == ("...",)

    @property
    def fixed_rank(self) -> int:
        return len(self.tokens) - self.ellipsis

    @property
    def shape_form(self) -> str:
        if self.form is not None:
            return self.form
        toks = self.tokens
        return f"({', '.join(toks)}{',' if len(toks) == 1 else ''})"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def is_letter(tok: str) -> bool:
    return _LETTER.fullmatch(tok) is not None


def evaluate(tok: str, env: dict):
    """The size a dimension token stands for, with the letters bound in env."""
    if tok.isdigit():
        return int(tok)
    if is_letter(tok):
        return env[tok]
    return eval(tok, {"__builtins__": {}}, env)   # noqa: S307  (the op spec's own expression)


@dataclass(frozen=True)
class OpInfo:
    """What every exporter, pass and test needs to know about one custom op (module docstring)."""

    name: str                 # e.g. "rwkv7_wkv"  -> torch.ops.edgekit.rwkv7_wkv
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]  # (y, ..., then one new state per state argument, in order)
    reference: Callable       # plain torch, loops over T; the decomposed export path
    onnx_function: object     # onnxscript OnnxFunction (domain edgekit)
    # sample_inputs(T, seed) -> the op's arguments for T time steps (rows), at shapes that
    # reach every kernel path (vector tails, odd widths): what the op battery runs.
    sample_inputs: Callable
    # Positions of the state arguments. An op with state arguments also gets `<name>_inplace`
    # (defined by `register`): the same computation, each new state written into its state
    # argument, returning y. An ExecuTorch program that keeps its state in mutable buffers
    # calls that form, so the state is read and written once per step, with no write-back
    # copy after the op (ExecuTorch keeps `Tensor(a!)` arguments of custom ops in place).
    state_args: tuple[int, ...] = ()
    # (expression over letters, message) pairs; the message is a str.format over the letters.
    constraints: tuple[tuple[str, str], ...] = ()
    # Checks no dimension letter can say (sizes that depend on configuration values), run
    # after the spec's: raises ValueError, with the words the C++ kernel uses.
    check: Callable | None = None
    # Optional second body for graphs whose T is statically 1 (the exported step graph):
    # straight-line, no Loop/If. Stored under onnx_function's name, with the same inputs and
    # outputs; onnx_function stays correct for every T (prefill graphs, the battery at T > 1).
    # Decode is bound by per-node overhead once the weights are read, so the step body is
    # written for the fewest nodes.
    onnx_step_function: object | None = None
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
    def cpp_kernel(self) -> str:
        """The symbol its C++ kernel registers with ExecuTorch."""
        return f"{self.name}.out"

    @property
    def onnx_op_type(self) -> str:
        return self.onnx_function.name

    @property
    def state_outputs(self) -> dict[int, int]:
        """Output position -> the state argument it is the new value of."""
        first = len(self.outputs) - len(self.state_args)
        return {first + k: i for k, i in enumerate(self.state_args)}

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

    # ---- derived from the spec ----------------------------------------------------------
    def bind(self, args, check: bool = True) -> dict:
        """The dimension letters (and "..." for the shared leading dims) the arguments give.
        check: refuse an argument of the wrong rank (the first pass of `validate`)."""
        env: dict = {}
        for a, t in zip(self.inputs, args):
            if a.dims is None:
                continue
            rank, fixed = t.dim(), a.fixed_rank
            if check and (rank < fixed if a.ellipsis else rank != fixed):
                raise ValueError(f"{self.name}: {a.name} must be {a.shape_form}; got {rank} dims")
            lead = rank - fixed
            if a.ellipsis:
                env.setdefault("...", tuple(t.shape[:lead]))
            for i, tok in enumerate(a.tokens[a.ellipsis:]):
                if is_letter(tok) and tok not in env:
                    env[tok] = t.shape[lead + i]
        return env

    def expected(self, arg: Arg, env: dict) -> tuple:
        lead = env.get("...", ()) if arg.ellipsis else ()
        return tuple(lead) + tuple(evaluate(tok, env) for tok in arg.tokens[arg.ellipsis:])

    def bind_checked(self, args) -> dict:
        """The dimension letters bound from args, after the argument count and the spec's
        constraints are checked (ValueError in the C++ kernel's words). Each argument's own
        shape and dtype are left to the caller: `validate` here, the CUDA launcher's check."""
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} arguments; got {len(args)}")
        env = self.bind(args)
        for expr, message in self.constraints:
            if not evaluate(expr, env):
                raise ValueError(f"{self.name}: " + message.format(**env))
        return env

    def validate(self, *args) -> None:
        """The spec's contract, then the op's own `check`; ValueError with the C++ kernel's words."""
        env = self.bind_checked(args)
        for a, t in zip(self.inputs, args):
            if a.dims is None:
                if t.dtype != a.torch_dtype:
                    raise ValueError(f"{self.name}: {a.name} must be {a.dtype}; got {t.dtype}")
                continue
            want = self.expected(a, env)
            if tuple(t.shape) != want or t.dtype != a.torch_dtype:
                raise ValueError(f"{self.name}: {a.name} must be {a.shape_form} = {want} {a.dtype}; "
                                 f"got {tuple(t.shape)} {t.dtype}")
        if self.check is not None:
            self.check(*args)

    def output_shapes(self, args) -> list[tuple]:
        env = self.bind(args, check=False)
        return [self.expected(o, env) for o in self.outputs]

    def check_out(self, args, outs) -> None:
        """The aliasing contract of a `.out` call, in the C++ kernel's words."""
        states = self.state_outputs
        for k, (o, ot) in enumerate(zip(self.outputs, outs)):
            for i, (a, at) in enumerate(zip(self.inputs, args)):
                if not overlaps(ot, at):
                    continue
                if states.get(k) != i:
                    raise ValueError(f"{self.name}: {o.name} must not alias input {a.name}")
                if ot.data_ptr() != at.data_ptr():
                    raise ValueError(f"{self.name}: {o.name} must be {a.name} itself or not overlap it")
            for j in range(k):
                if overlaps(ot, outs[j]):
                    raise ValueError(f"{self.name}: {self.outputs[j].name} must not alias {o.name}")
            if ot.dtype != o.torch_dtype:
                raise ValueError(f"{self.name}: {o.name} must be {o.dtype}; got {ot.dtype}")


REGISTRY: dict[str, OpInfo] = {}


_onnx_node_ops: dict = {}


def _schemas(info: OpInfo) -> tuple[str, str]:
    args = ", ".join(f"Tensor {a.name}" for a in info.inputs)
    n = len(info.outputs)
    ret = "Tensor" if n == 1 else f"({', '.join(['Tensor'] * n)})"
    alias = "abcdefghijklmnop"
    outs = ", ".join(f"Tensor({alias[k]}!) {o.name}" for k, o in enumerate(info.outputs))
    ret_out = (f"Tensor({alias[0]}!)" if n == 1
               else f"({', '.join(f'Tensor({alias[k]}!)' for k in range(n))})")
    return f"{info.name}({args}) -> {ret}", f"{info.name}.out({args}, *, {outs}) -> {ret_out}"


def register(info: OpInfo) -> OpInfo:
    """Register an op once: its torch schema and impls, derived from the spec; its in-place
    form; and, as a schema, its ONNX node (module docstring). Returns the registered info,
    whose `reference` validates its arguments first."""
    if info.name in REGISTRY:
        raise RuntimeError(f"op {info.qualname} registered twice")
    _check_spec(info)
    math = info.reference

    def reference(*args):
        info.validate(*args)
        return math(*args)

    info = dataclasses.replace(info, reference=reference)
    functional, out = _schemas(info)
    LIB.define(functional)
    LIB.define(out)
    _define_impls(info)
    _register_onnx(info)
    if info.state_args:
        _define_in_place(info)
    REGISTRY[info.name] = info
    return info


def _check_spec(info: OpInfo) -> None:
    """The spec is well formed: every letter an expression or an output uses is bound by some
    input (shapes are checked after every input has bound its letters), states have outputs."""
    bound = {tok for a in info.inputs for tok in a.tokens[a.ellipsis:] if is_letter(tok)}
    for a in (*info.inputs, *info.outputs):
        free = {x for tok in a.tokens for x in _LETTER.findall(tok)} - bound
        if free:
            raise RuntimeError(f"op {info.qualname}: {a.name}'s dims {a.dims!r} use {sorted(free)}, "
                               "which no input binds")
    if len(info.outputs) <= len(info.state_args):
        raise RuntimeError(f"op {info.qualname}: needs y and one output per state argument")


def _define_impls(info: OpInfo) -> None:
    name = info.name
    single = len(info.outputs) == 1

    def functional(*args):
        r = info.reference(*args)
        return r.contiguous() if single else tuple(t.contiguous() for t in r)

    def out_variant(*args, **outs):
        outs = [outs[o.name] for o in info.outputs]
        info.check_out(args, outs)
        r = info.reference(*args)
        for o, v in zip(outs, (r,) if single else r):
            o.resize_(v.shape).copy_(v)
        return outs[0] if single else tuple(outs)

    def fake(*args):
        shapes = info.output_shapes(args)
        r = tuple(args[0].new_empty(s, dtype=o.torch_dtype) for s, o in zip(shapes, info.outputs))
        return r[0] if single else r

    torch.library.impl(LIB, name, "CompositeExplicitAutograd")(functional)
    torch.library.impl(LIB, f"{name}.out", "CompositeExplicitAutograd")(out_variant)
    torch.library.register_fake(f"{DOMAIN}::{name}")(fake)


def _register_onnx(info: OpInfo) -> None:
    """The ONNX schema lets the exporter emit a single `edgekit::<OpType>` node; the
    function body is appended to the model afterwards, so stock runtimes inline it."""
    import onnx
    import onnxscript

    fp = info.onnx_function.to_function_proto()
    if info.onnx_step_function is not None:
        sp = info.onnx_step_function.to_function_proto()
        sig = lambda p: (p.domain, list(p.input), len(p.output))  # noqa: E731  (outputs bind by position)
        if sig(sp) != sig(fp):
            raise RuntimeError(f"op {info.qualname}: step body signature {sig(sp)} != general {sig(fp)}")
    if list(fp.input) != [a.name for a in info.inputs] or len(fp.output) != len(info.outputs):
        raise RuntimeError(f"op {info.qualname}: ONNX body {list(fp.input)} -> {len(fp.output)} outputs "
                           f"does not match the spec's inputs and outputs")
    formal = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        fp.name, DOMAIN, ONNX_OPSET, doc=f"edgekit custom op {info.qualname}",
        # float32 arguments share the type T; others (packed uint8 weights) have their own type
        inputs=[formal(a.name, "T" if a.dtype == "float32" else f"tensor({a.dtype})") for a in info.inputs],
        outputs=[formal(n, "T") for n in fp.output],
        type_constraints=[("T", ["tensor(float)"], "float32 tensors")])
    try:
        onnx.defs.register_schema(schema)
    except Exception:  # already registered in this process (module reloaded)
        pass
    _onnx_node_ops[info.name] = onnxscript.values.Op(onnx_opset(), fp.name, schema)


def in_place_name(name: str) -> str:
    return f"{name}_inplace"


def _define_in_place(info: OpInfo) -> None:
    """`<name>_inplace(...) -> Tensor` and its `.out`: the op with `Tensor(a!)` state
    arguments, updated in place. Its C++ kernel (EDGEKIT_IN_PLACE_KERNEL) calls the op's
    `.out` kernel with each state as its own state_out, which every kernel supports."""
    alias = iter("abcdefghijklmnop")
    sig = ", ".join(f"Tensor({next(alias)}!) {a.name}" if i in info.state_args else f"Tensor {a.name}"
                    for i, a in enumerate(info.inputs))
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
