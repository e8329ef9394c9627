"""The import structure of the edgekit package, read from the source (nothing is imported).

Every ``.py`` file under ``edgekit/`` is parsed with ``ast``; each ``import x``,
``from x import y`` and relative ``from . import y`` that names an edgekit module becomes an
edge of a graph of edgekit-internal imports:

* ``import a.b.c`` -> ``a.b.c``;
* ``from a.b import c`` -> ``a.b.c`` when ``c`` is a submodule, else ``a.b`` (its
  ``__init__``); ``from a.b import *`` -> ``a.b``;
* relative imports are resolved against the importing module's package.

The parent packages Python initialises on the way (``import a.b.c`` also runs ``a`` and
``a.b``) are not edges: a package importing its own submodules is how packages work.
Imports under ``if TYPE_CHECKING:`` never run and are skipped.

Edges are module-level (run when the module is imported: top level, class bodies, module
``try``/``if`` blocks) or function-level (run when the function is called). Both count:

* ``test_no_import_cycles`` checks every edge, function-level ones included. A
  function-level import only defers a cycle to the first call, where it can still meet a
  half-initialised module, and it keeps two modules from being understood (or moved)
  separately; the neuro cycle graph -> nir_io -> passes -> graph and the CLI's
  ``edgekit.cli`` <-> command modules were of this kind.
* ``test_no_import_cycles_at_import_time`` checks module-level edges only: the cycles that
  break ``import`` itself depending on which module is imported first.

``test_subpackages_do_not_import_their_own_init`` keeps the modules of ``edgekit.ops`` and
``edgekit.cli`` from importing their own package's ``__init__`` (``import edgekit.ops`` or
``from edgekit.ops import NAME`` where NAME is not a submodule, at any level): the
``__init__`` joins its modules, so a module that reaches back into it is a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edgekit"
NO_INIT_IMPORTS = ("edgekit.ops", "edgekit.cli")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    lineno: int
    module_level: bool

    def where(self) -> str:
        return f"{MODULES[self.src].relative_to(ROOT)}:{self.lineno}"


def _discover() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (namespace packages,
    which have no ``__init__.py``, contribute their modules but no module of their own)."""
    mods = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _discover()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve_relative(importer: str, level: int, module: str | None) -> str:
    base = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{module}" if module else base


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Yield (import node, module_level) for every import that can run."""
    def walk(node: ast.AST, module_level: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, module_level
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:           # `else:` of `if TYPE_CHECKING:` runs
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), module_level)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            else:
                yield from walk(child, module_level)
    yield from walk(tree, True)


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The edgekit modules an import statement names (see the module docstring)."""
    out = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:     # `import edgekit.x.attr` is not valid,
                name = name.rpartition(".")[0]      # but a namespace package may be named
            if name:
                out.append(name)
        return out
    base = _resolve_relative(importer, node.level, node.module) if node.level else node.module
    if not base or not (base == PACKAGE or base.startswith(PACKAGE + ".")):
        return out
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if alias.name != "*" and sub in MODULES:
            out.append(sub)
        elif base in MODULES:
            out.append(base)
    return out


def _edges() -> list[Edge]:
    edges = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, module_level in _imports(tree):
            for dst in _targets(name, node):
                if dst != name:
                    edges.append(Edge(name, dst, node.lineno, module_level))
    return list(dict.fromkeys(edges))         # `from x import a, b`: one edge per statement


EDGES = _edges()


def _cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Per strongly connected component of more than one module (Tarjan): its modules, and
    the shortest cycle through its first module, as the edges that make it."""
    graph: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        graph[e.src].append(e)
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v: str) -> None:          # iterative: no recursion limit to worry about
        work = [(v, iter(graph[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for e in it:
                w = e.dst
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        scc.append(w)
                        if w == node:
                            break
                    sccs.append(scc)

    for v in sorted({e.src for e in edges} | {e.dst for e in edges}):
        if v not in index:
            strongconnect(v)

    cycles = []
    for scc in sccs:
        if len(scc) < 2:
            continue
        members = set(scc)
        start = min(scc)
        # breadth-first from `start` inside the component, back to `start`
        prev: dict[str, Edge] = {}
        frontier, seen, closing = [start], {start}, None
        while frontier and closing is None:
            nxt = []
            for u in frontier:
                for e in sorted(graph[u], key=lambda e: (e.dst, e.lineno)):
                    if e.dst == start:
                        closing = e
                        break
                    if e.dst in members and e.dst not in seen:
                        seen.add(e.dst)
                        prev[e.dst] = e
                        nxt.append(e.dst)
                if closing is not None:
                    break
            frontier = nxt
        path = [closing]
        while path[0].src != start:
            path.insert(0, prev[path[0].src])
        cycles.append((sorted(scc), path))
    return sorted(cycles, key=lambda c: c[0])


def _describe(component: tuple[list[str], list[Edge]]) -> str:
    members, cycle = component
    names = " -> ".join([cycle[0].src] + [e.dst for e in cycle])
    steps = "\n".join(f"      {e.src} -> {e.dst}  ({e.where()}, "
                      f"{'module level' if e.module_level else 'in a function'})" for e in cycle)
    more = f"\n    (one of the cycles among these {len(members)} modules, which all reach " \
           f"each other: {', '.join(members)})" if len(members) > len(cycle) else ""
    return f"  {names}\n{steps}{more}"


def test_module_map_is_sane():
    # the walk found the package and resolved imports (guards against a vacuous pass)
    assert {"edgekit", "edgekit.cli", "edgekit.neuro.graph"} <= set(MODULES)
    assert any(e.src == "edgekit.neuro.passes" and e.dst == "edgekit.neuro.graph" for e in EDGES)


def test_no_import_cycles():
    """No cycle among edgekit's imports, function-level imports included."""
    cycles = _cycles(EDGES)
    assert not cycles, ("edgekit has import cycles (function-level imports count):\n"
                        + "\n".join(_describe(c) for c in cycles))


def test_no_import_cycles_at_import_time():
    """No cycle among the imports that run when a module is imported."""
    cycles = _cycles([e for e in EDGES if e.module_level])
    assert not cycles, ("edgekit has import cycles at import time:\n"
                        + "\n".join(_describe(c) for c in cycles))


@pytest.mark.parametrize("package", NO_INIT_IMPORTS)
def test_subpackages_do_not_import_their_own_init(package):
    assert package in MODULES and _is_package(package)
    bad = [e for e in EDGES if e.dst == package and e.src.startswith(package + ".")]
    assert not bad, (f"modules of {package} import {package}/__init__.py (import a submodule "
                     f"or the module that defines the name instead):\n"
                     + "\n".join(f"  {e.src} ({e.where()})" for e in bad))
