"""int4 weights through NNCF: `nncf.compress_weights` (INT4_SYM, code we did not write) makes
the codes and scales of every int4 layer of a `--quant int4` export (and of a ternary
model's int4 head).

NNCF compresses ONNX MatMuls, so the layers go to it as a graph of its own: one MatMul per
layer (x_i (1, K) @ W_i (K, N), W the layer's weight transposed), opset 20, where INT4_SYM in
blocks of G becomes `com.microsoft.MatMulNBits` (bits 4, block_size G, no zero point: 8).
Its packed B (N, K/G, G/2) and scales (N, K/G) are edgekit's layout as they are
(edgekit/quant/schemes.py), so they are read back unchanged. One call per group size, in
batches of at most BATCH_BYTES of float32 weights (an ONNX graph over 2 GB cannot be shape-
inferred, which NNCF does). Measured: Mamba-130m's 97 layers (516 MB) in 4.1 s.

NNCF's own rule and edgekit's `schemes.quantize(w, "int4", G)` give identical bytes
(tests/test_quant_nncf.py on random and trained weights; tests/test_quant.py checks an export
made through NNCF against it), so the torch reference of a quantized model is the same
whichever made the codes. int8 stays edgekit's: NNCF's INT8_ASYM is per output channel, a
DequantizeLinear on the whole row, which no MatMulNBits block size expresses for widths that
are not powers of 2 (768, 1536, 2304); edgekit applies the same rule per block of G.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch

from edgekit.errors import EdgekitError
from edgekit.quant.schemes import Packed, pack_bits

BATCH_BYTES = 1 << 30


def nncf_version() -> str:
    return _nncf().__version__


def _nncf():
    try:
        import nncf
    except ImportError as e:
        raise EdgekitError("int4 weights are made by NNCF, which is not installed",
                           got=str(e), fix="pip install 'edgekit[quant]' (nncf==3.4.0), or run `make setup`") from e
    return nncf


def compress_int4(weights: dict[str, torch.Tensor], groups: dict[str, int]) -> dict[str, Packed]:
    """{name: (out, in) float weight} -> {name: Packed int4}, layer `name` in blocks of
    groups[name], each made by nncf.compress_weights (INT4_SYM, ratio 1, all layers)."""
    by_group: dict[int, list[str]] = {}
    for name in weights:
        by_group.setdefault(groups[name], []).append(name)
    out: dict[str, Packed] = {}
    for G, names in by_group.items():
        batch, size = [], 0
        for name in names:
            nbytes = weights[name].numel() * 4
            if batch and size + nbytes > BATCH_BYTES:       # flush first: a batch stays under the limit
                out.update(_compress(weights, batch, G))
                batch, size = [], 0
            batch.append(name)
            size += nbytes
        if batch:
            out.update(_compress(weights, batch, G))
    return out


def _compress(weights: dict[str, torch.Tensor], names: list[str], G: int) -> dict[str, Packed]:
    from onnx import TensorProto, helper, numpy_helper
    nncf = _nncf()
    nodes, ins, outs, inits = [], [], [], []
    for i, name in enumerate(names):
        N, K = weights[name].shape
        w = weights[name].detach().float().t().contiguous().numpy()             # (K, N)
        nodes.append(helper.make_node("MatMul", [f"x{i}", f"W{i}"], [f"y{i}"], name=f"mm{i}"))
        ins.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, K]))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, N]))
        inits.append(numpy_helper.from_array(w, f"W{i}"))
    model = helper.make_model(helper.make_graph(nodes, "edgekit_int4", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    # NNCF prints a table and a progress bar per call, and logs at INFO: edgekit's export
    # has its own progress, so both go to a buffer (its tail goes into an error message)
    log = logging.getLogger("nncf")
    level = log.level
    sink = io.StringIO()
    try:
        log.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            c = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=G,
                                      ratio=1.0, all_layers=True)
    except Exception as e:
        raise EdgekitError(f"NNCF could not compress {len(names)} int4 layers in blocks of {G}",
                           got=f"{type(e).__name__}: {e}; NNCF said: {sink.getvalue()[-600:]}",
                           fix="pass --quantizer edgekit (the same rule without NNCF), and report this") from e
    finally:
        log.setLevel(level)
    inits = {t.name: t for t in c.graph.initializer}
    got: dict[str, Packed] = {}
    for node in c.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "MatMulNBits" or attrs.get("bits") != 4 or attrs.get("block_size") != G:
            raise EdgekitError(f"NNCF did not make a 4-bit MatMulNBits in blocks of {G} of node {node.name}",
                               got=f"{node.op_type} {attrs}",
                               fix="check the nncf version (edgekit is tested with nncf==3.4.0)")
        i = int(node.output[0][1:])
        name = names[i]
        N, K = weights[name].shape
        KB = K // G
        if len(node.input) > 3 and node.input[3]:
            raise EdgekitError(f"NNCF gave layer {name} zero points: INT4_SYM should have none (8)",
                               fix="check the nncf version (edgekit is tested with nncf==3.4.0)")
        if node.input[1] not in inits or node.input[2] not in inits:
            raise EdgekitError(f"NNCF's MatMulNBits for layer {name} keeps its codes or scales outside the "
                               "initializers", fix="check the nncf version (edgekit is tested with nncf==3.4.0)")
        codes = torch.from_numpy(numpy_helper.to_array(inits[node.input[1]]).copy()).reshape(N, KB, G // 2)
        scales = torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).copy()).float().reshape(N, KB)
        zp = pack_bits(torch.full((N, KB), 8, dtype=torch.int32), 4)
        got[name] = Packed(codes.to(torch.uint8).contiguous(), scales.contiguous(), zp, 4, G)
    if len(got) != len(names):
        raise EdgekitError(f"NNCF compressed {len(got)} of {len(names)} layers",
                           fix="check the nncf version (edgekit is tested with nncf==3.4.0)")
    return got
