"""The op battery (STYLE.md §5), parametrized over the op registry: every registered op, fed
by its spec's `sample_inputs(T)` at T in {1, small, long}, runs alone in ExecuTorch (its C++
kernel) and in ONNX Runtime (its function body) and matches its reference element by
element; a sequence split in two with the state carried equals one call; a prefill then
single steps equals the whole; the C++ kernel gives the same answer at 1 and 2 threads;
bad shapes and aliased outputs are refused, by the C++ kernel in the Python validator's
words. A new op is covered by registering it. Op-specific checks (paper forms, oracles,
numerics) stay in tests/test_op_<name>.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.ops import REGISTRY
from op_battery import OpRunners, close, cpp_kernel_refuses_like_python, dynamic_dim, outputs

OPS = sorted(REGISTRY)
TS = (1, 3, 67)
RUNTIMES = ("executorch", "onnxruntime")


@pytest.fixture(scope="module")
def all_runners(tmp_path_factory):
    made: dict[str, OpRunners] = {}

    def get(name: str) -> OpRunners:
        if name not in made:
            made[name] = OpRunners(name, tmp_path_factory.mktemp(f"op-{name}"))
        return made[name]
    return get


def _timed(info) -> list[bool]:
    """Which arguments carry the time (row) axis, dim 1: those whose sample shape follows T."""
    a, b = info.sample_inputs(2), info.sample_inputs(3)
    return [x.dim() > 1 and x.shape[1] != y.shape[1] for x, y in zip(a, b)]


def _rows(args, timed, lo, hi):
    return [x[:, lo:hi].contiguous() if t else x for x, t in zip(args, timed)]


def _all_close(got, want) -> bool:
    return len(got) == len(want) and all(close(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("name", OPS)
def test_runtime_matches_reference(name, T, runtime, all_runners):
    info = REGISTRY[name]
    args = info.sample_inputs(T)
    want = outputs(info.reference(*args))
    got = outputs(getattr(all_runners(name), "et" if runtime == "executorch" else "ort")(*args))
    assert [g.shape for g in got] == [w.shape for w in want]
    assert _all_close(got, want), f"{name} in {runtime} at T = {T}"


@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("name", OPS)
def test_split_in_two_equals_one_call(name, T, all_runners):
    """Rows [0, cut) then [cut, T): the state carried between the calls (each new state
    passed as the next call's state argument), and y concatenated, equal one call."""
    info = REGISTRY[name]
    runners, timed = all_runners(name), _timed(info)
    args, cut = list(info.sample_inputs(T + 3, seed=1)), (T + 3) // 2
    n_y = len(info.outputs) - len(info.state_args)
    for runtime in RUNTIMES:
        run = runners.et if runtime == "executorch" else runners.ort
        whole = outputs(run(*args))
        first = outputs(run(*_rows(args, timed, 0, cut)))
        second_args = _rows(args, timed, cut, T + 3)
        for k, i in enumerate(info.state_args):
            second_args[i] = torch.as_tensor(first[n_y + k])
        second = outputs(run(*second_args))
        joined = [np.concatenate([a, b], axis=1) for a, b in zip(first[:n_y], second[:n_y])] + second[n_y:]
        assert _all_close(joined, whole), f"{name} in {runtime}: split at {cut} of {T + 3}"


@pytest.mark.parametrize("name", OPS)
def test_prefill_then_single_steps_equals_the_whole(name, all_runners):
    """A 5-row call, then 4 single rows, each with the state carried: the reference's
    outputs over all 9 rows (what a session's prefill then decode does)."""
    info = REGISTRY[name]
    runners, timed = all_runners(name), _timed(info)
    args = list(info.sample_inputs(9, seed=2))
    want = outputs(info.reference(*args))
    n_y = len(info.outputs) - len(info.state_args)
    for runtime in RUNTIMES:
        run = runners.et if runtime == "executorch" else runners.ort
        ys, state = [], [args[i] for i in info.state_args]
        for lo, hi in ((0, 5), (5, 6), (6, 7), (7, 8), (8, 9)):
            call = _rows(args, timed, lo, hi)
            for k, i in enumerate(info.state_args):
                call[i] = torch.as_tensor(np.asarray(state[k]))
            out = outputs(run(*call))
            ys.append(out[:n_y])
            state = out[n_y:]
        got = [np.concatenate([y[j] for y in ys], axis=1) for j in range(n_y)] + list(state)
        assert _all_close(got, want), f"{name} in {runtime}"


@pytest.mark.parametrize("name", OPS)
def test_kernel_at_1_and_2_threads(name, all_runners):
    from edgekit.kernels import kernel_threads, set_kernel_threads
    info = REGISTRY[name]
    args = info.sample_inputs(3, seed=3)
    want = outputs(info.reference(*args))
    before = kernel_threads()
    try:
        for threads in (1, 2):
            set_kernel_threads(threads)
            assert _all_close(outputs(all_runners(name).et(*args)), want), f"{name} at {threads} threads"
    finally:
        set_kernel_threads(before)


def _bad_dimension(info, args):
    """(argument, dim) to make disagree with the others: the last dim of the last argument
    whose size a letter bound by an earlier argument, or an expression, decides."""
    from edgekit.ops.registry import is_letter
    seen: set[str] = set()
    pick = None
    for i, a in enumerate(info.inputs):
        toks = a.tokens[a.ellipsis:]
        for j, tok in enumerate(toks):
            rank = args[i].dim()
            if (is_letter(tok) and tok in seen) or not (is_letter(tok) or tok.isdigit()):
                pick = (i, rank - len(toks) + j)
        if a.ellipsis and not toks and "..." in seen:       # "the shape of" an earlier argument
            pick = (i, args[i].dim() - 1)
        seen.update(t for t in toks if is_letter(t))
        if a.ellipsis:
            seen.add("...")
    return pick


@pytest.mark.parametrize("name", OPS)
def test_bad_shape_refused_by_python_and_cpp_alike(name, tmp_path):
    """An argument whose size disagrees with the others (a dynamic dim lets it past
    ExecuTorch's own input checks) reaches the C++ kernel, which refuses it with the
    validator's words: the checks are generated from the same spec."""
    info = REGISTRY[name]
    args = list(info.sample_inputs(2))
    i, d = _bad_dimension(info, args)
    bad = list(args)
    shape = list(args[i].shape)
    shape[d] += 1
    bad[i] = torch.zeros(shape, dtype=args[i].dtype)
    msg = cpp_kernel_refuses_like_python(name, args, bad, dynamic_dim(args, {i: d}), tmp_path)
    assert msg.startswith(f"{name}: ")


@pytest.mark.parametrize("name", OPS)
def test_every_argument_of_the_wrong_rank_or_dtype_is_named(name):
    info = REGISTRY[name]
    args = list(info.sample_inputs(2))
    for i, a in enumerate(info.inputs):
        wrong_dtype = list(args)
        wrong_dtype[i] = args[i].double()
        with pytest.raises(ValueError, match=rf"^{name}: {a.name} must be .*{a.dtype}; got .*torch\.float64"):
            info.torch_op(*wrong_dtype)
        if a.dims is not None and not a.ellipsis:
            wrong_rank = list(args)
            wrong_rank[i] = args[i][None]
            with pytest.raises(ValueError, match=rf"^{name}: {a.name} must be .*; got {args[i].dim() + 1} dims$"):
                info.torch_op(*wrong_rank)


@pytest.mark.parametrize("name", OPS)
def test_an_output_overlapping_an_input_is_refused(name):
    """y written over the memory of input 0 (a view of the same buffer) is refused by name."""
    info = REGISTRY[name]
    args = list(info.sample_inputs(2))
    shapes = info.output_shapes(args)
    n0, m0 = args[0].numel(), int(np.prod(shapes[0]))
    buf = torch.zeros(max(n0, m0))
    args[0] = buf[:n0].view(args[0].shape).copy_(args[0])
    outs = {o.name: torch.empty(s) for o, s in zip(info.outputs, shapes)}
    outs[info.outputs[0].name] = buf[:m0].view(shapes[0])
    with pytest.raises(ValueError, match=rf"^{name}: {info.outputs[0].name} must not alias input {info.inputs[0].name}$"):
        info.torch_op.out(*args, **outs)
