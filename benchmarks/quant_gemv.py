#!/usr/bin/env python
"""A 2048 x 2048 decode GEMV (batch 1): edgekit::qlinear (2-, 4-, 8-bit weights) against
edgekit's fp32 `dense` and ONNX Runtime's MatMulNBits (accuracy_level 4, the same packed
bytes). Prints a markdown table: ms per GEMV, and GB/s of weight bytes read.

    python benchmarks/quant_gemv.py [--threads 1] [--chain 64] [--rounds 25]

Two timings per kernel, both through a one-method ExecuTorch program (exported as
tests/op_battery.py's OpRunners.et exports an op) or an ORT session, the weights constants of
the program (buffers; ORT initializers) and x the one input:
- "per call": one op per program run, median over many runs: what a lone call from Python
  costs, the runtime's overhead included (method.execute / session.run);
- "kernel": a program of `--chain` calls in a row (y = op(y, ...), the weights shared),
  median of the runs divided by the chain length: the kernel's own time per GEMV.
ORT prepacks its initializers at load (its fast path). Thread counts: edgekit's pool
(set_kernel_threads) and ORT's intra_op_num_threads. edgekit qlinear runs once per dot-product path the
CPU has: AVX-VNNI (the default where present), AVX512-VNNI (the EVEX form,
edgekit_qlinear_set_vnni(2)) and AVX2 (edgekit_qlinear_set_vnni(0)). Results on the development machine: kernels/qlinear.cpp's header.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

K = N = 2048
CASES = ((2, 128), (4, 32), (8, 128))   # (bits, G): each scheme's default block (edgekit/quant)


def weights(bits: int, G: int, seed: int = 0):
    """Packed (w, scales, zero_points, b) of a random (N, K) layer (2 bits: ternary codes 0..2,
    zero point 1), scaled so a chain of calls keeps |y| near |x| (no overflow to Inf)."""
    from edgekit.quant.schemes import pack_bits
    g = torch.Generator().manual_seed(seed)
    KB = K // G
    hi = 3 if bits == 2 else 1 << bits
    codes = torch.randint(0, hi, (N, KB, G), generator=g)
    zp = torch.full((N, KB), 1 if bits == 2 else 1 << (bits - 1))
    scales = torch.full((N, KB), 1.0 / (K ** 0.5 * (1 if bits == 2 else (1 << (bits - 1)) / 1.7)))
    return (pack_bits(codes, bits).reshape(N, KB, G * bits // 8), scales.float(), pack_bits(zp, bits),
            torch.zeros(N))


class Chain(torch.nn.Module):
    """y = op(op(...op(x, *params)...)), n calls; the params are buffers (constants in the
    program, as a model's weights are), x the one input."""

    def __init__(self, op, n: int, params):
        super().__init__()
        self.op, self.n, self.k = op, n, len(params)
        for i, t in enumerate(params):
            self.register_buffer(f"p{i}", t)

    def forward(self, x):
        params = [getattr(self, f"p{i}") for i in range(self.k)]
        for _ in range(self.n):
            x = self.op(x, *params)
        return x


def et_method(op, n: int, x, params, path: Path):
    """The chain exported as tests/op_battery.py's OpRunners.et exports one op."""
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.runtime import Runtime
    ep = torch.export.export(Chain(op, n, params), (x,), strict=False)
    prog = to_edge_transform_and_lower(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    path.write_bytes(prog.buffer)
    return Runtime.get().load_program(path).load_method("forward")


def ort_session(n: int, w, scales, zp, bits: int, G: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(w.numpy(), "B"), numpy_helper.from_array(scales.numpy().reshape(-1), "scales"),
             numpy_helper.from_array(zp.numpy().reshape(-1), "zero_points")]
    nodes = [helper.make_node("MatMulNBits", [f"y{i}", "B", "scales", "zero_points"], [f"y{i + 1}"],
                              domain="com.microsoft", K=K, N=N, bits=bits, block_size=G, accuracy_level=4)
             for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, K])],
                              [helper.make_tensor_value_info(f"y{n}", TensorProto.FLOAT, [1, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def vnni_switch():
    """The kernel library's edgekit_qlinear_set_vnni (kernels/qlinear.cpp)."""
    import ctypes

    from edgekit.kernels import kernel_library_path
    fn = ctypes.CDLL(str(kernel_library_path())).edgekit_qlinear_set_vnni
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


def median_ms(fn, rounds: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chain", type=int, default=64, help="calls per program for the kernel timing")
    ap.add_argument("--rounds", type=int, default=25, help="timed runs of the chained program")
    ap.add_argument("--calls", type=int, default=300, help="timed single calls")
    args = ap.parse_args()

    import edgekit.ops  # noqa: F401  (registers the ops)
    from edgekit.kernels import load_kernels, set_kernel_threads
    from edgekit.ops import REGISTRY
    from edgekit.ops.dense import pack
    load_kernels()
    set_kernel_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 1, K)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)

        def et_times(name, params):
            op = REGISTRY[name].torch_op
            one = et_method(op, 1, x, params, tmp / f"{name}-1.pte")
            chain = et_method(op, args.chain, x, params, tmp / f"{name}-n.pte")
            per_call = median_ms(lambda: one.execute([x]), args.calls, warmup=20)
            kernel = median_ms(lambda: chain.execute([x]), args.rounds) / args.chain
            return per_call, kernel

        switch = vnni_switch()
        # the paths this CPU has: edgekit_qlinear_set_vnni's codes 1 AVX-VNNI, 2 AVX512-VNNI, 0 AVX2
        names = {1: "AVX-VNNI", 2: "AVX512-VNNI", 0: "AVX2"}
        paths = [c for c in (1, 2, 0) if switch(c) == c]
        wf = torch.randn(N, K) / K ** 0.5
        dense_params = [pack(wf), torch.zeros(N)]
        rows.append(("edgekit dense (fp32)", 32.0, 4 * N * K, *et_times("dense", dense_params)))
        for bits, G in CASES:
            w, s, z, b = weights(bits, G)
            nbytes = w.numel() + 4 * s.numel() + z.numel()
            bpw = 8 * nbytes / (N * K)
            for code in paths:
                switch(code)
                isa = names[code] if len(paths) > 1 else "default"
                rows.append((f"edgekit qlinear {bits}-bit G={G} ({isa})", bpw, nbytes, *et_times("qlinear", [w, s, z, b])))
            switch(1)
            one = ort_session(1, w, s, z, bits, G, args.threads)
            chain = ort_session(args.chain, w, s, z, bits, G, args.threads)
            feed = {"y0": x.reshape(1, K).numpy()}
            per_call = median_ms(lambda: one.run(None, feed), args.calls, warmup=20)
            kernel = median_ms(lambda: chain.run(None, feed), args.rounds) / args.chain
            rows.append((f"ORT MatMulNBits {bits}-bit G={G}", bpw, nbytes, per_call, kernel))

    import onnxruntime
    print(f"{K} x {N} GEMV, batch 1, {args.threads} thread(s); torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; kernel = median of {args.rounds} runs of {args.chain} chained calls")
    print()
    print("| kernel | bits/weight | weight MB | ms per call | ms kernel | GB/s (kernel) |")
    print("|---|---|---|---|---|---|")
    for name, bpw, nbytes, per_call, kernel in rows:
        print(f"| {name} | {bpw:.2f} | {nbytes / 1e6:.2f} | {per_call:.4f} | {kernel:.4f} | {nbytes / kernel / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
