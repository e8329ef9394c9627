"""The CUDA backend (edgekit/runtimes/cuda.py): `--backend cuda` / StreamingSession(...,
backend="cuda").

On CPU (CI): the registry lists the backend; without a GPU `--backend cuda` is one error
line naming the CPU backends; an exported artifact is refused in one line naming its
edgekit ops; the fp16-weight conversion (`prepare`) keeps a model's outputs within 1e-2
std of the fp32 model and halves the bytes of its Linear weights.
On a GPU (the device machine; skipped on CPU with one line saying so): every registered
architecture's tiny random checkpoint on CUDA (fp16 weights, CUDA graph) matches the fp32
torch backend on CPU; graphs and no graphs agree; save/load state round-trips, also into
the torch backend; each bundled trained LM matches the CPU on 256 bytes of Python source and
gives the same greedy bytes; `stream` equals stepping; GPU memory after 2,000 steps equals that after
warm-up, to the byte.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit import formats
from edgekit.cli.bench import random_inputs
from edgekit.errors import EdgekitError
from edgekit.models import ARCHITECTURES
from edgekit.runtimes.session import StreamingSession
from edgekit_testutil import assert_clean_failure, assert_same_lm, run_cli, tiny_checkpoints

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (CI has none; run on the device machine)")
TOL = 1e-2          # max |diff| / std(reference), the parity goal


@pytest.fixture(scope="module")
def rwkv_tiny(tmp_path_factory):
    from edgekit.models.rwkv7 import write_random_checkpoint
    return write_random_checkpoint(tmp_path_factory.mktemp("cuda-rwkv") / "tiny.pth", vocab_size=256, n_embd=128,
                                   n_layer=2, head_size=64, seed=3)


def test_cuda_is_a_backend_of_the_registry():
    from edgekit.runtimes.session import BACKENDS
    assert formats.by_backend("cuda") is formats.CUDA
    assert "cuda" in BACKENDS and formats.CUDA in formats.RUNS_CHECKPOINTS
    assert "cuda" not in formats.FORMATS          # not an export format: it runs checkpoints


@pytest.mark.skipif(GPU, reason="checks the no-GPU error; this machine has a GPU")
def test_no_gpu_is_one_line_naming_the_cpu_backends(rwkv_tiny):
    with pytest.raises(EdgekitError, match="needs an NVIDIA GPU.*--backend torch, onnxruntime or executorch"):
        StreamingSession(rwkv_tiny, backend="cuda")
    r = run_cli("run", rwkv_tiny, "--backend", "cuda", "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, "--backend cuda needs an NVIDIA GPU", "torch, onnxruntime or executorch")


def test_an_export_is_refused_naming_its_ops(rwkv_tiny, tmp_path):
    """An .onnx/.pte export holds a lowered CPU program: the cuda backend says which edgekit
    ops it carries and to pass the checkpoint (before looking for a GPU)."""
    from edgekit.export import export
    out = tmp_path / "exp"
    export(rwkv_tiny, out, formats=("onnx",), ops="fused")
    for target in (out, out / "model.onnx"):
        with pytest.raises(EdgekitError, match=r"backend 'cuda' runs a checkpoint.*edgekit::rwkv7_wkv.*"
                                               r"pass the checkpoint the export came from"):
            StreamingSession(target, backend="cuda")
    r = run_cli("run", out, "--backend", "cuda", "--tokens", "1,2", "--steps", "1")
    assert_clean_failure(r, "edgekit::rwkv7_wkv", "--backend torch, onnxruntime or executorch")


def test_fp16_weights_keep_the_outputs_and_halve_the_linear_bytes(rwkv_tiny):
    """`prepare` on CPU: every Linear becomes HalfLinear (fp16 weight) except RWKV-7's LoRA
    projections (`LowRank`: the decay path stays fp32), nothing else changes dtype, and 16
    steps stay within 1e-2 std of the fp32 model's logits."""
    from edgekit.models import load_model
    from edgekit.models.layers import Linear, LowRank
    from edgekit.runtimes.cuda import HalfLinear, prepare, weight_bytes_per_token
    ref, half = load_model(rwkv_tiny), load_model(rwkv_tiny)
    before = weight_bytes_per_token(half)
    lin = sum(m.weight.numel() for m in half.modules() if isinstance(m, Linear) and not isinstance(m, LowRank))
    n_low = sum(isinstance(m, LowRank) for m in half.modules())
    prepare(half, torch.device("cpu"))
    assert not any(isinstance(m, Linear) and not isinstance(m, LowRank) for m in half.modules())
    low = [m for m in half.modules() if isinstance(m, LowRank)]
    assert n_low > 0 and len(low) == n_low and all(m.weight.dtype == torch.float32 for m in low)
    assert all(m.weight.dtype == torch.float16 for m in half.modules() if isinstance(m, HalfLinear))
    assert {p.dtype for n, p in half.named_parameters() if not n.endswith(".weight") or "ln" in n} == {torch.float32}
    assert weight_bytes_per_token(half) == before - 2 * lin
    s_ref, s_half = ref.init_state(1), half.init_state(1)
    rng = np.random.default_rng(0)
    for tok in rng.integers(0, 256, 16):
        x = torch.tensor([int(tok)])
        y_ref, s_ref = ref.step(x, s_ref)
        y_half, s_half = half.step(x, s_half)
        err = float((y_half - y_ref).abs().max() / y_ref.std())
        assert y_half.dtype == torch.float32 and err < TOL, err


# ---- on a GPU -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("cuda"), seed=5)


@needs_gpu
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gpu_matches_the_fp32_cpu_reference(tiny, arch):
    """64 steps: max |diff| / std(reference) <= 1e-2 against the torch backend on CPU (fp32),
    with the CUDA graph and without it; graphs and eager steps agree to 1e-5 std."""
    from edgekit.runtimes.cuda import CudaBackend
    from edgekit.models import load_model
    ckpt = tiny(arch)
    ref, gpu = StreamingSession(ckpt, backend="torch"), StreamingSession(ckpt, backend="cuda")
    eager = CudaBackend(load_model(ckpt), graphs=False)
    assert gpu.backend.graph is not None and gpu.format == "cuda"
    xs = random_inputs(ref.manifest, 64)
    want = np.stack([np.array(ref.step(x)) for x in xs])
    got = np.stack([np.array(gpu.step(x)) for x in xs])
    got_eager = np.stack([np.array(eager.step(gpu._check_inputs(x))[0]) for x in xs])
    err = float(np.abs(got - want).max() / want.std())
    assert err <= TOL, f"{arch}: max|diff|/std {err:.2e}"
    assert float(np.abs(got_eager - got).max() / want.std()) <= 1e-5


def _bundled_lm_folders():
    from edgekit.cli.demo import BUNDLED
    return sorted(p.name for p in BUNDLED.parent.iterdir() if p.is_dir() and "stdlib" in p.name)


@needs_gpu
@pytest.mark.parametrize("name", _bundled_lm_folders())
def test_a_bundled_trained_lm_on_gpu_matches_the_cpu(name):
    """The trained models (and their ternary QAT outputs), on Python source they were trained
    on the like of: 256 teacher-forced bytes within TOL of the fp32 CPU backend, and the
    demo prompt's 64 greedy bytes equal, or the first difference at a logit margin the fp16
    weights can flip (< TOL of the logits' std)."""
    from edgekit.cli.demo import BUNDLED, CODE_PROMPT, bundled_source
    src = bundled_source(BUNDLED.parent / name)
    ref, gpu = StreamingSession(src, backend="torch"), StreamingSession(src, backend="cuda")
    assert_same_lm(ref, gpu, ref.tokenizer.encode(open(__file__).read())[:256], ref.tokenizer.encode(CODE_PROMPT), TOL)


@needs_gpu
@pytest.mark.parametrize("arch", ["rwkv7", "mamba", "mamba2"])
def test_a_compiled_step_matches_the_plain_graph(tiny, arch):
    """compile=True (torch.compile of the step, then the CUDA graph) computes what the plain
    graph computes, to 1e-5 of the std, over 64 steps."""
    from edgekit.models import load_model
    from edgekit.runtimes.cuda import CudaBackend
    ckpt = tiny(arch)
    plain, comp = CudaBackend(load_model(ckpt)), CudaBackend(load_model(ckpt), compile=True)
    assert comp._compiled is not None, comp.compile_note
    xs = random_inputs(StreamingSession(ckpt, backend="torch").manifest, 64)
    want = np.stack([plain.step([np.asarray(x).reshape(plain.xs[0].shape)])[0].copy() for x in xs])
    got = np.stack([comp.step([np.asarray(x).reshape(comp.xs[0].shape)])[0].copy() for x in xs])
    assert float(np.abs(got - want).max()) <= 1e-5 * want.std()


@needs_gpu
def test_state_saved_on_gpu_continues_on_gpu_and_on_cpu(tiny, tmp_path):
    ckpt = tiny("mamba")
    gpu, cpu = StreamingSession(ckpt, backend="cuda"), StreamingSession(ckpt, backend="torch")
    xs = random_inputs(gpu.manifest, 30, seed=1)
    for x in xs[:20]:
        gpu.step(x)
    path = gpu.save_state(tmp_path / "s.safetensors")
    after = np.stack([np.array(gpu.step(x)) for x in xs[20:]])
    gpu.load_state(path)
    again = np.stack([np.array(gpu.step(x)) for x in xs[20:]])
    assert np.array_equal(after, again)
    cpu.load_state(path)
    on_cpu = np.stack([np.array(cpu.step(x)) for x in xs[20:]])
    assert float(np.abs(on_cpu - after).max() / on_cpu.std()) <= TOL


@needs_gpu
def test_stream_equals_stepping(tiny):
    ckpt = tiny("rwkv7")
    a, b = StreamingSession(ckpt, backend="cuda"), StreamingSession(ckpt, backend="cuda")
    xs = random_inputs(a.manifest, 300, seed=2)      # more than one device-side chunk (256)
    streamed = np.concatenate(list(a.stream(xs, chunk=150)))
    stepped = np.stack([np.array(b.step(x)) for x in xs])
    assert streamed.shape == stepped.shape and float(np.abs(streamed - stepped).max()) <= 1e-5 * stepped.std()
    assert a.position == b.position == 300


@needs_gpu
def test_gpu_memory_is_flat_over_2000_steps(tiny):
    ckpt = tiny("mamba2")
    sess = StreamingSession(ckpt, backend="cuda")
    xs = random_inputs(sess.manifest, 2000, seed=3)
    for x in xs[:10]:
        sess.step(x)
    torch.cuda.synchronize()
    warm = torch.cuda.memory_allocated()
    for x in xs[10:]:
        sess.step(x)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == warm
    assert np.isfinite(sess.last_y).all()
