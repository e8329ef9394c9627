"""One parity test over the architecture registry: every registered architecture writes a
random checkpoint in its real on-disk format (`write_random`), and edgekit — torch eager on
the checkpoint, and its ONNX export — steps it in step with the reference implementation we
did not write (`oracle`): the same outputs, element by element on the std metric. A new
architecture is covered by registering it with its two hooks. The per-architecture files
(tests/test_<arch>_parity.py) add their variants, exports and long-stream checks."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.models import ARCHITECTURES
from edgekit.runtimes.session import StreamingSession

STEPS = 24
TOL = 1e-4       # max|diff| / std(oracle), per step


def _inputs(session: StreamingSession, n: int, rng: np.random.Generator):
    """n inputs of the kind the model takes: token ids below its vocabulary, or (features,
    Δt) rows with irregular Δt."""
    specs = session.manifest.inputs
    if len(specs) == 1:
        vocab = session.manifest.config["vocab_size"]
        return [int(t) for t in rng.integers(0, vocab, n)]
    (x, dt) = specs
    return [(rng.standard_normal(x.shape).astype(np.float32), rng.uniform(0.2, 2.0, dt.shape).astype(np.float32))
            for _ in range(n)]


def _rel(a, ref) -> float:
    a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.abs(a - ref).max() / max(ref.std(), 1e-6))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_architecture_steps_with_its_oracle(arch, tmp_path):
    from edgekit.export import export
    cls = ARCHITECTURES[arch]
    path = cls.write_random(tmp_path / f"{arch}{'.pth' if arch == 'rwkv7' else ''}", seed=5)
    export(path, tmp_path / "out", formats=("onnx",))
    what, oracle = cls.oracle(path)
    eager, onnx = StreamingSession(path), StreamingSession(tmp_path / "out" / "model.onnx")
    xs = _inputs(eager, STEPS, np.random.default_rng(3))
    worst = {"torch": 0.0, "onnx": 0.0}
    for t, x in enumerate(xs):
        ref = oracle(x)
        for name, sess in (("torch", eager), ("onnx", onnx)):
            y = np.array(sess.step(x))
            assert y.shape == ref.shape, (arch, name, y.shape, ref.shape)
            worst[name] = max(worst[name], _rel(y, ref))
    assert max(worst.values()) <= TOL, f"{arch} vs {what}: max|diff|/std over {STEPS} steps {worst}"
