"""Every Triton kernel of edgekit/ops/triton/ compiles for Jetson Orin's GPU (sm_87, Ampere)
with no Hopper-only instruction, on a machine with no GPU: each op's launcher is called on
the op's sample inputs with its kernel swapped for a recorder, and the recorded call (its
argument types and constexprs) is compiled by Triton for GPUTarget("cuda", 87, 32), through
ptxas to a cubin (ptxas refuses sm_90 instructions for sm_87), and its PTX is searched for
wgmma, TMA (cp.async.bulk), setmaxnreg and cluster registers.

In a subprocess: the compiled (not interpreted) kernels are needed, and tests/
test_triton_ops.py runs this process's triton interpreted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from edgekit_testutil import REPO

CODE = r'''
import json, torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import edgekit.ops.triton as kt
from edgekit.ops import REGISTRY
from edgekit.ops.triton import gemv as gemv_mod

FORBIDDEN = ("wgmma", "cp.async.bulk", "setmaxnreg", "%cluster")
TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
calls = []

class Recorder:
    def __init__(self, fn):
        self.fn = fn
    def __getitem__(self, grid):
        def call(*args, **kw):
            calls.append((self.fn, args, {k: v for k, v in kw.items() if k not in ("num_warps", "num_stages")}))
        return call

def compile_recorded(label):
    out = []
    for fn, args, const in calls:
        sig = {}
        for name, a in zip(fn.arg_names, args):
            sig[name] = TYPES[a.dtype] if isinstance(a, torch.Tensor) else ("i64" if abs(a) >= 2**31 else "i32")
        for name in const:
            sig[name] = "constexpr"
        c = triton.compile(ASTSource(fn, sig, constexprs=dict(const)), target=GPUTarget("cuda", 87, 32))
        ptx = c.asm["ptx"]
        out.append({"op": label, "kernel": fn.__name__, "sm87": ".target sm_87" in ptx,
                    "cubin": len(c.asm["cubin"]) > 0, "forbidden": [f for f in FORBIDDEN if f in ptx]})
    calls.clear()
    return out

results = []
for name in kt.KERNELS:
    mod = __import__(f"edgekit.ops.triton.{dict(kt.RECURRENCES, **kt.GLUE)[name]}", fromlist=["_"])
    jits = {k: v for k, v in vars(mod).items() if isinstance(v, triton.runtime.jit.JITFunction) and k.endswith("_kernel")}
    for k, v in jits.items():
        setattr(mod, k, Recorder(v))
    kt._LAUNCH.pop(name, None)
    info = REGISTRY[name]
    args = info.sample_inputs(3)
    kt.run(name, list(args))
    for k, v in jits.items():
        setattr(mod, k, v)
    kt._LAUNCH.pop(name, None)
    results += compile_recorded(name)
gemv_mod._gemv_kernel = Recorder(gemv_mod._gemv_kernel)
for N in (70, 600):
    gemv_mod.gemv(torch.randn(1, 300), torch.randn(300, N).half(), torch.randn(N))
results += compile_recorded("gemv")
print(json.dumps(results))
'''


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton is not installed (pip install -e '.[test]' installs it)")
def test_every_kernel_compiles_for_sm87_without_hopper_instructions():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    ops = {x["op"] for x in results}
    assert ops == {"rwkv7_wkv", "mamba_step", "ssd_step", "rglru_step", "add_rms_norm", "gated_rms_norm",
                   "softplus_bias", "silu_mul", "gelu_tanh_mul", "causal_conv1d", "causal_conv1d_silu", "gemv"}
    for x in results:
        assert x["sm87"] and x["cubin"] and not x["forbidden"], x
