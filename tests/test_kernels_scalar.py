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

from op_cases import EXACT, TOL, cases, metric

REPO = Path(__file__).resolve().parent.parent
SCALAR_LIB = REPO / "build" / "kernels-scalar" / "libedgekit_et_kernels.so"


# ---------------------------------------------------------------- the cases (child side) --
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
    for k, (name, label, args, in_place) in enumerate(cases()):
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
            rec["metrics"] = [metric(o, r) for o, r in zip(outs, ref)]
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
