"""Row views for the elementwise kernels: a tensor (..., C) as R rows of C with one row
stride, without a copy when its last dim is contiguous and its leading dims collapse (a
column slice of a wider activation, as Mamba's split of in_proj's output, is such a view)."""

from __future__ import annotations


def rows(t):
    """(t or a contiguous copy, number of rows, row stride in elements)."""
    C = t.shape[-1]
    R = t.numel() // C if C else 0
    if t.dim() == 1:
        return t.contiguous(), 1, C
    if t.stride(-1) == 1:
        stride = t.stride(-2)
        expect = stride
        ok = True
        for d in range(t.dim() - 2, -1, -1):      # each leading dim steps over the ones inside it
            if t.shape[d] != 1 and t.stride(d) != expect:
                ok = False
                break
            expect *= t.shape[d]
        if ok:
            return t, R, stride
    t = t.contiguous()
    return t, R, C
