"""CUDA backend (Jetson-class GPUs): the model's own step in fp16 weights on the GPU, the
recurrent state in fp32, one step captured in a CUDA graph and replayed per token.

    sess = StreamingSession("mamba-130m/", backend="cuda")      # a checkpoint, as for torch
    edgekit run mamba-130m/ --backend cuda --prompt "..."

What it runs: a checkpoint (any registered architecture), loaded by its own loader as the
torch backend does. Not an exported .onnx/.pte: those hold lowered CPU programs (packed
`edgekit::dense` tiles, XNNPACK delegates, ONNX function bodies) whose ops have no CUDA
kernels here, and the weights they carry cannot be mapped back to the model without the
checkpoint; `refuse_artifact` says so in one line, naming the artifact's edgekit ops.

At load (`prepare`): every `layers.Linear` becomes `HalfLinear`: its weight stored fp16
(read once per token: half the bytes of fp32, which is what bounds batch-1 decode) and read
against the fp32 activations by a Triton GEMV (edgekit/ops/triton/gemv.py). Everything else
stays fp32: activations, norms, decays, the recurrences' inputs and the state. Why fp32
activations: an fp16 cast of a matmul's input overflows past 65,504 (measured on the GPU:
the random Mamba-1.4B's out_proj input reaches 68,629 at step 1, and every logit after it
is NaN with cuBLAS on fp16(x)); RWKV-7's decay w = exp(-e^-0.5·sigmoid(·)) lies within 5e-4
of 1 for slow channels, the spacing of fp16 just below 1; and RWKV's k·v products and
hidden states can overflow fp16 (QUANT-DEVICES.md). The activations are a few kB per
token; the weights are the bytes. The recurrence ops and the glue ops between the GEMVs
run their Triton kernels (edgekit/ops/triton/, registered on import).

The step (`_run`) reads static input and state buffers and copies each new state into its
buffer, so `graph.replay()` after writing the input is one step; nothing is allocated per
step (the graph's memory pool is fixed at capture). Warm-up runs eager steps first (Triton
compiles, cuBLAS picks its kernels), then the state is reset and one step is captured, its
state updated in place by the recurrence kernels (`_capture`). Tensors a model makes
inside its step with a factory (Hawk's ring-slot `torch.arange`) are made on the GPU
(`_OnDevice`); configuration tensors that an op reads on the host (`OpInfo.config_args`,
e.g. CfC's mode vector) are found during the first warm-up step and kept on the host, so
the captured step never synchronizes.

Measured (benchmarks/cuda_latency.py, H100): a step is bound by how many kernels it runs
(~1.5-2 µs each in a graph), not by the bytes, at the 0.1B shapes (7.5-21x the bandwidth
floor); at Mamba-1.4B it is 2.6x the floor.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.runtimes.base import Backend

CPU_BACKENDS = "torch, onnxruntime or executorch"
SEQ_CHUNK = 256     # run_sequence: steps per device-side chunk (bounds its output buffer)


def require_cuda() -> torch.device:
    """The CUDA device, or one EdgekitError line naming the CPU backends."""
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
               else "torch sees no CUDA device")
        raise EdgekitError(f"--backend cuda needs an NVIDIA GPU, and {why}",
                           fix=f"run on a CUDA machine, or use a CPU backend: --backend {CPU_BACKENDS}")
    try:
        import triton  # noqa: F401
    except ImportError:
        raise EdgekitError("--backend cuda needs triton (the recurrence kernels), which is not installed",
                           fix="pip install triton (a CUDA build of torch brings it)") from None
    return torch.device("cuda", torch.cuda.current_device())


def refuse_artifact(path: Path, manifest) -> EdgekitError:
    """The error for an exported artifact given to the cuda backend, naming its edgekit ops."""
    from edgekit.ops import REGISTRY
    by_onnx_type = {info.onnx_op_type: name for name, info in REGISTRY.items()}
    ops = sorted({by_onnx_type.get(op, op).removesuffix(".out").removesuffix("_inplace")
                  for e in manifest.artifacts.values() for op in e.ops_used.get("edgekit", ())})
    files = ", ".join(e.file for e in manifest.artifacts.values()) or "no artifact"
    named = ", ".join(f"edgekit::{o}" for o in ops) or "none"
    return EdgekitError(f"backend 'cuda' runs a checkpoint, not the export '{path}' ({files}; edgekit ops: {named}): "
                        "an export is a CPU program for ONNX Runtime or ExecuTorch, which have no CUDA kernels for "
                        "those ops here",
                        fix="pass the checkpoint the export came from (edgekit run CKPT --backend cuda), "
                            f"or run the export on a CPU backend: --backend {CPU_BACKENDS}")


class HalfLinear(nn.Module):
    """`layers.Linear` with its weight stored fp16 (in, out): y = x @ W (+ b), x and y fp32,
    fp32 accumulation. At decode (at most `gemv.MAX_ROWS` rows, on CUDA) one Triton GEMV reads
    x as fp32 and W as fp16 (edgekit/ops/triton/gemv.py: an fp16 cast of x overflows past
    65,504, which the random Mamba-1.4B reaches). Otherwise (prefill, CPU) fp16(x) @ W by
    cuBLAS / torch, its fp32 result straight from the matmul where this torch has
    `mm(..., out_dtype=float32)`."""

    def __init__(self, linear, fp32_out: bool = False, triton_gemv: bool = False):
        super().__init__()
        self.d_in, self.d_out = linear.d_in, linear.d_out
        self.fp32_out, self.triton_gemv = fp32_out, triton_gemv
        self.weight = nn.Parameter(linear.weight.detach().to(torch.float16).contiguous(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x):
        if self.triton_gemv and x.is_cuda and x.numel() <= _gemv().MAX_ROWS * self.d_in:
            return _gemv().gemv(x, self.weight, self.bias)
        x16 = x.to(torch.float16)
        if self.fp32_out and x.is_cuda:
            y = torch.mm(x16.reshape(-1, self.d_in), self.weight, out_dtype=torch.float32)
            y = y.view(*x.shape[:-1], self.d_out)
        else:
            y = (x16 @ self.weight).to(torch.float32)
        return y if self.bias is None else y + self.bias

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """`Linear.rows`: a tied embedding's rows, read from the fp16 matrix (one gather)."""
        cols = self.weight.index_select(1, idx.reshape(-1))                   # (in, n) fp16
        return cols.t().to(torch.float32).reshape(*idx.shape, self.d_in)


def _gemv():
    from edgekit.ops.triton import gemv
    return gemv


def _mm_fp32_out(device: torch.device) -> bool:
    """Whether torch.mm(fp16, fp16, out_dtype=float32) runs on device (CUDA builds of torch
    >= 2.8; not on CPU)."""
    try:
        a = torch.ones(1, 8, dtype=torch.float16, device=device)
        return torch.mm(a, a.t(), out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def prepare(model: nn.Module, device: torch.device, gemv: str = "triton", weights: str = "fp16") -> nn.Module:
    """The model for the GPU: Linear layers fp16 (HalfLinear), all else fp32, on device.
    gemv: "triton" (decode GEMVs read x in fp32) or "cublas" (fp16(x) @ W, for comparison);
    weights "fp32" keeps every Linear as it is (a reference on the GPU)."""
    from edgekit.models.layers import Linear, LowRank
    fp32_out = _mm_fp32_out(device)
    for name, m in list(model.named_modules()) if weights == "fp16" else ():
        if isinstance(m, Linear) and not isinstance(m, LowRank):     # RWKV-7's LoRA (the decay path) stays fp32
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr,
                    HalfLinear(m, fp32_out, triton_gemv=gemv == "triton" and device.type == "cuda"))
    return model.to(device).eval().requires_grad_(False)


class _ConfigArgs(torch.overrides.TorchFunctionMode):
    """Records the tensors passed as configuration arguments (`OpInfo.config_args`) of
    edgekit ops: the op reads them on the host."""

    def __init__(self):
        super().__init__()
        self.seen: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from edgekit.export.passes import edgekit_op
        from edgekit.ops import REGISTRY
        name = edgekit_op(func)
        if name is not None:
            self.seen.update(id(args[i]) for i in REGISTRY[name].config_args if i < len(args))
        return func(*args, **(kwargs or {}))


def _constructors() -> set:
    """torch's factory functions that take a device, less those that wrap data (torch.tensor
    & co.: a model converts such a value on the host, as Hawk's bf16-rounded scale)."""
    try:
        from torch.utils._device import _device_constructors
        made = set(_device_constructors())
    except ImportError:
        made = {torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.eye, torch.linspace}
    return made - {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor}


class _OnDevice(torch.overrides.TorchFunctionMode):
    """Factory calls with no device (Hawk's ring-slot `torch.arange`) make their tensors on
    `device`; `used` says whether any did (else the step runs without this mode)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device, self.used, self.made = device, False, _constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.made and kwargs.get("device") is None:
            kwargs["device"] = self.device
            self.used = True
        return func(*args, **kwargs)


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes one step reads as stored here (fp16 Linear weights, fp32 others); an
    nn.Embedding reads one row (edgekit.models.base.bytes_read_per_token)."""
    from edgekit.models.base import bytes_read_per_token
    return bytes_read_per_token(model)


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, model, batch: int = 1, graphs: bool = True, threads: int | None = None,
                 gemv: str = "triton", weights: str = "fp16", compile: bool = False):
        self.device = require_cuda()
        import edgekit.ops.triton  # noqa: F401  (registers the CUDA kernels of the recurrence ops)
        self.threads = threads
        self.graphs = graphs
        self.compile = compile and graphs
        self._compiled = None
        self.compile_note = None            # why compile was not used, or its time
        self.model = prepare(model, self.device, gemv, weights)
        dev = self.device
        self.state = {n: t.to(dev).contiguous() for n, t in model.init_state(batch).items()}
        specs = model.input_spec(batch)
        self.xs = [(torch.ones if s.name == "dt" else torch.zeros)(s.shape, dtype=s.dtype, device=dev) for s in specs]
        self._host_xs = [torch.empty(s.shape, dtype=s.dtype, pin_memory=True) for s in specs]
        self._seq = None
        self.graph = None
        self._on_device = _OnDevice(dev)
        with torch.no_grad():
            self._warm_up()
            self._y = self._run()                       # a static output of the right shape
            self._host_y = torch.empty(self._y.shape, dtype=self._y.dtype, pin_memory=True)
            if graphs:
                self._capture()
            self.reset()

    # -- the step ------------------------------------------------------------------------
    def _run(self) -> torch.Tensor:
        """One step on the static buffers: reads self.xs and self.state, writes the new state
        into self.state; returns y."""
        with self._on_device if self._on_device.used else nullcontext():
            y, new = self.model.step(self.xs[0] if len(self.xs) == 1 else tuple(self.xs), self.state)
        for n, s in self.state.items():
            if new[n] is not s:
                s.copy_(new[n])
        return y

    def _warm_up(self) -> None:
        rec = _ConfigArgs()
        with rec, self._on_device:
            self._run()
        if rec.seen:                    # configuration read on the host: keep it there
            for mod in self.model.modules():
                for k, b in list(mod._buffers.items()):
                    if b is not None and id(b) in rec.seen:
                        mod._buffers[k] = b.cpu()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._run()
            if self.compile:
                self._compile()
            if self.graphs and self._compiled is None:
                self._lowered_run()     # what the graph will hold, compiled before capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)

    def _compile(self) -> None:
        """torch.compile of the step (Inductor fuses the elementwise glue between the GEMVs and
        the edgekit ops, which stay one kernel each), run twice here so the graph captures
        compiled code. The step then runs outside the lowering passes (Dynamo does not trace
        their TorchFunctionMode); a model that makes tensors inside its step (`_OnDevice`) or
        a compile that fails keeps the plain step, and `compile_note` says why."""
        import time
        if self._on_device.used:
            self.compile_note = "not compiled: the step makes tensors with factory calls (kept on the GPU by a mode)"
            return
        t0 = time.perf_counter()
        try:
            fn = torch.compile(self._run, dynamic=False)
            fn()
            fn()
        except Exception as e:  # noqa: BLE001  (any compiler failure: the plain step still runs)
            self.compile_note = f"not compiled: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return
        self._compiled = fn
        self.compile_note = f"compiled in {time.perf_counter() - t0:.1f} s"

    def _lowered_run(self) -> torch.Tensor:
        """`_run` under the export passes that keep each glue op one call and let a recurrence
        op write its state into the state buffer itself (`reinplace_state`: its `_inplace`
        form, no copy back). Their Python runs at capture only."""
        from edgekit.export.passes import GLUE_FUSIONS, lowered, note_state_buffers
        with lowered(self.model, [*GLUE_FUSIONS, "reinplace_state"]):
            note_state_buffers(self.state.values())
            return self._run()

    def _capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._y = self._compiled() if self._compiled is not None else self._lowered_run()
        torch.cuda.synchronize(self.device)

    def _advance(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self._y
        return self._run()

    @torch.no_grad()
    def step(self, xs):
        for host, dev, x in zip(self._host_xs, self.xs, xs):
            host.numpy()[...] = x
            dev.copy_(host, non_blocking=True)
        y = self._advance()
        self._host_y.copy_(y, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self._host_y.numpy()

    @torch.no_grad()
    def run_sequence(self, xs: list[np.ndarray]) -> np.ndarray:
        """Every step of a sequence (inputs (T, *input shape) each) with no host sync inside a
        chunk of SEQ_CHUNK steps: inputs go to the GPU once per chunk, outputs come back once."""
        T = int(xs[0].shape[0])
        if self._seq is None:
            self._seq = ([torch.empty((SEQ_CHUNK, *x.shape), dtype=x.dtype, device=self.device) for x in self.xs],
                         torch.empty((SEQ_CHUNK, *self._y.shape), dtype=self._y.dtype, device=self.device),
                         torch.empty((SEQ_CHUNK, *self._y.shape), dtype=self._y.dtype, pin_memory=True))
        ins, out, host_out = self._seq
        ys = np.empty((T, *self._y.shape), dtype=host_out.numpy().dtype)
        for lo in range(0, T, SEQ_CHUNK):
            n = min(SEQ_CHUNK, T - lo)
            for buf, x, spec in zip(ins, xs, self.xs):
                arr = np.ascontiguousarray(x[lo:lo + n]).reshape(n, *spec.shape)
                buf[:n].copy_(torch.from_numpy(arr))
            for t in range(n):
                for buf, dev in zip(ins, self.xs):
                    dev.copy_(buf[t])
                out[t].copy_(self._advance())
            host_out[:n].copy_(out[:n], non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            ys[lo:lo + n] = host_out[:n].numpy()
        return ys

    # -- state -----------------------------------------------------------------------------
    def get_state(self):
        return {n: t.to("cpu", copy=True).numpy() for n, t in self.state.items()}

    @torch.no_grad()
    def set_state(self, state):
        for n, t in self.state.items():
            t.copy_(torch.from_numpy(np.ascontiguousarray(state[n])))

    @torch.no_grad()
    def reset(self):
        for t in self.state.values():
            t.zero_()


def open_cuda(path: Path, threads: int | None = None, graphs: bool = True):
    """A checkpoint on the GPU: (manifest, CudaBackend, the folder its tokenizer file is in).
    The manifest is the fp32 model's (its model_id is the weights' fingerprint), so a state
    saved by the torch backend loads here and back."""
    require_cuda()
    from edgekit.models import load_model
    model = load_model(path)
    tok = model.tokenizer()
    base = tok.file.parent if tok and tok.file else Path(path).parent
    manifest = model.manifest(batch=1, ops="fused")
    return manifest, CudaBackend(model, threads=threads, graphs=graphs, compile=compile_requested()), base


def compile_requested() -> bool:
    """EDGEKIT_CUDA_COMPILE=1: torch.compile the step before capturing its graph
    (`CudaBackend._compile`). Off by default: it costs ~30 s at start and pays off where a
    step runs many small glue kernels (measured, H100: RWKV-7 0.1B 1.98 -> 1.10 ms/token,
    909 -> 480 kernels), not where the glue is already fused (Mamba-130m 0.74 -> 0.88 ms:
    the state is then copied back instead of updated in place)."""
    import os
    v = os.environ.get("EDGEKIT_CUDA_COMPILE", "0")
    if v not in ("0", "1"):
        raise EdgekitError(f"EDGEKIT_CUDA_COMPILE={v!r}", expected="0 or 1", fix="set EDGEKIT_CUDA_COMPILE=1 or unset it")
    return v == "1"

