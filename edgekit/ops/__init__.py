"""Custom ops: one module per stateful recurrence kernel (STYLE.md §4); `dense`, the
decode GEMV with edgekit's own ExecuTorch kernel (see edgekit/ops/dense.py for why); and
the elementwise glue between two GEMVs as edgekit kernels rather than XNNPACK calls
(`add_rms_norm`, `gated_rms_norm`, `silu_mul`, `gelu_tanh_mul`,
`softplus_bias`; edgekit/ops/add_rms_norm.py says why).

Each module defines, in one place: the torch.library schema (functional + `.out`), a
plain-loop reference, a fake impl, the ONNX function body (domain ``edgekit``), the name
of its C++ ExecuTorch kernel, and a validator whose messages the C++ kernel repeats word
for word. Importing this package registers every op with torch (the modules below register
themselves with `edgekit.ops.registry`; none imports this package).

Op names are permanent once an artifact carries them (STYLE.md §12).
"""

from __future__ import annotations

from edgekit.ops.registry import (DOMAIN, LIB, ONNX_OPSET, REGISTRY, OpInfo, call,  # noqa: F401
                                  in_place_name, register)

# Each op module registers its op with edgekit.ops.registry when imported.
from edgekit.ops import rwkv7_wkv  # noqa: E402,F401  (registers itself)
from edgekit.ops import mamba_step, ssd_step, causal_conv1d  # noqa: E402,F401  (register themselves)
from edgekit.ops import cfc_step, ltc_step  # noqa: E402,F401  (register themselves)
from edgekit.ops import rglru_step  # noqa: E402,F401  (registers itself)
from edgekit.ops import dense, qlinear  # noqa: E402,F401  (register themselves)
from edgekit.ops import add_rms_norm, gated, gated_rms_norm, softplus_bias  # noqa: E402,F401  (register themselves)
