"""`edgekit inspect ARTIFACT`: architecture, I/O, state tensors, ops, file size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgekit.errors import EdgekitError


def _onnx_facts(path: Path) -> dict:
    """Read I/O and ops from the file itself, not only from the manifest."""
    import onnx
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise EdgekitError(f"'{path}' is not a readable ONNX model ({str(e)[:120]})",
                           fix="the file is truncated or corrupt; export it again") from None

    def vi(v):
        t = v.type.tensor_type
        return {"name": v.name, "shape": [d.dim_value or d.dim_param for d in t.shape.dim],
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}
    ops = Counter((n.domain or "ai.onnx", n.op_type) for n in proto.graph.node)
    weights = {t.name for t in proto.graph.initializer}     # a tied weight is listed as an input too
    return {"inputs": [vi(v) for v in proto.graph.input if v.name not in weights],
            "outputs": [vi(v) for v in proto.graph.output],
            "edgekit": {f"{d}::{t}": c for (d, t), c in ops.items() if d == "edgekit"},
            "stock": {t: c for (d, t), c in ops.items() if d != "edgekit"},
            "functions": [f"{f.domain}::{f.name}" for f in proto.functions]}


def inspect_cmd(artifact: Path = typer.Argument(..., help="model.onnx, model.pte or their folder")) -> None:
    """Describe an exported artifact."""
    from edgekit import artifact as contract
    manifest, mpath = contract.read(artifact)
    con = Console()
    arts = manifest.artifacts
    chosen = [artifact.suffix.lstrip(".")] if artifact.is_file() else list(arts)
    con.print(f"[bold]{manifest.arch}[/bold]  ops={manifest.ops}  batch={manifest.batch}  "
              f"quantization={manifest.quantization}  tokenizer={manifest.tokenizer}")
    con.print("config: " + ", ".join(f"{k}={v}" for k, v in manifest.config.items()))
    for fmt in chosen:
        if fmt not in arts:
            raise EdgekitError(f"{mpath} lists no {fmt} artifact", fix=f"export with --format {fmt}")
        e = arts[fmt]
        path = mpath.parent / e.file
        size = path.stat().st_size if path.exists() else None
        con.rule(f"{e.file}  ({size / 1e6:.2f} MB)" if size is not None else f"{e.file} (missing)")
        facts = _onnx_facts(path) if fmt == "onnx" else {
            "inputs": [s.to_json() for s in e.inputs], "outputs": [s.to_json() for s in e.outputs],
            "edgekit": {k: 1 for k in e.ops_used.get("edgekit", ())},
            "stock": {k: 1 for k in e.ops_used.get("stock", ())}}
        io = Table("direction", "name", "shape", "dtype", title="inputs and outputs")
        for d in ("inputs", "outputs"):
            for v in facts[d]:
                io.add_row(d[:-1], v["name"], str(tuple(v["shape"])), v["dtype"])
        con.print(io)
        if fmt == "pte":
            con.print(f"state style: {e.state_style}"
                      + (f"; kernel library: {e.kernel_library}" if e.kernel_library else ""))
        if e.passes:
            con.print("lowering passes: " + ", ".join(f"{p} x{e.passes_fired.get(p, 0)}" for p in e.passes))
        con.print("edgekit ops: " + (", ".join(f"{k} x{v}" for k, v in facts["edgekit"].items()) or "none"))
        con.print("stock ops:   " + ", ".join(f"{k} x{v}" if fmt == "onnx" else k
                                                for k, v in sorted(facts["stock"].items())))
        if fmt == "onnx" and facts["functions"]:
            con.print("model-local functions: " + ", ".join(facts["functions"]))
    st = Table("state tensor", "shape", "dtype", "bytes", title="state")
    for s in manifest.state:
        st.add_row(s.name, str(s.shape), s.dtype, f"{s.nbytes:,}")
    st.add_row("[bold]total[/bold]", "", "", f"[bold]{manifest.state_bytes:,}[/bold]")
    con.print(st)
