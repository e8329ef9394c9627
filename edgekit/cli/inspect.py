"""`edgekit inspect PATH`: what an exported artifact or a checkpoint holds.

An artifact (model.onnx, model.pte or their folder, with its edgekit.json): architecture,
config, I/O, state tensors, ops, lowering passes, file sizes and, where the manifest records
it, the weight bytes. A checkpoint (anything `edgekit export` takes): architecture, config,
parameter count, weight bytes, its files and the state a session would hold. Read-only.

Text is for people: sizes in kB/MB/GB, counts with thousands separators, values spelled
true/false/none and lists without quotes (never a Python repr).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgekit.errors import EdgekitError
from edgekit.units import human_bytes


def _text(v) -> str:
    """A config value as text: true / false / none, numbers as written, lists and objects
    without quotes."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_text(x)}" for k, x in v.items()) + "}"
    return str(v)


def _quant_text(q) -> str:
    """"none", or a --quant record as its scheme, head and bits per weight."""
    if isinstance(q, str):
        return q
    head = f", head {q['head']}" if q.get("head") not in (None, q.get("scheme")) else ""
    return f"{q.get('scheme')}{head} ({_text(q.get('bits_per_weight'))} bits per weight)"


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _config_line(config: Mapping) -> str:
    return escape("config: " + ", ".join(f"{k}={_text(v)}" for k, v in config.items()))


def _state_table(rows, total: int) -> Table:
    """rows: (name, shape, dtype, bytes) of each state tensor."""
    st = Table("state tensor", "shape", "dtype", "bytes", title="state")
    for name, shape, dtype, nbytes in rows:
        st.add_row(escape(name), _shape(shape), dtype, f"{nbytes:,}")
    human = f" ({human_bytes(total)})" if total >= 1000 else ""
    st.add_row("[bold]total[/bold]", "", "", f"[bold]{total:,}[/bold]{human}")
    return st


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


CONTRIB_OPS = ("MatMulNBits", "GatherBlockQuantized")     # ONNX Runtime's com.microsoft kernels


def _on_device(con: Console, profile, facts: list[dict]) -> None:
    """Bytes per token, the floor on the device, the RAM fit and the kernels each format needs."""
    from edgekit.profiles import RUNTIME_OVERHEAD_BYTES, fit
    con.rule(escape(f"on {profile.name}: {profile.description}"))
    con.print(f"bandwidth {profile.bandwidth_gbs:g} GB/s ({profile.bandwidth_kind}), RAM budget "
              f"{profile.ram_budget_mb:,} MB, runs {', '.join(profile.formats)}")
    t = Table("artifact", "bytes read / token", f"floor on {profile.name}", "weights + state + runtime",
              "fits", "needs", title=escape(f"{profile.name}: floor and fit"))
    for f in facts:
        per_token, note = f["per_token"], ""
        if per_token is None:               # written before bytes_per_token was recorded
            per_token, note = f["weights"], " (file size: an upper bound)"
        fmt = f["key"]
        runs = fmt is None or fmt in profile.formats
        ft = fit(profile, f.get("file") or f["weights"], f["state"], fmt or profile.format)
        over = "yes" if ft.fits else f"no: {human_bytes(ft.total - ft.budget)} over"
        if fmt == "pte":
            build = ("its x86-64 build (make kernels)" if "avx2" in profile.isa
                     else "its arm64 build (NEON + dotprod: edgekit bundle's CMake project)")
            needs = (f"edgekit's kernel library, {build}: " + ", ".join(f["edgekit_ops"])
                     if f["edgekit_ops"] else "stock ExecuTorch kernels only")
        elif fmt == "onnx":
            needs = ("stock ONNX Runtime (edgekit nodes carry function bodies)" if f["edgekit_ops"] else
                     "stock ONNX Runtime") + (f"; com.microsoft {', '.join(f['contrib'])}" if f["contrib"] else "")
        else:
            needs = "an export first (edgekit export --device " + profile.name + ")"
        if not runs:
            needs = f"NOT RUN THERE: {profile.name} runs {', '.join(profile.formats)}"
        t.add_row(escape(f["format"]), human_bytes(per_token) + note, f"{profile.floor_ms(per_token):.3f} ms/token",
                  f"{human_bytes(ft.weights)} + {human_bytes(ft.state)} + {human_bytes(ft.working)} = "
                  f"{human_bytes(ft.total)}", over, escape(needs))
    con.print(t)
    con.print(f"floor = bytes read per token / {profile.bandwidth_gbs:g} GB/s; runtime memory beyond the weights: "
              f"{', '.join(f'{k} {human_bytes(v)}' for k, v in RUNTIME_OVERHEAD_BYTES.items())} (measured on this "
              "host, Mamba-130m; edgekit/profiles.py)")


def _is_checkpoint(path: Path) -> bool:
    """As a session decides (edgekit/runtimes/session.py): a file that is no artifact format,
    or a folder with no edgekit.json that holds a model (config.json, or one an
    architecture recognizes)."""
    from edgekit import formats
    from edgekit.artifact import FILENAME
    if path.is_file():
        return formats.by_suffix(path) is None
    if not path.is_dir() or (path / FILENAME).exists():
        return False
    from edgekit.models import ARCHITECTURES
    return (path / "config.json").exists() or any(cls.detect(path) for cls in ARCHITECTURES.values())


def inspect_cmd(path: Path = typer.Argument(..., help="model.onnx, model.pte, their folder, or a checkpoint "
                                            "(anything `edgekit export` takes)", show_default=False),
                device: str = typer.Option(None, "--device", help="a device profile (`edgekit devices`): the "
                                           "bandwidth floor in ms/token there, whether it fits its RAM budget, "
                                           "and which ops need edgekit's kernel library", show_default=False)) -> None:
    """Describe an exported artifact or a checkpoint."""
    if not path.exists():
        raise EdgekitError(f"'{path}' does not exist",
                           fix="pass model.onnx, model.pte or their folder (edgekit export), or a checkpoint")
    profile = None
    if device is not None:
        from edgekit.profiles import load_profile
        profile = load_profile(device)          # a bad name is refused before any work
    con = Console()
    if _is_checkpoint(path):
        facts = _inspect_checkpoint(path, con, profile)
    else:
        facts = _inspect_artifact(path, con)
    if profile is not None:
        _on_device(con, profile, facts)


def _inspect_checkpoint(path: Path, con: Console, profile=None) -> list[dict]:
    """Loads it as `edgekit export` / `edgekit run` would (every check included): the
    parameter count and weight bytes are those of the model as loaded. With a device profile,
    the facts for its floor are those of the export `--device` would make: quantized as the
    profile says (exact: the same quantize_model), fp16 estimated (matrices 2 bytes a weight)."""
    from edgekit.models import detect_arch
    cls = detect_arch(path)
    model = cls.from_pretrained(path)
    params = list(model.parameters())                 # each tensor once (a tied weight is stored once)
    count = sum(p.numel() for p in params)
    nbytes = sum(p.numel() * p.element_size() for p in params)
    dtypes = ", ".join(sorted({str(p.dtype).removeprefix("torch.") for p in params}))
    con.print(f"[bold]{model.arch}[/bold]  checkpoint: {escape(cls.checkpoint)}")
    con.print(_config_line(model.config_dict()))
    con.print(f"parameters:   {count:,}")
    con.print(f"weight bytes: {human_bytes(nbytes)} as loaded ({dtypes})")
    files = cls.weight_files(path)
    if files:
        con.print(escape("files:        " + ", ".join(f"{f.name} ({human_bytes(f.stat().st_size)})" for f in files)))
    import torch
    specs = model.input_spec(1)
    with torch.inference_mode():                     # one step from the zero state: the output's shape
        xs = [torch.zeros(s.shape, dtype=s.dtype) for s in specs]
        y, _ = model.step(xs[0] if len(xs) == 1 else tuple(xs), model.init_state(1))
    io = Table("direction", "name", "shape", "dtype", title="inputs and outputs (one step, batch 1)")
    for s in specs:
        io.add_row("input", escape(s.name), _shape(s.shape), str(s.dtype).removeprefix("torch."))
    io.add_row("output", escape(model.output_name), _shape(y.shape), str(y.dtype).removeprefix("torch."))
    con.print(io)
    spec = model.state_spec(1)
    con.print(_state_table([(s.name, s.shape, str(s.dtype).removeprefix("torch."), s.nbytes) for s in spec],
                           sum(s.nbytes for s in spec)))
    from edgekit.models.base import bytes_read_per_token
    label = "checkpoint, exported fp32"
    if profile is not None and profile.quant != "none":
        from edgekit.quant import quantize_model
        quantize_model(model, profile.quant, quantizer="edgekit")      # sizes only: the same bytes as NNCF's
        label = f"checkpoint, exported {profile.quant} (--device {profile.name})"
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    per_token = bytes_read_per_token(model)
    if profile is not None and profile.dtype == "fp16":
        half = sum(t.numel() * 2 for t in model.parameters() if t.dim() >= 2 and t.is_floating_point())
        per_token, weights = per_token - half, weights - half      # matrices at 2 bytes instead of 4
        label = f"checkpoint, exported fp16 (--device {profile.name}; estimate)"
    return [{"format": label, "key": None, "weights": weights, "state": sum(s.nbytes for s in spec),
             "per_token": per_token, "edgekit_ops": [], "kernel_library": None}]


def _inspect_artifact(artifact: Path, con: Console) -> None:
    from edgekit import artifact as contract
    manifest, mpath = contract.read(artifact)
    arts = manifest.artifacts
    if artifact.is_file():
        from edgekit import formats
        fmt = formats.by_suffix(artifact)          # by its name first: genai.onnx is ort-genai's
        chosen = [fmt.name if fmt else artifact.suffix.lstrip(".")]
    else:
        chosen = list(arts)
    facts_per_format = []
    con.print(f"[bold]{escape(manifest.arch)}[/bold]  ops={manifest.ops}  batch={manifest.batch}  "
              f"quantization={escape(_quant_text(manifest.quantization))}  tokenizer={escape(_text(manifest.tokenizer))}")
    con.print(_config_line(manifest.config))
    for fmt in chosen:
        if fmt not in arts:
            raise EdgekitError(f"{mpath} lists no {fmt} artifact", fix=f"export with --format {fmt}")
        e = arts[fmt]
        sizes = []
        for name in e.files():
            p = mpath.parent / name
            sizes.append(f"{name} ({human_bytes(p.stat().st_size)})" if p.exists() else f"{name} (missing)")
        con.rule(escape(" + ".join(sizes)))
        if e.weight_bytes is not None:
            con.print(f"weight bytes: {human_bytes(e.weight_bytes)}")
        path = mpath.parent / e.file
        facts = _onnx_facts(path) if fmt == "onnx" else {
            "inputs": [s.to_json() for s in e.inputs], "outputs": [s.to_json() for s in e.outputs],
            "edgekit": {k: 1 for k in e.ops_used.get("edgekit", ())},
            "stock": {k: 1 for k in e.ops_used.get("stock", ())}}
        io = Table("direction", "name", "shape", "dtype", title="inputs and outputs")
        for d in ("inputs", "outputs"):
            for v in facts[d]:
                io.add_row(d[:-1], escape(v["name"]), _shape(v["shape"]), v["dtype"])
        con.print(io)
        if fmt == "pte":
            con.print(f"state style: {e.state_style}"
                      + (f"; kernel library: {escape(e.kernel_library)}" if e.kernel_library else ""))
        if e.passes:
            con.print("lowering passes: " + ", ".join(f"{p} x{e.passes_fired.get(p, 0)}" for p in e.passes))
        con.print("edgekit ops: " + (", ".join(f"{k} x{v}" for k, v in facts["edgekit"].items()) or "none"))
        con.print("stock ops:   " + ", ".join(f"{k} x{v}" if fmt == "onnx" else k
                                                for k, v in sorted(facts["stock"].items())))
        if fmt == "onnx" and facts["functions"]:
            con.print("model-local functions: " + ", ".join(facts["functions"]))
        on_disk = sum((mpath.parent / n).stat().st_size for n in e.files() if (mpath.parent / n).exists())
        facts_per_format.append({"format": fmt, "key": fmt, "weights": e.weight_bytes or on_disk, "file": on_disk,
                                 "state": manifest.state_bytes, "per_token": manifest.bytes_per_token,
                                 "edgekit_ops": sorted(facts["edgekit"]), "kernel_library": e.kernel_library,
                                 "contrib": sorted(k for k in facts["stock"] if k in CONTRIB_OPS)})
    con.print(_state_table([(s.name, s.shape, s.dtype, s.nbytes) for s in manifest.state], manifest.state_bytes))
    return facts_per_format
