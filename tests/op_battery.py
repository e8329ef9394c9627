"""The op battery's shared parts (STYLE.md §5): run one edgekit op alone in every runtime
(`OpRunners`: torch, ExecuTorch with the C++ kernel, ONNX Runtime with the op's function
body), compare (`close`), and the battery's checks that every stateful or row-wise op shares
(split and carry, prefill then single steps, at 1 and 2 kernel threads). Each
tests/test_op_<name>.py makes its op's inputs and calls these."""

from __future__ import annotations

import numpy as np
import torch


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
        return [t.clone() for t in self.cache[key].execute([torch.as_tensor(np.asarray(a)) for a in args])]

    def ort(self, *args):
        return ort_run(self.info.name, self.rank_of, *args)

    def all(self):
        return {"torch": self.info.torch_op, "executorch": self.et, "onnxruntime": self.ort}


_ORT_SESSIONS: dict = {}


def ort_run(name: str, rank_of, *args):
    """Run op `name`'s ONNX function body in stock ONNX Runtime, as a one-node model (at T = 1
    the step body, as an exported step graph carries it, when the op has one). rank_of: for
    each output, the argument whose rank it has."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from edgekit.ops import REGISTRY
    info = REGISTRY[name]
    step = np.asarray(args[0]).shape[1] == 1
    key = (name, tuple(rank_of), step, tuple(np.asarray(a).ndim for a in args))
    if key not in _ORT_SESSIONS:
        fn = info.onnx_function_proto(step=step)
        names = list(fn.input)
        vi = lambda n, r: helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r)  # noqa: E731
        outs = [(f"out{i}", np.asarray(args[a]).ndim) for i, a in enumerate(rank_of)][:len(fn.output)]
        g = helper.make_graph([helper.make_node(info.onnx_op_type, names, [n for n, _ in outs], domain="edgekit")],
                              "op", [vi(n, np.asarray(a).ndim) for n, a in zip(names, args)],
                              [vi(n, r) for n, r in outs])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("edgekit", 1)],
                              functions=[fn], ir_version=10)
        onnx.checker.check_model(m, full_check=True)
        _ORT_SESSIONS[key] = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]), names)
    sess, names = _ORT_SESSIONS[key]
    return sess.run(None, {n: np.asarray(a, dtype=np.float32) for n, a in zip(names, args)})


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


class OpOnly(torch.nn.Module):
    """A graph of the one op `name` (what the battery exports)."""

    def __init__(self, name: str):
        super().__init__()
        from edgekit.ops import REGISTRY
        self.op = REGISTRY[name].torch_op

    def forward(self, *xs):
        return self.op(*xs)


def cpp_kernel_refuses_like_python(name: str, args, bad, dynamic_shapes, tmp_path) -> str:
    """Export op `name` with dynamic dims (so ExecuTorch's own input checks let inputs that
    disagree with each other through), run `args` (must work), then `bad`: the Python
    validator and the C++ kernel both refuse `bad`, and the kernel's log holds the validator's
    message word for word. Returns the message. A kernel without that check fails this."""
    import pytest
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from edgekit._io import native_stderr_captured
    from edgekit.kernels import load_kernels
    from edgekit.ops import REGISTRY
    load_kernels()
    ep = torch.export.export(OpOnly(name), tuple(args), dynamic_shapes={"xs": tuple(dynamic_shapes)}, strict=False)
    prog = to_edge_transform_and_lower(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    path = tmp_path / f"{name}-dynamic.pte"
    path.write_bytes(prog.buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    got = method.execute(list(args))
    want = REGISTRY[name].torch_op(*args)
    want = want if isinstance(want, (tuple, list)) else (want,)
    assert all(close(g, w) for g, w in zip(got, want)), f"{name}: the dynamic-shape export runs args wrongly"
    with pytest.raises(ValueError) as py_err:
        REGISTRY[name].torch_op(*bad)
    with pytest.raises(RuntimeError), native_stderr_captured() as log:
        method.execute(list(bad))
    assert str(py_err.value) in log.text, (str(py_err.value), log.text)
    return str(py_err.value)


def dynamic_dim(args, dims: dict[int, int], max_size: int = 4096):
    """dynamic_shapes for torch.export: argument i gets its own Dim on dimension dims[i]."""
    return tuple({dims[i]: torch.export.Dim(f"d{i}", min=1, max=max_size)} if i in dims else None
                 for i in range(len(args)))


def battery_fixtures(name: str, rank_of):
    """(runners, et_runner, ort_run) for a test module of op `name`: the module-scoped
    fixtures `runners` (OpRunners) and `et_runner` (its ExecuTorch runner), and a plain
    function running the op's ONNX body. rank_of: for each output, the argument whose rank
    it has. Assign them to those names in the test module."""
    import pytest

    @pytest.fixture(scope="module")
    def runners(tmp_path_factory):
        return OpRunners(name, tmp_path_factory.mktemp(f"op-{name}"), rank_of=rank_of)

    @pytest.fixture(scope="module")
    def et_runner(runners):
        return runners.et

    def run_in_ort(*args):
        return ort_run(name, rank_of, *args)
    return runners, et_runner, run_in_ort
