"""Triton kernels of the recurrence ops and the glue ops, registered as their CUDA implementations.

Importing this package registers, for each op below, a "CUDA" kernel of the same
`edgekit::<name>` torch op — its functional form, its `.out` form and (stateful ops) its in-place form
(`<name>_inplace`) — so any CUDA tensors passed to `torch.ops.edgekit.<name>` run the Triton
kernel, and CPU tensors keep running the reference. The op's spec (edgekit/ops/<name>.py)
is the one source of shapes; this package adds no op and changes no schema.

One module per op (`RECURRENCES`: rwkv7_wkv, mamba_step, ssd_step, rglru_step), each with
its kernel and `launch(args, outs)`, which writes the outputs into preallocated tensors (the
new states may be the state arguments themselves: every kernel reads a state element
before it writes it, and no two programs share one). The glue ops between two GEMVs
(`GLUE`: add_rms_norm, gated_rms_norm, softplus_bias, silu_mul / gelu_tanh_mul,
causal_conv1d(_silu)) have one kernel each too: their torch references are 3 to 9 CUDA
kernels apiece, and a CUDA-graph step is bound by how many kernels it runs (about 1.5 µs
each on an H100: benchmarks/cuda_latency.py counts them). CfC/LTC are not here: a 64-unit
step is microseconds of work, and their reference already runs on CUDA. `gemv` (not an op)
is the decode GEMV of the CUDA backend's fp16 Linear: fp32 activations against fp16 weights.

The CUDA dtype contract, checked before each launch (`check`): every shape as the spec
says, the state arguments float32, the other tensors float32, float16 or bfloat16
(widened to fp32 in registers), all on one CUDA device. Outputs are float32, as the
spec's fake impls say. Kernels target Ampere and newer (sm_80, Jetson Orin's sm_87): plain
loads, stores, reductions and exp, no Hopper-only instructions (TMA, wgmma, clusters).

Importing needs `triton`; set TRITON_INTERPRET=1 before the first import to run the
kernels on CPU tensors (the CI tests do: tests/test_triton_ops.py).
"""

from __future__ import annotations

import importlib

import torch

# (importing this package first ran edgekit.ops's __init__, which registered every op)
from edgekit.ops.registry import DOMAIN, REGISTRY, in_place_name

# op -> the module of its kernel
RECURRENCES = {"rwkv7_wkv": "rwkv7_wkv", "mamba_step": "mamba_step", "ssd_step": "ssd_step",
               "rglru_step": "rglru_step"}
GLUE = {"add_rms_norm": "add_rms_norm", "gated_rms_norm": "gated_rms_norm", "softplus_bias": "softplus_bias",
        "silu_mul": "gated", "gelu_tanh_mul": "gated", "causal_conv1d": "causal_conv1d",
        "causal_conv1d_silu": "causal_conv1d"}
KERNELS = (*RECURRENCES, *GLUE)
ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_LIB = torch.library.Library(DOMAIN, "IMPL")


_LAUNCH: dict = {}


def launcher(name: str):
    """Op `name`'s `launch(args, outs)` (a module holding two ops' kernels has `launcher(name)`)."""
    if name not in _LAUNCH:
        module = {**RECURRENCES, **GLUE}[name]
        mod = importlib.import_module(f"edgekit.ops.triton.{module}")
        _LAUNCH[name] = mod.launcher(name) if hasattr(mod, "launcher") else mod.launch
    return _LAUNCH[name]


def check(name: str, args) -> None:
    """The spec's shapes and the CUDA dtype contract (module docstring); ValueError in the
    validator's words otherwise."""
    info = REGISTRY[name]
    env = info.bind_checked(args)
    device = args[0].device
    for i, (a, t) in enumerate(zip(info.inputs, args)):
        want = info.expected(a, env)
        state = i in info.state_args
        ok = (torch.float32,) if state else ACTIVATION_DTYPES
        if tuple(t.shape) != want or t.dtype not in ok:
            kinds = "float32 (state)" if state else "float32, float16 or bfloat16"
            raise ValueError(f"{name}: {a.name} must be {a.shape_form} = {want} {kinds}; "
                             f"got {tuple(t.shape)} {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name}: {a.name} is on {t.device}; expected {device}, like {info.inputs[0].name}")


def run(name: str, args, outs=None):
    """Run op `name`'s kernel on args (checked); outs: preallocated outputs (y, *new states),
    or None for new ones. Returns the outputs. Works on CPU tensors under TRITON_INTERPRET=1."""
    info = REGISTRY[name]
    check(name, args)
    if outs is None:
        outs = [torch.empty(s, dtype=torch.float32, device=args[0].device) for s in info.output_shapes(args)]
    launcher(name)(args, outs)
    return tuple(outs)


def _register(name: str) -> None:
    info = REGISTRY[name]
    single = len(info.outputs) == 1

    def functional(*args):
        outs = run(name, args)
        return outs[0] if single else outs

    def out_variant(*args, **kw):
        outs = [kw[o.name] for o in info.outputs]
        info.check_out(args, outs)
        for o, s in zip(outs, info.output_shapes(args)):
            o.resize_(s)
            if not o.is_contiguous():
                raise ValueError(f"{name}: the outputs must be contiguous")
        run(name, args, outs)
        return outs[0] if single else tuple(outs)

    def in_place(*args):
        check(name, args)
        y = torch.empty(info.output_shapes(args)[0], dtype=torch.float32, device=args[0].device)
        states = [args[i] for i in info.state_args]
        if not all(s.is_contiguous() for s in states):
            raise ValueError(f"{name}_inplace: the state arguments must be contiguous")
        launcher(name)(args, [y, *states])
        return y

    _LIB.impl(name, functional, "CUDA")
    _LIB.impl(f"{name}.out", out_variant, "CUDA")
    if info.state_args:
        _LIB.impl(in_place_name(name), in_place, "CUDA")


for _name in KERNELS:
    launcher(_name)          # import the kernel (and triton) before registering anything
    _register(_name)
