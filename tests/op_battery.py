"""The op battery's shared parts (STYLE.md §5): run one edgekit op alone in every runtime
(`OpRunners`: ExecuTorch with the C++ kernel, ONNX Runtime with the op's function body),
compare (`close`, the std metric), and check that the C++ kernel refuses a bad call with the
Python validator's words. tests/test_ops.py runs the battery over the op registry;
tests/test_op_<name>.py add each op's own checks."""

from __future__ import annotations

import numpy as np
import torch


def close(a, b, tol=1e-5):
    """Every element of a within tol · std(b) of b's (the std metric: a kernel's rounding is
    judged against the spread of the values, not against the largest one, which would let
    errors in the small elements through). Shapes must agree; NaN must match NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    ok = ~np.isnan(b)
    if not ok.any():
        return True
    scale = max(float(b[ok].std()), 1e-6)
    return bool(np.all(np.abs(a[ok] - b[ok]) <= tol * scale))


class OpRunners:
    """Run one edgekit op alone: in ExecuTorch (an exported tiny graph, the C++ kernel) and in
    ONNX Runtime (a one-node model carrying the op's function body: at T = 1 the step body,
    as an exported step graph carries it, when the op has one)."""

    def __init__(self, name: str, tmp_dir):
        from edgekit.kernels import load_kernels
        from edgekit.ops import REGISTRY
        load_kernels()
        self.info, self.dir, self.cache = REGISTRY[name], tmp_dir, {}

    def et(self, *args):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
        from executorch.runtime import Runtime
        key = tuple(tuple(a.shape) for a in args)
        if key not in self.cache:
            ep = torch.export.export(OpOnly(self.info.name), args, strict=False)
            prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                               compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
            p = self.dir / f"op_{len(self.cache)}.pte"
            p.write_bytes(prog.buffer)
            self.cache[key] = Runtime.get().load_program(p).load_method("forward")
        return [t.clone() for t in self.cache[key].execute([torch.as_tensor(np.asarray(a)) for a in args])]

    def ort(self, *args):
        return ort_run(self.info.name, *args)

    def all(self):
        """The runtimes to compare with the reference (not torch: its op IS the reference)."""
        return {"executorch": self.et, "onnxruntime": self.ort}


_ORT_SESSIONS: dict = {}


def ort_run(name: str, *args):
    """Run op `name`'s ONNX function body in stock ONNX Runtime, as a one-node model (at T = 1
    the step body, as an exported step graph carries it, when the op has one). The outputs'
    ranks come from the op's spec."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from edgekit.ops import REGISTRY
    info = REGISTRY[name]
    step = np.asarray(args[0]).shape[1] == 1
    ranks = [len(s) for s in info.output_shapes([torch.as_tensor(np.asarray(a)) for a in args])]
    key = (name, step, tuple(np.asarray(a).ndim for a in args))
    if key not in _ORT_SESSIONS:
        fn = info.onnx_function_proto(step=step)
        names = list(fn.input)
        vi = lambda n, r, t=TensorProto.FLOAT: helper.make_tensor_value_info(n, t, [None] * r)  # noqa: E731
        outs = [(f"out{i}", r) for i, r in enumerate(ranks)]
        types = [helper.np_dtype_to_tensor_dtype(np.dtype(a.dtype)) for a in info.inputs]
        g = helper.make_graph([helper.make_node(info.onnx_op_type, names, [n for n, _ in outs], domain="edgekit")],
                              "op", [vi(n, np.asarray(a).ndim, t) for n, a, t in zip(names, args, types)],
                              [vi(n, r) for n, r in outs])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("edgekit", 1)],
                              functions=[fn], ir_version=10)
        onnx.checker.check_model(m, full_check=True)
        _ORT_SESSIONS[key] = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]), names)
    sess, names = _ORT_SESSIONS[key]
    return sess.run(None, {n: np.asarray(a, dtype=a_.dtype) for n, a, a_ in zip(names, args, info.inputs)})


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


def outputs(out) -> list[np.ndarray]:
    """An op's outputs (one tensor, or a tuple of them) as a list of arrays."""
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


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


def battery_fixtures(name: str):
    """(runners, et_runner, ort_run) for a test module of op `name`: the module-scoped
    fixtures `runners` (OpRunners) and `et_runner` (its ExecuTorch runner), and a plain
    function running the op's ONNX body. Assign them to those names in the test module."""
    import pytest

    @pytest.fixture(scope="module")
    def runners(tmp_path_factory):
        return OpRunners(name, tmp_path_factory.mktemp(f"op-{name}"))

    @pytest.fixture(scope="module")
    def et_runner(runners):
        return runners.et

    def run_in_ort(*args):
        return ort_run(name, *args)
    return runners, et_runner, run_in_ort
