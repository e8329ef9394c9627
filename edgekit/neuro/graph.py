"""The SNN graph: declarative nodes (dataclasses) joined by edges, NIR's vocabulary.

Each node states its units and its continuous-time dynamics (NIR's definitions,
https://neuroir.org/docs/primitives.html). Time constants are in seconds; voltages and
currents are in the source model's own (dimensionless) units; weights map the source
node's output to the target node's input current. A graph records which ``dt`` its
source assumed (NIR stores none) and which integrator the source used, so the
``discretize`` pass can reproduce it.

Saved edgekit SNN files are one ``.npz``: the arrays as ``<node>.<field>`` plus a json
string ``__graph__`` (node kinds, scalar fields, edges, metadata).

Each node kind converts itself from and to its NIR primitive (``Node.from_nir`` /
``Node.to_nir``), so the kinds are listed once, in ``NODE_TYPES``. Reading a NIR file
(``SNNGraph.from_nir``) lives here; writing one needs the ``lower`` pass for per-neuron
sizes and lives in ``nir_io.py``. Dependencies run one way: nir_io -> passes -> graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError

INTEGRATORS = ("exact", "euler")
SNN_FORMAT = "edgekit.neuro.snn"
SNNTORCH_DEFAULT_DT = 1e-4      # the dt assumed for a NIR file that records none


def _arr(x) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def _shape(type_dict) -> tuple:
    """A shape from a NIR ``input_type`` / ``output_type`` dict."""
    if not type_dict:
        return ()
    v = next(iter(type_dict.values()))
    return tuple(int(s) for s in np.atleast_1d(np.asarray(v)).ravel())


@dataclass
class Node:
    """Base: subclasses list their array fields in ``arrays``."""

    arrays: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "Node"
    neuron: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for name in self.arrays:
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, _arr(v) if np.ndim(v) < 2 else np.asarray(v, np.float64))

    # NIR (https://neuroir.org/docs/primitives.html): ``nir.<kind>`` has the same parameter
    # names as the kind's ``arrays``; kinds with other fields override these two.
    @classmethod
    def from_nir(cls, n) -> "Node":
        """This kind from its NIR node (an instance of ``nir.<kind>``)."""
        kw = {f: getattr(n, f) for f in cls.arrays}
        if "v_reset" in kw and kw["v_reset"] is None:       # NIR's default reset: 0
            kw["v_reset"] = np.zeros_like(np.asarray(n.v_threshold, float))
        return cls(**kw)

    def to_nir(self):
        """The NIR node of this kind (``nir.<kind>``)."""
        import nir

        return getattr(nir, self.kind)(**{f: getattr(self, f) for f in self.arrays})


@dataclass
class _Port(Node):
    """A network's Input or Output: a shape and nothing else. Its NIR node carries the shape
    as ``input_type={"input": shape}`` / ``output_type={"output": shape}``."""

    shape: tuple = ()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @classmethod
    def from_nir(cls, n) -> "_Port":
        return cls(shape=_shape(getattr(n, f"{cls.kind.lower()}_type")))

    def to_nir(self):
        import nir

        port = self.kind.lower()
        return getattr(nir, self.kind)(**{f"{port}_type": {port: np.array(self.shape)}})


@dataclass
class Input(_Port):
    """Network input: spikes (0/1 per step) on ``shape`` channels."""

    kind: ClassVar[str] = "Input"


@dataclass
class Output(_Port):
    """Network output (the spikes or voltages of its source node)."""

    kind: ClassVar[str] = "Output"


@dataclass
class Affine(Node):
    """y = W x + b.  weight (n_out, n_in), bias (n_out,): input current per unit input."""

    weight: np.ndarray = None
    bias: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("weight", "bias")
    kind: ClassVar[str] = "Affine"


@dataclass
class Linear(Node):
    """y = W x.  weight (n_out, n_in)."""

    weight: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("weight",)
    kind: ClassVar[str] = "Linear"


@dataclass
class Scale(Node):
    """y = s * x, elementwise.  scale (n,)."""

    scale: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("scale",)
    kind: ClassVar[str] = "Scale"


@dataclass
class Flatten(Node):
    """Reshape dims start_dim..end_dim into one (a no-op on edgekit's flat vectors)."""

    input_shape: tuple = ()
    start_dim: int = 1
    end_dim: int = -1
    kind: ClassVar[str] = "Flatten"

    @classmethod
    def from_nir(cls, n) -> "Flatten":
        return cls(input_shape=_shape(n.input_type), start_dim=int(n.start_dim),
                   end_dim=int(n.end_dim))

    def to_nir(self):
        import nir

        return nir.Flatten(input_type={"input": np.array(self.input_shape)},
                           start_dim=self.start_dim, end_dim=self.end_dim)


@dataclass
class _Neuron(Node):
    """A neuron kind (LIF, CubaLIF, IF, LI): a population with a membrane state."""

    neuron: ClassVar[bool] = True


@dataclass
class LIF(_Neuron):
    """Leaky integrate-and-fire.  tau [s], r [1], v_leak, v_threshold, v_reset (per neuron).

        tau * dv/dt = (v_leak - v) + r * I(t)
        spike when v > v_threshold, then v <- v_reset
    """

    tau: np.ndarray = None
    r: np.ndarray = None
    v_leak: np.ndarray = None
    v_threshold: np.ndarray = None
    v_reset: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("tau", "r", "v_leak", "v_threshold", "v_reset")
    kind: ClassVar[str] = "LIF"


@dataclass
class CubaLIF(_Neuron):
    """Current-based LIF.  tau_syn, tau_mem [s]; r, w_in [1]; v_leak, v_threshold, v_reset.

        tau_syn * dI/dt = -I + w_in * x(t)
        tau_mem * dv/dt = (v_leak - v) + r * I
        spike when v > v_threshold, then v <- v_reset   (I is not reset)
    """

    tau_syn: np.ndarray = None
    tau_mem: np.ndarray = None
    r: np.ndarray = None
    v_leak: np.ndarray = None
    v_threshold: np.ndarray = None
    v_reset: np.ndarray = None
    w_in: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold",
                                         "v_reset", "w_in")
    kind: ClassVar[str] = "CubaLIF"


@dataclass
class IF(_Neuron):
    """Integrate-and-fire (no leak).  r [1/s in dv/dt], v_threshold, v_reset.

        dv/dt = r * I(t);  spike when v > v_threshold, then v <- v_reset
    """

    r: np.ndarray = None
    v_threshold: np.ndarray = None
    v_reset: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("r", "v_threshold", "v_reset")
    kind: ClassVar[str] = "IF"


@dataclass
class LI(_Neuron):
    """Leaky integrator, no spikes (a readout).  tau [s], r, v_leak.

        tau * dv/dt = (v_leak - v) + r * I(t)
    """

    tau: np.ndarray = None
    r: np.ndarray = None
    v_leak: np.ndarray = None
    arrays: ClassVar[tuple[str, ...]] = ("tau", "r", "v_leak")
    kind: ClassVar[str] = "LI"


# every node kind, once: files (``SNNGraph.load``) and NIR (``SNNGraph.from_nir``) use this
NODE_TYPES: dict[str, type[Node]] = {c.kind: c for c in
                                     (Input, Output, Affine, Linear, Scale, Flatten, LIF,
                                      CubaLIF, IF, LI)}


def _node_from_nir(name: str, n) -> Node:
    import nir

    for cls in NODE_TYPES.values():
        if isinstance(n, getattr(nir, cls.kind)):
            return cls.from_nir(n)
    kind = type(n).__name__
    raise EdgekitError(f"NIR node '{name}' has unsupported type {kind}",
                       expected="one of " + ", ".join(NODE_TYPES), got=kind,
                       fix="replace or remove that node before exporting to NIR")


@dataclass
class SNNGraph:
    """Nodes by name + directed edges (src, dst) + metadata.

    metadata keys: ``dt`` (s, the step the source assumed), ``dt_origin`` (where that dt came
    from: "metadata", "snntorch-default", "user", ...), ``integrator`` ("exact" or "euler":
    how the source turned time constants into per-step decays), ``source``.
    """

    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.edges = [tuple(e) for e in self.edges]

    def validate(self) -> "SNNGraph":
        """Structural and numeric checks; one EdgekitError per problem."""
        for a, b in self.edges:
            for n in (a, b):
                if n not in self.nodes:
                    raise EdgekitError(f"edge ({a} -> {b}) names node '{n}' that is not in "
                                       f"the graph", fix="repair the graph file")
        for name, node in self.nodes.items():
            for f in ("shape", "input_shape"):
                dims = getattr(node, f, None)
                if dims is not None and not all(isinstance(d, (int, np.integer)) and d >= 1
                                                for d in dims):
                    raise EdgekitError(f"node '{name}' ({node.kind}) {f} is not a shape",
                                       expected="positive whole numbers", got=str(tuple(dims)),
                                       fix="repair the graph file")
            for f in node.arrays:
                v = getattr(node, f)
                if v is None:
                    raise EdgekitError(f"node '{name}' ({node.kind}) has no parameter '{f}'",
                                       fix="repair the graph file or re-export the model")
                if np.ndim(v) > (2 if f == "weight" else 1):
                    raise EdgekitError(f"node '{name}' ({node.kind}) parameter '{f}' has shape "
                                       f"{np.shape(v)}", expected="a matrix" if f == "weight"
                                       else "a scalar or one value per neuron (n,)",
                                       got=str(np.shape(v)),
                                       fix="give weights as (n_out, n_in)" if f == "weight"
                                       else "flatten it to (n,)")
                if not np.all(np.isfinite(v)):
                    bad = np.asarray(v)[~np.isfinite(v)].ravel()[0]
                    raise EdgekitError(f"node '{name}' ({node.kind}) parameter '{f}' is not "
                                       f"finite", expected="finite numbers", got=str(bad),
                                       fix="fix or retrain the source model")
        if not any(isinstance(n, Input) for n in self.nodes.values()):
            raise EdgekitError("the graph has no Input node", fix="add an Input node")
        dt = self.metadata.get("dt")
        if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float))
                               or not (math.isfinite(dt) and dt > 0)):
            raise EdgekitError("the graph's dt is not a time step", expected="a positive number "
                               "of seconds", got=repr(dt)[:40], fix="pass --dt SECONDS")
        integ = self.metadata.get("integrator", "exact")
        if integ not in INTEGRATORS:
            raise EdgekitError("graph integrator is unknown", expected=" | ".join(INTEGRATORS),
                               got=str(integ))
        return self

    def predecessors(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def successors(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    # -- edgekit's own file format ---------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays, nodes = {}, {}
        for name, node in self.nodes.items():
            d = {"kind": node.kind}
            for f in fields(node):
                v = getattr(node, f.name)
                if f.name in node.arrays:
                    if v is not None:
                        arrays[f"{name}.{f.name}"] = np.asarray(v)
                else:
                    d[f.name] = list(v) if isinstance(v, tuple) else v
            nodes[name] = d
        meta = {"format": SNN_FORMAT, "version": 1, "nodes": nodes,
                "edges": [list(e) for e in self.edges], "metadata": self.metadata}
        arrays["__graph__"] = np.array(json.dumps(meta))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, max_bytes: int | None = None) -> "SNNGraph":
        """Read a saved SNN (``save``): an untrusted file, checked field by field; every
        array's declared size is checked before it is read (``untrusted.load_npz``)."""
        from edgekit.neuro.untrusted import MAX_READ_BYTES, load_npz

        path = Path(path)
        fix = "pass a .nir file or re-save the model"
        arrays = load_npz(path, "saved edgekit SNN", fix, max_bytes or MAX_READ_BYTES)

        def bad(what: str, expected: str | None = None, got: str | None = None):
            return EdgekitError(f"'{path}' is not a saved edgekit SNN: {what}",
                                expected=expected, got=got, fix=fix)

        rec = arrays.pop("__graph__", None)
        if rec is None or rec.ndim != 0 or rec.dtype.kind != "U":
            raise bad("it has no __graph__ record", expected="an .npz written by edgekit "
                      "(SNNGraph.save)")
        try:
            meta = json.loads(str(rec))
        except (ValueError, RecursionError) as e:
            raise bad("its __graph__ record is not JSON", got=type(e).__name__) from None
        if not isinstance(meta, dict) or meta.get("format") != SNN_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise bad("wrong format", expected=SNN_FORMAT, got=repr(got)[:40])
        nodes_js, edges = meta.get("nodes"), meta.get("edges")
        metadata = meta.get("metadata", {})
        if not isinstance(nodes_js, dict) or not isinstance(metadata, dict):
            raise bad("'nodes' and 'metadata' must be JSON objects",
                      got=f"{type(nodes_js).__name__}, {type(metadata).__name__}")
        if not isinstance(edges, list) or not all(
                isinstance(e, list) and len(e) == 2 and all(isinstance(n, str) for n in e)
                for e in edges):
            raise bad("'edges' must be a list of [source, target] node names",
                      got=repr(edges)[:60])

        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        nodes = {}
        for name, d in nodes_js.items():
            kind = d.get("kind") if isinstance(d, dict) else None
            if not isinstance(kind, str) or kind not in NODE_TYPES:
                raise EdgekitError(f"node '{name}' has unsupported kind '{kind}'",
                                   expected=", ".join(NODE_TYPES), fix=fix)
            cls_ = NODE_TYPES[kind]
            # the JSON holds the non-array fields: tuples of ints (shapes) and ints
            types = {f.name: f.type for f in fields(cls_) if f.name not in cls_.arrays}
            kw = {}
            for k, v in d.items():
                if k == "kind":
                    continue
                if k not in types:
                    raise bad(f"node '{name}' ({kind}) has an unknown field '{k}'",
                              expected=", ".join(types) or "no other fields")
                if types[k] == "tuple":
                    ok = isinstance(v, list) and all(is_int(i) for i in v)
                    v = tuple(v) if ok else v
                else:
                    ok = is_int(v)
                if not ok:
                    raise bad(f"node '{name}' ({kind}) field '{k}' is {repr(v)[:40]}",
                              expected="a list of whole numbers" if types[k] == "tuple"
                              else "a whole number")
                kw[k] = v
            for f in cls_.arrays:
                a = arrays.pop(f"{name}.{f}", None)
                if a is not None:
                    if a.dtype.kind not in "biuf":
                        raise bad(f"array '{name}.{f}' has dtype {a.dtype}", expected="numbers")
                    kw[f] = a
            nodes[name] = cls_(**kw)
        if arrays:
            raise bad(f"array '{next(iter(arrays))}' belongs to no node field",
                      expected="arrays named NODE.FIELD for the nodes in __graph__")
        return cls(nodes, [tuple(e) for e in edges], metadata)

    # -- NIR (writing: nir_io.write_nir) ----------------------------------------------
    @classmethod
    def from_nir(cls, src, max_bytes: int | None = None) -> "SNNGraph":
        """Read a NIR file (path) or a ``nir.NIRGraph`` (see nir_io.py on dt). A file's
        datasets are size-checked before they are read (``untrusted.read_nir``)."""
        import nir

        from edgekit.neuro.untrusted import MAX_READ_BYTES, read_nir

        if isinstance(src, (str, Path)):
            path = Path(src)
            try:
                g = read_nir(path, max_bytes or MAX_READ_BYTES)  # type_check=False: see lower
            except EdgekitError:
                raise
            except Exception as e:  # h5py / nir raise many types on a bad file
                raise EdgekitError(f"'{path}' is not a readable NIR file",
                                   expected="an HDF5 file written by nir.write",
                                   got=f"{type(e).__name__}: {str(e)[:80]}",
                                   fix="re-export the model to NIR") from None
        else:
            g = src
        if not isinstance(g, nir.NIRGraph):
            raise EdgekitError("the NIR file does not hold a graph", expected="a NIRGraph",
                               got=type(g).__name__)
        nodes = {}
        for name, n in g.nodes.items():
            if isinstance(n, nir.NIRGraph):
                raise EdgekitError(f"NIR node '{name}' is a nested NIRGraph (a recurrent "
                                   f"subgraph)", expected="a flat graph of "
                                   + ", ".join(NODE_TYPES), got="NIRGraph",
                                   fix="export a feed-forward model")
            try:
                nodes[str(name)] = _node_from_nir(str(name), n)
            except (ValueError, TypeError) as e:   # e.g. a parameter stored as text
                raise EdgekitError(f"NIR node '{name}' ({type(n).__name__}) has parameters "
                                   f"edgekit cannot read", expected="numeric arrays",
                                   got=f"{type(e).__name__}: {str(e)[:80]}",
                                   fix="re-export the model to NIR") from None
        md = {"source": "nir"}
        try:
            meta = dict(getattr(g, "metadata", None) or {})
            edges = [(str(a), str(b)) for a, b in g.edges]
            if "edgekit.dt" in meta:
                md["dt"], md["dt_origin"] = float(np.asarray(meta["edgekit.dt"])), "NIR metadata"
                md["integrator"] = str(np.asarray(meta.get("edgekit.integrator", "exact")))
            else:
                md["dt"] = SNNTORCH_DEFAULT_DT
                md["dt_origin"] = ("assumed: NIR stores no dt; 1e-4 s is snnTorch's exporter "
                                   "default (override with --dt)")
                md["integrator"] = "exact"
        except (ValueError, TypeError) as e:      # edges not pairs, a dt that is not a number
            raise EdgekitError("the NIR graph's edges or metadata cannot be read",
                               expected="(source, target) edges and a numeric edgekit.dt",
                               got=f"{type(e).__name__}: {str(e)[:80]}",
                               fix="re-export the model to NIR") from None
        return cls(nodes, edges, md)


def load_graph(path: str | Path, *, dt: float | None = None, integrator: str | None = None,
               max_bytes: int | None = None) -> SNNGraph:
    """Read SRC: a ``.nir`` file (NIR/HDF5) or a saved edgekit SNN (``.npz``), refusing a
    file whose arrays declare more than ``max_bytes`` (default: untrusted.MAX_READ_BYTES)."""
    from edgekit._io import require_file

    path = require_file(path, "SNN source", "pass a .nir file or a saved edgekit SNN (.npz)")
    if path.suffix.lower() in (".nir", ".h5", ".hdf5"):
        g = SNNGraph.from_nir(path, max_bytes)
    elif path.suffix.lower() == ".npz":
        g = SNNGraph.load(path, max_bytes)
    else:
        raise EdgekitError(f"SNN source '{path}' has an unknown extension",
                           expected=".nir or .npz (saved edgekit SNN)", got=path.suffix or "none",
                           fix="rename or convert the file")
    if dt is not None:
        if not (np.isfinite(dt) and dt > 0):
            raise EdgekitError("--dt must be a positive number of seconds", got=str(dt))
        g.metadata["dt"], g.metadata["dt_origin"] = float(dt), "user (--dt)"
    if integrator is not None:
        if integrator not in INTEGRATORS:
            raise EdgekitError("integrator is unknown", expected=" | ".join(INTEGRATORS),
                               got=integrator)
        g.metadata["integrator"] = integrator
    return g.validate()
