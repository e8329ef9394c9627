"""edgekit's native ExecuTorch runner (runtime/edgekit_runner.cpp) against the executorch wheel's
Python binding, which runs the same .pte through ExecuTorch's own entry points: the same
outputs and state, step by step, for both state styles; a whole sequence stepped in C++
(`StreamingSession.stream`, what `edgekit run --input` uses) equals single steps, and its
state continues in another backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgekit_testutil import REPO

I, U, STEPS = 6, 10, 40


@pytest.fixture(scope="module")
def cfc_exports(tmp_path_factory):
    from edgekit.export import export
    from edgekit.models.cfc import random_ncps_module, save_ncps_dir
    d = save_ncps_dir(random_ncps_module("CfC", I, U, seed=11), tmp_path_factory.mktemp("cfc-native"))
    out = {}
    for ops, style in (("fused", "buffers"), ("fused", "io"), ("decomposed", "buffers"), ("decomposed", "io")):
        out[ops, style] = tmp_path_factory.mktemp(f"cfc-{ops}-{style}")
        export(d, out[ops, style], formats=("onnx", "pte") if style == "buffers" else ("pte",), ops=ops,
               state_style=style)
    return out


@pytest.fixture(scope="module")
def steps():
    rng = np.random.default_rng(2)
    return [(rng.standard_normal(I).astype(np.float32), np.float32(rng.uniform(0.1, 3.0))) for _ in range(STEPS)]


_BINDING = """
import json, sys
import numpy as np
from edgekit.runtimes.session import StreamingSession
s = StreamingSession(sys.argv[1])
xs = json.loads(sys.stdin.read())
ys = [np.array(s.step((np.array(x, np.float32), np.float32(d)))).tolist() for x, d in xs]
print(json.dumps({"engine": type(s.backend.engine).__name__, "ys": ys,
                  "state": {k: v.tolist() for k, v in s.backend.get_state().items()}}))
"""


def _pte(cfc_exports, ops, style):
    return cfc_exports[ops, style] / "model.pte"


@pytest.mark.parametrize("style", ["buffers", "io"])
def test_native_runner_equals_python_binding(cfc_exports, steps, style):
    """A decomposed .pte runs without the kernel library, on the Python binding (a child
    process that cannot find the library); here, with it, on the native runner. Every
    output and the final state are bit-identical: the same program, the same kernels."""
    from edgekit.runtimes.session import StreamingSession
    pte = _pte(cfc_exports, "decomposed", style)
    s = StreamingSession(pte)
    assert type(s.backend.engine).__name__ == "_NativeProgram"
    ys = np.stack([np.array(s.step(x)) for x in steps])
    env = {**os.environ, "EDGEKIT_KERNELS": "/nonexistent/libedgekit_et_kernels.so"}
    p = subprocess.run([sys.executable, "-c", _BINDING, str(pte)], input=json.dumps(
        [[x.tolist(), float(d)] for x, d in steps]), capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300)
    assert p.returncode == 0, p.stderr
    other = json.loads(p.stdout.strip().splitlines()[-1])
    assert other["engine"] == "_PybindProgram"
    assert np.array_equal(ys, np.asarray(other["ys"], dtype=np.float32))
    for k, v in s.backend.get_state().items():
        assert np.array_equal(v, np.asarray(other["state"][k], dtype=np.float32))


@pytest.mark.parametrize("style", ["buffers", "io"])
def test_fused_native_equals_decomposed(cfc_exports, steps, style):
    from edgekit.runtimes.session import StreamingSession
    a = StreamingSession(_pte(cfc_exports, "fused", style))
    b = StreamingSession(_pte(cfc_exports, "decomposed", style))
    ya = np.stack([np.array(a.step(x)) for x in steps])
    yb = np.stack([np.array(b.step(x)) for x in steps])
    assert float(np.abs(ya - yb).max() / yb.std()) < 1e-5


@pytest.mark.parametrize("art", ["model.pte", "model.onnx"])
def test_stream_equals_single_steps_and_state_continues(cfc_exports, steps, art, tmp_path):
    """`stream` (one C call per chunk on the native runner; steps on ONNX Runtime) gives the
    single steps' outputs and state; a state saved after it continues in ONNX Runtime."""
    from edgekit.runtimes.session import StreamingSession
    d = cfc_exports["fused", "buffers"]
    a, b = StreamingSession(d / art), StreamingSession(d / art)
    ya = np.stack([np.array(a.step(x)) for x in steps])
    chunks = list(b.stream(steps, chunk=16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert np.array_equal(ya, np.concatenate(chunks))
    assert b.position == a.position == STEPS
    assert np.array_equal(a.backend.get_state()["h"], b.backend.get_state()["h"])
    b.save_state(tmp_path / "s.safetensors")
    c = StreamingSession(d / "model.onnx")
    c.load_state(tmp_path / "s.safetensors")
    more = steps[:5]
    ya = np.stack([np.array(a.step(x)) for x in more])
    yc = np.stack([np.array(c.step(x)) for x in more])
    assert float(np.abs(ya - yc).max() / ya.std()) < 1e-5


def test_stream_rejects_a_bad_row(cfc_exports, steps):
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.session import StreamingSession
    s = StreamingSession(cfc_exports["fused", "buffers"] / "model.pte")
    bad = list(steps[:5]) + [(np.zeros(I + 1, np.float32), np.float32(1.0))] + list(steps[5:8])
    with pytest.raises(EdgekitError, match="input 'x' has 7 values"):
        list(s.stream(bad))
    assert s.position == 0


_C_APP = r"""
#include <stdio.h>
#include <stdlib.h>
#include "edgekit_runner.h"
int main(int argc, char** argv) {
  void* r = edgekit_runner_open(argv[1], "forward");
  if (!r) { fprintf(stderr, "%s\n", edgekit_runner_last_error()); return 1; }
  int64_t nx, nd, nh;
  float* x = (float*)edgekit_runner_input(r, 0, &nx);
  float* dt = (float*)edgekit_runner_input(r, 1, &nd);
  float* h = (float*)edgekit_runner_attribute(r, argv[2], &nh);
  if (!x || !dt || !h) { fprintf(stderr, "%s\n", edgekit_runner_last_error()); return 1; }
  int I = (int)(nx / 4), U = (int)(nh / 4);
  float* y = malloc(nh);
  edgekit_runner_bind_output(r, y, nh);
  int T;
  if (scanf("%d", &T) != 1) return 2;
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < I; ++i) if (scanf("%f", &x[i]) != 1) return 2;
    if (scanf("%f", dt) != 1) return 2;
    if (edgekit_runner_step(r) != 0) { fprintf(stderr, "%s\n", edgekit_runner_last_error()); return 1; }
    for (int u = 0; u < U; ++u) printf("%.9g%c", y[u], u + 1 < U ? ' ' : '\n');
  }
  for (int u = 0; u < U; ++u) printf("%.9g%c", h[u], u + 1 < U ? ' ' : '\n');
  edgekit_runner_close(r);
  free(y);
  return 0;
}
"""


def test_c_api_app_without_python(cfc_exports, steps, tmp_path):
    """A C program built against runtime/edgekit_runner.h, linked as the header says, streams
    the fused .pte with no Python and gives the session's outputs and state."""
    import shutil

    from edgekit.kernels import kernel_library_path
    from edgekit.runtimes.session import StreamingSession
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed (the kernel library is built with g++)"
    import executorch
    et_lib = os.path.join(list(executorch.__path__)[0], "lib")
    lib = kernel_library_path()
    (tmp_path / "app.c").write_text(_C_APP)
    exe = tmp_path / "app"
    subprocess.run([cc, "-O2", str(tmp_path / "app.c"), "-o", str(exe), f"-I{REPO / 'runtime'}",
                    f"-L{lib.parent}", "-l:" + lib.name, "-Wl,--no-as-needed", f"-L{et_lib}", "-lexecutorch",
                    "-lexecutorch_kernels_optimized", f"-Wl,-rpath,{et_lib}", f"-Wl,-rpath,{lib.parent}"],
                   check=True, capture_output=True, text=True)
    d = cfc_exports["fused", "buffers"]
    buf = json.loads((d / "edgekit.json").read_text())["artifacts"]["pte"]["state_buffers"]["h"]
    text = f"{len(steps)}\n" + "\n".join(" ".join(f"{v:.9g}" for v in [*x, d_]) for x, d_ in steps)
    p = subprocess.run([str(exe), str(d / "model.pte"), buf], input=text, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    rows = np.array([[float(v) for v in ln.split()] for ln in p.stdout.strip().splitlines()], dtype=np.float32)
    s = StreamingSession(d / "model.pte")
    ys = np.stack([np.array(s.step(x)) for x in steps])
    assert np.array_equal(rows[:-1], ys)                 # %.9g round-trips float32 exactly
    assert np.array_equal(rows[-1], s.backend.get_state()["h"][0])
