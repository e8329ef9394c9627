"""Custom ops: one module per stateful recurrence kernel (STYLE.md §4).

Each module defines, in one place: the torch.library schema (functional + `.out`), a
plain-loop reference, a fake impl, the ONNX function body (domain ``edgekit``), the name
of its C++ ExecuTorch kernel, and a validator whose messages the C++ kernel repeats word
for word. Importing this package registers every op with torch.

Op names are permanent once an artifact carries them (STYLE.md §12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

DOMAIN = "edgekit"
ONNX_OPSET = 1  # version of the `edgekit` ONNX domain
LIB = torch.library.Library(DOMAIN, "DEF")


@dataclass(frozen=True)
class OpInfo:
    """What every exporter and test needs to know about one custom op."""

    name: str                 # e.g. "rwkv7_wkv"  -> torch.ops.edgekit.rwkv7_wkv
    reference: Callable       # plain torch, loops over T; the decomposed export path
    onnx_function: object     # onnxscript OnnxFunction (domain edgekit)
    cpp_kernel: str           # symbol registered with EXECUTORCH_LIBRARY, e.g. "rwkv7_wkv.out"
    validate: Callable        # raises ValueError with the same words as the C++ kernel

    @property
    def torch_op(self):
        return getattr(torch.ops.edgekit, self.name)

    @property
    def qualname(self) -> str:
        return f"{DOMAIN}::{self.name}"


REGISTRY: dict[str, OpInfo] = {}


def register(info: OpInfo) -> OpInfo:
    if info.name in REGISTRY:
        raise RuntimeError(f"op {info.qualname} registered twice")
    REGISTRY[info.name] = info
    return info


from edgekit.ops import rwkv7_wkv  # noqa: E402,F401  (registers itself)
