"""Memory (issue 13): a tied embedding is stored once in every export, and a session that runs
an export imports no torch.

* Tied: Mamba (and Hawk/RecurrentGemma) read a tied embedding as the rows of the head
  (`Linear.rows`, and `DenseLinear.rows` from the packed tiles of a .pte), so the ONNX file
  has ONE (D, V) initializer, gathered on axis 1 and multiplied by the head's MatMul (and
  listed as a graph input, so that ONNX Runtime does not keep a repacked second copy), and
  the .pte holds the packed head alone. Mamba-130m: .pte 671 -> 517 MB, .onnx 671.5 ->
  517 MB for 516.5 MB of fp32 weights (benchmarks/export_memory.py, docs/benchmarks.md).
* No torch: the .pte session loads the executorch wheel's torch-free libraries and runs on
  the native runner; importing the wheel's Python binding (which links libtorch) cost the
  Mamba-130m session ~300 MB of resident memory. Checked in a fresh process, which reports
  the import chain that brought torch in, if any.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit_testutil import REPO

# Vocabulary large enough that the head dominates the file, and not a multiple of the
# 4-row tiles (the packed rows' padding is exercised); D not a multiple of 8 either.
V, D = 4094, 60


@pytest.fixture(scope="module")
def tied_mamba(tmp_path_factory):
    from edgekit.export import export
    from edgekit.models.mamba import write_random_hf
    d = tmp_path_factory.mktemp("tied-mamba")
    src = write_random_hf(d / "ckpt", "mamba", seed=3, vocab_size=V, hidden_size=D, state_size=8,
                          num_hidden_layers=2, expand=2, conv_kernel=4, tie_word_embeddings=True)
    export(src, d / "out", formats=("onnx", "pte"), ops="fused")
    return src, d / "out"


def _weight_bytes(src) -> int:
    from edgekit.models import load_model
    return sum(t.numel() * t.element_size() for t in load_model(src).state_dict().values())


def test_dense_rows_equal_linear_rows():
    """The rows gathered from the packed tiles equal the plain layer's, padding dropped."""
    import torch

    from edgekit.export.passes.pack_dense import DenseLinear
    from edgekit.models.layers import Linear
    lin = Linear(D, 4094)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(D, 4094))
    idx = torch.tensor([[0, 3, 4093], [4092, 17, 1]])
    want = lin.weight.t()[idx]                                                  # (2, 3, D)
    assert torch.equal(lin.rows(idx), want)
    assert torch.equal(DenseLinear(lin).rows(idx), want)


def test_tied_model_has_no_embedding_table(tied_mamba):
    from edgekit.models import load_model
    m = load_model(tied_mamba[0])
    assert m.emb is None
    assert not any(isinstance(x, __import__("torch").nn.Embedding) for x in m.modules())
    assert [k for k, t in m.state_dict().items() if t.numel() == V * D] == ["head.weight"]


def test_onnx_stores_the_tied_matrix_once(tied_mamba):
    import onnx
    src, out = tied_mamba
    proto = onnx.load(str(out / "model.onnx"))
    inits = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    big = [n for n, dims in inits.items() if int(np.prod(dims)) >= V * D]
    assert len(big) == 1 and inits[big[0]] == (D, V), inits
    users = [n for n in proto.graph.node if big[0] in n.input]
    assert sorted(n.op_type for n in users) == ["Gather", "MatMul"], [n.op_type for n in users]
    # also a graph input (a default), so ONNX Runtime does not repack a second copy of it
    assert big[0] in [v.name for v in proto.graph.input]
    gather = next(n for n in users if n.op_type == "Gather")
    assert {a.name: a.i for a in gather.attribute}.get("axis") == 1
    # no transpose of any constant: a transposed initializer would be a second copy
    assert not [n for n in proto.graph.node if n.op_type == "Transpose" and set(n.input) & set(inits)]
    size, w = (out / "model.onnx").stat().st_size, _weight_bytes(src)
    assert size < w + V * D * 4 // 4, (size, w)


def test_pte_stores_the_tied_matrix_once(tied_mamba):
    """The .pte is the weights (each once, the head packed with at most 3 rows of padding)
    plus the program: well under a second copy of the matrix."""
    src, out = tied_mamba
    size, w = (out / "model.pte").stat().st_size, _weight_bytes(src)
    assert size < w + V * D * 4 // 4, (size, w)


_CHILD = r"""
import importlib.abc, json, sys, traceback
chain = []

class Watch(importlib.abc.MetaPathFinder):      # records who imports torch first
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not chain:
            chain.append("".join(traceback.format_stack(limit=14)[:-1]))
        return None

sys.meta_path.insert(0, Watch())
import numpy as np
from edgekit.runtimes.session import StreamingSession
out = {}
for art in sys.argv[1:]:
    s = StreamingSession(art)
    ys = [np.array(s.step(np.array([t], dtype=np.int64))).reshape(-1) for t in (1, 7, 4093, 0, 42)]
    out[art] = {"engine": type(getattr(s.backend, "engine", None)).__name__, "threads": s.backend.threads,
                "finite": bool(all(np.isfinite(y).all() for y in ys)), "y": ys[-1][:8].tolist()}
print(json.dumps({"torch": "torch" in sys.modules, "chain": chain[0] if chain else None, "runs": out}))
"""


def _child(code: str, *args) -> dict:
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_sessions_import_no_torch(tied_mamba):
    """A .pte (native runner) and an .onnx session, stepped in a fresh process: torch is never
    imported; on failure the message shows the import chain that brought it in."""
    out = tied_mamba[1]
    res = _child(_CHILD, out / "model.pte", out / "model.onnx")
    assert not res["torch"], "torch was imported by:\n" + (res["chain"] or "?")
    pte = res["runs"][str(out / "model.pte")]
    assert pte["engine"] == "_NativeProgram" and pte["finite"] and pte["threads"] >= 1
    assert res["runs"][str(out / "model.onnx")]["finite"]


_BINDING_AFTER = r"""
import json, os, sys
import numpy as np
from edgekit.runtimes.session import StreamingSession
pte = sys.argv[1]
s = StreamingSession(pte)
y_native = np.array(s.step(np.array([5], dtype=np.int64))).reshape(-1).copy()
import torch
from executorch.runtime import Runtime     # the binding, after the native runner's libraries
m = Runtime.get().load_program(pte).load_method("forward")
y_binding = m.execute([torch.tensor([5])])[0].numpy().reshape(-1)
maps = {}
for line in open("/proc/self/maps"):
    path = line.split()[-1] if len(line.split()) >= 6 else ""
    if "libexecutorch" in path:
        maps.setdefault(os.path.basename(path), set()).add(os.path.realpath(path))
print(json.dumps({"maps": {k: sorted(v) for k, v in maps.items()},
                  "same": bool(np.array_equal(y_native, y_binding))}))
"""


def test_binding_after_native_reuses_the_libraries(tied_mamba):
    """Exports and tests import `executorch.runtime` in a process that already runs .pte files
    natively: the binding maps the very files the session loaded (one path per library, so
    each registers its kernels once; a second registration aborts the process), and runs the
    same program to the same bits (the state starts at zero in both)."""
    out = tied_mamba[1]
    res = _child(_BINDING_AFTER, out / "model.pte")
    for name in ("libexecutorch.so", "libexecutorch_threadpool.so", "libexecutorch_kernels_optimized.so",
                 "libexecutorch_backend_xnnpack.so"):
        assert len(res["maps"].get(name, [])) == 1, res["maps"]
    assert res["same"]
