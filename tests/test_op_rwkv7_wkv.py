"""`edgekit::rwkv7_wkv` beyond the registry's battery (tests/test_ops.py): the reference vs
the paper's matrix form at the released head size N = 64."""

from __future__ import annotations

import torch

from edgekit.ops import REGISTRY
from edgekit.ops.rwkv7_wkv import reference
from op_battery import close

H, N = 2, 64


def inputs(T, seed=0, B=2):
    return REGISTRY["rwkv7_wkv"].sample_inputs(T, seed=seed, B=B, H=H, N=N)


def test_reference_matches_paper_form():
    """The reference equals the matrix form S·(diag(w) + aᵀb) + vᵀk written out per head."""
    r, w, k, v, a, b, S = inputs(3, seed=3, B=1)
    y, S_ref = reference(r, w, k, v, a, b, S)
    S = S[0].double()
    for t in range(3):
        ys = []
        for h in range(H):
            M = torch.diag(w[0, t, h].double()) + torch.outer(a[0, t, h].double(), b[0, t, h].double())
            S[h] = S[h] @ M + torch.outer(v[0, t, h].double(), k[0, t, h].double())
            ys.append(S[h] @ r[0, t, h].double())
        assert close(y[0, t], torch.stack(ys).float())
    assert close(S_ref[0], S.float())

