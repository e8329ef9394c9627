"""Triton kernels of `edgekit::silu_mul` and `edgekit::gelu_tanh_mul` (edgekit/ops/gated.py):
y = act(a) · b, one pass; gelu_tanh(a) = a · σ(2u), u = √(2/π)(a + 0.044715 a³), the form
the op's docstring derives."""

from __future__ import annotations

import triton
import triton.language as tl

from edgekit.ops.triton._rows import rows

NAMES = ("silu_mul", "gelu_tanh_mul")


@triton.jit
def _gated_kernel(a, b, y, C, sa, sb, GELU: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < C
    av = tl.load(a + row * sa + c, mask=m, other=0.0).to(tl.float32)
    bv = tl.load(b + row * sb + c, mask=m, other=0.0).to(tl.float32)
    if GELU:
        u = 0.7978845608028654 * (av + 0.044715 * av * av * av)
        act = av * tl.sigmoid(2.0 * u)
    else:
        act = av * tl.sigmoid(av)
    tl.store(y + row * C + c, act * bv, mask=m)


def launcher(name: str):
    gelu = name == "gelu_tanh_mul"

    def launch(args, outs) -> None:
        a, b = args
        (y,) = outs
        if a.dim() == 0 or a.numel() == 0:
            y.copy_(act_ref(a, gelu) * b)
            return
        C = a.shape[-1]
        a, R, sa = rows(a)
        b, _, sb = rows(b)
        BLOCK = min(triton.next_power_of_2(C), 1024)
        _gated_kernel[(R, triton.cdiv(C, BLOCK))](a, b, y, C, sa, sb, GELU=gelu, BLOCK=BLOCK, num_warps=4)
    return launch


def act_ref(a, gelu: bool):
    import torch
    return torch.nn.functional.gelu(a, approximate="tanh") if gelu else torch.nn.functional.silu(a)
