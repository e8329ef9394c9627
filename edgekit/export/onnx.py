"""ONNX exporter: the single-step graph with state as named inputs and outputs.

Fused ops become one node of domain `edgekit` each, and the op's ONNX function body is
stored in the model's local functions, so stock ONNX Runtime (which inlines it) runs
the file while a runtime with its own `edgekit::` kernel can replace it.

Models whose weights pass ~2 GB are saved with external data (`model.onnx.data`):
protobuf cannot hold a single message over 2 GB.

A tied embedding is one initializer that a Gather and the head's MatMul both read; it is
also listed as a graph input (`_shared_weights_as_inputs`), so ONNX Runtime holds it once.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import onnx
import torch

from edgekit._io import sha256_file
from edgekit.errors import EdgekitError
from edgekit.export.passes import pipeline_for, trace
from edgekit.export.wrappers import SeqIO, StepIO, example_inputs, graph_input_spec, output_name
from edgekit.ops import DOMAIN, ONNX_OPSET, REGISTRY

OPSET = 20                       # ONNX opset; the op function bodies use the same one
EXTERNAL_DATA_THRESHOLD = 1_800_000_000   # bytes of initializers; stay clear of 2 GiB


def _softplus(self, beta: float = 1.0, threshold: float = 20.0):
    """aten.softplus as ONE `Softplus` node when beta = 1 (torchlib writes Softplus, Greater
    and Where). Exact in float32: above the threshold torch returns x itself, and Softplus
    gives x + log1p(exp(-x)), which rounds to x for every x > 16 (the term is < ulp(x) / 2)."""
    from onnxscript import opset20 as op
    if beta == 1.0 and threshold >= 16.0:
        return op.Softplus(self)
    scaled = op.Mul(self, op.CastLike(beta, self))
    soft = op.Div(op.Softplus(scaled), op.CastLike(beta, self))
    return op.Where(op.Greater(scaled, op.CastLike(threshold, self)), self, soft)


MSFT_DOMAIN = "com.microsoft"
ACCURACY_LEVEL = 4   # int8 activations: MatMulNBits' fast path (level 0 at 2 and 8 bits is 100-200x slower)


def _matmul_nbits():
    """ONNX Runtime's contrib op `com.microsoft.MatMulNBits`, declared to onnx (which ships no
    com.microsoft schemas) so the exporter can emit it and the checker accepts it."""
    import onnxscript
    S = onnx.defs.OpSchema
    try:
        schema = onnx.defs.get_schema("MatMulNBits", 1, MSFT_DOMAIN)
    except onnx.defs.SchemaError:
        F, A, INT = S.FormalParameter, S.Attribute, S.AttrType.INT
        schema = S("MatMulNBits", MSFT_DOMAIN, 1, doc="ONNX Runtime contrib op: A x dequant(B)^T, B in bits-bit blocks",
                   inputs=[F("A", "T1"), F("B", "T2"), F("scales", "T1"),
                           F("zero_points", "T3", param_option=S.FormalParameterOption.Optional)],
                   outputs=[F("Y", "T1")],
                   type_constraints=[("T1", ["tensor(float)"], ""), ("T2", ["tensor(uint8)"], ""),
                                     ("T3", ["tensor(uint8)"], "")],
                   attributes=[A(n, INT, "") for n in ("K", "N", "bits", "block_size", "accuracy_level")])
        onnx.defs.register_schema(schema)
    return onnxscript.values.Op(onnxscript.values.Opset(MSFT_DOMAIN, 1), "MatMulNBits", schema)


def _qlinear(x, w, scales, zero_points, b):
    """edgekit::qlinear as ONE `com.microsoft.MatMulNBits` (accuracy_level 4) + Add: the same
    packed bytes (edgekit/quant/schemes.py is that op's layout) and the same int8 activation
    blocks (edgekit/ops/qlinear.py), run by ORT's own int8-dot kernels. Bits and block size
    follow from the static shapes."""
    from onnxscript import opset20 as op

    from edgekit.ops.qlinear import layout
    K = x.shape[-1]
    N = w.shape[0]
    bits, G = layout(K, tuple(w.shape))
    y = _matmul_nbits()(x, w, scales, zero_points, K=K, N=N, bits=bits, block_size=G, accuracy_level=ACCURACY_LEVEL)
    return op.Add(y, b)


def _translation_table() -> dict:
    from edgekit.ops.registry import _onnx_node_ops
    table = {info.torch_op.default: _onnx_node_ops[info.name] for info in REGISTRY.values()}
    table[torch.ops.aten.softplus.default] = _softplus
    table[torch.ops.edgekit.qlinear.default] = _qlinear
    return table


def _shared_weights_as_inputs(proto: onnx.ModelProto) -> list[str]:
    """List every initializer that a Gather and a MatMul both read (a tied embedding read as
    the head's rows, models/layers.py `Linear.rows`) as a graph input too: an initializer
    that is also an input is the input's default (ONNX IR >= 4), which ONNX Runtime does not
    treat as a constant. Returns their names.

    Why: ORT repacks a constant MatMul weight into its GEMM layout at load and frees the
    original only when no other node reads it, so a shared head was held twice: Mamba-130m
    decoded in 716 MiB for 493 MiB (516.5 MB) of weights. Not constant, it is not repacked:
    569 MiB, and no slower: interleaved fresh processes on a loaded 2-core machine, 39.8-41.8
    against 41.2-42.8 ms/token at 1 thread, 75-79 against 75-80 at 2 (its MatMul then reads
    the row-major weight). Turning prepacking off for the whole session
    (`session.disable_prepacking`) also gave 569 MiB, but 2% (1 thread) to 8% (2 threads,
    idle machine) slower per token."""
    readers: dict[str, set[str]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    listed = {v.name for v in proto.graph.input}
    shared = [t for t in proto.graph.initializer
              if {"Gather", "MatMul"} <= readers.get(t.name, set()) and t.name not in listed]
    for t in shared:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return [t.name for t in shared]


def save_checked(proto, path: Path, external_data: bool) -> dict:
    """Write proto to path (its weights into `<path>.data` when external_data), check it with
    onnx's full checker, and only then move it into place. Returns the artifact entry's file
    fields (file, bytes, sha256, external_data...)."""
    tmp = path.with_name(f".{path.name}.tmp")
    data_name = path.name + ".data"
    tmp_data = tmp.with_name(data_name + ".tmp")
    try:
        if external_data:
            onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=tmp_data.name, size_threshold=1024)
            # the .data file name is recorded inside the proto; point it at the final name
            proto = onnx.load(tmp, load_external_data=False)
            for t in proto.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = data_name
            onnx.save_model(proto, tmp)
            os.replace(tmp_data, path.with_name(data_name))
        else:
            onnx.save_model(proto, tmp)
        # the checker resolves external data next to the model file: tmp sits beside it
        onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, path)
    finally:
        for t in (tmp, tmp_data):
            if t.exists():
                t.unlink()
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
            "external_data": data_name if external_data else None,
            **({"external_data_bytes": path.with_name(data_name).stat().st_size,
                "external_data_sha256": sha256_file(path.with_name(data_name))} if external_data else {})}


def export_onnx(model, path: Path, *, ops: str = "fused", batch: int = 1, metadata: dict | None = None,
                external_data: bool | None = None, seq_len: int | None = None, passes=None,
                dtype: str = "fp32") -> dict:
    """Export `model.step` (or, with seq_len, the sequence form over a fixed chunk of
    seq_len steps: a prefill graph) to `path`; returns the manifest's artifact entry.
    passes: the lowering pipeline (pass names), if not the format's default (pipeline_for).
    dtype "fp16": fp16 weights and compute, the state and logits fp32 (export/onnx_fp16.py)."""
    path = Path(path)
    spec = model.state_spec(batch)
    step = (SeqIO if seq_len else StepIO)(model, batch).eval()
    xs = example_inputs(model, batch, seq_len)
    state = list(model.init_state(batch).values())
    in_spec = graph_input_spec(model, batch, seq_len)
    out_name = model.output_name
    input_names = [s.name for s in in_spec] + [s.name for s in spec]
    output_names = [out_name] + [output_name(s.name) for s in spec]

    pipeline = list(passes) if passes is not None else pipeline_for("onnx", ops)
    with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        ep, fired = trace(step, (*xs, *state), model, pipeline)
        prog = torch.onnx.export(ep, (*xs, *state), dynamo=True, opset_version=OPSET,
                                 input_names=input_names, output_names=output_names,
                                 custom_translation_table=_translation_table(),
                                 optimize=True, verbose=False)
    proto = prog.model_proto
    used = Counter((n.domain or "ai.onnx", n.op_type) for n in proto.graph.node)
    for info in REGISTRY.values():
        if (DOMAIN, info.onnx_op_type) in used:
            proto.functions.append(info.onnx_function_proto(step=seq_len is None))
    if not any(o.domain == DOMAIN for o in proto.opset_import) and any(d == DOMAIN for d, _ in used):
        proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, ONNX_OPSET))
    for k, v in (metadata or {}).items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=str(v)))
    _shared_weights_as_inputs(proto)
    from edgekit.export import onnx_fp16
    if dtype == "fp16":
        proto = onnx_fp16.to_fp16(proto)

    weight_bytes = sum(t.ByteSize() for t in proto.graph.initializer)
    per_token = onnx_fp16.bytes_per_token(proto)
    files = save_checked(proto, path, weight_bytes > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data)

    def entry(name, t):
        return {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    y, *_ = step(*xs, *state)
    return {
        **files,
        "inputs": [s.to_json() for s in in_spec] + [s.to_json() for s in spec],
        "outputs": [entry(out_name, y)] + [{**s.to_json(), "name": output_name(s.name)} for s in spec],
        "state_style": "io",
        "seq_len": seq_len,
        "opset": OPSET,
        "ops_used": {"edgekit": sorted({t for d, t in used if d == DOMAIN}),
                     "stock": sorted({t for d, t in used if d != DOMAIN})},
        "weight_bytes": weight_bytes, "dtype": dtype, "bytes_per_token": per_token,
        "passes": pipeline, "passes_fired": fired,
    }
