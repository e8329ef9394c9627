"""edgekit: recurrent and spiking models on edge devices.

Single-step stateful graphs for ONNX and ExecuTorch with fused custom ops, constant-memory
streaming sessions, and a Loihi-style fixed-point path for LIF spiking networks.
"""

__version__ = "0.1.0"


# The Python API of `edgekit export`: `edgekit.export(src, outdir, ...)` (src: a checkpoint
# path, a RecurrentModel, or a live ncps CfC/LTC module). `edgekit.export` is a callable
# subpackage (see edgekit/export/__init__.py), so this works before and after any import.


def __getattr__(name):   # lazy: `import edgekit` stays light (no torch) until export is used
    if name == "export":
        import importlib
        return importlib.import_module("edgekit.export")
    raise AttributeError(name)
