"""xnnpack_forms: stock ops written in the forms ExecuTorch's XNNPACK delegate runs, for
`.pte` exports. Each rewrite is the same math:

* the mean of squares over the last dim in an RMSNorm, mean(x²) -> a 4-D global average pool
  over (1, D), the only mean XNNPACK takes (4-D, the two innermost dims): as a plain mean it
  runs as a portable op that splits an RMSNorm into two XNNPACK calls. Other means are left
  alone: RWKV-7's per-head group norm (12 heads x 64) as a pool was 2.5-5.7% slower per
  token than the portable mean (paired A/B of the 0.1B .pte, four runs);
* softplus -> max(x, 0) + log1p(e^-|x|), with log1p(u) from log by Goldberg's correction
  log(1 + u) · u / ((1 + u) - 1), and log1p(u) = u where 1 + u rounds to 1 (the indicator
  max(0, 1 - d · 2^23) is 1 exactly when d = (1 + u) - 1 is 0, else 0: d is 0 or at least
  2^-23). torch decomposes F.softplus into log1p / gt / where, which only ExecuTorch's scalar
  portable kernels run (Mamba-130m: 0.6 ms per token for 24 x 1536 elements). Within 3 ulp
  of the float64 softplus for every float32 x (tests/test_passes.py); inf -> inf,
  -inf -> 0, NaN -> NaN;
* gelu(approximate="tanh") -> written out: XNNPACK lowers it to the erf form (5e-4 off).
"""

import torch
import torch.nn.functional as F

from edgekit.export.passes import Pass

GELU_C = 0.7978845608028654   # sqrt(2 / pi)


def pool_mean_last(x: torch.Tensor) -> torch.Tensor:
    """x.mean(-1, keepdim=True) as a (N, 1, 1, D) average pool."""
    return x.reshape(-1, 1, 1, x.shape[-1]).mean((2, 3), keepdim=True).reshape(*x.shape[:-1], 1)


def softplus_exp_log(x: torch.Tensor) -> torch.Tensor:
    u = torch.exp(-x.abs())
    w = 1.0 + u
    d = w - 1.0
    log1p_u = torch.log(w) * u / torch.clamp(d, min=2.0 ** -30) + u * torch.clamp(1.0 - d * 2.0 ** 23, min=0.0)
    return torch.clamp(x, min=0.0) + log1p_u


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def _mean_last(args, kwargs) -> bool:
    """mean(x, -1 or [-1] or its index, keepdim=True) with no dtype."""
    x, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim"))
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    dims = list(dim) if isinstance(dim, (list, tuple)) else [dim]
    return (keep is True and "dtype" not in kwargs and len(dims) == 1 and isinstance(dims[0], int)
            and x.dim() >= 1 and dims[0] % x.dim() == x.dim() - 1)


class XnnpackForms(Pass):
    name = "xnnpack_forms"

    def __init__(self):
        super().__init__()
        self.squares: dict[int, torch.Tensor] = {}     # x² results seen in this trace, by id

    def observe(self, func, args, out):
        if func in (torch.Tensor.pow, torch.pow) and len(args) > 1 and args[1] == 2 and isinstance(out, torch.Tensor):
            self.squares[id(out)] = out                 # held: an id is not reused while traced

    def rewrite(self, func, args, kwargs, ctx):
        if func in (torch.Tensor.mean, torch.mean) and _mean_last(args, kwargs) and id(args[0]) in self.squares:
            return ctx.replace(self, pool_mean_last, args[0])
        if func is F.softplus and len(args) == 1 and not kwargs:
            return ctx.replace(self, softplus_exp_log, args[0])
        if func is F.gelu and kwargs.get("approximate") == "tanh" and len(args) == 1:
            return ctx.replace(self, gelu_tanh, args[0])
        return NotImplemented


PASS = XnnpackForms
