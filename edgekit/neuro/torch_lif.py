"""edgekit's torch LIF / CubaLIF modules, trained with surrogate gradients.

They compute exactly the float twin of the compiled network (``edgekit.neuro.sim`` float
mode), including Loihi's one-step delay per Dense connection, so a model trained here
compiles without surprises::

    CubaLIF:  u[t] = a_syn u[t-1] + I[t];  v[t] = a_mem v[t-1] + u[t]
    LIF:      v[t] = a_mem v[t-1] + I[t]
    s[t] = H(v[t] - theta);  v[t] <- 0 where s[t]          (H: Heaviside; surrogate below)
    I[t] = W s_prev[t-1]                                  (one step late, as Lava's Dense)

with a = exp(-dt / tau). ``to_graph`` writes the NIR-style continuous parameters whose
exact discretization at dt gives back these a's and unit gains (w_in = 1/(1 - a_syn),
r = 1/(1 - a_mem)).

Surrogate gradient: dH/dx ~ 1 / (1 + k|x|)^2 (the "fast sigmoid" of SuperSpike, Zenke &
Ganguli 2018), k = 10 / theta.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edgekit.neuro import graph as G


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1 + ctx.k * x.abs()) ** 2, None


def spike(x: torch.Tensor, k: float = 10.0) -> torch.Tensor:
    return _Spike.apply(x, k)


class LIF(nn.Module):
    """Leaky integrate-and-fire, reset to 0. tau_mem [s], threshold, dt [s]."""

    kind = "LIF"

    def __init__(self, n: int, tau_mem: float, threshold: float = 1.0, dt: float = 1e-3) -> None:
        super().__init__()
        self.n, self.tau_mem, self.threshold, self.dt = n, tau_mem, threshold, dt
        self.a_mem = math.exp(-dt / tau_mem)

    def init_state(self, B: int) -> dict:
        return {"v": torch.zeros(B, self.n)}

    def step(self, I: torch.Tensor, st: dict) -> torch.Tensor:
        v = self.a_mem * st["v"] + I
        s = spike(v - self.threshold, 10.0 / self.threshold)
        st["v"] = v * (1 - s.detach())
        return s

    def to_node(self) -> G.Node:
        n = self.n
        return G.LIF(tau=np.full(n, self.tau_mem), r=np.full(n, 1 / (1 - self.a_mem)),
                     v_leak=np.zeros(n), v_threshold=np.full(n, self.threshold),
                     v_reset=np.zeros(n))


class CubaLIF(LIF):
    """Current-based LIF: a synaptic current u with tau_syn feeding v with tau_mem."""

    kind = "CubaLIF"

    def __init__(self, n: int, tau_syn: float, tau_mem: float, threshold: float = 1.0,
                 dt: float = 1e-3) -> None:
        super().__init__(n, tau_mem, threshold, dt)
        self.tau_syn = tau_syn
        self.a_syn = math.exp(-dt / tau_syn)

    def init_state(self, B: int) -> dict:
        return {"u": torch.zeros(B, self.n), "v": torch.zeros(B, self.n)}

    def step(self, I: torch.Tensor, st: dict) -> torch.Tensor:
        st["u"] = self.a_syn * st["u"] + I
        return super().step(st["u"], st)

    def to_node(self) -> G.Node:
        n = self.n
        return G.CubaLIF(tau_syn=np.full(n, self.tau_syn), tau_mem=np.full(n, self.tau_mem),
                         r=np.full(n, 1 / (1 - self.a_mem)), w_in=np.full(n, 1 / (1 - self.a_syn)),
                         v_leak=np.zeros(n), v_threshold=np.full(n, self.threshold),
                         v_reset=np.zeros(n))


class SpikingMLP(nn.Module):
    """Linear -> neurons -> Linear -> neurons ...; x (B, T, n_in) spikes -> per layer spikes."""

    def __init__(self, sizes: list[int], neurons: list[LIF], dt: float) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        self.neurons = nn.ModuleList(neurons)
        self.sizes, self.dt = sizes, dt

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        B, T, _ = x.shape
        states = [nrn.init_state(B) for nrn in self.neurons]
        prev = [torch.zeros(B, n) for n in self.sizes]          # spikes of step t-1, per stage
        out = [[] for _ in self.neurons]
        for t in range(T):
            cur = [x[:, t]]
            for i, (fc, nrn) in enumerate(zip(self.fc, self.neurons)):
                s = nrn.step(fc(prev[i]), states[i])            # one step of delay per Dense
                cur.append(s)
                out[i].append(s)
            prev = cur
        return [torch.stack(o, 1) for o in out]                  # per layer (B, T, n)

    def to_graph(self) -> G.SNNGraph:
        nodes = {"input": G.Input(shape=(self.sizes[0],))}
        edges, last = [], "input"
        for i, (fc, nrn) in enumerate(zip(self.fc, self.neurons)):
            nodes[f"fc{i}"] = G.Linear(weight=fc.weight.detach().double().numpy())
            nodes[f"lif{i}"] = nrn.to_node()
            edges += [(last, f"fc{i}"), (f"fc{i}", f"lif{i}")]
            last = f"lif{i}"
        nodes["output"] = G.Output(shape=(self.sizes[-1],))
        edges.append((last, "output"))
        return G.SNNGraph(nodes, edges, {"dt": self.dt, "dt_origin": "edgekit torch model",
                                         "integrator": "exact", "source": "edgekit.torch_lif"})
