#!/usr/bin/env python
"""Mamba's causal conv: a separate custom op, or stock ops next to the fused SSM op?

    python benchmarks/conv_fold.py [--cases mamba-130m,mamba2-130m] [--steps 32] [--rounds 5]

For each case (real shapes, random weights; see benchmarks/cases) it exports the fused
model twice: the conv as one `edgekit::causal_conv1d` node (edgekit's default), and the
conv as stock ops (slice, concat, multiply, reduce) beside the fused SSM op, and times
single steps of both in ONNX Runtime and ExecuTorch in interleaved rounds (median).

Folding the conv INTO the SSM op is not possible for Mamba-1 (x_proj and dt_proj run
between the conv and the SSM). For Mamba-2 it would remove one kernel call per layer and
keep the same arithmetic and memory traffic; so the most it can save is the cost of that
call, which the last table measures: the `causal_conv1d` kernel alone at the layer's shape
in a one-op .pte, the same conv as stock ops, and a trivial program with the same inputs
and outputs (the per-call floor).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _stock_conv_pass():
    """A lowering pass for this comparison only: Mamba's conv ops (causal_conv1d, and its
    SiLU form) traced as their stock-op reference instead of one edgekit node."""
    from edgekit.export.passes import Pass, edgekit_op
    from edgekit.ops import REGISTRY

    class StockConv(Pass):
        name = "stock_conv"

        def rewrite(self, func, args, kwargs, ctx):
            if edgekit_op(func) not in ("causal_conv1d", "causal_conv1d_silu"):
                return NotImplemented
            return ctx.replace(self, REGISTRY[edgekit_op(func)].reference, *args, **kwargs)
    return StockConv


def export_variants(case, work: Path, console):
    from edgekit.export import export, passes
    from edgekit.export import executorch as et_export, onnx as onnx_export
    path = case.make(work)
    stock = _stock_conv_pass()
    get, out = passes.get, {}
    for label, extra in (("conv op", []), ("conv as stock ops", ["stock_conv"])):
        d = work / ("fused-buffers" if not extra else "fused-stockconv")
        if not (d / "edgekit.json").exists():
            console.print(f"  exporting {label} ...")
            with mock.patch.object(passes, "get", lambda n: stock if n == "stock_conv" else get(n)), \
                 mock.patch.object(et_export, "pipeline_for", lambda *a: extra + passes.pipeline_for(*a)), \
                 mock.patch.object(onnx_export, "pipeline_for", lambda *a: extra + passes.pipeline_for(*a)):
                export(path, d, formats=("onnx", "pte"), ops="fused", state_style="buffers")
        out[label] = d
    return out


def time_models(case, dirs, steps, rounds):
    from edgekit.runtimes.session import StreamingSession
    runners = [(f"{fmt} {label}", StreamingSession(d / f"model.{fmt}"))
               for label, d in dirs.items() for fmt in ("onnx", "pte")]
    rng = np.random.default_rng(0)
    times = {k: [] for k, _ in runners}
    for _, r in runners:
        for x in case.inputs(8, rng):
            r.step(x)
    for _ in range(rounds):
        xs = case.inputs(steps, rng)
        for k, r in runners:
            for x in xs:
                t0 = time.perf_counter()
                r.step(x)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def time_single_op(C: int, K: int, work: Path, calls: int = 3000) -> dict:
    """us per execute() of a one-op .pte at (1, 1, C), K taps: causal_conv1d, the stock-op conv, the call floor."""
    import torch
    from executorch.exir import EdgeCompileConfig, to_edge
    from executorch.runtime import Runtime
    import edgekit.ops  # noqa: F401
    from edgekit.kernels import load_kernels
    from edgekit.ops import causal_conv1d
    load_kernels()

    class Conv(torch.nn.Module):
        def forward(self, x, w, b, s):
            return torch.ops.edgekit.causal_conv1d(x, w, b, s)

    class Stock(torch.nn.Module):
        def forward(self, x, w, b, s):
            return causal_conv1d.reference(x, w, b, s)

    class Add(torch.nn.Module):   # the same inputs and outputs, one trivial op per output
        def forward(self, x, w, b, s):
            return x + 1.0, s + 1.0

    args = (torch.randn(1, 1, C), torch.randn(C, K), torch.randn(C), torch.randn(1, C, K))
    out = {}
    for name, mod in (("causal_conv1d", Conv()), ("stock ops", Stock()), ("call floor", Add())):
        ep = torch.export.export(mod, args, strict=False)
        prog = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
        p = work / f"single-{name.replace(' ', '-')}.pte"
        p.write_bytes(prog.buffer)
        m = Runtime.get().load_program(p).load_method("forward")
        ins = list(args)
        for _ in range(200):
            m.execute(ins)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                m.execute(ins)
            ts.append((time.perf_counter() - t0) / calls * 1e6)
        out[name] = min(ts)
    return out


def main(argv=None):
    from rich.console import Console
    from rich.table import Table
    from step_latency import load_cases
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="mamba-130m,mamba2-130m")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    args = ap.parse_args(argv)
    console = Console()
    for case in load_cases(args.cases.split(",")):
        console.rule(case.NAME)
        work = args.work / case.NAME
        work.mkdir(parents=True, exist_ok=True)
        res = time_models(case, export_variants(case, work, console), args.steps, args.rounds)
        t = Table(title=f"{case.NAME}: fused SSM op, conv as its own op vs as stock ops (ms/token, median)")
        for c in ("runtime", "conv op", "conv as stock ops", "op / stock"):
            t.add_column(c, justify="left" if c == "runtime" else "right")
        for fmt, name in (("onnx", "onnxruntime"), ("pte", "executorch")):
            a, b = res[f"{fmt} conv op"], res[f"{fmt} conv as stock ops"]
            t.add_row(name, f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}")
        console.print(t)
    from edgekit.models import load_model
    shapes = []
    for case in load_cases(args.cases.split(",")):
        m = load_model(case.make(args.work / case.NAME))
        w = m.mixers[0].conv_w
        shapes.append((case.NAME, w.shape[0], w.shape[1], m.cfg.n_layer))
        del m
    t = Table(title="The conv alone at the layer's shape (ExecuTorch, one-op .pte, us per execute, best of 5; "
                    "call floor: x + 1, s + 1, the same inputs and outputs)")
    for c in ("case", "C x K", "causal_conv1d", "stock ops", "call floor", "op over floor", "x L layers, ms/token"):
        t.add_column(c, justify="left" if c == "case" else "right")
    for name, C, K, L in shapes:
        r = time_single_op(C, K, args.work / name)
        extra = r["causal_conv1d"] - r["call floor"]
        console.print(f"  {name}: measured")
        t.add_row(name, f"{C} x {K}", f"{r['causal_conv1d']:.2f}", f"{r['stock ops']:.2f}", f"{r['call floor']:.2f}",
                  f"{extra:.2f}", f"{extra * L / 1e3:.3f}")
    console.print(t)


if __name__ == "__main__":
    main()
