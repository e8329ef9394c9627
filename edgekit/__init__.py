"""edgekit: recurrent and spiking models on edge devices.

Single-step stateful graphs for ONNX and ExecuTorch with fused custom ops, constant-memory
streaming sessions, and a Loihi-style fixed-point path for LIF spiking networks.
"""

__version__ = "0.1.0"


def export(src, outdir, **kwargs):
    """Python API of `edgekit export`: src is a checkpoint path or a RecurrentModel."""
    from edgekit.export import export as _export
    return _export(src, outdir, **kwargs)
