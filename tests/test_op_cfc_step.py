"""`edgekit::cfc_step` beyond the registry's battery (tests/test_ops.py, which runs the
default mode with two backbone layers): the other modes and backbone depths in ExecuTorch
and ONNX Runtime, the reference vs ncps' CfCCell, real widths at 1 and 2 threads,
saturated and NaN inputs, and the kernel's vector tanh against float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.ops import REGISTRY
from op_battery import battery_fixtures, close
from edgekit.ops.cfc_step import cell_loop, decode_cfg, make_cfg, reference

B, I, U, Z = 2, 5, 8, 12
TS = [1, 5, 40]
VARIANTS = [("default", 1), ("no_gate", 3), ("pure", 0)]   # (mode, backbone layers)


def inputs(T, mode="default", n_bb=1, seed=0, **shape):
    return list(REGISTRY["cfc_step"].sample_inputs(T, seed=seed, mode=mode, n_bb=n_bb, **{"B": B, "I": I, "U": U, "Z": Z,
                                                                                           **shape}))


runners, et_runner, ort_run = battery_fixtures("cfc_step")
RUNNERS = ("executorch", "onnxruntime")


def _runner(name, et_runner):
    return {"executorch": et_runner, "onnxruntime": ort_run}[name]


@pytest.mark.parametrize("mode,n_bb", VARIANTS)
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, mode, n_bb, et_runner):
    args = inputs(T, mode, n_bb)
    y_ref, h_ref = reference(*args)
    for name in RUNNERS:
        y, h = _runner(name, et_runner)(*args)
        assert close(y, y_ref) and close(h, h_ref), name


def test_reference_matches_ncps_cell():
    """One step of the reference equals ncps' CfCCell on the same weights (all modes)."""
    from ncps.torch import CfCCell
    for mode in ("default", "no_gate", "pure"):
        torch.manual_seed(0)
        cell = CfCCell(I, U, mode, backbone_units=Z, backbone_layers=1).eval()
        x, h, ts = torch.randn(B, I), torch.randn(B, U), 0.7
        with torch.no_grad():
            ref, _ = cell(x, h, ts)
            heads = ("ff1",) if mode == "pure" else ("ff1", "ff2", "time_a", "time_b")
            w = torch.cat([getattr(cell, n).weight for n in heads]).t().contiguous()
            b = torch.cat([getattr(cell, n).bias for n in heads])
            p = torch.cat([cell.A, cell.w_tau.abs()]) if mode == "pure" else torch.zeros(2, U)
            lin = cell.backbone[0]
            y, _ = reference(x[:, None], torch.full((B, 1, 1), ts), h, lin.weight.t().contiguous(), lin.bias,
                             torch.zeros(1, Z, Z), torch.zeros(1, Z), w, b, p, make_cfg(mode, 1, "lecun_tanh"))
        assert close(y[:, 0], ref, 1e-6), mode


# Real widths: the kernel's 64-column register blocks, its 8-column and scalar tails, and
# products large enough to split over the kernel pool (I+U = 96 -> Z = 128, Z -> K = 256);
# (19, 200): 3 blocks of 64, one of 8 and 0 scalar columns (Z), and K = 76 = 64 + 8 + 4.
WIDE = [(32, 64, 128, "default", 2), (7, 19, 200, "no_gate", 1), (32, 64, 128, "pure", 1)]


@pytest.mark.parametrize("I_,U_,Z_,mode,n_bb", WIDE)
def test_real_widths_match_reference_at_one_and_two_threads(I_, U_, Z_, mode, n_bb, et_runner):
    from edgekit.kernels import kernel_threads, set_kernel_threads
    args = inputs(6, mode, n_bb, seed=3, B=1, I=I_, U=U_, Z=Z_, scale=1.0 / np.sqrt(Z_))
    y_ref, h_ref = reference(*args)
    before = kernel_threads()
    try:
        set_kernel_threads(1)
        one = et_runner(*args)
        set_kernel_threads(2)
        two = et_runner(*args)
    finally:
        set_kernel_threads(before)
    assert close(one[0], y_ref) and close(one[1], h_ref)
    # each thread owns whole 64-column blocks and sums over the rows in order: bit-identical
    assert np.array_equal(np.asarray(one[0]), np.asarray(two[0]))


def test_saturated_and_nan_inputs(et_runner):
    """Large pre-activations saturate tanh and the time gate as float64 does (no Inf/NaN
    made up by the vector exp's clamping); a NaN feature gives NaN, not a number."""
    args = inputs(3, "default", 1, seed=5, B=1, I=32, U=64, Z=128, scale=1.0)
    args[0] = args[0] * 1e4                       # |pre-activations| ~ 1e4: tanh = +-1, g in {0, 1}
    y, h = et_runner(*args)
    y_ref, _ = cell_loop(*[a.double() for a in args[:-1]], **decode_cfg(args[-1]))
    assert np.isfinite(np.asarray(y)).all()
    print("saturated max|diff|", float(np.abs(np.asarray(y) - y_ref.numpy()).max()))
    assert close(y, y_ref.float(), tol=1e-5)
    args[0][0, 1, 3] = float("nan")
    y, _ = et_runner(*args)
    y = np.asarray(y)
    assert np.isfinite(y[0, 0]).all() and np.isnan(y[0, 1]).all() and np.isnan(y[0, 2]).all()


_TANH_CHECK = r"""
#include "edgekit_simd.h"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
int main(int argc, char** argv) {
#if defined(EDGEKIT_F8)
  using namespace edgekit::simd;
  const uint32_t stride = argc > 1 ? (uint32_t)std::atoi(argv[1]) : 7;
  double worst = 0;
  for (uint32_t b = 0x358637bd; b < 0x41400000; b += stride) {   // every stride-th float in [1e-6, 12]
    float xs[8], out[8];
    for (int k = 0; k < 8; ++k) { uint32_t bb = b + k; float v; std::memcpy(&v, &bb, 4); xs[k] = (k & 1) ? -v : v; }
    store8(out, tanh8(load8(xs)));
    for (int k = 0; k < 8; ++k) {
      const double ref = std::tanh((double)xs[k]);
      const float fr = (float)std::fabs(ref);
      worst = std::fmax(worst, std::fabs(out[k] - ref) / (std::nextafter(fr, INFINITY) - fr));
    }
  }
  float z[8] = {-0.f, 0.f, NAN, INFINITY, -INFINITY, 100.f, -100.f, 1e-30f}, o[8];
  store8(o, tanh8(load8(z)));
  std::printf("%.4f %d %d %d %g %g %g %g %g %s\n", worst, (int)std::signbit(o[0]), (int)std::signbit(o[1]),
              (int)std::isnan(o[2]), o[3], o[4], o[5], o[6], o[7], EDGEKIT_F8_ISA);
#else
  std::printf("no-simd\n");
#endif
}
"""


@pytest.mark.parametrize("arch", ("host", "aarch64"))
def test_tanh8_accuracy(arch, tmp_path):
    """The vector tanh of the CfC kernel (kernels/edgekit_simd.h) against float64 tanh, built as
    the library is: AVX2 + FMA on this host, NEON for aarch64 (run under qemu-aarch64)."""
    import os
    import shutil
    import subprocess

    from edgekit_testutil import REPO
    (tmp_path / "t.cpp").write_text(_TANH_CHECK)
    if arch == "host":
        cxx, run = "g++", []
        flags = ["-mavx2", "-mfma"] if "avx2" in open("/proc/cpuinfo").read() else []
    else:
        cxx, run, flags = "aarch64-linux-gnu-g++", ["qemu-aarch64"], ["-march=armv8.2-a+dotprod", "-static"]
        if shutil.which(cxx) is None or shutil.which("qemu-aarch64") is None:
            msg = "no aarch64-linux-gnu-g++ or qemu-aarch64 (make test-arm64 installs them)"
            if os.environ.get("EDGEKIT_REQUIRE_ARM64") == "1":
                pytest.fail(msg)
            pytest.skip(msg)
    subprocess.run([cxx, "-std=c++17", "-O2", *flags, f"-I{REPO / 'kernels'}", str(tmp_path / "t.cpp"),
                    "-o", str(tmp_path / "t")], check=True, capture_output=True)
    # every 7th float in [1e-6, 12] natively; every 97th under the emulator (~40x slower)
    stride = "7" if arch == "host" else "97"
    out = subprocess.run([*run, str(tmp_path / "t"), stride], capture_output=True, text=True, check=True,
                         env=os.environ).stdout.split()
    if out == ["no-simd"]:
        assert arch == "host", "the aarch64 build compiled no NEON path (EDGEKIT_F8 undefined)"
        pytest.skip("no AVX2 on this CPU: the kernel uses std::tanh")
    print(f"tanh8 ({out[-1]}) max ulp", out[0])
    assert out[-1] == ("neon" if arch == "aarch64" else "avx2")
    assert float(out[0]) <= 3.0
    assert out[1:4] == ["1", "0", "1"]                      # tanh(-0) = -0, tanh(0) = +0, NaN stays NaN
    assert [float(v) for v in out[4:9]] == [1.0, -1.0, 1.0, -1.0, 1e-30]
