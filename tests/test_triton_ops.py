"""The Triton kernels of the recurrence ops and the glue ops (edgekit/ops/triton/) against each
op's reference, over the op's own `sample_inputs`: T in {1, small, long}, a sequence split
in two with the state carried and the state updated in place (stateful ops), fp16
activations, and the CUDA dtype contract.

Without a GPU (CI) the kernels run on CPU tensors under TRITON_INTERPRET=1, set by the
`kt` fixture before triton and the kernels are imported (Triton decides at decoration
time) and removed after this module. With a GPU they run compiled, on CUDA tensors, and the
torch-op dispatch to them is checked too. The long case runs at batch 1: the interpreter
costs ~0.5 ms per Triton op, and T = 67 at B = 2 would triple this module's ~30 s.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

from edgekit.ops import REGISTRY
from op_battery import close

RECURRENCES = ("rwkv7_wkv", "mamba_step", "ssd_step", "rglru_step")
GLUE = ("add_rms_norm", "gated_rms_norm", "softplus_bias", "silu_mul", "gelu_tanh_mul", "causal_conv1d",
        "causal_conv1d_silu")
KERNELS = RECURRENCES + GLUE
STATEFUL = tuple(n for n in KERNELS if REGISTRY[n].state_args)
GPU = torch.cuda.is_available()
CASES = [(1, {}), (3, {}), (67, {"B": 1})]       # (T, sample shape overrides)


@pytest.fixture(scope="module")
def kt():
    """edgekit.ops.triton, compiled on a GPU, else interpreted on CPU."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install -e '.[test]' installs it)")
    if GPU:
        yield importlib.import_module("edgekit.ops.triton")
        return
    assert "edgekit.ops.triton" not in sys.modules, "edgekit.ops.triton was imported compiled before this module"
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    if before != "1":
        # Triton picks interpreted or compiled when a function is decorated, its own
        # tl.sigmoid & co. at `import triton`: a triton imported earlier in this process
        # (torch may import it) is dropped so that it is imported again, interpreted (its
        # compiled extension, triton._C, stays: it cannot be loaded twice).
        stale = [m for m in sys.modules if m.split(".")[0] == "triton" and not m.startswith("triton._C")]
        for m in stale:
            del sys.modules[m]
    try:
        yield importlib.import_module("edgekit.ops.triton")
    finally:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before


def dev(args):
    return [a.cuda() if GPU else a for a in args]


def host(out):
    """An op's outputs (one tensor, or several) as arrays."""
    out = [out] if isinstance(out, torch.Tensor) else out
    return [np.asarray(o.detach().cpu()) for o in out]


def _timed(info) -> list[bool]:
    a, b = info.sample_inputs(2), info.sample_inputs(3)
    return [x.dim() > 1 and x.shape[1] != y.shape[1] for x, y in zip(a, b)]


@pytest.mark.parametrize("T,shape", CASES, ids=[f"T{t}" for t, _ in CASES])
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_matches_reference(kt, name, T, shape):
    info = REGISTRY[name]
    args = info.sample_inputs(T, **shape)
    want = host(info.reference(*args))
    got = host(kt.run(name, dev(args)))
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(g.dtype == np.float32 for g in got)
    for o, g, w in zip(info.outputs, got, want):
        assert close(g, w), f"{name} T={T}: {o.name} max|diff| {np.abs(g - w).max():.3g}"


@pytest.mark.parametrize("T,shape", [(3, {}), (67, {"B": 1})], ids=["T6", "T70"])
@pytest.mark.parametrize("name", STATEFUL)
def test_split_in_two_with_state_carried_equals_one_call(kt, name, T, shape):
    """Rows [0, cut) then [cut, T+3), each new state passed as the next call's state: the
    joined outputs equal the reference's one call over all T+3 rows."""
    info = REGISTRY[name]
    timed, n_y = _timed(info), len(info.outputs) - len(info.state_args)
    args = list(info.sample_inputs(T + 3, seed=1, **shape))
    cut = (T + 3) // 2
    rows = lambda lo, hi: [a[:, lo:hi].contiguous() if t else a for a, t in zip(args, timed)]  # noqa: E731
    first = kt.run(name, dev(rows(0, cut)))
    second_args = dev(rows(cut, T + 3))
    for k, i in enumerate(info.state_args):
        second_args[i] = first[n_y + k]
    second = kt.run(name, second_args)
    joined = [np.concatenate([a, b], axis=1) for a, b in zip(host(first[:n_y]), host(second[:n_y]))] \
        + host(second[n_y:])
    want = host(info.reference(*args))
    assert all(close(g, w) for g, w in zip(joined, want)), f"{name}: split at {cut} of {T + 3}"


@pytest.mark.parametrize("name", STATEFUL)
def test_state_updated_in_place(kt, name):
    """Each new state written into its own state argument (what the `.out` and `_inplace`
    forms do) gives the reference's answer: every kernel reads a state element before it
    writes it. rglru_step runs with one gate block over two programs (W = 80 > 64 channels a
    program), the case where the launcher hands the kernel a copy of the old conv history."""
    info = REGISTRY[name]
    shape = {"D": 80, "H": 1} if name == "rglru_step" else {}
    args = dev(info.sample_inputs(3, seed=2, **shape))
    want = host(info.reference(*[a.cpu() for a in args]))
    n_y = len(info.outputs) - len(info.state_args)
    y = torch.empty(info.output_shapes(args)[0], dtype=torch.float32, device=args[0].device)
    states = [args[i] for i in info.state_args]
    kt.run(name, args, [y, *states])
    assert all(close(g, w) for g, w in zip(host([y, *states]), want))


@pytest.mark.parametrize("name", KERNELS)
def test_fp16_activations_with_fp32_state(kt, name):
    """Non-state inputs in fp16 are widened in registers: the answer is the reference's on
    the same (fp16-rounded) values in fp32; y and the state stay fp32."""
    info = REGISTRY[name]
    args = list(info.sample_inputs(3, seed=3))
    half = [a if i in info.state_args else a.half() for i, a in enumerate(args)]
    want = host(info.reference(*[a.float() for a in half]))
    got = kt.run(name, dev(half))
    assert all(o.dtype == torch.float32 for o in got)
    assert all(close(g, w) for g, w in zip(host(got), want))


@pytest.mark.parametrize("name", KERNELS)
def test_contract_refuses_a_half_state_and_a_wrong_shape(kt, name):
    info = REGISTRY[name]
    args = list(info.sample_inputs(1))
    i = info.state_args[0] if info.state_args else 1
    if info.state_args:
        bad = list(args)
        bad[i] = args[i].half()
        with pytest.raises(ValueError, match=f"{name}: {info.inputs[i].name} must be .* float32 \\(state\\)"):
            kt.check(name, bad)
    bad = list(args)
    bad[i] = args[i][..., :-1]
    with pytest.raises(ValueError, match=f"{name}: {info.inputs[i].name} must be"):
        kt.check(name, bad)


def test_kernels_are_the_cuda_impls_of_the_same_ops(kt):
    """Importing edgekit.ops.triton registers a CUDA kernel for each op's functional, `.out`
    and in-place forms; no new op is defined, and CPU tensors still run the reference."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for name in KERNELS:
        forms = (name, f"{name}.out") + ((f"{name}_inplace",) if REGISTRY[name].state_args else ())
        for op in forms:
            assert has(f"edgekit::{op}", "CUDA"), op
    assert set(kt.KERNELS) == set(KERNELS) and all(n in REGISTRY for n in KERNELS)


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU: the torch-op dispatch to the kernels runs on CUDA tensors")
@pytest.mark.parametrize("name", KERNELS)
def test_torch_op_on_cuda_runs_the_kernel_in_every_form(kt, name):
    """torch.ops.edgekit.<name> on CUDA tensors: functional, `.out` (with the state in place)
    and `_inplace` (stateful ops) all equal the reference on CPU."""
    info = REGISTRY[name]
    args = info.sample_inputs(5, seed=4)
    want = host(info.reference(*args))
    n_y = len(info.outputs) - len(info.state_args)
    got = host(info.torch_op(*dev(args)))
    assert all(close(g, w) for g, w in zip(got, want))
    cargs = dev(args)
    outs = {o.name: (cargs[info.state_outputs[k]] if k in info.state_outputs else
                     torch.empty(0, device="cuda")) for k, o in enumerate(info.outputs)}
    info.torch_op.out(*cargs, **outs)
    assert all(close(g, w) for g, w in zip(host([outs[o.name] for o in info.outputs]), want))
    if info.state_args:
        cargs = dev(args)
        y = getattr(torch.ops.edgekit, f"{name}_inplace")(*cargs)
        assert all(close(g, w) for g, w in zip(host([y] + [cargs[i] for i in info.state_args]), want))


@pytest.mark.parametrize("N", [70, 600], ids=["split-K atomics", "one pass"])
@pytest.mark.parametrize("M", [1, 3])
def test_gemv_reads_fp32_activations_against_fp16_weights(kt, M, N):
    """The decode GEMV of the CUDA backend's fp16 Linear: y = x @ W + b with x fp32, W fp16,
    fp32 accumulation, equal to the fp32 product of the same fp16 weights; an activation
    beyond fp16's range (1e5 > 65,504) stays finite (an fp16 cast of x would make it inf).
    N = 70 splits K over programs (atomic adds into a zeroed y), N = 600 does not."""
    from edgekit.ops.triton.gemv import gemv
    g = torch.Generator().manual_seed(M * N)
    K = 300
    x = torch.randn(M, K, generator=g)
    x[0, 5] = 1e5
    w = (torch.randn(K, N, generator=g) / K ** 0.5).half()
    b = torch.randn(N, generator=g)
    want = (x.double() @ w.double() + b.double()).numpy()
    got = host(gemv(*dev([x, w, b])))[0]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert close(got, want), np.abs(got - want).max()
