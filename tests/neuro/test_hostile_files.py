"""Hostile and clumsy files: every file `edgekit neuro` reads is untrusted.

Memory bombs (small files declaring huge arrays) are refused before any data is read, with
the real process's own peak RSS measured; device names cannot be paths; a compiled network
a user edited gives one line naming what is wrong. All through the real `edgekit` process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgekit.neuro import graph as G
from edgekit.neuro.device import load_device
from edgekit.neuro.passes import compile_graph
from edgekit_testutil import REPO, assert_clean_failure, assert_no_output, run_cli
from tests.neuro.test_compile import mlp_graph

PEAK_MB = 500          # a refused bomb must not cost more than this (the process itself: ~70 MB)


# Runs argv[2:] and writes its peak RSS (KiB) to argv[1]. The measuring process must be a
# small fresh one: a child exec'd straight from pytest starts with pytest's own high-water
# mark in ru_maxrss (Linux carries the pre-exec mm's peak over), so after a big test the
# reading would be pytest's size, not edgekit's.
_PEAK = ("import resource, subprocess, sys\n"
         "code = subprocess.call(sys.argv[3:], timeout=float(sys.argv[2]))\n"
         "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
         "open(sys.argv[1], 'w').write(str(peak))\n"
         "sys.exit(code)\n")


def run_cli_peak(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """run_cli, and that `edgekit` process's own peak RSS in MB."""
    with tempfile.TemporaryDirectory() as d:
        peak = Path(d) / "peak"
        r = subprocess.run([sys.executable, "-c", _PEAK, peak, str(timeout), sys.executable,
                            "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                           cwd=REPO, timeout=timeout + 30)
        return r, int(peak.read_text()) / 1024              # Linux: KiB


def write_nir(path: Path, n_in: int = 20, n: int = 3) -> Path:
    import nir
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "w": nir.Linear(weight=np.full((n, n_in), 0.1)),
        "lif": nir.LIF(tau=np.full(n, 1e-2), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "w"), ("w", "lif"), ("lif", "output")], type_check=False)
    nir.write(path, g)
    return path


def npz_bomb(path: Path, arrays: dict, name: str, shape: tuple, dtype=np.float64) -> Path:
    """An .npz holding `arrays` and, as `name`, a deflated all-zero array declaring `shape`.

    The deflate stream is one compressed MiB of zeros repeated (each block ends in a full
    flush, so blocks are independent): ~1 KB on disk per MiB declared, built in
    milliseconds. Written with the zip format's own headers (zipfile cannot store data that
    is already compressed).
    """
    members = []
    for k, a in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(a))
        members.append((k, buf.getvalue(), None))
    hdr = npy_header(shape, dtype)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    assert nbytes % (1 << 20) == 0 and nbytes < 1 << 32      # no zip64 needed
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(hdr) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.flush(zlib.Z_FINISH)
    crc = zlib.crc32(hdr)
    zero = bytes(1 << 20)
    for _ in range(nbytes >> 20):
        crc = zlib.crc32(zero, crc)
    data = head + block * (nbytes >> 20) + tail
    members.append((name, data, (crc, len(hdr) + nbytes)))
    with open(path, "wb") as f:
        central = b""
        for k, payload, deflated in members:
            fname = f"{k}.npy".encode()
            if deflated is None:
                method, crc_, size, usize = 0, zlib.crc32(payload), len(payload), len(payload)
            else:
                method, (crc_, usize), size = 8, deflated, len(payload)
            off = f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc_, size,
                                usize, len(fname), 0) + fname + payload)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0,
                                   crc_, size, usize, len(fname), 0, 0, 0, 0, 0, off) + fname
        cd = f.tell()
        f.write(central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members),
                                      len(members), len(central), cd, 0))
    return path


def npy_header(shape, dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


# -- 1. memory bombs -------------------------------------------------------------------------
def test_nir_memory_bomb_refused_before_reading(tmp_path):
    """A ~30 KB NIR file whose weight is a chunked, gzip-compressed (200000, 2000) float64
    dataset (3 GB of fill values once read) is refused by its declared shape."""
    import h5py
    src = write_nir(tmp_path / "bomb.nir", n_in=2000)
    with h5py.File(src, "a") as f:
        del f["node/nodes/w/weight"]
        f["node/nodes/w"].create_dataset("weight", shape=(200000, 2000), dtype="f8",
                                         chunks=(1000, 2000), compression="gzip")
    assert src.stat().st_size < 100_000
    r, peak = run_cli_peak("neuro", "compile", src, "-o", tmp_path / "out")
    assert_clean_failure(r, "'/node/nodes/w/weight'", "(200000, 2000)", "256.0 MiB",
                         "--max-read-mib")
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("where", ["saved-snn", "compiled-network"])
def test_npz_memory_bomb_refused_before_reading(tmp_path, rng, where):
    """A ~1 MB .npz whose member inflates to 1 GiB: a saved SNN given to compile, and a
    compiled network.npz given to simulate."""
    if where == "saved-snn":
        src = tmp_path / "m.npz"
        mlp_graph(rng, [5, 4]).save(src)
        arrays = dict(np.load(src))
        npz_bomb(src, {k: v for k, v in arrays.items() if k != "w0.weight"}, "w0.weight",
                 (8192, 16384))
        args = ("compile", src, "-o", tmp_path / "out")
    else:
        c = compile_graph(mlp_graph(rng, [5, 4]), load_device("loihi2"))[0].save(tmp_path / "c")
        arrays = dict(np.load(c / "network.npz"))
        npz_bomb(c / "network.npz", {k: v for k, v in arrays.items() if k != "W_0"}, "W_0",
                 (8192, 16384))
        np.save(tmp_path / "x.npy", np.zeros((10, 5), np.uint8))
        args = ("simulate", c, "--input", tmp_path / "x.npy")
    assert (src if where == "saved-snn" else c / "network.npz").stat().st_size < 2 << 20
    r, peak = run_cli_peak("neuro", *args)
    name = "w0.weight" if where == "saved-snn" else "W_0"
    assert_clean_failure(r, f"'{name}'", "(8192, 16384)", "1.00 GiB", "--max-read-mib")
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"
    assert_no_output(tmp_path / "out")


def test_composed_weights_refused_before_allocating(tmp_path):
    """Two 160 KB Linear nodes, (1, 20000) then (20000, 1), multiply out to a 20000 x 20000
    matrix (3.2 GB): lower refuses it by its size."""
    n = 20000
    g = G.SNNGraph({"in": G.Input(shape=(n,)), "a": G.Linear(weight=np.full((1, n), 0.01)),
                    "b": G.Linear(weight=np.full((n, 1), 0.01)),
                    "lif": G.LIF(tau=1e-2, r=1.0, v_leak=0.0, v_threshold=1.0, v_reset=0.0),
                    "out": G.Output(shape=(n,))},
                   [("in", "a"), ("a", "b"), ("b", "lif"), ("lif", "out")],
                   {"dt": 1e-3, "integrator": "exact"})
    g.save(tmp_path / "chain.npz")
    r, peak = run_cli_peak("neuro", "compile", tmp_path / "chain.npz", "-o", tmp_path / "out")
    assert_clean_failure(r, "'b'", "20000 x 20000")
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"
    assert_no_output(tmp_path / "out")


def test_read_limit_option(tmp_path):
    """--max-read-mib lowers (and raises) the limit; a bad value is refused."""
    src = write_nir(tmp_path / "m.nir", n_in=2000)             # 48 KB of weights
    r = run_cli("neuro", "compile", src, "--max-read-mib", "0.01", "-o", tmp_path / "out")
    assert_clean_failure(r, "'/node/nodes/w/weight'", "(3, 2000)", "--max-read-mib 0.01")
    r = run_cli("neuro", "compile", src, "--max-read-mib", "-1", "-o", tmp_path / "out")
    assert_clean_failure(r, "--max-read-mib", "-1")
    assert_no_output(tmp_path / "out")
    r = run_cli("neuro", "compile", src, "--max-read-mib", "1", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr


def test_nir_links_refused(tmp_path):
    """An external link or a dataset with external storage makes HDF5 read another file
    (before the fix both compiled another file's bytes into the weights); a hard-link cycle
    would recurse forever: all refused by name."""
    import h5py
    other = write_nir(tmp_path / "other.nir")
    src = write_nir(tmp_path / "ext.nir")
    with h5py.File(src, "a") as f:
        del f["node/nodes/w/weight"]
        f["node/nodes/w"]["weight"] = h5py.ExternalLink(str(other), "/node/nodes/w/weight")
    r = run_cli("neuro", "compile", src, "-o", tmp_path / "out")
    assert_clean_failure(r, "'/node/nodes/w/weight'", "ExternalLink")
    (tmp_path / "elsewhere.bin").write_bytes(np.full(60, 0.5).tobytes())
    src = write_nir(tmp_path / "extstore.nir")
    with h5py.File(src, "a") as f:
        del f["node/nodes/w/weight"]
        f["node/nodes/w"].create_dataset("weight", shape=(3, 20), dtype="<f8",
                                         external=[(str(tmp_path / "elsewhere.bin"), 0, 480)])
    r = run_cli("neuro", "compile", src, "-o", tmp_path / "out")
    assert_clean_failure(r, "'/node/nodes/w/weight'", "other files", "external storage")
    src = write_nir(tmp_path / "cycle.nir")
    with h5py.File(src, "a") as f:
        f["node/nodes/w"]["loop"] = f["node"]
    r = run_cli("neuro", "compile", src, "-o", tmp_path / "out")
    assert_clean_failure(r, "nested more than 32 deep")
    assert_no_output(tmp_path / "out")


# -- 2. device names -------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["relative", "absolute", "suffix"])
def test_device_must_be_a_plain_name(tmp_path, rng, form):
    """A valid profile outside devices/ is not reachable through --device: before the fix,
    `--device ../../tmp/x/evil` loaded tmp/x/evil.toml and compiled for it."""
    evil = tmp_path / "evil.toml"
    shutil.copy(REPO / "devices" / "loihi2.toml", evil)
    name = {"relative": os.path.relpath(tmp_path / "evil", REPO / "devices"),
            "absolute": str(tmp_path / "evil"), "suffix": "loihi2.toml"}[form]
    mlp_graph(rng, [5, 4]).save(tmp_path / "m.npz")
    r = run_cli("neuro", "compile", tmp_path / "m.npz", "--device", name, "-o", tmp_path / "out")
    assert_clean_failure(r, f"device '{name}' is not a device name", "one of: loihi2")
    assert_no_output(tmp_path / "out")


# -- 3. edited outputs -----------------------------------------------------------------------
def _pop(f):
    return lambda spec: f(spec["populations"][0])


def _con(f):
    return lambda spec: f(spec["connections"][0])


JSON_EDITS = {               # edit of network.json -> what the one error line names
    "key-deleted": (lambda s: s.pop("n_in"), ["has no 'n_in'"]),
    "list-to-object": (lambda s: s.update(populations={}), ["'populations'", "a list"]),
    "int-to-string": (lambda s: s.update(n_in="5"), ["'n_in'", "'5'"]),
    "pop-key-deleted": (_pop(lambda p: p.pop("vth")), ["populations[0]", "no 'vth'"]),
    "pop-unknown-key": (_pop(lambda p: p.update(tau=1)), ["populations[0]", "unknown key 'tau'"]),
    "pop-float-to-string": (_pop(lambda p: p.update(decay_u="0.5")), ["'decay_u'", "a number"]),
    "pop-nan": (_pop(lambda p: p.update(decay_v=float("nan"))), ["decay_v", "nan"]),
    "pop-huge": (_pop(lambda p: p.update(n=10 ** 9)), ["'n0'", "1000000000"]),
    "du-out-of-range": (_pop(lambda p: p.update(du=5000)), ["du", "0 .. 4095", "5000"]),
    "vth-huge": (_pop(lambda p: p.update(vth=10 ** 30)), ["vth", "131071"]),
    "cores-wrong": (_pop(lambda p: p.update(cores=[[0, 2]])), ["cores", "[[0, 2]]"]),
    "src-out-of-range": (_con(lambda c: c.update(src=7)), ["src", "got 7"]),
    "sign-mode-swapped": (_con(lambda c: c.update(sign_mode=1)), ["'sign_mode'", "a string"]),
    "outputs-out-of-range": (lambda s: s.update(outputs=[3]), ["outputs", "[3]"]),
    "not-json": (lambda s: "{oops", ["network.json", "JSONDecodeError"]),
    "deep-json": (lambda s: "[" * 100_000, ["network.json", "RecursionError"]),
}
NPZ_EDITS = {                # edit of network.npz's arrays -> needles
    "array-deleted": (lambda z: z.pop("bias_f_0"), ["'bias_f_0'", "(4,)"]),
    "wrong-shape": (lambda z: z.update(W_0=z["W_0"][:, :2]), ["'W_0'", "(4, 5)", "(4, 2)"]),
    "huge-shape": (lambda z: z.update(W_0=np.zeros((4000, 5000), np.int8)),
                   ["'W_0'", "(4, 5)", "(4000, 5000)"]),
    "nan": (lambda z: z.update(Wf_0=np.full_like(z["Wf_0"], np.nan)), ["'Wf_0'", "not finite"]),
    "fractions": (lambda z: z.update(W_0=z["W_0"] + 0.5), ["'W_0'", "whole numbers"]),
    "type-swapped": (lambda z: z.update(bias_exp_0=np.array(["a"] * 4)), ["'bias_exp_0'", "<U1"]),
    "shift-huge": (lambda z: z.update(bias_exp_0=np.full(4, 99)), ["'bias_exp_0'", "-24 .. 24"]),
    "not-a-zip": ("garbage", ["network.npz", "BadZipFile"]),
}


@pytest.fixture(scope="module")
def compiled_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("net")
    net, _ = compile_graph(mlp_graph(np.random.default_rng(3), [5, 4]), load_device("loihi2"))
    net.save(d / "c")
    np.save(d / "x.npy", np.zeros((10, 5), np.uint8))
    return d


@pytest.mark.parametrize("edit", list(JSON_EDITS) + list(NPZ_EDITS))
def test_edited_compiled_network(tmp_path, compiled_net, edit):
    c = tmp_path / "c"
    shutil.copytree(compiled_net / "c", c)
    if edit in JSON_EDITS:
        fn, needles = JSON_EDITS[edit]
        spec = json.loads((c / "network.json").read_text())
        text = fn(spec)
        (c / "network.json").write_text(text if isinstance(text, str) else json.dumps(spec))
    else:
        fn, needles = NPZ_EDITS[edit]
        if fn == "garbage":
            (c / "network.npz").write_bytes(b"PK\x03\x04 not really a zip")
        else:
            z = dict(np.load(c / "network.npz"))
            fn(z)
            np.savez(c / "network.npz", **z)
    out = tmp_path / "out"
    r = run_cli("neuro", "simulate", c, "--input", compiled_net / "x.npy", "--save", out / "s.npz")
    assert_clean_failure(r, *needles)
    assert_no_output(out)


def test_unsupported_raster_suffix_refused_up_front(tmp_path, compiled_net):
    """--raster r.xyz is refused with the supported suffixes before anything is read or run:
    here the input file does not even exist, and it is the raster that the error names."""
    r = run_cli("neuro", "simulate", compiled_net / "c", "--input", tmp_path / "missing.npy",
                "--raster", tmp_path / "r.xyz")
    assert_clean_failure(r, "r.xyz", "unsupported image suffix", ".png", ".svg", ".pdf")
    r = run_cli("neuro", "simulate", compiled_net / "c", "--input", tmp_path / "missing.npy",
                "--raster", tmp_path)
    assert_clean_failure(r, "is a directory")
    assert not (tmp_path / "r.xyz").exists()
