"""edgekit's int4 and int8 weight quantizers against NNCF's (`nncf.compress_weights`, code we did
not write; pinned in the `quant` extra).

NNCF compresses an ONNX MatMul's weight: INT4_SYM in blocks of 32 becomes
`com.microsoft.MatMulNBits` (opset < 21), whose packed codes and scales are the layout
edgekit stores; INT8_ASYM is per output channel (a DequantizeLinear), which is edgekit's int8
when one block spans the whole input width. The test asserts bit-identical codes, scales and
zero points, on random weights and on a trained layer of a bundled model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nncf  # noqa: E402  (the oracle: installed by make test, `.[quant]`; missing is a failure, not a skip)


def _nncf_compress(W: np.ndarray, mode, group: int | None) -> dict[str, np.ndarray]:
    """NNCF's initializers for x @ W (W: (K, N) float32) in a one-MatMul ONNX model."""
    from onnx import TensorProto, helper, numpy_helper
    K, N = W.shape
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
                          [numpy_helper.from_array(W, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    kw = {"mode": mode}
    if group:
        kw.update(group_size=group, all_layers=True, ratio=1.0)
    c = nncf.compress_weights(m, **kw)
    ops = [n.op_type for n in c.graph.node]
    inits = {t.name: numpy_helper.to_array(t) for t in c.graph.initializer}
    out = {"ops": ops, "codes": inits["W_quantized"], "scales": inits["W_scale"]}
    if "W_zero_point" in inits:
        out["zero_points"] = inits["W_zero_point"]
    return out


def _weights():
    from safetensors.torch import load_file

    from edgekit_testutil import REPO
    rng = np.random.default_rng(0)
    sd = load_file(str(REPO / "edgekit" / "bundled" / "mamba-stdlib" / "model.safetensors"))
    trained = sd["backbone.layers.0.mixer.out_proj.weight"].float().numpy().T.copy()      # (in, out)
    return {"random 256x64": (rng.standard_normal((256, 64)) * 0.05).astype(np.float32),
            "random 128x96": rng.standard_normal((128, 96)).astype(np.float32),
            "trained mamba-stdlib out_proj": np.ascontiguousarray(trained, dtype=np.float32)}


@pytest.mark.parametrize("name", list(_weights()))
def test_int4_sym_g32_is_nncfs_bit_for_bit(name):
    from edgekit.quant.schemes import quantize
    W = _weights()[name]
    ref = _nncf_compress(W, nncf.CompressWeightsMode.INT4_SYM, 32)
    assert ref["ops"] == ["MatMulNBits"]
    ours = quantize(torch.from_numpy(W.T.copy()), "int4", 32)
    assert np.array_equal(ref["codes"].reshape(ours.codes.shape), ours.codes.numpy())
    assert np.array_equal(ref["scales"].reshape(ours.scales.shape), ours.scales.numpy())


@pytest.mark.parametrize("name", list(_weights()))
def test_int8_asym_per_channel_is_nncfs_bit_for_bit(name):
    """edgekit's int8 with one block across the input width is NNCF's per-channel INT8_ASYM
    (codes rounded after adding the zero point, as NNCF does)."""
    from edgekit.quant.schemes import quantize
    W = _weights()[name]
    K, N = W.shape
    ref = _nncf_compress(W, nncf.CompressWeightsMode.INT8_ASYM, None)
    ours = quantize(torch.from_numpy(W.T.copy()), "int8", K)
    assert np.array_equal(ref["codes"].T.reshape(N, 1, K), ours.codes.numpy())
    assert np.array_equal(ref["scales"].reshape(N, 1), ours.scales.numpy())
    assert np.array_equal(ref["zero_points"].reshape(N, 1), ours.zero_points.numpy())


@pytest.mark.parametrize("arch,src", [("rwkv7", "tiny.pth"), ("mamba", "mamba"), ("mamba2", "mamba2"),
                                      ("recurrent_gemma", "griffin")])
def test_an_int4_model_quantized_through_nncf_is_edgekits_bit_for_bit(arch, src, tmp_path):
    """`--quant int4` (and a ternary model's int4 head) takes its codes from nncf.compress_weights
    (edgekit/quant/nncf_int4.py): every layer of a whole model, several group sizes (a layer
    too narrow for G 32 gets 16), is the same bytes as edgekit's own rule, and the manifest's
    record says which made them."""
    from edgekit.models import ARCHITECTURES, load_model
    from edgekit.quant import QuantLinear, quantize_model
    path = ARCHITECTURES[arch].write_random(tmp_path / src, seed=5)
    for scheme in ("int4", "ternary"):
        a, b = (load_model(path).eval().requires_grad_(False) for _ in range(2))
        ra = quantize_model(a, scheme, quantizer="nncf")
        rb = quantize_model(b, scheme, quantizer="edgekit")
        qa = {n: m for n, m in a.named_modules() if isinstance(m, QuantLinear)}
        qb = {n: m for n, m in b.named_modules() if isinstance(m, QuantLinear)}
        assert qa.keys() == qb.keys() and any(m.bits == 4 for m in qa.values())
        for name in qa:
            for buf in ("codes", "scales", "zero_points", "bias"):
                x, y = getattr(qa[name], buf), getattr(qb[name], buf)
                assert x.dtype == y.dtype and torch.equal(x, y), f"{scheme} {name}.{buf}"
        assert ra.made_by["int4"].startswith(f"nncf {nncf.__version__}: compress_weights INT4_SYM")
        assert rb.made_by["int4"].startswith("edgekit: NNCF's INT4_SYM rule")
        assert ra.to_json()["layers"] == rb.to_json()["layers"]
