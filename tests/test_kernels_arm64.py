"""The C++ kernels built for aarch64 (phones, Jetson, Raspberry Pi) and run under qemu-aarch64.

kernels/replay/build.sh builds every kernel, with its argument checks generated from the op
specs, into one driver without ExecuTorch (kernels/replay/et_shim.h stands in for the few
ExecuTorch types): for this host, and cross-compiled with aarch64-linux-gnu-g++ at
-march=armv8.2-a+dotprod (NEON and the dot-product instructions, as every target profile has),
linked static. This test records the op battery's kernel cases (tests/op_cases.py: every
registered op and every in-place form, with tails past each SIMD width, plus qlinear's exact
cases), replays them through both drivers at 1 and 2 threads, and compares:
- float kernels: every output within the x86 battery's tolerance of the op's torch reference
  (max|a - ref| / std(ref) <= 1e-5; bit-exact for the data-movement outputs, EXACT);
- integer kernels (qlinear, on inputs where every intermediate is exact): bit-exact against
  the exact answer, and the arm64 build bit-for-bit equal to the x86 one;
- the instruction mix of the arm64 build: NEON arithmetic in every kernel's code.

`make test-arm64` installs the cross compiler and qemu-user when they are missing and runs this
file; `make test` runs it with EDGEKIT_REQUIRE_ARM64=1, so a missing tool fails, not skips.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.ops import REGISTRY, in_place_name
from op_cases import EXACT, TOL, cases, metric, qlinear_8bit_extremes, qlinear_exact_case

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "replay"
CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
MAGIC = b"EKREPLY1"
# c10 ScalarType codes (kernels/replay/et_shim.h)
CODES = {np.dtype(np.uint8): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3, np.dtype(np.int64): 4,
         np.dtype(np.float32): 6, np.dtype(np.float64): 7}
DTYPES = {v: k for k, v in CODES.items()}
THREADS = (1, 2)


# ------------------------------------------------------------------------ the file format --
def write_calls(path: Path, calls) -> None:
    """calls: (kernel name, threads, [arrays]) each; the format of kernels/replay/replay.cpp."""
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(calls)))
        for name, threads, values in calls:
            f.write(struct.pack("<I", len(name)) + name.encode() + struct.pack("<II", threads, len(values)))
            for v in values:
                v = np.ascontiguousarray(v)
                f.write(struct.pack("<bB", CODES[v.dtype], v.ndim) + struct.pack(f"<{v.ndim}q", *v.shape))
                f.write(v.tobytes())


def read_results(path: Path):
    """[(ok, [arrays])] in the calls' order."""
    data = path.read_bytes()
    assert data[:8] == MAGIC, f"{path} is not a replay result"
    (n,), pos, out = struct.unpack_from("<I", data, 8), 12, []
    for _ in range(n):
        ok, count = struct.unpack_from("<BI", data, pos)
        pos += 5
        values = []
        for _ in range(count):
            code, rank = struct.unpack_from("<bB", data, pos)
            shape = struct.unpack_from(f"<{rank}q", data, pos + 2)
            pos += 2 + 8 * rank
            dt = DTYPES[code]
            size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            values.append(np.frombuffer(data, dt, size // dt.itemsize, pos).reshape(shape).copy())
            pos += size
        out.append((bool(ok), values))
    return out


# ------------------------------------------------------------------------------ the cases --
def _call(name: str, args, in_place: bool):
    """(kernel name, stack values, where the outputs are): the `.out` form takes the outputs
    pre-sized (NaN-filled, so an output a kernel never writes shows); the in-place form takes
    y, and its outputs are y then the updated states."""
    info = REGISTRY[name]
    arrays = [np.ascontiguousarray(np.asarray(a)) for a in args]
    shapes = info.output_shapes(args)
    if in_place:
        values = arrays + [np.full(shapes[0], np.nan, np.float32)]
        return f"edgekit::{in_place_name(name)}.out", values, [len(arrays), *info.state_args]
    values = arrays + [np.full(s, np.nan, np.float32) for s in shapes]
    return f"edgekit::{name}.out", values, list(range(len(arrays), len(values)))


def recorded():
    """Every replayed call: (op, label, kernel, threads, values, output positions, reference
    outputs, exact). exact: the integer cases, whose reference is the exact answer."""
    rows = []
    for name, label, args, in_place in cases():
        ref = REGISTRY[name].reference(*args)
        ref = [np.asarray(r) for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        kernel, values, where = _call(name, args, in_place)
        for t in THREADS:
            rows.append((name, label, kernel, t, values, where, ref, False))
    exact = [(f"exact_bits{b}_G{G}", qlinear_exact_case(b, G, seed=b * 1000 + G)[0])
             for b in (2, 4, 8) for G in (16, 32, 128)]
    exact += [(f"extremes_8bit_G{G}", qlinear_8bit_extremes(G)) for G in (16, 32, 128)]
    for label, args in exact:
        ref = [np.asarray(REGISTRY["qlinear"].reference(*args))]
        kernel, values, where = _call("qlinear", args, False)
        for t in THREADS:
            rows.append(("qlinear", label, kernel, t, values, where, ref, True))
    return rows


# ------------------------------------------------------------------------------ the tools --
def _require(what: str):
    """A missing tool: a skip with its one-line reason, or a failure under make test."""
    msg = f"{what} (make test-arm64 installs it: apt-get install g++-aarch64-linux-gnu qemu-user)"
    if os.environ.get("EDGEKIT_REQUIRE_ARM64") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _build(target: str) -> Path:
    out = OUT / f"replay-{target}"
    r = subprocess.run(["bash", str(REPO / "kernels" / "replay" / "build.sh"), sys.executable, str(out), target],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"the {target} replay build failed:\n{r.stdout}\n{r.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def drivers():
    if shutil.which(CROSS_CXX) is None:
        _require(f"no {CROSS_CXX}")
    if shutil.which(QEMU) is None:
        _require(f"no {QEMU}")
    return {"x86_64": _build("host"), "aarch64": _build("aarch64")}


@pytest.fixture(scope="module")
def replayed(drivers, tmp_path_factory):
    """{"calls": recorded(), "x86_64": results, "aarch64": results}."""
    work = tmp_path_factory.mktemp("replay")
    calls = recorded()
    write_calls(work / "in.bin", [(c[2], c[3], c[4]) for c in calls])
    got = {"calls": calls}
    for arch, exe in drivers.items():
        cmd = [QEMU, str(exe)] if arch == "aarch64" else [str(exe)]
        r = subprocess.run([*cmd, str(work / "in.bin"), str(work / f"out-{arch}.bin")], capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"{arch} replay exited {r.returncode}: {r.stderr[-4000:]}"
        res = read_results(work / f"out-{arch}.bin")
        assert len(res) == len(calls)
        got[arch] = res
    return got


def _outputs(result, where):
    ok, values = result
    return ok, [values[i] for i in where]


# ------------------------------------------------------------------------------ the tests --
def test_each_build_compiled_its_simd_paths(drivers):
    """The aarch64 driver runs NEON (the float kernels' f8 and qlinear's sdot), not the scalar
    fallbacks, which the comparisons alone would not tell apart (they are within tolerance
    too); the host driver runs AVX2 where the CPU has it."""
    got = subprocess.run([QEMU, str(drivers["aarch64"]), "--isa"], capture_output=True, text=True, timeout=120)
    assert got.stdout.split() == ["f8=neon", "qlinear=neon"], got
    if "avx2" in Path("/proc/cpuinfo").read_text():
        host = subprocess.run([str(drivers["x86_64"]), "--isa"], capture_output=True, text=True, timeout=120)
        assert host.stdout.split() == ["f8=avx2", "qlinear=avx2"], host


def test_every_registered_op_and_in_place_form_is_replayed(replayed):
    seen = {c[2] for c in replayed["calls"]}
    for name, info in REGISTRY.items():
        assert f"edgekit::{name}.out" in seen, f"{name}: no replayed case"
        if info.state_args:
            assert f"edgekit::{in_place_name(name)}.out" in seen, f"{name}: no replayed in-place case"


@pytest.mark.parametrize("arch", ("aarch64", "x86_64"))
@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_kernel_matches_reference(op, arch, replayed):
    """Every case of op, at 1 and 2 threads, within the battery's tolerance of the reference
    (EXACT outputs bit-exact); the x86_64 driver checks the replay itself against the same
    reference, so an arm64 difference is the arm64 build's."""
    bad, worst, n = [], 0.0, 0
    for (name, label, kernel, threads, _, where, ref, exact), res in zip(replayed["calls"], replayed[arch]):
        if name != op or exact:
            continue
        n += 1
        tag = f"{op}[{label}, {threads} thread(s)]"
        ok, outs = _outputs(res, where)
        if not ok:
            bad.append(f"{tag}: the kernel refused the call (its message is on the driver's stderr)")
            continue
        ms = [metric(o, r) for o, r in zip(outs, ref)]
        worst = max(worst, *ms)
        if len(outs) != len(ref) or not max(ms) <= TOL:
            bad.append(f"{tag}: max|a - ref| / std(ref) = {ms} > {TOL}")
        bad += [f"{tag}: output {i} should be bit-exact, got {m}" for i, m in enumerate(ms) if (op, i) in EXACT and m != 0.0]
    print(f"REPLAY {arch} {op}: {n} calls, worst max|a-b|/std(ref) = {worst:.2e}")
    assert n, f"{op}: no case"
    assert not bad, "\n".join(bad)


def test_integer_qlinear_is_bit_exact_and_equal_across_isas(replayed):
    """qlinear's integer arithmetic (2, 4, 8 bits; G 16, 32, 128; the 8-bit extremes), on
    inputs where every intermediate is exact in float32: both builds give the exact answer bit
    for bit at 1 and 2 threads, so the arm64 (sdot) and x86 (AVX2 / AVX-VNNI) paths agree."""
    n = 0
    for (name, label, _, threads, _, where, ref, exact), a, x in zip(replayed["calls"], replayed["aarch64"], replayed["x86_64"]):
        if not exact:
            continue
        n += 1
        (ok_a, (ya,)), (ok_x, (yx,)) = _outputs(a, where), _outputs(x, where)
        assert ok_a and ok_x, f"qlinear[{label}]: refused"
        assert np.array_equal(ya, ref[0]), f"arm64 qlinear[{label}, {threads}]: max|diff| {np.abs(ya - ref[0]).max()}"
        assert np.array_equal(ya.view(np.uint32), yx.view(np.uint32)), f"qlinear[{label}]: arm64 != x86"
    print(f"REPLAY qlinear exact: {n} calls bit-exact on aarch64 and x86_64")
    assert n == 2 * 12


def test_a_bad_call_is_refused_on_arm64_in_the_validators_words(drivers, tmp_path):
    """The generated argument checks run in the arm64 build too: A one column short is refused
    with the Python validator's message, and the driver goes on."""
    info = REGISTRY["mamba_step"]
    args = list(info.sample_inputs(2))
    bad = list(args)
    bad[2] = args[2][:, :-1].contiguous()
    with pytest.raises(ValueError) as py_err:
        info.torch_op(*bad)
    kernel, values, _ = _call("mamba_step", args, False)
    values[2] = bad[2].numpy()
    write_calls(tmp_path / "in.bin", [(kernel, 1, values)])
    r = subprocess.run([QEMU, str(drivers["aarch64"]), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_results(tmp_path / "out.bin")[0][0] is False
    assert str(py_err.value) in r.stderr, (str(py_err.value), r.stderr)


NEON_ARITH = re.compile(r"^\s*[0-9a-f]+:\s+(fmla|fmls|fmul|fadd|fsub|fdiv|fmax\w*|fmin\w*|fneg|fabs|frint\w*|fcvt\w*|"
                        r"[su]cvtf|sdot|udot|mul|mla|add|sub|and|bic|eor|[su]shr|shl|bsl|bit|bif|fcm\w+|cm\w+|"
                        r"addv|faddp|addp|[su]mull2?|[su]adalp|tbl)\s+v\d+\.(16b|8b|8h|4h|4s|2s|2d)", re.M)
SCALAR_FP = re.compile(r"^\s*[0-9a-f]+:\s+(fmadd|fmsub|fnmsub|fmul|fadd|fsub|fdiv)\s+s\d+", re.M)
LIBM = re.compile(r"\bbl\s+[0-9a-f]*\s*<(expf?|tanhf?|logf?|log1pf?|expm1f?)>", re.M)


def instruction_mix(obj_dir: Path) -> dict[str, tuple[int, int, int]]:
    """{kernel source: (NEON arithmetic instructions, scalar float arithmetic, calls into libm's
    exp/tanh/log)} of the arm64 build, one object per kernel source (kernels/replay/build.sh)."""
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        _require("no aarch64-linux-gnu-objdump")
    mix = {}
    for obj in sorted(obj_dir.glob("*.o")):
        if obj.stem in ("replay", "threadpool"):
            continue
        asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                             check=True, timeout=300).stdout
        mix[obj.stem] = (len(NEON_ARITH.findall(asm)), len(SCALAR_FP.findall(asm)), len(LIBM.findall(asm)))
    return mix


# The kernels with hand-written SIMD paths on x86 (AVX2 intrinsics): their arm64 build runs
# the same code on NEON (kernels/edgekit_simd.h, qlinear's sdot path); their scalar tails
# still call libm (counted, not judged). The others vectorize their `omp simd` loops, or are
# scalar on every ISA (a per-head exp, a sequential recurrence).
SIMD_KERNELS = ("cfc_step", "dense", "gated", "gated_rms_norm", "mamba_step", "qlinear", "softplus_bias")


def test_the_arm64_build_uses_neon_in_every_kernel(drivers):
    """Every kernel's code in the arm64 build holds NEON arithmetic, and in the kernels with
    SIMD paths it outweighs the scalar float arithmetic of their tails (whose libm calls are
    counted too). Prints the mix (the closing note's table)."""
    mix = instruction_mix(OUT / "obj-aarch64")
    print("\nkernel            NEON arith  scalar float  libm calls")
    for k, (v, s, c) in sorted(mix.items()):
        print(f"{k:<17} {v:>10}  {s:>12}  {c:>10}")
    assert set(SIMD_KERNELS) <= set(mix), sorted(mix)
    assert not [k for k, (v, _, _) in mix.items() if v == 0], f"no NEON arithmetic in {mix}"
    # the float kernels' vector loops hold more arithmetic than the scalar tails beside them;
    # qlinear's integer dot products are sdot (its float work is a scale per block of weights)
    scalar = {k: mix[k] for k in SIMD_KERNELS if k != "qlinear" and mix[k][0] < mix[k][1]}
    assert not scalar, f"kernels whose arm64 code is mostly scalar: {scalar}"
    asm = subprocess.run([shutil.which("aarch64-linux-gnu-objdump"), "-d", str(OUT / "obj-aarch64" / "qlinear.o")],
                         capture_output=True, text=True, check=True).stdout
    sdot = len(re.findall(r"\bsdot\s+v\d+\.4s", asm))
    print(f"qlinear: {sdot} sdot instructions")
    assert sdot >= 8, "qlinear's arm64 build does not use the NEON dot product"
