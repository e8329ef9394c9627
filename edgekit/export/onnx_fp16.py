"""fp16 ONNX for GPUs such as Jetson's (`edgekit export --dtype fp16`, the jetson-* profiles):
weights and the matrix and elementwise work in fp16, the recurrent state and every
reduction in fp32.

What stays fp32, and why:
* the graph's inputs and outputs other than the tokens: the recurrent state goes in and out
  fp32 (it is what a stream carries for hours; fp16 would round RWKV-7's slow decays, which
  lie within 5e-4 of 1, away), and the logits come out fp32 for every consumer;
* the edgekit recurrence nodes (their function bodies compute in fp32: the state update and
  RWKV's k·v products, which can overflow fp16, QUANT-DEVICES.md);
* reductions and what feeds on them (ReduceMean, ReduceSum, Pow, Sqrt, Reciprocal, Exp,
  Softplus, LayerNormalization): an RMSNorm's mean of squares overflows fp16 once an
  activation passes 256 (256² > 65,504), which residual streams of real models reach;
* quantized layers (`--quant`): their codes are packed integers and their scales fp32.
Everything else (MatMul, the gates, the elementwise glue) is fp16, and so are the weights.

Rules (`to_fp16`): each node is fp32 work (the list above), fp16 work (the rest), or data
movement (Reshape, Slice, Gather, ...), which keeps its input's type so the state passes
to the recurrence untouched. A Cast is inserted only where a reader wants the other type.
A weight is stored fp16 when fp16 work reads it (a matrix read by both is stored fp16 and
widened for the fp32 reader); parameters only fp32 work reads stay fp32 (Mamba's A_log and D,
the norms' scales). ONNX Runtime's own converter (onnxruntime.transformers.float16) was
tried first: it rounds every kept-fp32 graph input to fp16 before its first reader, so the
recurrent state lost its fp32 precision each step (the bundled RWKV-7: 0.31 of the logits'
std away from the fp32 export over 256 bytes).
"""

from __future__ import annotations

import onnx

FP32_OPS = ("ReduceMean", "ReduceSum", "Pow", "Sqrt", "Reciprocal", "Exp", "Softplus", "LayerNormalization",
            "SimplifiedLayerNormalization",
            # quantized layers (--quant with --dtype fp16) keep their packed codes and fp32 scales
            "MatMulNBits", "GatherBlockQuantized")
# data movement: computes nothing, so its output keeps its (first) data input's type
MOVE_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Concat", "Identity", "Flatten",
            "Gather", "Expand", "Tile")
F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of proto with fp16 weights and compute (module docstring); every float graph
    input and output stays fp32."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    floats = _float_values(out)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    memo: dict[str, frozenset] = {}

    def demand(v: str) -> frozenset:
        """The precisions v's readers want: 16 (fp16 work), 32 (fp32 work or a graph output);
        through data movement, what its readers want."""
        if v not in memo:
            memo[v] = frozenset({32})                 # (a cycle cannot happen in a graph)
            want = {32} if v in outputs else set()
            for n in consumers.get(v, ()):
                c = _category(n)
                if c == "move":
                    for o in n.output:
                        if o in floats:
                            want |= demand(o)
                else:
                    want.add(32 if c == "block" else 16)
            memo[v] = frozenset(want)
        return memo[v]

    cur: dict[str, int] = {i.name: 32 for i in g.input if i.name in floats}
    for t in g.initializer:
        if t.data_type == F32:
            d = demand(t.name)
            cur[t.name] = 16 if d == {16} or (16 in d and len(t.dims) >= 2) else 32
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []

    def as_type(v: str, bits: int) -> str:
        if cur[v] == bits:
            return v
        if (v, bits) not in casts:
            name = f"{v}__fp{bits}"
            nodes.append(onnx.helper.make_node("Cast", [v], [name], name=f"cast_{name}",
                                               to=F16 if bits == 16 else F32))
            cur[name] = bits
            casts[(v, bits)] = name
        return casts[(v, bits)]

    for n in g.node:
        float_in = [i for i in n.input if i in cur]
        if n.op_type == "Cast" or not float_in:        # its output type is its own (an attribute)
            nodes.append(n)
            cur.update((o, 32) for o in n.output if o in floats)
            continue
        c = _category(n)
        data = n.input[1] if n.op_type == "Where" else n.input[0]
        want = 32 if c == "block" else 16 if c == "compute" else cur.get(data, cur[float_in[0]])
        for k, i in enumerate(n.input):
            if i in cur and cur[i] != want:
                n.input[k] = as_type(i, want)
        nodes.append(n)
        cur.update((o, want) for o in n.output if o in floats)
    for o in g.output:                                   # graph outputs stay fp32
        if cur.get(o.name) == 16:
            inner = o.name + "__fp16"
            for n in nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            nodes.append(onnx.helper.make_node("Cast", [inner], [o.name], name=f"cast_{o.name}_out", to=F32))
    del g.node[:]
    g.node.extend(nodes)
    for t in g.initializer:
        if t.data_type == F32 and cur.get(t.name) == 16:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t).astype("float16"), t.name))
    stored16 = {t.name for t in g.initializer if t.data_type == F16}
    for i in g.input:                     # a shared weight listed as an input: its stored type
        if i.name in stored16:
            i.type.tensor_type.elem_type = F16
    del g.value_info[:]                   # intermediate types: inferred from the nodes
    return out


def _category(n: onnx.NodeProto) -> str:
    if n.domain == "edgekit" or n.op_type in FP32_OPS:
        return "block"
    return "move" if n.op_type in MOVE_OPS else "compute"


def _float_values(proto: onnx.ModelProto) -> set[str]:
    """Names of the fp32 values of the graph (inputs, initializers, node outputs), by onnx's
    type inference; an edgekit node's outputs are float (its function body says so)."""
    g = onnx.shape_inference.infer_shapes(proto).graph
    out = {v.name for v in (*g.input, *g.output, *g.value_info) if v.type.tensor_type.elem_type == F32}
    out |= {t.name for t in g.initializer if t.data_type == F32}
    for n in g.node:
        if n.domain == "edgekit":
            out.update(n.output)
    return out


def bytes_per_token(proto: onnx.ModelProto) -> int:
    """Bytes of initializers one step reads: every initializer, except that a table only a
    Gather reads (an untied embedding) counts one row. A tied embedding, which the head's
    MatMul reads whole, counts whole."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    total = 0
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        users = readers.get(t.name, [])
        if users and all(u.op_type == "Gather" for u in users) and t.dims:
            axis = next((a.i for a in users[0].attribute if a.name == "axis"), 0)
            n //= max(t.dims[axis], 1)
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total
