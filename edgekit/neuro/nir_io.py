"""NIR in and out (the ``nir`` package, HDF5 files).

NIR stores continuous-time parameters and no dt. On import we record which dt the source
assumed: edgekit's own files carry it in the graph metadata (``edgekit.dt``,
``edgekit.integrator``); other files get snnTorch's exporter default, 1e-4 s, marked as
assumed (``dt_origin``), and ``--dt`` overrides it. snnTorch's exporter derives
``tau = dt / (1 - beta)``, i.e. forward Euler: import its files with ``integrator="euler"``
to reproduce its discrete model exactly (docs/neuro.md).

Reading is ``SNNGraph.from_nir`` (graph.py, where each node kind converts itself);
``from_nir`` here is the same. Writing needs per-neuron sizes from ``passes.lower``, so it
lives here: this module depends on graph and passes, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.neuro import graph as G
from edgekit.neuro.passes import lower

SNNTORCH_DEFAULT_DT = G.SNNTORCH_DEFAULT_DT


def from_nir(src) -> G.SNNGraph:
    """Read a NIR file (path) or a ``nir.NIRGraph`` into an SNNGraph."""
    return G.SNNGraph.from_nir(src)


def to_nir_graph(graph: G.SNNGraph):
    import dataclasses

    import nir

    # neuron parameters go out per neuron (NIR type-checks shapes along edges)
    sizes = {st.name: st.n for st in lower(graph)[0]}
    nodes = {}
    for name, n in graph.nodes.items():
        if n.neuron:
            n = dataclasses.replace(n, **{f: np.broadcast_to(getattr(n, f), (sizes[name],)).copy()
                                          for f in n.arrays if getattr(n, f) is not None})
        nodes[name] = n.to_nir()
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
