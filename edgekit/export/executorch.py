"""ExecuTorch exporter: the single-step graph as a `.pte`, XNNPACK-delegated.

With `--ops fused` every Linear layer is `edgekit::dense` (weights packed at export by the
pack_dense pass, edgekit/export/passes/) and the recurrences are edgekit's fused ops, all served by the
C++ out-variant kernels in kernels/ (one shared library, loaded by the session); XNNPACK
takes what is left (norms, elementwise). With `--ops decomposed` the matmuls go to XNNPACK.

Two state styles:
* "buffers" (default): state lives in mutable buffers inside the program's memory arena
  and persists across `execute` calls; the graph input is only the token. Exported with
  `emit_mutable_buffer_names=True` so the runtime can read and write the live state
  (save/load/reset) through `get_attribute`.
* "io": state as explicit inputs and outputs, like ONNX.
`benchmarks/step_latency.py` measures both; buffers was faster (no per-step state copies
in or out of the runtime), so it is the default.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import torch

from edgekit._io import atomic_write_bytes, sha256_file
from edgekit.export.passes import pipeline_for, trace
from edgekit.export.wrappers import (SeqIO, StepBuffers, StepIO, buffer_name, example_inputs,
                                     graph_input_spec, output_name)
from edgekit.ops import DOMAIN, REGISTRY, in_place_name

STATE_STYLES = ("buffers", "io")
DEFAULT_STATE_STYLE = "buffers"


# Ops that only relabel a tensor's shape. A delegate call made of nothing else computes
# nothing and costs ~20 µs per call in a decode step (XNNPACK's per-call overhead), while
# outside a delegate ExecuTorch runs a view as an alias of its input (no copy).
SHAPE_ONLY = frozenset({"aten.view_copy.default", "aten.unsqueeze_copy.default", "aten.squeeze_copy.dims",
                        "aten.squeeze_copy.dim", "aten.squeeze_copy.default"})


def _partitioner():
    """XNNPACK's partitioner, less the partitions that would only reshape."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Partitioner(XnnpackPartitioner):
        def generate_partitions(self, ep):
            return [p for p in super().generate_partitions(ep)
                    if not all(getattr(n.target, "__name__", None) in SHAPE_ONLY
                               for n in p.nodes if n.op == "call_function")]

    return Partitioner()


# Every constant (a packed weight) starts on a page in the .pte. Where a weight lies in the
# mapped file changes how fast the GEMVs read it (same kernels, same bytes): Mamba-130m's fused
# .pte, paired fresh processes, 2 threads, idle machine, ms/token: ExecuTorch's default
# alignment (16) 23.6, 64 25.0, 4096 22.4; the export from before the tied embedding was stored
# once (its weights at other offsets) 20.9. Not understood yet (docs/benchmarks.md).
CONSTANT_ALIGNMENT = 4096


def export_pte(model, path: Path, *, ops: str = "fused", batch: int = 1,
               state_style: str = DEFAULT_STATE_STYLE, seq_len: int | None = None, passes=None) -> dict:
    """Export `model.step` (or, with seq_len, a prefill graph over seq_len steps, state
    as I/O) to `path`; returns the manifest's artifact entry. passes: the lowering pipeline
    (pass names), if not the format's default (pipeline_for)."""
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    path = Path(path)
    spec = model.state_spec(batch)
    xs = example_inputs(model, batch, seq_len)
    in_spec = graph_input_spec(model, batch, seq_len)
    out_name = model.output_name
    if seq_len:
        state_style = "io"
        step, args = SeqIO(model, batch), (*xs, *model.init_state(batch).values())
    elif state_style == "buffers":
        step, args = StepBuffers(model, batch), xs
    else:
        step, args = StepIO(model, batch), (*xs, *model.init_state(batch).values())
    step = step.eval().requires_grad_(False)

    pipeline = list(passes) if passes is not None else pipeline_for("pte", ops, state_style)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("executorch").setLevel(logging.ERROR)
        ep, fired = trace(step, args, model, pipeline)
        edge = to_edge_transform_and_lower(
            ep, partitioner=[_partitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False))
        used = Counter()
        for node in edge.exported_program().graph.nodes:
            if node.op != "call_function":
                continue
            target = node.target
            if "auto_functionalized" in str(target):      # an op with Tensor(a!) arguments
                target = node.args[0]
            name = getattr(target, "_name", None) or getattr(target, "__name__", str(target))
            if "call_delegate" in name:
                name = "XnnpackBackend (delegated subgraph)"
            elif name == "getitem":
                continue
            used[name.replace("::", ".", 1) if name.startswith("edgekit::") else name] += 1
        prog = edge.to_executorch(ExecutorchBackendConfig(emit_mutable_buffer_names=(state_style == "buffers"),
                                                           constant_tensor_alignment=CONSTANT_ALIGNMENT))
        atomic_write_bytes(path, prog.buffer)

    # "edgekit.<op>[_inplace].<overload>" -> the op's registry name (exact: causal_conv1d is
    # not causal_conv1d_silu)
    called = {k.removeprefix(f"{DOMAIN}.").split(".")[0] for k in used if k.startswith(f"{DOMAIN}.")}
    edgekit_ops = sorted({f"{DOMAIN}::{info.name}" for info in REGISTRY.values()
                          if info.name in called or in_place_name(info.name) in called})
    stock = sorted({k for k in used if not k.startswith(f"{DOMAIN}.")})
    y = step(*args)
    y = y[0] if isinstance(y, tuple) else y
    ent = lambda n, t: {"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}  # noqa: E731
    inputs = [s.to_json() for s in in_spec]
    outputs = [ent(out_name, y)]
    if state_style == "io":
        inputs += [s.to_json() for s in spec]
        outputs += [{**s.to_json(), "name": output_name(s.name)} for s in spec]
    return {
        "file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path),
        "inputs": inputs, "outputs": outputs, "state_style": state_style, "seq_len": seq_len,
        "state_buffers": {s.name: buffer_name(s.name) for s in spec} if state_style == "buffers" else None,
        "kernel_library": "libedgekit_et_kernels.so" if edgekit_ops else None,
        "ops_used": {"edgekit": edgekit_ops, "stock": stock},
        "passes": pipeline, "passes_fired": fired,
    }
