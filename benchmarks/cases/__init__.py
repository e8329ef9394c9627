"""Benchmark cases for benchmarks/step_latency.py: one module per model shape.

A case module defines NAME, SHAPE, make(dir) -> path, oracle(path) -> (label, step_fn) | None,
and inputs(n, rng) -> list of per-step inputs (as StreamingSession.step takes them). The
checkpoint and the oracle come from the architecture's own hooks (`write_random`, `oracle`,
edgekit/models/base.py), the ones tests/test_arch_parity.py checks.
"""

from __future__ import annotations

from pathlib import Path


def make_checkpoint(arch: str, path: Path, seed: int = 1, **shape) -> Path:
    """The architecture's random checkpoint at path (written once; later runs reuse it)."""
    from edgekit.models import ARCHITECTURES
    done = path / "config.json" if path.suffix != ".pth" else path
    if done.exists():
        return path
    return ARCHITECTURES[arch].write_random(path, seed=seed, **shape)


def oracle(arch: str, path: Path):
    from edgekit.models import ARCHITECTURES
    return ARCHITECTURES[arch].oracle(path)


def tokens(n, rng, vocab: int) -> list[int]:
    return [int(t) for t in rng.integers(0, vocab, n)]
