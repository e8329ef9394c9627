"""Quantized exports (issue 16): every token-LM architecture exported with --quant agrees with
edgekit's torch reference of the same quantized model in ONNX Runtime (at every optimization
level: the block-quantized-MatMul fusion bug) and ExecuTorch; the manifest records what was
quantized; transformers' BitNet packing is matched bit for bit; bad input gets one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit_testutil import assert_clean_failure, run_cli

STEPS, GREEDY, TOL = 64, 32, 1e-3
ARCHS = {"rwkv7": "tiny.pth", "mamba": "mamba", "mamba2": "mamba2", "recurrent_gemma": "griffin"}
CASES = [(a, "ternary") for a in ARCHS] + [("mamba", "int8"), ("mamba", "int4")]


@pytest.fixture(scope="module")
def quant_export(tmp_path_factory):
    """(arch, scheme) -> (checkpoint, OUTDIR with model.onnx, model.pte, edgekit.json), made once."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    made: dict = {}

    def get(arch: str, scheme: str):
        if (arch, scheme) not in made:
            root = tmp_path_factory.mktemp(f"q-{arch}-{scheme}")
            src = ARCHITECTURES[arch].write_random(root / ARCHS[arch], seed=3)
            export(src, root / "out", formats=("onnx", "pte"), quant=scheme)
            made[arch, scheme] = (src, root / "out")
        return made[arch, scheme]
    return get


def _reference(src, scheme):
    from edgekit.models import load_model
    from edgekit.quant import quantize_model
    m = load_model(src).eval().requires_grad_(False)
    quantize_model(m, scheme)
    return m


def _stepped(ref, toks):
    """(logits per step (n, V), the state after) of the reference stepped one token at a time;
    each step's output copied (the model reuses its output buffer)."""
    state, ys = ref.init_state(1), []
    with torch.no_grad():
        for t in toks:
            y, state = ref.step(torch.tensor([t]), state)
            ys.append(y.reshape(-1).numpy().copy())
    return np.stack(ys), state


def _tokens(n, V, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=n).tolist()


@pytest.mark.parametrize("arch,scheme", CASES)
def test_quantized_artifacts_match_the_torch_reference(quant_export, arch, scheme):
    """64 steps: logits max|diff| / std <= 1e-3 in ORT and ExecuTorch against the quantized
    model run eagerly (typically ~1e-6; see below for the rounding-tie case); then the same 32
    greedy tokens."""
    from edgekit.runtimes.session import StreamingSession
    src, out = quant_export(arch, scheme)
    ref = _reference(src, scheme)
    V = json.loads((out / "edgekit.json").read_text())["config"]["vocab_size"]
    toks = _tokens(STEPS, V)
    want, state = _stepped(ref, toks)
    greedy_ref, s_ref = [], dict(state)
    with torch.no_grad():
        t = int(want[-1].argmax())
        for _ in range(GREEDY):
            greedy_ref.append(t)
            y, s_ref = ref.step(torch.tensor([t]), s_ref)
            t = int(y.reshape(-1).argmax())
    for fmt in ("onnx", "pte"):
        s = StreamingSession(out / f"model.{fmt}")
        got = np.stack([np.array(s.step(t)).reshape(-1) for t in toks])
        per_step = np.abs(got - want).max(1) / want.std()
        # Activations are int8-quantized: a float-order difference that moves one input across
        # a rounding tie changes that q by 1 (seen once: 4.4e-3 at a step, RWKV-7 ternary ONNX
        # under two test workers). So: 1e-3 at 95% of the steps, 1e-2 at every step.
        assert np.mean(per_step <= TOL) >= 0.95 and per_step.max() <= 10 * TOL, \
            f"{arch} {scheme} {fmt}: max|diff|/std per step {per_step.max():.2e}, over 1e-3 at {np.sum(per_step > TOL)}"
        t, greedy = int(got[-1].argmax()), []
        for _ in range(GREEDY):
            greedy.append(t)
            t = int(np.asarray(s.step(t)).reshape(-1).argmax())
        assert greedy == greedy_ref, f"{arch} {scheme} {fmt}: greedy tokens differ"


@pytest.mark.parametrize("arch,scheme", [("mamba", "ternary"), ("mamba", "int8"), ("mamba", "int4"),
                                         ("rwkv7", "ternary")])
def test_onnx_is_matmulnbits_and_the_same_at_every_optimization_level(quant_export, arch, scheme):
    """Linear weights are stored packed, as com.microsoft.MatMulNBits with accuracy_level 4,
    and ORT_DISABLE_ALL and ORT_ENABLE_ALL give the same logits (NNCF's DequantizeLinear
    pattern was reported miscomputed once ORT fused it)."""
    import onnx
    import onnxruntime as ort
    _, out = quant_export(arch, scheme)
    proto = onnx.load(str(out / "model.onnx"))
    nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(n.domain == "com.microsoft" for n in nbits)
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert attrs["accuracy_level"] == 4 and attrs["bits"] == {"ternary": 2, "int8": 8, "int4": 4}[scheme]
    m = json.loads((out / "edgekit.json").read_text())
    dense = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm")]
    kept = m["quantization"]["kept_float32"]
    assert len(dense) == 0 or any("LoRA" in r or "not a multiple" in r for r in kept.values()), "a float MatMul without a reason"
    feeds = {}
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
        if not feeds:
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) else 1 for d in i.shape]
                feeds[i.name] = (np.array([[5]] if len(shape) == 2 else [5], dtype=np.int64).reshape(shape)
                                 if "int" in i.type else np.random.default_rng(0).normal(size=shape).astype(np.float32) * 0.1)
        outs.append(sess.run(None, feeds))
    for a, b in zip(*outs):           # the std metric: float order differs, a fusion bug would not be small
        assert np.abs(a - b).max() <= 1e-3 * max(float(np.std(b)), 1e-6), (np.abs(a - b).max(), np.std(b))


def test_manifest_records_the_quantization(quant_export):
    _, out = quant_export("mamba", "ternary")
    q = json.loads((out / "edgekit.json").read_text())["quantization"]
    assert q["scheme"] == "ternary" and q["bits_by_kind"] == {"head": [4], "linear": [2]} and q["head"] == "int4"
    assert all(d["bits"] == (4 if k == "head" else 2) for k, d in q["layers"].items())
    # the tiny Mamba's dt_proj reads dt_rank = 4 inputs: no 32-wide ternary block fits, kept with its reason
    assert q["kept_float32"] == {f"mixers.{i}.dt_proj": "its input width 4 is not a multiple of 32" for i in (0, 1)}
    assert q["bits_per_weight"] < 4.0
    # the int4 head's codes came from NNCF; the ternary layers' from edgekit's BitNet rule
    assert q["quantizer"]["int4"].startswith("nncf 3.4.0: compress_weights INT4_SYM"), q["quantizer"]
    assert q["quantizer"]["ternary"].startswith("edgekit: BitNet b1.58 absmean"), q["quantizer"]


def test_ternary_weights_are_bitnet_absmean():
    """W~ = RoundClip(W / mean|W|, -1, 1), one scale per tensor, in every block."""
    from edgekit.quant.schemes import dequantize, quantize
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(0))
    p = quantize(w, "ternary", 32)
    gamma = w.abs().mean()
    want = (w / gamma).round().clamp(-1, 1) * gamma
    assert torch.allclose(dequantize(p.codes, p.scales, p.zero_points, 64), want, atol=1e-6)
    assert torch.all(p.scales == p.scales[0, 0])


# -- Hugging Face's BitNet packing ----------------------------------------------------------

def _hf():
    from transformers.integrations import bitnet    # the oracle: CI installs transformers
    unpack = getattr(bitnet.unpack_weights, "_torchdynamo_orig_callable", bitnet.unpack_weights)
    return bitnet.pack_weights, unpack, bitnet


@pytest.mark.parametrize("out", [16, 12, 64])
def test_bitnet_packing_is_transformers_bit_for_bit(out):
    from edgekit.quant.bitnet_hf import pack_hf, unpack_hf
    pack_weights, unpack_weights, _ = _hf()
    t = torch.randint(-1, 2, (out, 40), generator=torch.Generator().manual_seed(out)).to(torch.int8)
    ours = pack_hf(t)
    theirs = pack_weights(t.clone().to(torch.int32))
    assert ours.dtype == theirs.dtype == torch.uint8 and torch.equal(ours, theirs)
    assert torch.equal(unpack_weights(ours, torch.int8), t)        # transformers reads ours
    assert torch.equal(unpack_hf(theirs, out), t)                  # we read theirs


def test_bitnet_scale_conventions_against_autobitlinear():
    """autobitlinear multiplies by weight_scale = mean|W|; bitlinear stores its inverse and
    divides. transformers' AutoBitLinear over our ternary weight and scale gives what edgekit's
    per-token int8 activations times gamma * W~ give."""
    from edgekit.quant.bitnet_hf import scale_from_hf, scale_to_hf
    from edgekit.quant.schemes import quantize_activations, ternary_codes
    _, _, bitnet = _hf()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    t, gamma = ternary_codes(w)
    layer = bitnet.AutoBitLinear(64, 32, bias=False, online_quant=False)
    with torch.no_grad():
        layer.weight.copy_(t.float())
        layer.weight_scale.fill_(scale_to_hf(float(gamma), "autobitlinear"))
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = layer(x)
    ours = quantize_activations(x, 64) @ (t.float() * gamma).t()       # one block = per token
    assert torch.allclose(ours, want, rtol=1e-5, atol=1e-5)
    for cls in ("bitlinear", "autobitlinear"):
        assert scale_from_hf(torch.tensor([scale_to_hf(0.25, cls)]), cls) == pytest.approx(0.25)


def test_bitnet_packing_bad_input():
    from edgekit.quant.bitnet_hf import pack_hf, scale_from_hf, unpack_hf
    packed = pack_hf(torch.zeros(16, 8, dtype=torch.int8))
    with pytest.raises(EdgekitError, match="4 packed rows, which hold 16 rows, not the 24"):
        unpack_hf(packed, 24)
    with pytest.raises(EdgekitError, match="code 3"):
        unpack_hf(torch.full((4, 8), 0xFF, dtype=torch.uint8), 16)
    for v in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(EdgekitError, match="a finite scale > 0"):
            scale_from_hf(torch.tensor([v]), "autobitlinear")
    with pytest.raises(EdgekitError, match="linear_class"):
        scale_from_hf(torch.tensor([1.0]), "bitlinear2")


# -- bad input ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_mamba(tmp_path_factory):
    from edgekit.models import ARCHITECTURES
    return ARCHITECTURES["mamba"].write_random(tmp_path_factory.mktemp("qm") / "mamba", seed=1)


@pytest.mark.parametrize("args,words", [
    (["--quant", "int3"], "unknown quantization scheme 'int3'"),
    (["--quant", "int4", "--group-size", "24"], "--group-size 24 is not a power of 2"),
    (["--quant", "int4", "--group-size", "128"], "does not divide layer 'mixers.0.in_proj' (width 64)"),
    (["--group-size", "32"], "--group-size needs --quant"),
    (["--quant", "int4", "--quantizer", "gptq"], "unknown --quantizer 'gptq'"),
])
def test_bad_quant_options_get_one_line(tiny_mamba, tmp_path, args, words):
    r = run_cli("export", tiny_mamba, "-o", tmp_path / "out", "--format", "onnx", *args)
    assert_clean_failure(r, words)
    assert not (tmp_path / "out").exists()


def test_quant_on_a_liquid_network_is_refused_by_name(tmp_path):
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["cfc"].write_random(tmp_path / "cfc", seed=0)
    r = run_cli("export", src, "-o", tmp_path / "out", "--format", "onnx", "--quant", "ternary")
    assert_clean_failure(r, "cfc has no Linear layers to quantize")
    assert not (tmp_path / "out").exists()


def test_decomposed_quantized_export_matches_the_reference(tiny_mamba, tmp_path):
    """--ops decomposed --quant: the qlinear reference traced in stock ops (floor division
    and remainder unpack the codes: the ONNX exporter has no right shift) runs in ORT and
    ExecuTorch's portable kernels, and agrees with the quantized model run eagerly."""
    from edgekit.export import export
    from edgekit.runtimes.session import StreamingSession
    export(tiny_mamba, tmp_path / "out", formats=("onnx", "pte"), ops="decomposed", quant="int4")
    ref = _reference(tiny_mamba, "int4")
    toks = _tokens(16, 256, seed=5)
    want, state = _stepped(ref, toks)
    for fmt in ("onnx", "pte"):
        s = StreamingSession(tmp_path / "out" / f"model.{fmt}")
        got = np.stack([np.array(s.step(t)).reshape(-1) for t in toks])
        per_step = np.abs(got - want).max(1) / want.std()
        assert np.mean(per_step <= TOL) >= 0.9 and per_step.max() <= 10 * TOL, (fmt, per_step.max())


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    """edgekit.export(model, quant=...) on a model the caller holds: quantization works on a
    copy (the caller's Linear layers, weights, training mode and gradients are untouched), and an
    unquantized export puts training mode and requires_grad back."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES, load_model
    from edgekit.models.layers import Linear
    model = load_model(ARCHITECTURES["mamba"].write_random(tmp_path / "mamba", seed=2)).train().requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linears = sorted(n for n, m in model.named_modules() if type(m) is Linear)
    assert linears
    for quant, out in (("int4", "q"), (None, "f")):
        export(model, tmp_path / out, formats=("onnx",), quant=quant)
        assert json.loads((tmp_path / out / "edgekit.json").read_text())["quantization"] != (
            "none" if quant else None)
        assert sorted(n for n, m in model.named_modules() if type(m) is Linear) == linears
        assert model.training and all(m.training for m in model.modules())
        assert all(p.requires_grad for p in model.parameters())
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
