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
REPO = TESTS.parent


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
    import test_ops
    assert test_ops.OPS == sorted(REGISTRY)
    cpp = "".join(p.read_text() for p in (REPO / "kernels").glob("*.cpp"))
    for name, info in REGISTRY.items():
        assert f'"{info.cpp_kernel}"' in cpp, f"no C++ kernel registers {info.cpp_kernel}"
        if info.state_args:      # its in-place form (tests/test_state_in_place.py)
            assert f'EDGEKIT_IN_PLACE_KERNEL("{name}",' in cpp, f"no C++ kernel registers {name}_inplace.out"
