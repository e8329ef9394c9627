"""STYLE.md §5 battery for `edgekit::mamba_step`, over T in {1, small, long}: native kernels
(ExecuTorch C++, ONNX function body in ORT) vs the plain reference; split-and-carry equals
one call; prefill then single steps equals a full forward; bad shapes and aliased outputs
rejected. `OpRunners` is shared with test_op_ssd_step.py and test_op_causal_conv1d.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops.mamba_step import reference

BATTERY_OPS = ("mamba_step",)  # read by test_registry.py
B, D, N = 2, 24, 16
TS = [1, 5, 40]


def inputs(T, seed=0, B=B, D=D):
    """Inputs shaped like Mamba makes them: Δ = softplus(·) in (0, ~1), A = -exp(A_log) < 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    dt = F.softplus(torch.randn(B, T, D, generator=g) - 2)
    A = -torch.exp(torch.rand(D, N, generator=g) * 2)
    Bm, C = torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g)
    Dp = torch.randn(D, generator=g)
    state = torch.randn(B, D, N, generator=g) * 0.5
    return x, dt, A, Bm, C, Dp, state


def close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)) < tol


class OpRunners:
    """Run one edgekit op alone: in ExecuTorch (an exported tiny graph, the C++ kernel) and in
    ONNX Runtime (a one-node model carrying the op's function body: at T = 1 the step body,
    as an exported step graph carries it, when the op has one)."""

    def __init__(self, name: str, tmp_dir, rank_of=(0, -1)):
        """rank_of: for each output, the argument whose rank it has (default (y, state))."""
        from edgekit.kernels import load_kernels
        from edgekit.ops import REGISTRY
        load_kernels()
        self.info, self.dir, self.cache, self.rank_of = REGISTRY[name], tmp_dir, {}, rank_of

    def et(self, *args):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
        from executorch.runtime import Runtime
        key = tuple(tuple(a.shape) for a in args)
        if key not in self.cache:
            op = self.info.torch_op

            class OpOnly(torch.nn.Module):
                def forward(self, *xs):
                    return op(*xs)
            ep = torch.export.export(OpOnly(), args, strict=False)
            prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                               compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
            p = self.dir / f"op_{len(self.cache)}.pte"
            p.write_bytes(prog.buffer)
            self.cache[key] = Runtime.get().load_program(p).load_method("forward")
        return [t.clone() for t in self.cache[key].execute(list(args))]

    def ort(self, *args):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
        fn = self.info.onnx_function_proto(step=args[0].shape[1] == 1)
        names = list(fn.input)
        vi = lambda n, r: helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r)  # noqa: E731
        outs = [(f"out{i}", args[a].dim()) for i, a in enumerate(self.rank_of)][:len(fn.output)]
        g = helper.make_graph([helper.make_node(self.info.onnx_op_type, names, [n for n, _ in outs], domain="edgekit")],
                              "op", [vi(n, a.dim()) for n, a in zip(names, args)], [vi(n, r) for n, r in outs])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("edgekit", 1)],
                              functions=[fn], ir_version=10)
        onnx.checker.check_model(m, full_check=True)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})

    def all(self):
        return {"torch": self.info.torch_op, "executorch": self.et, "onnxruntime": self.ort}


def et_matches_at_1_and_2_threads(runners, args, reference) -> bool:
    """The C++ kernel with edgekit's pool at 1 and at 2 threads gives the reference's answer."""
    from edgekit.kernels import kernel_threads, set_kernel_threads
    y_ref, s_ref = reference(*args)
    ok, before = True, kernel_threads()
    try:
        for threads in (1, 2):
            set_kernel_threads(threads)
            y, s = runners.et(*args)
            ok &= close(y, y_ref) and close(s, s_ref)
    finally:
        set_kernel_threads(before)
    return ok


def split_and_carry(runners, args, cut, slice_dims):
    """Run args in one call and in two calls with the state carried; True if they agree."""
    *xs, s0 = args
    ok = True
    for run in runners.all().values():
        y_all, s_all = run(*xs, s0)
        first = [x[:, :cut].contiguous() if sd else x for x, sd in zip(xs, slice_dims)]
        second = [x[:, cut:].contiguous() if sd else x for x, sd in zip(xs, slice_dims)]
        y1, s1 = run(*first, s0)
        y2, s2 = run(*second, torch.as_tensor(np.asarray(s1)))
        ok &= close(np.concatenate([y1, y2], axis=1), y_all) and close(s2, s_all)
    return ok


def prefill_then_steps(runners, args, T, n, slice_dims):
    *xs, s0 = args
    y_all, s_all = runners.info.torch_op(*xs, s0)
    ok = True
    for run in runners.all().values():
        part = lambda a, b: [x[:, a:b].contiguous() if sd else x for x, sd in zip(xs, slice_dims)]  # noqa: E731
        y, s = run(*part(0, T), s0)
        ys = [np.asarray(y)]
        for t in range(T, T + n):
            y, s = run(*part(t, t + 1), torch.as_tensor(np.asarray(s)))
            ys.append(np.asarray(y))
        ok &= close(np.concatenate(ys, axis=1), y_all) and close(s, s_all)
    return ok


def _outputs(out) -> list:
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def _rows(args, sliced, a, b):
    return [x[:, a:b].contiguous() if sd else x for x, sd in zip(args, sliced)]


def rows_split_equals_whole(runners, args, cut, sliced) -> list[str]:
    """A stateless op (no state to carry): rows [0, cut) and [cut, T) of the sliced arguments
    in two calls give one call's outputs, every output, in every runtime. The runtimes that
    do not."""
    T, bad = args[0].shape[1], []
    for name, run in runners.all().items():
        whole = _outputs(run(*args))
        parts = [_outputs(run(*_rows(args, sliced, a, b))) for a, b in ((0, cut), (cut, T))]
        if not all(close(np.concatenate([p[i] for p in parts], axis=1), w) for i, w in enumerate(whole)):
            bad.append(name)
    return bad


def rows_prefill_then_steps(runners, args, T, n, sliced) -> list[str]:
    """A stateless op: T rows in one call, then n single rows, give the torch op's outputs
    over all T + n rows, in every runtime. The runtimes that do not."""
    want, bad = _outputs(runners.info.torch_op(*args)), []
    for name, run in runners.all().items():
        calls = [_outputs(run(*_rows(args, sliced, 0, T)))]
        calls += [_outputs(run(*_rows(args, sliced, t, t + 1))) for t in range(T, T + n)]
        if not all(close(np.concatenate([c[i] for c in calls], axis=1), w) for i, w in enumerate(want)):
            bad.append(name)
    return bad


SLICED = (True, True, False, True, True, False)    # x, dt, A, Bm, C, D: which have a T axis


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("mamba_step", tmp_path_factory.mktemp("op-mamba"))


@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, runners):
    args = inputs(T)
    y_ref, s_ref = reference(*args)
    for name, run in runners.all().items():
        y, s = run(*args)
        assert close(y, y_ref) and close(s, s_ref), name


def test_nan_in_a_propagates_like_the_reference(runners):
    """The kernel's vectorized exp keeps NaN (it does not clamp it to a tiny decay)."""
    args = list(inputs(1, seed=7))
    args[2] = args[2].clone()
    args[2][3, 5] = float("nan")                        # A[d=3, n=5]
    y_ref, _ = reference(*args)
    y, s = runners.et(*args)
    assert torch.isnan(y_ref[..., 3]).all() and np.isnan(np.asarray(y)[..., 3]).all()
    assert np.isfinite(np.delete(np.asarray(y), 3, axis=-1)).all()


@pytest.mark.parametrize("T", [1, 5])
def test_kernel_split_over_threads_matches_reference(T, runners):
    """D = 600 splits the channels over the kernel pool (kernels/mamba_step.cpp: 256 per
    thread at least); with 1 and 2 threads the C++ kernel gives the reference's answer."""
    assert et_matches_at_1_and_2_threads(runners, inputs(T, seed=5, D=600), reference)


def test_reference_matches_paper_form():
    """The reference equals eq. (2a, 2b) written out per channel in float64."""
    x, dt, A, Bm, C, Dp, h = inputs(3, seed=3, B=1)
    y, h_ref = reference(x, dt, A, Bm, C, Dp, h)
    h = h[0].double()
    for t in range(3):
        for d in range(D):
            h[d] = torch.exp(dt[0, t, d].double() * A[d].double()) * h[d] + \
                dt[0, t, d].double() * x[0, t, d].double() * Bm[0, t].double()
            assert abs(float(h[d] @ C[0, t].double() + Dp[d] * x[0, t, d]) - float(y[0, t, d])) < 1e-4
    assert close(h_ref[0], h.float())


@pytest.mark.parametrize("T", TS)
def test_split_and_carry_equals_one_call(T, runners):
    assert split_and_carry(runners, inputs(T + 3, seed=1), (T + 3) // 2, SLICED)


@pytest.mark.parametrize("T", TS)
def test_prefill_then_single_steps_equals_full(T, runners):
    assert prefill_then_steps(runners, inputs(T + 4, seed=2), T, 4, SLICED)


def test_bad_shapes_rejected():
    x, dt, A, Bm, C, Dp, s = inputs(2)
    with pytest.raises(ValueError, match=r"mamba_step: state must be \(B, D, N\)"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm, C, Dp, s[..., :8])
    with pytest.raises(ValueError, match=r"mamba_step: Bm must be \(B, T, N\)"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm[..., :8], C, Dp, s)
    with pytest.raises(ValueError, match=r"mamba_step: D must be \(D,\) = \(24,\) float32"):
        torch.ops.edgekit.mamba_step(x, dt, A, Bm, C, Dp[:3], s)
    with pytest.raises(ValueError, match="float32"):
        torch.ops.edgekit.mamba_step(x.double(), dt, A, Bm, C, Dp, s)


def test_bad_shapes_rejected_by_cpp_kernel(runners):
    """The C++ kernel checks shapes itself: a mismatched state fails, it does not crash."""
    args = list(inputs(1))
    runners.et(*args)
    args[-1] = torch.zeros(B, D, N // 2)
    with pytest.raises(Exception):
        runners.et(*args)


def test_aliased_outputs_rejected_and_in_place_state_allowed():
    x, dt, A, Bm, C, Dp, s = inputs(3)
    y = torch.empty_like(x)
    with pytest.raises(ValueError, match="y must not alias input x"):
        torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s, y=x, state_out=torch.empty_like(s))
    with pytest.raises(ValueError, match="state_out must not alias input A"):
        torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s, y=y, state_out=A)
    y_ref, s_ref = reference(x, dt, A, Bm, C, Dp, s)
    s_live = s.clone()
    torch.ops.edgekit.mamba_step.out(x, dt, A, Bm, C, Dp, s_live, y=y, state_out=s_live)
    assert close(y, y_ref) and close(s_live, s_ref)
