"""`edgekit export --format ort-genai`: a folder that ONNX Runtime GenAI (onnxruntime-genai
0.18) loads with `og.Model(folder)` and generates from: `genai.onnx`, `genai_config.json`, and
the export's tokenizer.json.

What 0.18 takes (docs/ort-genai.md has how it was found):
- a decoder whose `input_ids` are (batch, sequence) int64 and whose `logits` are (batch,
  sequence, vocab); the whole prompt comes in one call, then one token per call;
- per layer at most two recurrent states, bound by name: `past_key_values.{i}.conv_state`
  (rank 2-3) and `past_key_values.{i}.recurrent_state` (rank 3-4), returned as
  `present.{i}.conv_state` / `.recurrent_state`; they start at zero;
- a decoder-only `model.type` ("llama": 0.18 has no recurrent type; with no key/value inputs
  in the graph it binds no attention cache).

So the graph here wraps edgekit's single-step ONNX graph (the same nodes, fused ops and
weights) in a Loop over the sequence: each iteration gathers one token, runs the step, and
carries the state; the logits of every position come out as a scan output. Each layer's
states map onto the two slots: the input windows (a `.conv` state, or RWKV-7's two token
shifts stacked on a new axis 1) are the conv slot, the one other state the recurrent slot (a
(B, D) state gets a unit axis 1: RG-LRU). An architecture whose layer holds anything else (a
Griffin attention layer's cache) is refused with that reason.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from edgekit.errors import EdgekitError

CONFIG_FILE = "genai_config.json"
GENAI_VERSION = "0.18"            # the onnxruntime-genai this layout was checked against
CONTEXT_LENGTH = 1 << 20          # a recurrent model has no context limit; genai wants a number
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
# A model-wide state: the tokens seen so far (Hawk / Griffin, edgekit/models/hawk.py). genai
# passes each call's positions as `position_ids` (B, S); the call's first one is that state.
POSITION = "position"


def _is_window(kind: str) -> bool:
    """A state that holds a layer's recent inputs (a convolution window, a token shift)."""
    return kind == "conv" or kind.startswith("shift")


def slots(state_spec) -> list[dict]:
    """Per layer, in order: {"layer": i, "conv": [state names], "recurrent": name}, or an
    EdgekitError naming the layer that does not fit 0.18's two slots, and why."""
    layers: dict[int, list] = defaultdict(list)
    for s in state_spec:
        if s.name == POSITION:
            continue
        m = _LAYER.match(s.name)
        if not m:
            raise EdgekitError(f"state '{s.name}' belongs to no layer", expected="layers.<i>.<kind> states",
                               fix="export --format onnx: ONNX Runtime GenAI binds state per layer")
        layers[int(m.group(1))].append((m.group(2), s))
    out = []
    for i in sorted(layers):
        windows = [s for kind, s in layers[i] if _is_window(kind)]
        others = [s for kind, s in layers[i] if not _is_window(kind)]
        why = None
        if len(others) != 1:
            why = (f"layer {i} holds {len(others)} states besides its input windows "
                   f"({', '.join(s.name for s in others) or 'none'}); ONNX Runtime GenAI {GENAI_VERSION} binds one "
                   "recurrent_state per layer (and no attention cache for a recurrent model)")
        elif len(others[0].shape) not in (2, 3, 4):
            why = (f"{others[0].name} has rank {len(others[0].shape)}; recurrent_state takes rank 3 or 4 "
                   "(a rank-2 state gets a unit axis)")
        elif len(windows) > 1 and (len({tuple(w.shape) for w in windows}) != 1 or len(windows[0].shape) != 2):
            why = f"layer {i}'s windows ({', '.join(w.name for w in windows)}) do not stack into one conv_state"
        elif len(windows) == 1 and len(windows[0].shape) not in (2, 3):
            why = f"{windows[0].name} has rank {len(windows[0].shape)}; conv_state takes rank 2 or 3"
        if why:
            raise EdgekitError(f"this model does not fit ONNX Runtime GenAI: {why}",
                               expected="per layer: input windows (conv_state) and one recurrent state",
                               fix="export --format onnx (edgekit's own session runs it)")
        out.append({"layer": i, "conv": [w.name for w in windows], "recurrent": others[0].name})
    return out


def wrap(step, state_spec, token_input: str, logits_output: str, out_name) -> tuple:
    """The genai graph around the step ModelProto `step` (not modified). Returns (proto,
    inputs, outputs): the TensorSpec-like dicts of the new graph's I/O."""
    import onnx
    from onnx import TensorProto, helper

    spec = {s.name: s for s in state_spec}
    sl = slots(state_spec)
    g = step.graph
    init_names = {t.name for t in g.initializer}
    step_inputs = [i.name for i in g.input if i.name not in init_names]
    if step_inputs[0] != token_input or len(spec) + 1 != len(step_inputs):
        raise EdgekitError("the step graph's inputs are not (tokens, state...)", fix="export --format onnx")
    B = state_spec[0].shape[0]
    if B != 1:
        raise EdgekitError(f"batch {B}: ONNX Runtime GenAI runs this export at batch 1", fix="export with --batch 1")
    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int64": TensorProto.INT64}

    def dtname(s):
        return str(s.dtype).removeprefix("torch.")

    def dt_of(s):
        return elem[dtname(s)]

    def vi(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    # -- the Loop body: one step, the token gathered from input_ids at the iteration count
    # the step's logits renamed inside the body: names are one scope for shape inference, and
    # the outer graph's (1, S, V) output is `logits`
    step_nodes = []
    for n in g.node:
        n = type(n).FromString(n.SerializeToString())
        for k, name in enumerate(n.output):
            if name == logits_output:
                n.output[k] = "__logits_step"
        for k, name in enumerate(n.input):
            if name == logits_output:
                n.input[k] = "__logits_step"
        step_nodes.append(n)
    body_nodes = [helper.make_node("Gather", ["input_ids", "__iter"], [token_input], axis=1),
                  helper.make_node("Identity", ["__cond_in"], ["__cond_out"]), *step_nodes]
    carried = [s.name for s in state_spec]
    body = helper.make_graph(
        body_nodes, "edgekit_step",
        [vi("__iter", TensorProto.INT64, []), vi("__cond_in", TensorProto.BOOL, []),
         *[vi(n, dt_of(spec[n]), list(spec[n].shape)) for n in carried]],
        [vi("__cond_out", TensorProto.BOOL, []),
         *[vi(out_name(n), dt_of(spec[n]), list(spec[n].shape)) for n in carried],
         vi("__logits_step", TensorProto.FLOAT, None)],
        value_info=[v for v in g.value_info if v.name != logits_output])

    # -- the main graph: unpack the slots into the step's states, loop, pack them back
    nodes, inputs, outputs, io = [], [vi("input_ids", TensorProto.INT64, [B, "sequence_length"])], [], []
    io.append({"name": "input_ids", "shape": [B, "sequence_length"], "dtype": "int64"})
    consts = [helper.make_tensor("__axis1", TensorProto.INT64, [1], [1]),
              helper.make_tensor("__one", TensorProto.INT64, [1], [1])]
    loop_in, loop_out, packs = [], [], []
    for s in sl:
        i = s["layer"]
        for slot, names in (("conv_state", s["conv"]), ("recurrent_state", [s["recurrent"]])):
            if not names:
                continue
            first = spec[names[0]]
            stack = len(names) > 1 or (slot == "recurrent_state" and len(first.shape) == 2)
            shape = [first.shape[0], len(names), *first.shape[1:]] if stack else list(first.shape)
            pin, pout = f"past_key_values.{i}.{slot}", f"present.{i}.{slot}"
            inputs.append(vi(pin, dt_of(first), shape))
            outputs.append(vi(pout, dt_of(first), shape))
            io.append({"name": pin, "shape": shape, "dtype": dtname(first)})
            if stack:
                parts = [f"{pin}.{k}" for k in range(len(names))]
                if len(names) > 1:
                    nodes.append(helper.make_node("Split", [pin], parts, axis=1, num_outputs=len(names)))
                else:
                    parts = [pin]
                for p, n in zip(parts, names):
                    nodes.append(helper.make_node("Squeeze", [p, "__axis1"], [f"{n}.__in"]))
                    loop_in.append((n, f"{n}.__in"))
                    loop_out.append((n, f"{n}.__last"))
                ups = [f"{n}.__up" for n in names]
                packs += [helper.make_node("Unsqueeze", [f"{n}.__last", "__axis1"], [u]) for n, u in zip(names, ups)]
                packs.append(helper.make_node("Concat", ups, [pout], axis=1) if len(ups) > 1
                             else helper.make_node("Identity", ups, [pout]))
            else:
                loop_in.append((names[0], pin))
                loop_out.append((names[0], pout))
    if POSITION in spec:
        inputs.append(vi("position_ids", TensorProto.INT64, [B, "sequence_length"]))
        io.append({"name": "position_ids", "shape": [B, "sequence_length"], "dtype": "int64"})
        nodes.append(helper.make_node("Gather", ["position_ids", "__zero"], [f"{POSITION}.__in"], axis=1))
        consts.append(helper.make_tensor("__zero", TensorProto.INT64, [], [0]))
        loop_in.append((POSITION, f"{POSITION}.__in"))
        loop_out.append((POSITION, f"{POSITION}.__last"))
    order = {n: k for k, n in enumerate(carried)}
    loop_in.sort(key=lambda t: order[t[0]])
    loop_out.sort(key=lambda t: order[t[0]])
    nodes += [helper.make_node("Shape", ["input_ids"], ["__shape"]),
              helper.make_node("Gather", ["__shape", "__one"], ["__len1"], axis=0),
              helper.make_node("Squeeze", ["__len1"], ["__len"]),
              helper.make_node("Constant", [], ["__true"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
              helper.make_node("Loop", ["__len", "__true", *[v for _, v in loop_in]],
                               [v for _, v in loop_out] + ["__logits_seq"], body=body),
              # (S, B, V) -> (B, S, V)
              helper.make_node("Transpose", ["__logits_seq"], ["logits"], perm=[1, 0, 2]),
              *packs]
    outputs.insert(0, vi("logits", TensorProto.FLOAT, [B, "sequence_length", None]))
    # a weight the step graph lists as an input too (a tied embedding: export/onnx.py
    # `_shared_weights_as_inputs`, so ONNX Runtime keeps no repacked second copy) stays one here
    shared = [i for i in g.input if i.name in init_names]
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, "edgekit_genai", inputs + shared, outputs,
                              initializer=[*g.initializer, *[c for c in consts if c.name in used]])
    proto = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version,
                              functions=list(step.functions))
    for p in step.metadata_props:
        proto.metadata_props.append(onnx.StringStringEntryProto(key=p.key, value=p.value))
    return proto, io


_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>", "<|end_of_text|>")


def _special_ids(tokenizer_json: Path) -> dict:
    """{"eos": id, ...} from a tokenizer.json's special added tokens that name an end of text
    (0.18 needs an eos inside the vocabulary; a byte-level tokenizer without one keeps 0,
    the NUL byte, as the bundled checkpoints' config.json says)."""
    try:
        added = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError):
        return {}
    for t in added:
        if isinstance(t, dict) and t.get("special") and t.get("content") in _EOS_NAMES and isinstance(t.get("id"), int):
            return {"eos": t["id"], "pad": t["id"]}
    return {}


def write_config(path: Path, model, graph_file: str, io: list[dict]) -> None:
    """genai_config.json for graph_file (whose inputs are io): greedy search by default (a
    client sets its own)."""
    names = {t["name"] for t in io}
    n_layers = sum(1 for n in names if re.fullmatch(r"past_key_values\.\d+\.(conv|recurrent)_state", n) and
                   n.endswith("recurrent_state"))
    cfg = model.manifest(batch=1).config
    vocab = int(cfg.get("vocab_size") or 0)
    hidden = int(cfg.get("d_model") or cfg.get("hidden_size") or 1)
    ids = {"bos": 0, "eos": 0, "pad": 0}
    tok = model.tokenizer()
    if tok is not None:                      # the tokenizer's own end-of-text token, if it has one
        ids.update(_special_ids(tok.file))
    config = {
        "model": {
            "type": "llama",
            "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"],
            "vocab_size": vocab, "context_length": CONTEXT_LENGTH,
            "decoder": {
                "filename": graph_file, "session_options": {"log_id": "edgekit", "provider_options": []},
                "hidden_size": hidden, "head_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1,
                "num_hidden_layers": n_layers,
                "inputs": {"input_ids": "input_ids", "past_conv_names": "past_key_values.%d.conv_state",
                           "past_recurrent_names": "past_key_values.%d.recurrent_state",
                           **({"position_ids": "position_ids"} if "position_ids" in names else {})},
                "outputs": {"logits": "logits", "present_conv_names": "present.%d.conv_state",
                            "present_recurrent_names": "present.%d.recurrent_state"},
            },
        },
        "search": {"max_length": 2048, "do_sample": False, "num_beams": 1, "top_k": 1, "top_p": 1.0,
                   "temperature": 1.0, "repetition_penalty": 1.0, "past_present_share_buffer": False,
                   "min_length": 0, "early_stopping": True, "length_penalty": 1.0, "diversity_penalty": 0.0,
                   "no_repeat_ngram_size": 0, "num_return_sequences": 1},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=1) + "\n")
    tmp.replace(path)


def export_ort_genai(model, path: Path, *, ops, batch: int = 1, state_style=None, seq_len=None, metadata=None,
                     passes=None, dtype: str = "fp32") -> dict:
    """The format registry's exporter: edgekit's step graph (export_onnx, the same passes and
    ops), wrapped (`wrap`) into path, and genai_config.json beside it. Returns the artifact
    entry; its inputs and outputs are given at one token per call (decode)."""
    import onnx

    from edgekit.export.onnx import EXTERNAL_DATA_THRESHOLD, export_onnx, output_name, save_checked
    path = Path(path)
    if seq_len:
        raise EdgekitError("--prefill does not apply to --format ort-genai",
                           expected="no --prefill: its graph takes a whole prompt in one call", fix="drop --prefill")
    if model.input_kind != "tokens":
        raise EdgekitError(f"--format ort-genai is for token language models; this {model.arch} model takes "
                           f"{model.input_kind}", fix="export --format onnx or pte")
    if batch != 1:
        raise EdgekitError(f"--batch {batch} with --format ort-genai", expected="batch 1 (a generator runs one sequence)",
                           fix="drop --batch")
    spec = model.state_spec(1)
    slots(spec)                                   # refuse before exporting anything
    step_path = path.with_name(f".{path.stem}-step.onnx")
    try:
        step_entry = export_onnx(model, step_path, ops=ops, batch=1, metadata=metadata, passes=passes, dtype=dtype)
        step = onnx.load(str(step_path))           # with its external data, if any
        proto, io = wrap(step, spec, step_entry["inputs"][0]["name"], model.output_name, output_name)
    finally:
        for f in (step_path, step_path.with_name(step_path.name + ".data")):
            if f.exists():
                f.unlink()
    files = save_checked(proto, path, (step_entry["weight_bytes"] or 0) > EXTERNAL_DATA_THRESHOLD)
    write_config(path.with_name(CONFIG_FILE), model, path.name, io)

    def at_one_token(t):
        shape = [1 if d == "sequence_length" else d for d in t["shape"]]
        return {"name": t["name"], "shape": shape, "dtype": t["dtype"]}
    logits = step_entry["outputs"][0]
    outputs = [{"name": "logits", "shape": [1, 1, *logits["shape"][1:]], "dtype": logits["dtype"]}] + \
        [{**at_one_token(t), "name": t["name"].replace("past_key_values.", "present.", 1)} for t in io[1:]
         if t["name"].startswith("past_key_values.")]
    keep = ("opset", "ops_used", "weight_bytes", "dtype", "bytes_per_token", "passes", "passes_fired")
    return {**files, "config_file": CONFIG_FILE, "inputs": [at_one_token(t) for t in io], "outputs": outputs,
            "state_style": "io", **{k: step_entry[k] for k in keep if k in step_entry}}
