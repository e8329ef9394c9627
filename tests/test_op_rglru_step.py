"""`edgekit::rglru_step` beyond the registry's battery (tests/test_ops.py): the reference vs
transformers' RecurrentGemmaRglru and its block's decode-mode Conv1D (code we did not
write), and a reset step forgetting the state."""

from __future__ import annotations

import torch

from edgekit.ops import REGISTRY
from edgekit.ops.rglru_step import reference
from op_battery import close

D, H, K = 32, 4, 4


def test_reference_matches_transformers_rglru():
    """The reference's conv + RG-LRU equals transformers' RecurrentGemmaRglru and the
    block's decode-mode Conv1D, step by step from a reset (code we did not write)."""
    from transformers import RecurrentGemmaConfig
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRglru
    cfg = RecurrentGemmaConfig(hidden_size=D, lru_width=D, num_attention_heads=H, conv1d_width=K)
    torch.manual_seed(0)
    lru = RecurrentGemmaRglru(cfg)
    with torch.no_grad():
        for p in (lru.input_gate_weight, lru.recurrent_gate_weight):
            p.copy_(torch.randn_like(p) / (D // H) ** 0.5)
        for p in (lru.input_gate_bias, lru.recurrent_gate_bias):
            p.copy_(torch.randn_like(p) * 0.3)
        lru.recurrent_param.copy_(torch.randn(D))
    conv_w, conv_b = torch.randn(D, 1, K) * 0.5, torch.randn(D) * 0.1
    x = torch.randn(1, 6, D)
    gate_w = torch.cat([lru.input_gate_weight, lru.recurrent_gate_weight], -1).detach()
    gate_b = torch.cat([lru.input_gate_bias, lru.recurrent_gate_bias], -1).detach()
    log_a = (-8.0 * torch.nn.functional.softplus(lru.recurrent_param)).detach()
    reset = torch.zeros(1, 6)
    reset[0, 0] = 1.0
    y, _, _ = reference(x, reset, conv_w[:, 0].t().contiguous(), conv_b, gate_w, gate_b, log_a,
                        torch.zeros(1, D, K - 1), torch.zeros(1, D))
    lru.recurrent_states = torch.zeros(1, D)
    conv_state, ys = torch.zeros(1, D, K - 1), []
    with torch.no_grad():
        for t in range(6):   # the decode path of RecurrentGemmaRecurrentBlock.forward
            cs = torch.cat([conv_state, x[:, t, :, None]], -1)
            u = (torch.sum(cs * conv_w[:, 0, :], dim=-1) + conv_b)[:, None]
            conv_state = cs[:, :, 1:]
            ys.append(lru(u, torch.tensor([[t]])))
    assert close(y, torch.cat(ys, 1))


def test_reset_forgets_the_state():
    """At a reset step the old h has no influence and the input is not normalized."""
    args = list(REGISTRY["rglru_step"].sample_inputs(3, seed=4, B=1, D=D, H=H, K=K, reset_first=True))
    y1, _, _ = reference(*args)
    args[8] = torch.randn(1, D) * 100          # h_state
    y2, _, _ = reference(*args)
    assert close(y1, y2)

