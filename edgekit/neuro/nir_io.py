"""NIR in and out (the ``nir`` package, HDF5 files).

NIR stores continuous-time parameters and no dt. On import we record which dt the source
assumed: edgekit's own files carry it in the graph metadata (``edgekit.dt``,
``edgekit.integrator``); other files get snnTorch's exporter default, 1e-4 s, marked as
assumed (``dt_origin``), and ``--dt`` overrides it. snnTorch's exporter derives
``tau = dt / (1 - beta)``, i.e. forward Euler: import its files with ``integrator="euler"``
to reproduce its discrete model exactly (docs/neuro.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError
from edgekit.neuro import graph as G

SNNTORCH_DEFAULT_DT = 1e-4
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Flatten", "LIF", "CubaLIF", "IF",
             "LI")


def _shape(type_dict) -> tuple:
    if not type_dict:
        return ()
    v = next(iter(type_dict.values()))
    return tuple(int(s) for s in np.atleast_1d(np.asarray(v)).ravel())


def _node_from_nir(name: str, n) -> G.Node:
    import nir

    kind = type(n).__name__
    if isinstance(n, nir.Input):
        return G.Input(shape=_shape(n.input_type))
    if isinstance(n, nir.Output):
        return G.Output(shape=_shape(n.output_type))
    if isinstance(n, nir.Affine):
        return G.Affine(weight=np.asarray(n.weight), bias=np.asarray(n.bias))
    if isinstance(n, nir.Linear):
        return G.Linear(weight=np.asarray(n.weight))
    if isinstance(n, nir.Scale):
        return G.Scale(scale=np.asarray(n.scale))
    if isinstance(n, nir.Flatten):
        return G.Flatten(input_shape=_shape(n.input_type), start_dim=int(n.start_dim),
                         end_dim=int(n.end_dim))
    if isinstance(n, nir.CubaLIF):
        return G.CubaLIF(tau_syn=n.tau_syn, tau_mem=n.tau_mem, r=n.r, v_leak=n.v_leak,
                         v_threshold=n.v_threshold,
                         v_reset=np.zeros_like(np.asarray(n.v_threshold, float))
                         if n.v_reset is None else n.v_reset, w_in=n.w_in)
    if isinstance(n, nir.LIF):
        return G.LIF(tau=n.tau, r=n.r, v_leak=n.v_leak, v_threshold=n.v_threshold,
                     v_reset=np.zeros_like(np.asarray(n.v_threshold, float))
                     if n.v_reset is None else n.v_reset)
    if isinstance(n, nir.IF):
        return G.IF(r=n.r, v_threshold=n.v_threshold,
                    v_reset=np.zeros_like(np.asarray(n.v_threshold, float))
                    if n.v_reset is None else n.v_reset)
    if isinstance(n, nir.LI):
        return G.LI(tau=n.tau, r=n.r, v_leak=n.v_leak)
    raise EdgekitError(f"NIR node '{name}' has unsupported type {kind}",
                       expected="one of " + ", ".join(SUPPORTED), got=kind,
                       fix="replace or remove that node before exporting to NIR")


def from_nir(src) -> G.SNNGraph:
    """Read a NIR file (path) or a ``nir.NIRGraph`` into an SNNGraph."""
    import nir

    if isinstance(src, (str, Path)):
        path = Path(src)
        try:
            g = nir.read(path, type_check=False)   # edgekit checks shapes itself (lower)
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
            raise EdgekitError(f"NIR node '{name}' is a nested NIRGraph (a recurrent subgraph)",
                               expected="a flat graph of " + ", ".join(SUPPORTED),
                               got="NIRGraph", fix="export a feed-forward model")
        nodes[str(name)] = _node_from_nir(str(name), n)
    meta = dict(getattr(g, "metadata", None) or {})
    md = {"source": "nir"}
    if "edgekit.dt" in meta:
        md["dt"], md["dt_origin"] = float(np.asarray(meta["edgekit.dt"])), "NIR metadata"
        md["integrator"] = str(np.asarray(meta.get("edgekit.integrator", "exact")))
    else:
        md["dt"] = SNNTORCH_DEFAULT_DT
        md["dt_origin"] = ("assumed: NIR stores no dt; 1e-4 s is snnTorch's exporter default "
                           "(override with --dt)")
        md["integrator"] = "exact"
    return G.SNNGraph(nodes, [(str(a), str(b)) for a, b in g.edges], md)


def to_nir_graph(graph: G.SNNGraph):
    import dataclasses

    import nir
    from edgekit.neuro.passes import lower

    # neuron parameters go out per neuron (NIR type-checks shapes along edges)
    sizes = {st.name: st.n for st in lower(graph)[0]}
    nodes = {}
    for name, n in graph.nodes.items():
        if n.neuron:
            n = dataclasses.replace(n, **{f: np.broadcast_to(getattr(n, f), (sizes[name],)).copy()
                                          for f in n.arrays if getattr(n, f) is not None})
        if isinstance(n, G.Input):
            nodes[name] = nir.Input(input_type={"input": np.array(n.shape)})
        elif isinstance(n, G.Output):
            nodes[name] = nir.Output(output_type={"output": np.array(n.shape)})
        elif isinstance(n, G.Affine):
            nodes[name] = nir.Affine(weight=n.weight, bias=n.bias)
        elif isinstance(n, G.Linear):
            nodes[name] = nir.Linear(weight=n.weight)
        elif isinstance(n, G.Scale):
            nodes[name] = nir.Scale(scale=n.scale)
        elif isinstance(n, G.Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(n.input_shape)},
                                      start_dim=n.start_dim, end_dim=n.end_dim)
        elif isinstance(n, G.CubaLIF):
            nodes[name] = nir.CubaLIF(tau_syn=n.tau_syn, tau_mem=n.tau_mem, r=n.r,
                                      v_leak=n.v_leak, v_threshold=n.v_threshold,
                                      v_reset=n.v_reset, w_in=n.w_in)
        elif isinstance(n, G.LIF):
            nodes[name] = nir.LIF(tau=n.tau, r=n.r, v_leak=n.v_leak, v_threshold=n.v_threshold,
                                  v_reset=n.v_reset)
        elif isinstance(n, G.IF):
            nodes[name] = nir.IF(r=n.r, v_threshold=n.v_threshold, v_reset=n.v_reset)
        elif isinstance(n, G.LI):
            nodes[name] = nir.LI(tau=n.tau, r=n.r, v_leak=n.v_leak)
        else:  # pragma: no cover - every SNNGraph node kind is handled above
            raise EdgekitError(f"node '{name}' kind {n.kind} cannot be written to NIR")
    md = {}
    if graph.metadata.get("dt") is not None:
        md["edgekit.dt"] = float(graph.metadata["dt"])
    md["edgekit.integrator"] = graph.metadata.get("integrator", "exact")
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=md, type_check=False)


def write_nir(graph: G.SNNGraph, dest: str | Path) -> Path:
    """Write graph as a NIR file, atomically."""
    import nir

    dest = Path(dest)
    with atomic_path(dest) as tmp:
        nir.write(tmp, to_nir_graph(graph))
    return dest
