"""Writes `edgekit_op_checks.h`: each registered op's argument checks as C++, generated from
the same `OpInfo` spec that `OpInfo.validate` and `OpInfo.check_out` interpret, so the C++
kernel and the Python validator refuse the same mistake with the same words.

    python kernels/gen_checks.py OUT.h        (kernels/build.sh runs it)

For each op `<op>` the header defines `struct <op>_dims` (every dimension letter, and the
element count of the leading `...` dims) and

    bool check_<op>(KernelRuntimeContext& ctx, Span<EValue*> stack, <op>_dims& d);

over the boxed `.out` stack (inputs, then outputs): the argument count and kinds; ranks;
the constraints; every input's shape, dtype and dim order; each output resized to its shape
(its dtype checked); the aliasing rule. It fails the context and returns false at the first
violation, logging the validator's message. The op's own `check` (sizes that depend on
configuration values) stays hand-written in its kernel, after this.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.ops.registry import Arg, OpInfo, is_letter

_SCALAR = {"float32": "ScalarType::Float", "int32": "ScalarType::Int", "int8": "ScalarType::Char",
           "uint8": "ScalarType::Byte"}
_CTYPE = {"float32": "float", "int32": "int32_t", "int8": "int8_t", "uint8": "uint8_t"}


def _c_lit(s: str) -> str:
    """A C string literal of s."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _c_str(s: str) -> str:
    """A printf format that prints s."""
    return _c_lit(s.replace("%", "%%"))


def _c_expr(tok: str) -> str:
    """A dimension token or constraint as C++: letters are the locals L_<letter>."""
    e = re.sub(r"\b([A-Za-z_]\w*)\b", lambda m: m.group(1) if m.group(1) in ("and", "or", "not") else f"L_{m.group(1)}",
               tok.replace("//", "/"))
    e = re.sub(r"\band\b", "&&", e)
    e = re.sub(r"\bor\b", "||", e)
    return re.sub(r"\bnot\b", "!", e)


def _format(message: str) -> tuple[str, list[str]]:
    """A str.format message over letters -> a printf format and its arguments."""
    args: list[str] = []

    def sub(m):
        args.append(f"(long long)L_{m.group(1)}")
        return "\x00"
    fmt = re.sub(r"\{([A-Za-z_]\w*)\}", sub, message)
    return _c_str(fmt).replace("\x00", "%lld"), args


def _want(a: Arg) -> list[str]:
    lines = ["    Want want;"]
    if a.ellipsis:
        lines.append("    want.prefix(lead, n_lead);")
    lines += [f"    want.add({_c_expr(tok)});" for tok in a.tokens[a.ellipsis:]]
    return lines


def op_checks(info: OpInfo) -> str:
    name, n_in, n_out = info.name, len(info.inputs), len(info.outputs)
    t = lambda a: f"t_{a.name}"  # noqa: E731  (the C++ local of a tensor)
    letters: list[str] = []
    for a in info.inputs:
        for tok in a.tokens[a.ellipsis:]:
            if is_letter(tok) and tok not in letters:
                letters.append(tok)
    fields = "".join(f"int64_t {x} = 0; " for x in letters)
    L = [f"struct {name}_dims {{ {fields}int64_t lead_numel = 1; }};", "",
         f"inline bool check_{name}(KernelRuntimeContext& ctx, Span<EValue*> stack, {name}_dims& d) {{",
         f"  if (!tensor_args(ctx, stack, {n_in + n_out}, {_c_lit(name)})) return false;"]
    L += [f"  const Tensor& {t(a)} = stack[{i}]->toTensor();" for i, a in enumerate(info.inputs)]
    L += [f"  Tensor& {t(o)} = stack[{n_in + k}]->toTensor();" for k, o in enumerate(info.outputs)]
    if letters:
        L.append(f"  int64_t {', '.join(f'L_{x} = 0' for x in letters)};")
    L += ["  const Tensor* lead = nullptr;", "  ssize_t n_lead = 0;"]
    # pass 1: ranks, binding letters
    bound: set[str] = set()
    for a in info.inputs:
        if a.dims is None:
            continue
        cmp = "<" if a.ellipsis else "!="
        fmt = _c_str(f"{name}: {a.name} must be {a.shape_form}; got ") + ' "%d dims"'
        L.append(f"  if ({t(a)}.dim() {cmp} {a.fixed_rank}) return fail(ctx, {fmt}, (int){t(a)}.dim());")
        if a.ellipsis:
            L.append(f"  if (lead == nullptr) {{ lead = &{t(a)}; n_lead = {t(a)}.dim() - {a.fixed_rank}; }}")
        for j, tok in enumerate(a.tokens[a.ellipsis:]):
            if is_letter(tok) and tok not in bound:
                bound.add(tok)
                L.append(f"  L_{tok} = {t(a)}.size({t(a)}.dim() - {a.fixed_rank - j});")
    # pass 2: constraints
    for expr, message in info.constraints:
        fmt, args = _format(f"{name}: {message}")
        L.append(f"  if (!({_c_expr(expr)})) return fail(ctx, {', '.join([fmt, *args])});")
    # pass 3: shapes and dtypes, then dim order
    for a in info.inputs:
        st = _SCALAR[a.dtype]
        if a.dims is None:
            fmt = _c_str(f"{name}: {a.name} must be {a.dtype}; got ") + ' "%s"'
            L.append(f"  if ({t(a)}.scalar_type() != {st}) return fail(ctx, {fmt}, dtype_name({t(a)}.scalar_type()));")
            continue
        L += ["  {", *_want(a),
              f"    if (!expect(ctx, {t(a)}, want, {st}, {_c_lit(f'{name}: {a.name} must be {a.shape_form} = ')}, "
              f"{_c_lit(a.dtype)})) return false;", "  }"]
    for a in info.inputs:
        L.append(f"  if (!executorch::runtime::tensor_is_default_dim_order({t(a)})) "
                 f"return fail(ctx, {_c_str(f'{name}: {a.name} must be contiguous')});")
    # outputs: resized to their shapes
    for o in info.outputs:
        L += ["  {", *_want(o),
              f"    if (!resize_out(ctx, {t(o)}, want, {_SCALAR[o.dtype]}, "
              f"{_c_lit(f'{name}: {o.name} must be {o.shape_form} = ')}, {_c_lit(o.dtype)})) return false;", "  }"]
    # aliasing (OpInfo.check_out, in its order)
    states = info.state_outputs
    for k, o in enumerate(info.outputs):
        for i, a in enumerate(info.inputs):
            if states.get(k) == i:
                msg = _c_str(f"{name}: {o.name} must be {a.name} itself or not overlap it")
                L.append(f"  if (overlaps({t(o)}, {t(a)}) && !same_data({t(o)}, {t(a)})) return fail(ctx, {msg});")
            else:
                msg = _c_str(f"{name}: {o.name} must not alias input {a.name}")
                L.append(f"  if (overlaps({t(o)}, {t(a)})) return fail(ctx, {msg});")
        for p in info.outputs[:k]:
            L.append(f"  if (overlaps({t(o)}, {t(p)})) return fail(ctx, {_c_str(f'{name}: {p.name} must not alias {o.name}')});")
    L += [f"  d.{x} = L_{x};" for x in letters]
    L += ["  for (ssize_t i = 0; i < n_lead; ++i) d.lead_numel *= lead->size(i);", "  return true;", "}"]
    # the adapter: checks, then the op's math core on raw pointers
    n = n_in + n_out
    ptrs = [f"stack[{i}]->toTensor().const_data_ptr<{_CTYPE[a.dtype]}>()" for i, a in enumerate(info.inputs)]
    ptrs += [f"stack[{n_in + k}]->toTensor().mutable_data_ptr<{_CTYPE[o.dtype]}>()" for k, o in enumerate(info.outputs)]
    L += ["", f"// The boxed `{name}.out` kernel: check the stack ({n} tensors, then the returned value), then run",
          f"// core(dims, {', '.join(a.name for a in info.inputs)}, {', '.join(o.name for o in info.outputs)}) on raw pointers.",
          "template <typename Core>",
          f"inline void run_{name}(KernelRuntimeContext& ctx, Span<EValue*> stack, Core&& core) {{",
          f"  {name}_dims d;",
          f"  if (!check_{name}(ctx, stack, d)) return;",
          "  core(d,",
          *[f"       {p}{',' if i < n - 1 else ');'}" for i, p in enumerate(ptrs)],
          "}"]
    # registration: `EDGEKIT_REGISTER_<op>(core);` at file scope registers `<op>.out` (and the
    # in-place form of a stateful op) running the core through run_<op>
    boxed = ("(+[](::executorch::runtime::KernelRuntimeContext& ctx, "
             "::executorch::runtime::Span<::executorch::runtime::EValue*> stack) { "
             f"::edgekit::kernels::checks::run_{name}(ctx, stack, __VA_ARGS__); }})")
    L += ["", f"#define EDGEKIT_REGISTER_{name}(...) \\",
          f"  EDGEKIT_OUT_KERNEL(\"{name}.out\", {boxed})" + (" \\" if info.state_args else "")]
    if info.state_args:
        L.append(f"  ; EDGEKIT_IN_PLACE_KERNEL(\"{name}\", {boxed}, {n_in}, {', '.join(map(str, info.state_args))})")
    return "\n".join(L)


def header(registry: dict[str, OpInfo]) -> str:
    body = "\n\n".join(op_checks(info) for info in sorted(registry.values(), key=lambda i: i.name))
    return f"""// Generated by kernels/gen_checks.py from the op specs in edgekit/ops/ (kernels/build.sh).
// Do not edit: change the op's spec. See edgekit/ops/cpp_checks.py.
#pragma once

#include "edgekit_kernel.h"

namespace edgekit {{
namespace kernels {{
namespace checks {{

{body}

}}  // namespace checks
}}  // namespace kernels
}}  // namespace edgekit
"""


def write(path, registry: dict[str, OpInfo]) -> None:
    """The header for every op in registry, written to path (a temp file, then renamed)."""
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(header(registry))
    tmp.replace(out)
