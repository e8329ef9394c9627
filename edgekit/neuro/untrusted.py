"""Reading files edgekit did not write: every array's size is checked before its data is read.

A file's declared sizes cost nothing to forge. A 35 KB NIR file can hold a chunked, gzip
compressed (200000, 2000) float64 dataset whose chunks were never written (reading it
allocates 3 GB of fill values), and a few-KB ``.npz`` can hold a compressed array of
gigabytes. So the readers here look at each array's declared shape and dtype first (the
HDF5 dataspace; the ``.npy`` header inside the zip) and refuse the file, naming the array,
its shape and the limit, as soon as the arrays read so far declare more than ``max_bytes``.

The limit, ``MAX_READ_MIB`` = 256 MiB of arrays per file (``--max-read-mib`` raises it):
the largest network the loihi2 profile can map holds 128 cores x 128 KiB x 8 bits / 8-bit
weights = 16.8M dense weights, 134 MB as float64 (NIR, saved SNN) and 134 MB as
int32 + float32 (a compiled ``network.npz``). A file over twice that is not a network any
edgekit device holds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

MAX_READ_MIB = 256
MAX_READ_BYTES = MAX_READ_MIB << 20
MAX_DEPTH = 32          # HDF5 group nesting (a NIR graph nests node/nodes/NAME/nodes/...)
MAX_OBJECTS = 100_000   # HDF5 groups + datasets, or .npz members, per file


def max_read_bytes(mib: float | None) -> int:
    """``--max-read-mib`` as bytes (None: the default)."""
    if mib is None:
        return MAX_READ_BYTES
    if not (math.isfinite(mib) and mib > 0):
        raise EdgekitError("--max-read-mib must be a positive number of MiB", got=str(mib),
                           fix=f"omit it (default {MAX_READ_MIB}) or pass a larger number")
    return math.ceil(mib * (1 << 20))


def size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):,.{2 if shift == 30 else 1}f} {unit}"
    return f"{n} B"


class _Budget:
    """Bytes declared by the arrays of one file, against the limit."""

    def __init__(self, path: Path, what: str, max_bytes: int) -> None:
        self.path, self.what, self.max_bytes = path, what, max_bytes
        self.used = 0
        self.objects = 0

    def count(self) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise EdgekitError(f"{self.what} '{self.path}' holds more than {MAX_OBJECTS:,} "
                               f"objects", expected="a network file", fix="check the file")

    def take(self, name: str, shape: tuple | None, dtype: np.dtype) -> None:
        """Account for one array before reading it; refuse if the file goes over the limit."""
        self.count()
        if shape is not None and any(int(d) < 0 for d in shape):
            raise EdgekitError(f"{self.what} '{self.path}': array '{name}' has a negative "
                               f"dimension", got=str(tuple(shape)), fix="check the file")
        n = math.prod(shape) * dtype.itemsize if shape is not None else 0  # python ints
        if self.used + n > self.max_bytes:
            mib = self.max_bytes / (1 << 20)
            raise EdgekitError(
                f"{self.what} '{self.path}': array '{name}' declares shape {tuple(shape)} "
                f"{dtype} = {size_text(n)}, over the read limit",
                expected=f"at most {size_text(self.max_bytes)} of arrays per file "
                         f"(--max-read-mib {mib:.4g})",
                got=f"{size_text(self.used + n)} with this array",
                fix="a network that large maps to no edgekit device; if you trust the file, "
                    "raise --max-read-mib")
        self.used += n


def read_nir(path: str | Path, max_bytes: int = MAX_READ_BYTES):
    """``nir.read(path, type_check=False)``, checking every dataset's size before reading it.

    Reads the file once, as nir.serialization.read does (the groups under ``/node`` become
    a dict for ``nir.dict2NIRNode``), refusing soft and external links and datasets whose
    data lives in other files (virtual, external storage): nir.write makes none, and they
    would make edgekit read other files. Nesting deeper than MAX_DEPTH (a hard-link cycle)
    is refused too.
    """
    import h5py
    import nir

    path = Path(path)
    budget = _Budget(path, "NIR file", max_bytes)

    def group_dict(group, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise EdgekitError(f"NIR file '{path}': groups are nested more than {MAX_DEPTH} "
                               f"deep", expected="a NIR graph", got="a deeper (or cyclic) group "
                               f"tree, at '{group.name[:80]}...'", fix="re-export the model")
        out = {}
        for key in group.keys():
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise EdgekitError(f"NIR file '{path}': '{group.name}/{key}' is an HDF5 "
                                   f"{type(link).__name__}", expected="plain groups and "
                                   "datasets (nir.write writes no links)",
                                   got=type(link).__name__, fix="re-export the model")
            item = group[key]
            k = key.decode("utf8") if isinstance(key, bytes) else key
            if isinstance(item, h5py.Group):
                budget.count()
                out[k] = group_dict(item, depth + 1)
            elif isinstance(item, h5py.Dataset):
                if item.is_virtual or item.external:   # its data would come from other files
                    raise EdgekitError(f"NIR file '{path}': dataset '{item.name}' keeps its "
                                       f"data in other files", expected="data stored in the "
                                       "file itself (nir.write)", got="a virtual dataset"
                                       if item.is_virtual else "external storage",
                                       fix="re-export the model")
                budget.take(item.name, item.shape, item.dtype)   # before any data is read
                v = item[()]
                out[k] = v.decode("utf8") if isinstance(v, bytes) else v
        return out

    with h5py.File(path, "r") as f:
        d = group_dict(f["node"], 1)
    if "type_check" in d:
        raise ValueError("the graph has a 'type_check' key")       # as nir.read refuses it
    d["type_check"] = False          # edgekit checks shapes itself (passes.lower)
    return nir.dict2NIRNode(d)


def load_npz(path: str | Path, what: str, fix: str,
             max_bytes: int = MAX_READ_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, each ``.npy`` header checked before any data is read.

    Refuses (EdgekitError naming ``what`` and ``fix``) a file that is not a zip of ``.npy``
    members, object arrays, and arrays that together declare more than ``max_bytes``.
    """
    import zipfile
    import zlib

    path = Path(path)
    budget = _Budget(path, what, max_bytes)
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}

    def bad(why: str) -> EdgekitError:
        return EdgekitError(f"{what} '{path}' cannot be read", expected="an .npz of numeric "
                            "arrays (numpy.savez)", got=why, fix=fix)

    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise bad(f"member '{info.filename}' is not a .npy array")
                name = info.filename[:-4]
                with zf.open(info) as fh:
                    version = fmt.read_magic(fh)
                    if version not in readers:
                        raise bad(f"member '{info.filename}' has .npy format {version}")
                    shape, _, dtype = readers[version](fh)
                if dtype.hasobject:
                    raise bad(f"array '{name}' holds Python objects ({dtype})")
                budget.take(name, shape, dtype)                    # before any data is read
                with zf.open(info) as fh:
                    out[name] = fmt.read_array(fh, allow_pickle=False)
    except EdgekitError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as e:
        # not a zip, a truncated member, an unknown compression method, a bad .npy header
        raise bad(f"{type(e).__name__}: {str(e)[:80]}") from None
    return out
