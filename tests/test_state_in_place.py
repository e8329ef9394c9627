"""The in-place forms of the stateful ops (`<op>_inplace`, edgekit/ops/__init__.py): the
same outputs as the functional op, the new state written into the state argument; in an
ExecuTorch program with state in mutable buffers the C++ kernel updates the buffer and no
write-back copy of the state is left in the program (the point of the form: Mamba-2's
19 MB of SSD state per token was read and written twice)."""

from __future__ import annotations

import pytest
import torch

from edgekit.ops import REGISTRY, call, in_place_name
from op_battery import close

STATEFUL = sorted(n for n, info in REGISTRY.items() if info.state_args)


def _inputs(name: str, T: int, seed: int):
    return REGISTRY[name].sample_inputs(T, seed=seed)


def test_the_stateful_ops_have_in_place_forms():
    assert {"mamba_step", "ssd_step", "causal_conv1d", "rglru_step", "rwkv7_wkv", "cfc_step", "ltc_step"} <= set(STATEFUL)


@pytest.mark.parametrize("name", STATEFUL)
def test_eager_in_place_form_updates_the_state_argument(name):
    info = REGISTRY[name]
    args = _inputs(name, 3, seed=1)
    y_ref, *new_ref = info.torch_op(*args)
    mine = [a.clone() for a in args]
    y, *new = call(name, *mine, in_place=True)
    assert torch.equal(y, y_ref)
    for i, s_ref, s in zip(info.state_args, new_ref, new):
        assert s is mine[i], "the new state is the state argument itself"
        assert torch.equal(s, s_ref)
    for i, (a, b) in enumerate(zip(args, mine)):
        if i not in info.state_args:
            assert torch.equal(a, b), f"{name}_inplace changed its input {i}"


class _StateInBuffers(torch.nn.Module):
    """The op with its state arguments in mutable buffers, as an exported step keeps them."""

    def __init__(self, name, args):
        super().__init__()
        self.name, self.state_args = name, REGISTRY[name].state_args
        for k, i in enumerate(self.state_args):
            self.register_buffer(f"s{k}", torch.zeros_like(args[i]))

    def forward(self, *xs):
        xs, k = list(xs), 0
        args = []
        for i in range(len(xs) + len(self.state_args)):
            if i in self.state_args:
                args.append(getattr(self, f"s{k}"))
                k += 1
            else:
                args.append(xs.pop(0))
        y, *_ = call(self.name, *args, in_place=True)
        return y


@pytest.mark.parametrize("name", STATEFUL)
def test_executorch_kernel_updates_the_buffer_and_no_copy_is_left(name, tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgekit.kernels import load_kernels
    load_kernels()
    info = REGISTRY[name]
    steps = [_inputs(name, 1, seed=s) for s in (2, 3, 4)]
    s0 = [steps[0][i] for i in info.state_args]
    xs = lambda a: [t for i, t in enumerate(a) if i not in info.state_args]  # noqa: E731
    mod = _StateInBuffers(name, steps[0]).eval()
    ep = torch.export.export(mod, tuple(xs(steps[0])), strict=False)
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False)) \
        .to_executorch(ExecutorchBackendConfig(emit_mutable_buffer_names=True))
    targets = [str(n.target) for n in prog.exported_program().graph.nodes if n.op == "call_function"]
    assert any(in_place_name(name) in t for t in targets), targets
    assert not any("copy_" in t for t in targets), f"a state write-back copy is left: {targets}"
    path = tmp_path / "op.pte"
    path.write_bytes(prog.buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    live = [method._method.get_attribute(f"s{k}") for k in range(len(s0))]
    for buf, s in zip(live, s0):
        buf.copy_(s)
    state = s0
    for a in steps:                      # three steps: the state carries in the buffers
        args = list(a)
        for i, s in zip(info.state_args, state):
            args[i] = s
        y_ref, *state = info.torch_op(*args)
        y = method.execute(xs(a))[0]
        assert close(y, y_ref), f"{name}: y differs from the functional op"
        for buf, s in zip(live, state):
            assert close(buf, s), f"{name}: the buffer does not hold the new state"
