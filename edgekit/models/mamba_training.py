"""Training transformers' Mamba (1) on a CPU.

Without the `mamba_ssm` CUDA kernels, transformers runs Mamba's selective scan in a torch
fallback that slices one time step out of a (batch, channels, time, state) tensor per
position; autograd turns each slice's backward into a zero-filled copy of the whole tensor
(over 60 s per 16 x 256-byte step on a 2-core CPU). `training_scan()` swaps in
`scan_for_training`, the same recurrence computed one step at a time from contiguous slices
(1.6 s per step at width 256, 4 layers), for as long as it is entered; `reference_scan_gap`
measures a model against transformers' own scan. Used by scripts/train_tiny.py and
`edgekit quantize` (edgekit/quant/qat.py). Nothing here is needed to load or export a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scan_for_training(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False, **_):
    """transformers' mamba_selective_scan torch fallback with the same arithmetic, one time
    step at a time: the step's discretized A, B·x, state and output are computed from
    contiguous (batch, channels[, state]) slices taken by one unbind of each input (whose
    backward is one stack, not one full-size zero tensor per step), so nothing of size
    (batch, channels, time, state) is built (it does not fit a CPU's caches)."""
    input_dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    steps = zip(dt.permute(2, 0, 1).unbind(0), hidden_states.permute(2, 0, 1).float().unbind(0),
                B.permute(2, 0, 1).float().unbind(0), C.permute(2, 0, 1).unsqueeze(-1).unbind(0))
    h = torch.zeros(hidden_states.shape[0], hidden_states.shape[1], A.shape[-1], dtype=input_dtype,
                    device=hidden_states.device)
    ys = []
    for dt_t, x_t, B_t, C_t in steps:                                   # (b, D), (b, D), (b, N), (b, N, 1)
        h = torch.exp(A[None] * dt_t[..., None]) * h + (dt_t[..., None] * B_t[:, None, :]) * x_t[..., None]
        ys.append(torch.matmul(h.to(input_dtype), C_t)[..., 0])        # (b, D)
    y = torch.stack(ys, -1)                                             # (b, D, L)
    if D is not None:
        y = y + hidden_states * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    return (y, h) if return_last_state else y


class training_scan:
    """Within: transformers' Mamba runs `scan` (default: scan_for_training) as its selective
    scan; the one it had is put back on the way out."""

    def __init__(self, scan=None):
        from transformers.models.mamba import modeling_mamba
        self._module, self._scan = modeling_mamba, scan or scan_for_training
        _REFERENCE_SCAN.setdefault("scan", modeling_mamba.mamba_selective_scan)

    def __enter__(self):
        self._saved = self._module.mamba_selective_scan
        self._module.mamba_selective_scan = self._scan

    def __exit__(self, *exc):
        self._module.mamba_selective_scan = self._saved


_REFERENCE_SCAN: dict = {}     # transformers' own, as it was before any swap


@torch.no_grad()
def reference_scan_gap(model, x: torch.Tensor) -> float:
    """max |logits with the training scan - logits with transformers' own| / std(reference)."""
    model.eval()
    with training_scan():
        got = model(x, use_cache=False).logits.float()
    with training_scan(_REFERENCE_SCAN["scan"]):
        ref = model(x, use_cache=False).logits.float()
    model.train()
    return float((got - ref).abs().max() / ref.std())
