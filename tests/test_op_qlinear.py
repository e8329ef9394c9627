"""edgekit::qlinear's own checks (the generic battery, tests/test_ops.py, covers the rest):
- the integer arithmetic is exact: on inputs where every quantity is exactly representable
  (x on an int8 grid whose block absmax is 127 * 2^-e, power-of-2 scales, b = 0, sums far
  below 2^24), the ExecuTorch kernel EQUALS the reference, at 1 and 2 threads (403 output rows
  of 10 rows of x: enough work for the pool to split), for 2, 4 and 8 bits and G = 16, 32,
  128; and with 8-bit codes at 0 and 255, zero points 0 and 255 and full-scale activations
  (where `_mm256_maddubs_epi16` on the raw codes would saturate);
- the kernel agrees with ONNX Runtime's own `com.microsoft.MatMulNBits` (accuracy_level 4,
  1 thread) on the same packed tensors, within 1e-5 of the output's std;
- each SIMD path is checked: on a CPU with AVX-VNNI the kernel takes it,
  `edgekit_qlinear_set_vnni(2)` switches to the EVEX (AVX512-VNNI) form of the same
  instruction and `edgekit_qlinear_set_vnni(0)` to the AVX2 one (maddubs), so the exact, ORT
  and reference checks run on every path the CPU has;
- layouts the shapes alone do not rule out (a BLOB that is G * bits / 8 for no bits, a
  zero-point row of the wrong length, a G that is not a power of 2) are refused by the C++
  kernel with the Python validator's words;
- NaN or Inf in x make the outputs NaN, as in the reference; sizes with tails on every tiled
  axis, and blocks longer than the kernel's int32 parts, match the reference.

`$EDGEKIT_KERNELS` selects the kernel library (edgekit/kernels.py), so this file also runs
against the scalar build: EDGEKIT_KERNELS=build/kernels-scalar/libedgekit_et_kernels.so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.ops.qlinear import reference, sample_inputs
from op_battery import battery_fixtures, close, cpp_kernel_refuses_like_python, dynamic_dim
from op_cases import qlinear_8bit_extremes, qlinear_exact_case

runners, et_runner, _ = battery_fixtures("qlinear")


def _vnni_switch():
    """The kernel library's edgekit_qlinear_set_vnni (the loaded library: dlopen of the same
    file returns the same handle)."""
    import ctypes

    from edgekit.kernels import kernel_library_path, load_kernels
    load_kernels()
    fn = ctypes.CDLL(str(kernel_library_path())).edgekit_qlinear_set_vnni
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


ISA_PATHS = {"vnni": 1, "avx512vnni": 2, "avx2": 0}     # edgekit_qlinear_set_vnni's codes


@pytest.fixture(params=list(ISA_PATHS))
def isa(request):
    """The SIMD path the kernel takes: "vnni" the VEX vpdpbusd where the CPU has AVX-VNNI,
    "avx512vnni" the EVEX one where it has AVX512_VNNI + VL (each skipped elsewhere), "avx2"
    the maddubs one; in a build without AVX2, "avx2" runs its scalar or NEON path."""
    switch = _vnni_switch()
    want = ISA_PATHS[request.param]
    got = switch(want)
    if got != want:
        pytest.skip(f"no {request.param} on this CPU (or not an AVX2 build)")
    yield request.param
    switch(1)


def _at_threads(run, args, threads):
    from edgekit.kernels import kernel_threads, set_kernel_threads
    before = kernel_threads()
    try:
        set_kernel_threads(threads)
        return np.asarray(run(*args)[0])
    finally:
        set_kernel_threads(before)


# K 256 at every bits x G; then rows whose block count is not a multiple of 8, where the
# kernel's last constants are masked: the real layer widths (Mamba-130m's in_proj, 768 at G 128:
# 6 blocks; its dt_proj, 48 at G 16: 3 blocks and a half step of codes; Hawk's down_proj, 2304:
# 18 blocks). N = 403: a tail of rows, and the zero points of the tensor's last row read to its end.
EXACT = [(bits, 256, G) for bits in (2, 4, 8) for G in (16, 32, 128)] + [
    (2, 768, 128), (8, 48, 16), (4, 352, 32), (2, 2304, 128), (8, 80, 16)]


@pytest.mark.parametrize("bits, K, G", EXACT)
def test_integer_arithmetic_is_exact(bits, K, G, runners, isa):
    args, exact = qlinear_exact_case(bits, G, K=K, seed=bits * 1000 + G + K, q_max=15 if K > 1024 else 31)
    ref = reference(*args).numpy()
    assert np.array_equal(ref, exact.astype(np.float32)), "the reference itself is not exact here"
    for threads in (1, 2):
        got = _at_threads(runners.et, args, threads)
        assert np.array_equal(got, ref), (f"bits {bits}, K {K}, G {G}, {threads} thread(s): "
                                          f"max |diff| {np.abs(got - ref).max()}")


@pytest.mark.parametrize("G", (16, 32, 128))
def test_8bit_extremes_do_not_saturate(G, runners, isa):
    """Codes 0 and 255, zero points 0 and 255, activations at +-127 (the first rows all of
    them): products at the uint8 x int8 extremes, where a maddubs on the raw codes would
    saturate at 32767 per pair. N = 256 output rows: enough for the pool to split them."""
    args = qlinear_8bit_extremes(G)
    ref = reference(*args).numpy()
    for threads in (1, 2):
        got = _at_threads(runners.et, args, threads)
        assert np.array_equal(got, ref), f"G {G}, {threads} thread(s): max |diff| {np.abs(got - ref).max()}"


def _ort_matmul_nbits(x, w, scales, zero_points, bits, G):
    """ONNX Runtime's com.microsoft.MatMulNBits, accuracy_level 4, weights as initializers."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    N, KB, _ = w.shape
    K = KB * G
    inits = [numpy_helper.from_array(np.asarray(w, np.uint8), "B"),
             numpy_helper.from_array(np.asarray(scales, np.float32).reshape(-1), "scales"),
             numpy_helper.from_array(np.asarray(zero_points, np.uint8).reshape(-1), "zero_points")]
    node = helper.make_node("MatMulNBits", ["A", "B", "scales", "zero_points"], ["Y"], domain="com.microsoft",
                            K=K, N=N, bits=bits, block_size=G, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xa = np.asarray(x, np.float32)
    return sess.run(None, {"A": xa.reshape(-1, K)})[0].reshape(*xa.shape[:-1], N)


@pytest.mark.parametrize("G", (32, 128))
@pytest.mark.parametrize("bits", (2, 4, 8))
def test_matches_onnxruntime_matmul_nbits(bits, G, runners, isa):
    K, N = 256, 64
    args = sample_inputs(3, seed=7, B=2, K=K, N=N, G=G, bits=bits)
    ort_y = _ort_matmul_nbits(*args[:4], bits, G) + args[4].numpy()
    got = np.asarray(runners.et(*args)[0])
    assert close(got, ort_y), f"bits {bits}, G {G}: max |diff| / std {np.abs(got - ort_y).max() / ort_y.std():.2e}"
    assert close(got, reference(*args).numpy())


def test_bad_blob_refused_like_python(tmp_path):
    """BLOB = 12 at G = 32 (K = 96, KB = 3) is G * bits / 8 for no bits in {2, 4, 8}: the shapes
    agree with each other, so only the op's own check sees it."""
    args = list(sample_inputs(2, bits=4))                    # BLOB 16
    bad = list(args)
    bad[1] = torch.zeros(args[1].shape[0], args[1].shape[1], 12, dtype=torch.uint8)
    msg = cpp_kernel_refuses_like_python("qlinear", args, bad, dynamic_dim(args, {1: 2}), tmp_path)
    assert msg == "qlinear: w's last dim must be G * bits / 8 for bits 2, 4 or 8 (G = 32); got 12"


def test_bad_zero_points_refused_like_python(tmp_path):
    """8-bit codes in 3 blocks with a 2-byte zero-point row (3 bytes needed)."""
    args = list(sample_inputs(2, bits=8))                    # KB 3, ZB 3
    bad = list(args)
    bad[3] = torch.zeros(args[3].shape[0], 2, dtype=torch.uint8)
    msg = cpp_kernel_refuses_like_python("qlinear", args, bad, dynamic_dim(args, {3: 1}), tmp_path)
    assert msg == "qlinear: zero_points must be (N, 3) at 8 bits; got (N, 2)"


def test_bad_block_count_refused_like_python(tmp_path):
    """K = 96 in KB = 4 blocks: G = 24 is not a power of 2 (w and scales agree on KB = 4)."""
    args = list(sample_inputs(2, bits=8))                    # K 96, KB 3, BLOB 32
    bad = list(args)
    N = args[1].shape[0]
    bad[1] = torch.zeros(N, 4, 32, dtype=torch.uint8)
    bad[2] = torch.ones(N, 4)
    bad[3] = torch.zeros(N, 4, dtype=torch.uint8)
    # w and scales share one Dim for KB (the spec ties them), zero_points has its own
    KB, ZB = torch.export.Dim("KB", min=1, max=64), torch.export.Dim("ZB", min=1, max=64)
    dyn = (None, {1: KB}, {1: KB}, {1: ZB}, None)
    msg = cpp_kernel_refuses_like_python("qlinear", args, bad, dyn, tmp_path)
    assert msg == "qlinear: K = 96 must be KB = 4 blocks of a power of 2 G >= 16"


def test_nan_and_inf_in_x_give_nan(runners, isa):
    """A block of x holding NaN or Inf makes every output NaN, as in the reference (Inf * 0
    and 0 * Inf there); the integer path alone would drop it."""
    args = list(sample_inputs(1, seed=1, bits=4, K=96, N=8))
    x = args[0].clone()
    x[0, 0, 40] = float("nan")
    x[1, 0, 70] = float("inf")
    args[0] = x
    got = np.asarray(runners.et(*args)[0])
    ref = reference(*args).numpy()
    assert np.isnan(ref[:, 0]).all() and np.isnan(got[:, 0]).all()


def test_larger_shapes_match_reference(runners, isa):
    """Sizes with tails on every axis the kernel tiles: N % 4 = 3, a last partial 32-byte step
    of codes (K = 208 at G = 16, 2 bits: 52 bytes), several blocks per step, several steps per
    block, and blocks of 32768 inputs (summed in int32 parts of 16384)."""
    for bits, K, G in ((2, 208, 16), (4, 208, 16), (8, 208, 16), (2, 1024, 64), (4, 512, 512), (8, 384, 128),
                       (2, 32768, 32768), (8, 32768, 32768)):
        args = sample_inputs(2, seed=bits + K, B=3, K=K, N=67, G=G, bits=bits)
        ref = reference(*args).numpy()
        for threads in (1, 2):
            got = _at_threads(runners.et, args, threads)
            assert close(got, ref), f"bits {bits}, K {K}, G {G}, {threads} thread(s)"
