"""Raster plots of spikes (matplotlib, Agg backend; written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit._io import atomic_path
from edgekit.errors import EdgekitError


def raster_formats() -> list[str]:
    """The file suffixes matplotlib can write (png, pdf, svg, ...); not pgf, which needs a
    LaTeX install."""
    from matplotlib.backend_bases import FigureCanvasBase
    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"})


def check_raster_dest(dest: str | Path) -> Path:
    """Refuse, before any simulation, a raster path matplotlib cannot write: an unknown
    suffix (no suffix means png) or a folder."""
    dest = Path(dest)
    fmts = raster_formats()
    if dest.suffix and dest.suffix.lower().lstrip(".") not in fmts:
        raise EdgekitError(f"raster '{dest}' has an unsupported image suffix",
                           expected=" | ".join(f".{f}" for f in fmts), got=dest.suffix,
                           fix="pass --raster with a .png (or another listed) file name")
    if dest.is_dir():
        raise EdgekitError(f"raster '{dest}' is a directory", expected="an image file name",
                           fix="pass --raster FILE.png")
    return dest


def save_raster(spikes: list, names: list[str], dest: str | Path, *, title: str = "",
                input_spikes: np.ndarray | None = None) -> Path:
    """spikes: per population (T, N) bool for ONE stream; one panel per population."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ([("input", input_spikes)] if input_spikes is not None else []) + list(zip(names, spikes))
    heights = [max(1.0, min(4.0, s.shape[1] / 40)) for _, s in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.2 + 1.3 * sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], panels):
        t, n = np.nonzero(np.asarray(s))
        ax.scatter(t, n, s=2, marker="|", color="k")
        ax.set_ylabel(f"{name}\nneuron")
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
    axes[-1, 0].set_xlabel("time step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lower().lstrip(".") or "png", dpi=110)
    plt.close(fig)
    return dest
