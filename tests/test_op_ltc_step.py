"""`edgekit::ltc_step` beyond the registry's battery (tests/test_ops.py): one step of the
reference, with edgekit's conversion-time folding, vs ncps' LTCCell."""

from __future__ import annotations

import torch

from op_battery import close

I = 4


def test_reference_matches_ncps_cell():
    """One step of the reference (with edgekit's conversion-time folding) equals ncps'
    LTCCell with softplus constraints and a sparse wiring."""
    from ncps.torch import LTCCell
    from ncps.wirings import AutoNCP
    from edgekit.models.cfc import LTC
    torch.manual_seed(0)
    cell = LTCCell(AutoNCP(10, 3), I, implicit_param_constraints=True).eval()
    cfg = {"framework": "ncps", "class": "LTC", "input_size": I, "units": {"wiring": "AutoNCP", "units": 10, "output_size": 3}, "input_mapping": "affine",
           "output_mapping": "affine", "ode_unfolds": 6, "epsilon": 1e-8, "implicit_param_constraints": True}
    m = LTC(cfg, {"rnn_cell." + k: v for k, v in cell.state_dict().items()})
    x, v = torch.randn(1, I), torch.randn(1, 10) * 0.1
    with torch.no_grad():
        _, ref = cell(x, v, torch.tensor(0.7))
        _, st = m.step((x, torch.full((1, 1), 0.7)), {"v": v})
    assert close(st["v"], ref, 1e-6)

