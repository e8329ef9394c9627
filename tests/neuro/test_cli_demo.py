"""The CLI end to end, and acceptance 3 (digits demo)."""

from __future__ import annotations

import io
import json

import numpy as np
from rich.console import Console

from edgekit.cli import main
from edgekit.neuro.compiled import CompiledNetwork
from tests.neuro.test_compile import mlp_graph


def test_compile_simulate_export(tmp_path, capsys, rng):
    g = mlp_graph(rng, [30, 40, 10])
    g.save(tmp_path / "m.npz")
    assert main(["neuro", "compile", str(tmp_path / "m.npz"), "--device", "loihi2",
                 "-o", str(tmp_path / "c")]) == 0
    for f in ("network.json", "network.npz", "report.json", "report.txt"):
        assert (tmp_path / "c" / f).exists(), f
    rep = json.loads((tmp_path / "c" / "report.json").read_text())
    assert [p["name"] for p in rep["passes"]] == ["lower", "discretize", "quantize", "map"]
    net = CompiledNetwork.load(tmp_path / "c")
    assert net.passes == rep["passes"]                   # choices recorded in the artifact
    np.save(tmp_path / "x.npy", (rng.random((3, 50, 30)) < 0.2).astype(np.uint8))
    capsys.readouterr()
    results = {}
    for backend in ("sim", "float", "lava"):
        assert main(["neuro", "simulate", str(tmp_path / "c"), "--input", str(tmp_path / "x.npy"),
                     "--steps", "40", "--backend", backend, "--json"]) == 0
        results[backend] = json.loads(capsys.readouterr().out)
    assert results["lava"]["lava_matches_sim"] is True
    assert results["lava"]["output_counts"] == results["sim"]["output_counts"]
    assert "ESTIMATE" in results["sim"]["energy_estimate"]["label"]
    assert results["sim"]["counters"]["neuron_updates"] == 3 * 40 * 50
    assert main(["neuro", "simulate", str(tmp_path / "c"), "--input", str(tmp_path / "x.npy"),
                 "--raster", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert main(["neuro", "export-nir", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.nir")]) == 0
    assert main(["neuro", "compile", str(tmp_path / "m.nir"), "-o", str(tmp_path / "c2")]) == 0
    a, b = CompiledNetwork.load(tmp_path / "c"), CompiledNetwork.load(tmp_path / "c2")
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])


def test_digits_demo(tmp_path):
    from edgekit.neuro.demo import run_digits_demo

    buf = io.StringIO()
    r = run_digits_demo(Console(file=buf, width=120), tmp_path, lava_subset=50)
    acc = r["accuracy"]
    print(buf.getvalue())
    assert acc["float"] >= 0.90, acc
    assert acc["fixed"] >= acc["float"] - 0.02, acc
    assert r["lava"]["samples"] == 50 and r["lava"]["spikes_identical"], r["lava"]
    assert (tmp_path / "digits_raster.png").exists()
    assert "accuracy" in buf.getvalue()
