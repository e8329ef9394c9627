"""The scalar fallbacks of the C++ ExecuTorch kernels (kernels/*.cpp): what a CPU without
AVX2/FMA runs (a non-AVX2 x86, an ARM board). The library `make setup` builds on this machine
takes the `__AVX2__ && __FMA__` paths, so the fallbacks are otherwise never compiled nor run.

`EDGEKIT_SIMD=off bash kernels/build.sh` builds the same library without them into
build/kernels-scalar/ (git-ignored; rebuilt only when a source is newer). A child process
loads it through `$EDGEKIT_KERNELS` (two different kernel libraries in one process abort it,
and this pytest process may already hold build/kernels/'s), exports a one-op graph for every
op in `edgekit.ops.REGISTRY` and every `<op>_inplace` form, runs it in ExecuTorch and
compares each output with the op's reference: max|a - b| / std(ref) <= 1e-5, and bit-exact
for the outputs that are data movement or one add (EXACT). The shapes have tails on every SIMD
axis (sizes that are not multiples of 4 or 8) next to the real ones.

Run as a script (`python tests/test_kernels_scalar.py OUT.json WORKDIR`) it is that child.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCALAR_LIB = REPO / "build" / "kernels-scalar" / "libedgekit_et_kernels.so"
TOL = 1e-5
# Outputs that are pure data movement or one IEEE add in both the kernel and the reference:
# bit-exact. (op, output index): add_rms_norm's h = x + r, the convolution windows shifted on.
EXACT = {("add_rms_norm", 0), ("causal_conv1d", 1), ("causal_conv1d_silu", 1), ("rglru_step", 1)}


# ---------------------------------------------------------------- the cases (child side) --
def _cases():
    """(op, label, args, in_place) for every registered op, made by its spec's
    `sample_inputs` at shapes with a tail past every multiple of 8 (and of 4) next to the real
    model sizes: T = 1 (decode) and T > 1, and each stateful op's in-place form."""
    from edgekit.ops import REGISTRY

    out = []

    def add(op, T, in_place=False, scale_a=None, **shape):
        args = list(REGISTRY[op].sample_inputs(T, seed=1234 + len(out), **shape))
        if scale_a is not None:                  # large |pre-activations|: the saturated branches
            args[0] = args[0] * scale_a
        label = "_".join([f"T{T}", *(f"{k}{v}" for k, v in shape.items())] + (["inplace"] if in_place else []))
        out.append((op, label, args, in_place))

    # dense: (N, K) with N % 4 and K % 8 tails; (258, 203) is split over the kernel pool
    for N, K in ((23, 37), (8, 16), (258, 203)):
        for T in (1, 5):
            add("dense", T, N=N, K=K)
    # qlinear: 2, 4, 8 bits; G 16 to 128, K with an odd number of blocks (2-bit zero points end mid-byte)
    for bits, K, G in ((2, 208, 16), (4, 96, 32), (8, 384, 128), (2, 512, 128)):
        for T in (1, 3):
            add("qlinear", T, bits=bits, K=K, G=G, N=37)
    # mamba_step: N = 16 (Mamba's), 19 (8 + 8 + 3), 5; odd D
    for T, D, N in ((1, 13, 16), (7, 13, 19), (5, 3, 5)):
        add("mamba_step", T, D=D, N=N)
    # ssd_step: (H, G, P, N), P and N with tails
    for T, H, G, P, N in ((1, 4, 2, 9, 19), (7, 4, 2, 9, 19), (5, 3, 1, 8, 16)):
        add("ssd_step", T, H=H, G=G, P=P, N=N)
    # rwkv7_wkv: N = 64 (its specialized kernel) and N = 37 (generic, N % 4 = 1), N = 6
    for T, H, N in ((1, 2, 64), (6, 2, 64), (1, 3, 37), (6, 3, 37), (4, 1, 6)):
        add("rwkv7_wkv", T, H=H, N=N)
    # causal_conv1d(_silu): K = 4 (Mamba's), 3, 2 (specialized), 5 (generic); C = 37
    for op in ("causal_conv1d", "causal_conv1d_silu"):
        for T, C, K in ((1, 37, 4), (7, 37, 4), (7, 37, 3), (5, 37, 2), (7, 11, 5)):
            add(op, T, C=C, K=K)
    # rglru_step: D = H * W with W = 9 and 10 (not multiples of 8), conv width K = 4 (Griffin's), 3
    for T, D, H, K in ((1, 36, 4, 4), (7, 36, 4, 4), (5, 30, 3, 3), (6, 32, 4, 4)):
        add("rglru_step", T, D=D, H=H, K=K)
    # cfc_step: the three modes; U = 19 / 37 and Z = 131 / 200 have 8- and 64-column tails, and
    # (I, U, Z) = (7, 37, 200) is large enough for its affine maps to go over the pool. Weights
    # scaled 1/sqrt(width) as an init does: at 0.25 and Z = 131 the float32 reference itself is
    # 3e-5 off float64 (the cell amplifies rounding).
    for T, mode, n_bb, I, U, Z in ((1, "default", 1, 5, 8, 12), (6, "default", 1, 5, 19, 131),
                                   (5, "no_gate", 2, 7, 19, 131), (1, "default", 2, 7, 37, 200),
                                   (6, "pure", 0, 5, 13, 12), (4, "pure", 1, 3, 21, 67)):
        add("cfc_step", T, mode=mode, n_bb=n_bb, I=I, U=U, Z=Z, scale=min(0.25, 1 / max(Z, I + U) ** 0.5))
    # ltc_step: U = 7 and 19, in ncps' init ranges after its folding
    for T, I, U in ((1, 4, 7), (6, 4, 7), (5, 3, 19)):
        add("ltc_step", T, I=I, U=U)
    # the glue ops: widths 37 / 35 / 19 (tails) and 768 (GPT-class)
    for T, D in ((1, 37), (5, 37), (1, 768), (3, 1)):
        add("add_rms_norm", T, D=D)
    for op in ("silu_mul", "gelu_tanh_mul"):
        for T, D in ((1, 35), (5, 35), (2, 768), (3, 7)):
            add(op, T, D=D)
        add(op, 2, D=37, scale_a=30.0)           # the saturated sigmoid / e^-s branches
    for T, G, S in ((1, 2, 37), (5, 2, 37), (4, 1, 19), (1, 3, 64)):
        add("gated_rms_norm", T, G=G, S=S)
    for T, C in ((1, 37), (5, 37), (2, 768), (3, 5)):
        add("softplus_bias", T, C=C)
    add("softplus_bias", 2, C=37, scale_a=8.0)   # |v| ~ 60: e^-|v| underflows, and v below -87
    # every stateful op's in-place form, state in mutable buffers
    for name, info in sorted(REGISTRY.items()):
        if info.state_args:
            add(name, 6, in_place=True)
    return out


class _OpOnly:
    """A module that calls one op (functional), or its in-place form with the state
    arguments in mutable buffers (as an exported step keeps them)."""

    @staticmethod
    def make(name, args, in_place):
        import torch

        from edgekit.ops import REGISTRY, call
        info = REGISTRY[name]

        class Functional(torch.nn.Module):
            def forward(self, *xs):
                return info.torch_op(*xs)

        class InPlace(torch.nn.Module):
            def __init__(self):
                super().__init__()
                for k, i in enumerate(info.state_args):
                    self.register_buffer(f"s{k}", torch.zeros_like(args[i]))

            def forward(self, *xs):
                xs, states = list(xs), [getattr(self, f"s{k}") for k in range(len(info.state_args))]
                full = []
                for i in range(len(xs) + len(states)):
                    full.append(states.pop(0) if i in info.state_args else xs.pop(0))
                return call(name, *full, in_place=True)[0]

        return InPlace() if in_place else Functional()


def _export(mod, inputs, path, in_place):
    import torch
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge

    ep = torch.export.export(mod.eval(), tuple(inputs), strict=False)
    prog = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch(
        ExecutorchBackendConfig(emit_mutable_buffer_names=True) if in_place else None)
    targets = [str(n.target) for n in prog.exported_program().graph.nodes if n.op == "call_function"]
    path.write_bytes(prog.buffer)
    return targets


def _metric(a, ref) -> float:
    """max|a - ref| / std(ref) (std floored at 1e-6); inf when the shapes differ or a is
    non-finite where ref is finite."""
    import numpy as np
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return float("inf")
    if not np.array_equal(np.isfinite(a), np.isfinite(ref)):
        return float("inf")
    fin = np.isfinite(ref)
    if not fin.any():
        return 0.0
    return float(np.abs(a[fin] - ref[fin]).max() / max(float(ref[fin].std()), 1e-6))


def _child(out_json: Path, work: Path) -> None:
    import torch
    from executorch.runtime import Runtime

    import edgekit.ops  # noqa: F401
    from edgekit.kernels import ENV_VAR, load_kernels
    from edgekit.ops import REGISTRY, in_place_name

    want = Path(os.environ[ENV_VAR]).resolve()
    got = load_kernels()
    assert got == want, (got, want)
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    mapped = sorted({ln.split()[-1] for ln in maps.splitlines() if "libedgekit_et_kernels" in ln})
    rt = Runtime.get()
    results = []
    for k, (name, label, args, in_place) in enumerate(_cases()):
        info = REGISTRY[name]
        rec = {"op": name, "case": label, "in_place": in_place}
        t0 = time.perf_counter()
        try:
            ref = info.reference(*args)
            ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
            path = work / f"case_{k}.pte"
            mod = _OpOnly.make(name, args, in_place)
            if in_place:
                xs = [a for i, a in enumerate(args) if i not in info.state_args]
                targets = _export(mod, xs, path, True)
                rec["calls"] = [t for t in targets if in_place_name(name) in t]
                method = rt.load_program(path).load_method("forward")
                live = [method._method.get_attribute(f"s{j}") for j in range(len(info.state_args))]
                for buf, i in zip(live, info.state_args):
                    buf.copy_(args[i])
                y = method.execute(xs)[0]
                outs = [y.clone()] + [buf.clone() for buf in live]
            else:
                targets = _export(mod, args, path, False)
                rec["calls"] = [t for t in targets if f"edgekit.{name}" in t]
                method = rt.load_program(path).load_method("forward")
                outs = [t.clone() for t in method.execute(list(args))]
            rec["metrics"] = [_metric(o, r) for o, r in zip(outs, ref)]
            rec["n_outputs"], rec["n_ref"] = len(outs), len(ref)
        except Exception as e:  # report it and go on with the other ops
            rec["error"] = f"{type(e).__name__}: {e}"[:2000]
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        results.append(rec)
        print(json.dumps(rec), flush=True)
    out_json.write_text(json.dumps({"library": str(got), "mapped": mapped, "results": results,
                                    "torch": torch.__version__}))


# ---------------------------------------------------------------- the tests (pytest side) --
if __name__ != "__main__":
    import pytest

    from edgekit.ops import REGISTRY

    def _build(lib: Path) -> None:
        env = {**os.environ, "EDGEKIT_SIMD": "off"}
        env.pop("EDGEKIT_KERNEL_CXXFLAGS", None)
        r = subprocess.run(["bash", str(REPO / "kernels" / "build.sh"), sys.executable, str(lib)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, f"scalar build failed:\n{r.stdout}\n{r.stderr}"

    @pytest.fixture(scope="module")
    def scalar_lib() -> Path:
        if shutil.which(os.environ.get("CXX", "g++")) is None:
            pytest.skip("no C++ compiler (g++) to build the scalar kernel library")
        _build(SCALAR_LIB)
        return SCALAR_LIB

    @pytest.fixture(scope="module")
    def scalar_run(scalar_lib, tmp_path_factory):
        work = tmp_path_factory.mktemp("kernels-scalar")
        out = work / "results.json"
        env = {**os.environ, "EDGEKIT_KERNELS": str(scalar_lib), "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, str(out), str(work)], capture_output=True,
                           text=True, env=env, cwd=REPO, timeout=900)
        assert r.returncode == 0 and out.is_file(), (
            f"the child exited {r.returncode}\n--- stdout (tail)\n{r.stdout[-4000:]}\n"
            f"--- stderr (tail)\n{r.stderr[-6000:]}")
        data = json.loads(out.read_text())
        data["child_seconds"] = time.perf_counter() - t0
        return data

    def test_scalar_build_has_no_avx_instructions(scalar_lib):
        """The `__AVX2__ && __FMA__` paths are not compiled in: no 256-bit register anywhere
        in the library's code (the default build has hundreds), no FMA instruction."""
        objdump = shutil.which("objdump")
        if objdump is None:
            pytest.skip("objdump not found (binutils): cannot inspect the library's instructions")
        asm = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(scalar_lib)], capture_output=True,
                             text=True, check=True, timeout=300).stdout
        assert "edgekit" in asm                      # the disassembly is of the right library
        assert asm.count("%ymm") == 0 and asm.count("%zmm") == 0
        assert not any(m in asm for m in ("vfmadd", "vfnmadd", "vfmsub", "vbroadcastss"))

    def test_child_loaded_only_the_scalar_library(scalar_run, scalar_lib):
        assert Path(scalar_run["library"]) == scalar_lib.resolve()
        assert scalar_run["mapped"] == [str(scalar_lib.resolve())], scalar_run["mapped"]

    def test_every_registered_op_is_covered(scalar_run):
        seen = {(r["op"], r["in_place"]) for r in scalar_run["results"]}
        for name, info in REGISTRY.items():
            assert (name, False) in seen, f"{name}: no scalar case"
            if info.state_args:
                assert (name, True) in seen, f"{name}: no scalar case of its in-place form"

    @pytest.mark.parametrize("op", sorted(REGISTRY))
    def test_scalar_kernel_matches_reference(op, scalar_run):
        rows = [r for r in scalar_run["results"] if r["op"] == op]
        assert rows, f"{op}: no case ran"
        bad = []
        for r in rows:
            tag = f"{op}[{r['case']}]"
            if "error" in r:
                bad.append(f"{tag}: {r['error']}")
                continue
            if not r["calls"]:
                bad.append(f"{tag}: the exported program does not call the edgekit kernel")
            if r["n_outputs"] != r["n_ref"]:
                bad.append(f"{tag}: {r['n_outputs']} outputs, the reference has {r['n_ref']}")
            worst = max(r["metrics"])
            if not worst <= TOL:
                bad.append(f"{tag}: max|a - ref| / std(ref) = {r['metrics']} > {TOL}")
            for i, m in enumerate(r["metrics"]):
                if (op, i) in EXACT and m != 0.0:
                    bad.append(f"{tag}: output {i} should be bit-exact, max|a - ref| / std(ref) = {m}")
        print(f"SCALAR {op}: {len(rows)} cases, worst max|a-b|/std(ref) = "
              f"{max((max(r.get('metrics') or [float('nan')]) for r in rows), default=float('nan')):.2e}")
        assert not bad, "\n".join(bad)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
