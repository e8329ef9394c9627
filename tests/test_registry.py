"""One registry, checked (STYLE.md §8): every registered architecture has an oracle
parity test, and every custom op a C++ ExecuTorch kernel (the §5 battery runs over the op
registry itself: tests/test_ops.py).

A test module declares the architectures it covers with PARITY_ARCHS = (...).
"""

from __future__ import annotations

import ast
from pathlib import Path

from edgekit.models import ARCHITECTURES
from edgekit.ops import REGISTRY

TESTS = Path(__file__).parent


def _declared(var: str) -> dict[str, Path]:
    out = {}
    for f in TESTS.rglob("test_*.py"):
        tree = ast.parse(f.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == var for t in node.targets):
                for name in ast.literal_eval(node.value):
                    out[name] = f
    return out


def test_every_architecture_has_an_oracle_parity_test():
    covered = _declared("PARITY_ARCHS")
    missing = sorted(set(ARCHITECTURES) - set(covered))
    assert not missing, f"architectures without a parity test: {missing}"


def test_every_op_has_a_cpp_kernel_and_the_battery_runs_the_registry():
    """The kernel library, loaded, registers every op's `.out` kernel (and a stateful op's
    in-place form) with ExecuTorch; tests/test_ops.py's battery is parametrized by the registry."""
    import test_ops
    from edgekit.kernels import load_kernels
    from executorch.extension.pybindings import portable_lib
    assert test_ops.OPS == sorted(REGISTRY)
    load_kernels()
    registered = set(portable_lib._get_operator_names())
    for name, info in REGISTRY.items():
        assert f"edgekit::{info.cpp_kernel}" in registered, f"no C++ kernel registers {info.cpp_kernel}"
        if info.state_args:      # its in-place form (tests/test_state_in_place.py)
            assert f"edgekit::{name}_inplace.out" in registered, f"no C++ kernel registers {name}_inplace.out"
