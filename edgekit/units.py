"""Human units for text output: kB/MB/GB (powers of 1000, as file managers show them),
times in µs/ms/s, counts with thousands separators. No Python reprs reach the user."""

from __future__ import annotations


def human_bytes(n: int | float) -> str:
    """1234 -> '1.2 kB', 516_850_000 -> '516.9 MB'; never '0.0 MB' for a small file."""
    n = float(n)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n):,} B"


def human_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"
