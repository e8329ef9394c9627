"""torch eager backend: the model itself, stepping with its own `step`. The reference
path (and the only one that needs no export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekit.runtimes.base import Backend


def open_checkpoint(path: Path, threads: int | None = None):
    """A checkpoint (any registered architecture) as (manifest, TorchBackend, the folder its
    tokenizer file is in)."""
    from edgekit.models import load_model
    model = load_model(path)
    tok = model.tokenizer()
    base = tok.file.parent if tok and tok.file else Path(path).parent
    return model.manifest(batch=1, ops="fused"), TorchBackend(model, threads=threads), base


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, batch: int = 1, threads: int | None = None):
        if threads is not None:
            if threads < 1:
                from edgekit.errors import EdgekitError
                raise EdgekitError(f"--threads {threads} is not positive", fix="pass --threads 1 or more")
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.model = model.eval().requires_grad_(False)
        self.state = model.init_state(batch)

    @torch.inference_mode()
    def step(self, xs):
        xs = [torch.from_numpy(np.asarray(x)) for x in xs]
        y, self.state = self.model.step(xs[0] if len(xs) == 1 else tuple(xs), self.state)
        return y.numpy()

    def get_state(self):
        return {n: t.numpy().copy() for n, t in self.state.items()}

    def set_state(self, state):
        self.state = {n: torch.from_numpy(np.array(state[n])) for n in self.state}

    # The model's own sequence form (`forward` over (B, T)) is its prefill: a torch session
    # ingests prompts and scores text (edgekit eval) a chunk per call, not a token per call.
    prefill_len = 64

    @torch.inference_mode()
    def prefill(self, xs: np.ndarray) -> np.ndarray:
        y, self.state = self.model(torch.from_numpy(np.asarray(xs)), self.state)
        return y.numpy()

