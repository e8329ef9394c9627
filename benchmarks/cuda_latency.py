#!/usr/bin/env python
"""The CUDA backend on the GPU: parity with the fp32 CPU reference, time per token against
transformers eager and the bandwidth floor, and GPU memory over a long stream.

    python benchmarks/cuda_latency.py [--cases rwkv7-0.1B,mamba-130m,...] [--steps 512]
                                      [--mem-steps 10000] [--parity-steps 256] [--json out.json]

Parity: the bundled trained LMs (edgekit/bundled/*stdlib*, their ternary QAT outputs too),
teacher-forced on the first `--parity-steps` tokens of a Python file of this repository, then
64 greedy tokens after the demo's prompt; and every registered architecture's tiny random checkpoint (`write_random`), stepped
`--parity-steps` times with random inputs by the CUDA backend (fp16 weights, fp32 state,
CUDA graph) and by the torch backend on CPU (fp32): max |diff| / std(reference) over all
outputs. Token models also generate 64 greedy tokens after the same prompt on both; the
table gives "same" or the first divergence with the reference's logit margin (top-1 minus
top-2) there.

Latency (benchmarks/cases/*.py shapes, random weights in their real formats), ms/token at
batch 1, each the median of 3 rounds of `--steps` steps:
- "graph": edgekit fp16, one CUDA graph replay per step, the token already on the GPU
  (a device-side decode loop: no host sync between steps);
- "graph, step()": the same through `Backend.step`: the token copied in, the logits copied
  out to numpy and the host synchronized, every step (what StreamingSession.step costs);
- "eager": edgekit fp16 without the graph (every kernel launched from Python), device loop;
- GPU ops/step and busy ms: kernels, copies and memsets per step and their summed device
  time (torch profiler): what the graph replays, and how much of the step the GPU computes;
- "transformers": transformers' own model in fp16 on the GPU, eager, stepping with its
  own cache (Mamba, Mamba-2, RecurrentGemma), device loop; RWKV-7: the `rwkv` package's
  "cuda fp16" strategy (its torch path, RWKV_CUDA_ON=0) if it runs, else the reason.
Floor: bytes read per token / the GPU's copy bandwidth (a 1 GiB device-to-device copy,
bytes read + written per second, measured in this run). Two floors: the weights as this
backend stores them (fp16 Linear weights, fp32 for the small rest: norms, LoRA matrices,
decays, conv taps), and every weight in fp16. Embedding tables count one row.
Memory: torch.cuda.memory_allocated after warm-up and after `--mem-steps` steps of
`Backend.step` with the graph (and whether the last logits are finite).
At each shape also: the graph with cuBLAS on fp16(x) instead of the Triton GEMV (ms/token),
and 256 steps of both against the same model with fp32 weights on the GPU (max |diff| /
std; NaN: the fp16 cast of an activation overflowed).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

CASE_ARCH = {"rwkv7-0.1B": "rwkv7", "mamba-130m": "mamba", "mamba2-130m": "mamba2", "hawk-100M": "recurrent_gemma"}


def copy_bandwidth_gbs(gib: float = 1.0, reps: int = 10) -> float:
    """Bytes read + written per second by a device-to-device copy of `gib` GiB."""
    x = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    del x, y
    torch.cuda.empty_cache()
    return 2 * gib * 2**30 * reps / dt / 1e9


def fp16_weight_bytes(model) -> int:
    emb = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum((p.shape[-1] if id(p) in emb else p.numel()) * 2
               for p in (*model.parameters(), *model.buffers()) if p.is_floating_point())


def timed(fn, steps: int, rounds: int = 3) -> float:
    """Median over rounds of (time of fn(steps) / steps), ms; fn syncs at its end."""
    fn(8)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(steps)
        out.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(out)


def kernel_profile(fn, n: int = 5) -> tuple[float, float]:
    """(GPU operations per step, their summed device time per step in ms) under torch's
    profiler (kernels, copies and memsets that CUPTI reports; graph replays included)."""
    from torch.profiler import ProfilerActivity, profile
    fn(2)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(n)
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    t = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0) or 0 for e in evs)
    return len(evs) / n, t / n / 1e3


def device_loop(backend, toks):
    def run(n):
        for t in range(n):
            backend.xs[0].copy_(toks[t % len(toks)])
            backend._advance()
        torch.cuda.synchronize()
    return run


def step_loop(backend, toks_host):
    def run(n):
        for t in range(n):
            backend.step([toks_host[t % len(toks_host)]])
    return run


def _vs(be, path, toks_host, n: int = 64) -> float:
    """max |diff| / std of n steps of backend be against the plain graph of the same model."""
    from edgekit.models import load_model
    from edgekit.runtimes.cuda import CudaBackend
    be.reset()
    got = np.stack([be.step([toks_host[t % 64]])[0].copy() for t in range(n)])
    ref_be = CudaBackend(load_model(path))
    want = np.stack([ref_be.step([toks_host[t % 64]])[0].copy() for t in range(n)])
    be.reset()
    del ref_be
    return float(np.abs(got - want).max() / want.std())


# ---- transformers / rwkv on the GPU --------------------------------------------------------
def hf_stepper(arch: str, path: Path):
    """(label, step(tok_gpu (1, 1) int64)) for transformers' model in fp16 on the GPU."""
    import transformers
    if arch in ("mamba", "mamba2"):
        cls = {"mamba": transformers.MambaForCausalLM, "mamba2": transformers.Mamba2ForCausalLM}[arch]
        model = cls.from_pretrained(str(path), dtype=torch.float16).cuda().eval()
        cache = [None]

        @torch.inference_mode()
        def step(tok):
            out = model(tok, cache_params=cache[0], use_cache=True)
            cache[0] = out.cache_params
            return out.logits
        return f"transformers {cls.__name__} fp16 eager, own cache", step
    if arch == "recurrent_gemma":
        from transformers import RecurrentGemmaForCausalLM
        from transformers.cache_utils import DynamicCache
        model = RecurrentGemmaForCausalLM.from_pretrained(str(path), attn_implementation="eager",
                                                          dtype=torch.float16).cuda().eval()
        model._setup_cache(model.config, 1, "cuda", torch.float16)
        for layer in model.model.layers:          # transformers' quirk (edgekit/models/hawk.py oracle)
            tb = layer.temporal_block
            if hasattr(tb, "conv1d_state"):
                tb.conv1d_state = torch.zeros(1, tb.lru_width, tb.conv1d_width - 1, device="cuda",
                                              dtype=torch.float16)
        cache, pos = DynamicCache(config=model.config), [0]
        hawk = all(t == "recurrent" for t in model.config.block_types[:model.config.num_hidden_layers])

        @torch.inference_mode()
        def step(tok):
            p = torch.full((1, 1), pos[0], device="cuda", dtype=torch.long)
            out = model(input_ids=tok, position_ids=p, past_key_values=cache, use_cache=True,
                        attention_mask={"sliding_attention": None} if hawk else None)
            pos[0] += 1
            return out.logits
        return "transformers RecurrentGemmaForCausalLM fp16 eager, own cache", step
    if arch == "rwkv7":
        os.environ["RWKV_V7_ON"] = "1"
        os.environ["RWKV_CUDA_ON"] = "0"
        os.environ.setdefault("RWKV_JIT_ON", "1")
        from rwkv.model import RWKV
        model, state = RWKV(model=str(Path(path).with_suffix("")), strategy="cuda fp16"), [None]

        @torch.inference_mode()
        def step(tok):
            logits, state[0] = model.forward(tok.view(-1).tolist(), state[0])
            return logits
        return "rwkv 0.8.32 'cuda fp16' (torch path, RWKV_CUDA_ON=0)", step
    raise KeyError(arch)


# ---- parity --------------------------------------------------------------------------------
def greedy(sess, prompt, n):
    sess.reset()
    y = sess.feed(prompt)
    toks, margins = [], []
    for _ in range(n):
        top = np.sort(y)[-2:]
        toks.append(int(np.argmax(y)))
        margins.append(float(top[1] - top[0]))
        y = sess.step(toks[-1])
    return toks, margins


def compare(ckpt, row: dict, xs=None, prompt=None, steps: int = 256) -> dict:
    """GPU (cuda backend) against the fp32 CPU torch backend on checkpoint ckpt: max |diff| /
    std(reference) over every output of `steps` steps (inputs xs; default random), and for a
    token model 64 greedy tokens after `prompt` (default 8 random tokens): "same", or the
    first divergence with both sides' logit margins (top-1 minus top-2) there."""
    from edgekit.cli.bench import random_inputs
    from edgekit.runtimes.session import StreamingSession
    try:
        ref, gpu = StreamingSession(ckpt, backend="torch"), StreamingSession(ckpt, backend="cuda")
        xs = random_inputs(ref.manifest, steps, seed=0) if xs is None else xs[:steps]
        want = np.stack([np.array(ref.step(x)) for x in xs])
        got = np.stack([np.array(gpu.step(x)) for x in xs])
        row.update(steps=len(xs), err=float(np.abs(got - want).max() / want.std()),
                   finite=bool(np.isfinite(got).all()))
        if ref.manifest.input_kind == "tokens":
            if prompt is None:
                prompt = [int(t) for t in np.random.default_rng(1).integers(0, ref.manifest.config["vocab_size"], 8)]
            a, ma = greedy(ref, prompt, 64)
            b, mb = greedy(gpu, prompt, 64)
            i = next((k for k in range(64) if a[k] != b[k]), None)
            row["greedy64"] = "same" if i is None else \
                f"diverge at {i} (ref margin {ma[i]:.2e}, gpu margin {mb[i]:.2e})"
    except Exception as e:  # noqa: BLE001  (a row says what failed; the run goes on)
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        traceback.print_exc()
    print("parity", row, flush=True)
    return row


def parity(steps: int, tmp: Path) -> list[dict]:
    """Every registered architecture's tiny random checkpoint (seed 5), random inputs."""
    from edgekit.models import ARCHITECTURES
    return [compare(cls.write_random(tmp / (arch + (".pth" if arch == "rwkv7" else "")), seed=5),
                    {"arch": arch}, steps=steps) for arch, cls in sorted(ARCHITECTURES.items())]


BUNDLED_TEXT = REPO / "edgekit" / "cli" / "demo.py"     # Python source: the models' domain


def bundled_parity(steps: int) -> list[dict]:
    """The bundled trained LMs (and their ternary QAT outputs): teacher-forced on the first
    `steps` tokens of a Python file of this repository, then 64 greedy tokens after the
    demo's prompt."""
    from edgekit.cli.demo import BUNDLED, CODE_PROMPT, bundled_source
    from edgekit.runtimes.session import StreamingSession
    rows = []
    for folder in sorted(p for p in BUNDLED.parent.iterdir() if p.is_dir() and "stdlib" in p.name):
        src = bundled_source(folder)
        tok = StreamingSession(src, backend="torch").tokenizer
        text = tok.encode(BUNDLED_TEXT.read_text())[:steps]
        rows.append(compare(src, {"arch": f"bundled {folder.name}"}, xs=text, prompt=tok.encode(CODE_PROMPT),
                            steps=steps))
    return rows


# ---- latency -------------------------------------------------------------------------------
def latency(case, tmp: Path, steps: int, mem_steps: int, bw: float) -> dict:
    from edgekit.models import load_model
    from edgekit.runtimes.cuda import CudaBackend, weight_bytes_per_token
    arch = CASE_ARCH.get(case.NAME)
    row = {"case": case.NAME, "shape": case.SHAPE}
    t0 = time.perf_counter()
    path = case.make(tmp)
    row["make_s"] = round(time.perf_counter() - t0, 1)
    rng = np.random.default_rng(0)
    V = {"rwkv7": 65536}.get(arch) or getattr(case, "CONFIG", {}).get("vocab_size", 32000)
    toks_host = [np.array([t], dtype=np.int64) for t in rng.integers(0, V, 64)]
    toks = torch.tensor(np.stack(toks_host), device="cuda")             # (64, 1)
    fp16_bytes = None
    for key, kw in (("graph", {}), ("compiled", {"compile": True}), ("eager", {"graphs": False})):
        graphs = key != "eager"
        model = load_model(path)
        fp16_bytes = fp16_weight_bytes(model)
        be = CudaBackend(model, **kw)
        if key == "compiled":
            row["compile_note"] = be.compile_note
        loop = device_loop(be, toks)
        row[key] = timed(loop, steps if graphs else max(32, steps // 8))
        try:
            row[key + "_ops"], row[key + "_busy"] = kernel_profile(loop)
        except Exception as e:  # noqa: BLE001  (the profiler is optional)
            row[key + "_ops"], row[key + "_busy"] = float("nan"), float("nan")
            print("profiler:", type(e).__name__, e, flush=True)
        if key == "compiled":
            row["compiled_err"] = _vs(be, path, toks_host)
        if key == "graph":
            row["graph_step"] = timed(step_loop(be, toks_host), steps)
            row["stored_bytes"] = weight_bytes_per_token(be.model)
            for t in range(10):
                be.step([toks_host[t]])
            torch.cuda.synchronize()
            row["mem_warm"] = torch.cuda.memory_allocated()
            for t in range(mem_steps):
                be.step([toks_host[t % 64]])
            torch.cuda.synchronize()
            row["mem_after"] = torch.cuda.memory_allocated()
            row["mem_steps"] = mem_steps
            row["finite"] = bool(np.isfinite(be.step([toks_host[0]])).all())
        print(case.NAME, key, row[key], flush=True)
        del be, model, loop
        gc.collect()
        torch.cuda.empty_cache()
    # the same step with cuBLAS on fp16(x) instead of the Triton GEMV, and parity at this shape
    # against the fp32 model on the GPU (same kernels, fp32 weights): 256 steps
    ys = {}
    for key, kw in (("cublas", {"gemv": "cublas"}), ("fp32", {"weights": "fp32"}), ("triton", {})):
        be = CudaBackend(load_model(path), **kw)
        if key == "cublas":
            row["graph_cublas"] = timed(device_loop(be, toks), steps)
        ys[key] = np.stack([be.step([toks_host[t % 64]])[0].copy() for t in range(256)])
        del be
        gc.collect()
        torch.cuda.empty_cache()
    ref = ys["fp32"]
    for key in ("triton", "cublas"):
        finite = np.isfinite(ys[key]).all()
        row[f"err_{key}"] = float(np.abs(ys[key] - ref).max() / ref.std()) if finite else float("nan")
    row["fp16_bytes"] = fp16_bytes
    row["floor_stored"] = row["stored_bytes"] / bw / 1e6
    row["floor_fp16"] = fp16_bytes / bw / 1e6
    try:
        label, step = hf_stepper(arch, path)
        tk = toks.view(64, 1, 1)

        def hf(n):
            for t in range(n):
                step(tk[t % 64])
            torch.cuda.synchronize()
        row["hf_label"] = label
        row["hf"] = timed(hf, max(32, steps // 8))
        del step
    except Exception as e:  # noqa: BLE001
        row["hf_error"] = f"{type(e).__name__}: {e}"[:300]
        traceback.print_exc()
    gc.collect()
    torch.cuda.empty_cache()
    print(case.NAME, row, flush=True)
    return row


class Mamba14B:
    """The 1.4B-class shape (Mamba-1.4b's config), random weights, HF directory."""
    NAME = "mamba-1.4b"
    SHAPE = "L=48, D=2048, E=4096, N=16, K=4, dt_rank 128, vocab 50280 (~1.37B params)"
    CONFIG = dict(vocab_size=50280, hidden_size=2048, state_size=16, num_hidden_layers=48, expand=2,
                  conv_kernel=4, time_step_rank=128, tie_word_embeddings=True)

    @classmethod
    def make(cls, d: Path) -> Path:
        from cases import make_checkpoint
        return make_checkpoint("mamba", Path(d) / "mamba-1.4b", seed=1, **cls.CONFIG)


CASE_ARCH[Mamba14B.NAME] = "mamba"


def load_cases(names):
    import cases
    mods = [importlib.import_module(f"cases.{m.name}") for m in pkgutil.iter_modules(cases.__path__)]
    mods = [m for m in mods if getattr(m, "NAME", None) in CASE_ARCH] + [Mamba14B]
    return [m for m in mods if m.NAME in names] if names else mods[:-1]


def table(parity_rows, lat_rows, info) -> str:
    out = [f"GPU: {info['gpu']} | torch {info['torch']} | triton {info['triton']} | "
           f"copy bandwidth {info['bw']:.0f} GB/s (read + write)", ""]
    if parity_rows:
        out += ["| arch | steps | max abs diff / std (GPU fp16 graph vs CPU fp32) | greedy 64 tokens |",
                "|---|---|---|---|"]
        for r in parity_rows:
            if "error" in r:
                out.append(f"| {r['arch']} | - | error: {r['error']} | - |")
            else:
                out.append(f"| {r['arch']} | {r['steps']} | {r['err']:.2e} | {r.get('greedy64', 'n/a (features)')} |")
        out.append("")
    if lat_rows:
        out += ["| case | graph ms/tok | graph + torch.compile ms/tok (note; max diff/std vs graph, 64 steps) | graph step() ms/tok | eager ms/tok | transformers/rwkv fp16 ms/tok | "
                "x vs transformers | floor (as stored) ms | floor (all fp16) ms | graph / floor (all fp16) | "
                "GPU ops/step, busy ms (graph) | GPU ops/step (eager) | GPU mem warm -> after N steps | "
                "graph with cuBLAS fp16(x) ms/tok | max diff/std vs fp32 GPU, 256 steps (Triton GEMV; cuBLAS) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lat_rows:
            hf = f"{r['hf']:.3f}" if "hf" in r else f"n/a ({r.get('hf_error', '')[:80]})"
            x = f"{r['hf'] / r['graph']:.1f}x" if "hf" in r else "-"
            mem = (f"{r['mem_warm']:,} -> {r['mem_after']:,} B after {r['mem_steps']:,} "
                   f"({'equal' if r['mem_warm'] == r['mem_after'] else 'DIFFERENT'}; "
                   f"{'finite' if r['finite'] else 'NOT FINITE'})")
            out.append(f"| {r['case']} | {r['graph']:.3f} | {r.get('compiled', float('nan')):.3f} "
                       f"({r.get('compile_note')}; {r.get('compiled_ops', float('nan')):.0f} GPU ops; "
                       f"{r['hf'] / r['compiled'] if 'hf' in r and 'compiled' in r else float('nan'):.1f}x vs "
                       f"transformers; {r.get('compiled_err', float('nan')):.1e}) | {r['graph_step']:.3f} | {r['eager']:.3f} | {hf} | {x} | "
                       f"{r['floor_stored']:.3f} | {r['floor_fp16']:.3f} | {r['graph'] / r['floor_fp16']:.1f}x | "
                       f"{r['graph_ops']:.0f}, {r['graph_busy']:.3f} | {r['eager_ops']:.0f} | {mem} | "
                       f"{r.get('graph_cublas', float('nan')):.3f} | "
                       f"{r.get('err_triton', float('nan')):.2e}; {r.get('err_cublas', float('nan')):.2e} |")
        out += [""] + [f"- {r['case']}: {r['shape']}; baseline: {r.get('hf_label', '-')}" for r in lat_rows]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="", help="comma-separated case names (default: the four 0.1B shapes; "
                                                "mamba-1.4b is the 1.4B-class shape)")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--mem-steps", type=int, default=10000)
    ap.add_argument("--parity-steps", type=int, default=256)
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--tmp", default=None, help="folder for the random checkpoints (default: a temp folder)")
    a = ap.parse_args(argv)
    from edgekit.runtimes.cuda import require_cuda
    require_cuda()
    import triton
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="edgekit-cuda-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    bw = copy_bandwidth_gbs()
    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__, "bw": bw}
    print(info, flush=True)
    par, lat = [], []

    def save():
        if a.json:          # after every section: a run stopped later keeps what it measured
            Path(a.json).write_text(json.dumps({"info": info, "parity": par, "latency": lat,
                                                "table": table(par, lat, info)}, indent=1))
    if not a.no_parity:
        par = bundled_parity(a.parity_steps) + parity(a.parity_steps, tmp)
        save()
    if not a.no_latency:
        for case in load_cases([n for n in a.cases.split(",") if n]):
            try:
                lat.append(latency(case, tmp, a.steps, a.mem_steps, bw))
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                print(f"{case.NAME}: {type(e).__name__}: {e}", flush=True)
            save()
    print(table(par, lat, info))


if __name__ == "__main__":
    main()
