"""The two single-step modules every exporter traces, built from a model's state spec.

* `StepIO`: state as graph inputs and outputs — ``(x_t, *state) -> (y_t, *state')``.
  ONNX always uses it; ExecuTorch can.
* `StepBuffers`: state kept in place in mutable buffers — ``x_t -> y_t``; the new state
  is copied into the buffers (or, for a fused op's state, written there by the op
  itself: passes/reinplace_state.py), which ExecuTorch keeps in its planned memory arena
  across `execute` calls. The runtime reads/writes them with `get_attribute`.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.export.passes import note_state_buffers
from edgekit.models.base import RecurrentModel


def buffer_name(state_name: str) -> str:
    """`layers.3.wkv` -> `state__layers__3__wkv` (module attribute names cannot hold dots)."""
    return "state__" + state_name.replace(".", "__")


def output_name(state_name: str) -> str:
    return state_name + ".out"


def _pack(xs):
    return xs[0] if len(xs) == 1 else tuple(xs)


class StepIO(nn.Module):
    """One step, state as I/O: ``(*inputs, *state) -> (y, *state')``."""

    seq = False

    def __init__(self, model: RecurrentModel, batch: int = 1):
        super().__init__()
        self.model = model
        self.n_in = len(model.input_spec(batch))
        self.names = [s.name for s in model.state_spec(batch)]

    def forward(self, *args):
        xs, state = args[:self.n_in], args[self.n_in:]
        run = self.model if self.seq else self.model.step
        y, new = run(_pack(xs), dict(zip(self.names, state)))
        return (y, *[new[n] for n in self.names])


class StepBuffers(nn.Module):
    def __init__(self, model: RecurrentModel, batch: int = 1):
        super().__init__()
        self.model = model
        self.names = [s.name for s in model.state_spec(batch)]
        for name, t in model.init_state(batch).items():
            self.register_buffer(buffer_name(name), t.clone())

    def forward(self, *xs):
        state = {n: getattr(self, buffer_name(n)) for n in self.names}
        note_state_buffers(state.values())
        y, new = self.model.step(_pack(xs), state)
        for n in self.names:
            if new[n] is not state[n]:          # not already updated in place (reinplace_state)
                state[n].copy_(new[n])
        return y


class SeqIO(StepIO):
    """The sequence form (prefill) over a fixed chunk of T steps, state as I/O:
    ``(x[B, T], *state) -> (y[B, T, ...], *state')``."""

    seq = True


def graph_input_spec(model: RecurrentModel, batch: int = 1, seq_len: int | None = None):
    """The step's inputs, or for a prefill graph the same with a T axis after the batch."""
    from edgekit.models.base import StateSpec
    spec = model.input_spec(batch)
    if seq_len is None:
        return spec
    return [StateSpec(s.name, (s.shape[0], seq_len, *s.shape[1:]), s.dtype) for s in spec]


def example_inputs(model: RecurrentModel, batch: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor, ...]:
    """Trace inputs: zeros, except inputs named dt (elapsed time), which are ones."""
    return tuple((torch.ones if s.name == "dt" else torch.zeros)(s.shape, dtype=s.dtype)
                 for s in graph_input_spec(model, batch, seq_len))
