"""Beyond the registry's op battery (tests/test_ops.py), for `edgekit::dense` (y = x Wᵀ + b, the decode GEMV), over T in
{1, small, long} rows and a shape small enough for one thread and one large enough for the
kernel's thread pool: the C++ ExecuTorch kernel and the ONNX function body in ORT vs the
plain reference; the reference vs torch's F.linear; the op has no state, so "split and
carry" and "prefill then steps" check that rows are independent (a T-row call equals its
pieces); bad shapes and aliased outputs rejected; the thread count does not change a bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgekit.ops  # noqa: F401
from edgekit.ops.dense import pack, reference, unpack
from op_battery import close, OpRunners

B = 2
TS = [1, 5, 40]
# (N, K): tails on both axes (N % 4, K % 8 != 0); the large one is split over threads
SHAPES = {"small": (23, 37), "threaded": (258, 203)}


def inputs(T, shape="small", seed=0):
    N, K = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, K, generator=g), pack(torch.randn(N, K, generator=g)), torch.randn(N, generator=g))


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    return OpRunners("dense", tmp_path_factory.mktemp("op-dense"))


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("T", TS)
def test_native_matches_reference(T, shape, runners):
    args = inputs(T, shape)
    want = reference(*args)
    for name, run in runners.all().items():
        assert close(_first(run(*args)), want), name


@pytest.mark.parametrize("T", TS)
def test_reference_matches_torch_linear(T):
    x, w, b = inputs(T, "threaded", seed=3)
    assert close(reference(x, w, b), F.linear(x, unpack(w, *SHAPES["threaded"]), b))


def test_pack_round_trips_and_pads_with_zeros():
    N, K = SHAPES["small"]
    W = torch.randn(N, K)
    w = pack(W)
    assert w.shape == (6, 5, 4, 8)                      # ceil(23 / 4), ceil(37 / 8)
    assert torch.equal(unpack(w, N, K), W)
    assert torch.equal(w[1, 2, 3], W[7, 16:24])         # tile (1, 2), row 3 = W[4 + 3, 16:24]
    full = w.permute(0, 2, 1, 3).reshape(24, 40)
    assert not full[N:].any() and not full[:, K:].any()


def test_nonfinite_input_past_k_is_never_read(runners):
    """The last tile spans 8 columns, past K = 37: row 0's padding columns are row 1's first
    floats in memory. Make those Inf: row 0's outputs must stay finite."""
    x, w, b = inputs(1)
    x[1, 0, :3] = float("inf")
    for name, run in runners.all().items():
        y = torch.as_tensor(np.asarray(_first(run(x, w, b))))
        assert torch.isfinite(y[0]).all(), name


def test_thread_count_does_not_change_a_bit(runners):
    """Each thread owns whole rows of W, so 1 and 2 threads give identical outputs."""
    from edgekit.kernels import kernel_threads, load_kernels, set_kernel_threads
    load_kernels()
    args = inputs(5, "threaded", seed=4)
    before = kernel_threads()
    try:
        set_kernel_threads(1)
        one = np.asarray(runners.et(*args)[0])
        set_kernel_threads(2)
        two = np.asarray(runners.et(*args)[0])
    finally:
        set_kernel_threads(before)
    assert np.array_equal(one, two)
    assert close(two, reference(*args))


def _run_in_child(runners, args, conn):
    y = np.asarray(runners.et(*args)[0])
    conn.send(bool(np.isfinite(y).all()))
    conn.close()


def test_forked_child_runs_the_threaded_kernel(runners):
    """A process forked after the pool started (e.g. a DataLoader worker) has none of the
    parent's pool threads; the kernel must start fresh ones, not wait for the dead ones."""
    import multiprocessing as mp
    args = inputs(3, "threaded", seed=6)
    runners.et(*args)                                   # the parent's pool is running
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_run_in_child, args=(runners, args, child))
    p.start()
    p.join(timeout=120)
    if p.is_alive():
        p.kill()
        pytest.fail("the forked child hung in the kernel's thread pool")
    assert p.exitcode == 0 and parent.recv() is True
