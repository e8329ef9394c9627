"""Acceptance 6: every bad input gets one clear error from the real `edgekit` process (one
`edgekit: error:` line on stderr, exit 2, no traceback) and leaves no output behind."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.neuro.device import load_device
from edgekit.neuro.lava_bridge import run_lava
from edgekit.neuro.passes import compile_graph
from edgekit_testutil import assert_clean_failure, assert_no_output, run_cli
from tests.neuro.conftest import random_network
from tests.neuro.test_compile import mlp_graph


def neuro(*args, **kw):
    return run_cli("neuro", *args, **kw)


def compiled(tmp_path, rng, sizes=(5, 4)):
    """A compiled network folder, made in-process (the setup is not what is tested)."""
    net, _ = compile_graph(mlp_graph(rng, list(sizes)), load_device("loihi2"))
    return net.save(tmp_path / "c")


def test_corrupt_nir_file(tmp_path):
    bad = tmp_path / "model.nir"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    r = neuro("compile", bad, "-o", tmp_path / "out")
    assert_clean_failure(r, "not a readable NIR file")
    assert_no_output(tmp_path / "out")


def test_non_nir_file(tmp_path):
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    r = neuro("compile", txt, "-o", tmp_path / "out")
    assert_clean_failure(r, "unknown extension")
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.zeros(3))
    r = neuro("compile", npz, "-o", tmp_path / "out")
    assert_clean_failure(r, "not a saved edgekit SNN")
    assert_no_output(tmp_path / "out")


def test_unsupported_node_named(tmp_path):
    import nir
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                            "d": nir.Delay(delay=np.ones(3)),
                            "output": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("input", "d"), ("d", "output")], type_check=False)
    nir.write(tmp_path / "delay.nir", g)
    r = neuro("compile", tmp_path / "delay.nir", "-o", tmp_path / "out")
    assert_clean_failure(r, "'d'", "unsupported type Delay")
    assert_no_output(tmp_path / "out")


def test_non_finite_parameters(tmp_path, rng):
    g = mlp_graph(rng, [5, 4])
    g.nodes["w0"].weight[1, 2] = np.nan
    g.save(tmp_path / "nan.npz")
    r = neuro("compile", tmp_path / "nan.npz", "-o", tmp_path / "out")
    assert_clean_failure(r, "'w0'", "not finite")
    assert_no_output(tmp_path / "out")


def test_time_constant_not_representable(tmp_path, rng):
    g = mlp_graph(rng, [5, 4], tau_mem=50.0)              # 50 s at dt = 1 ms
    g.save(tmp_path / "slow.npz")
    r = neuro("compile", tmp_path / "slow.npz", "-o", tmp_path / "out")
    assert_clean_failure(r, "tau_mem", "not representable")
    # 3000*dt rounds to du/dv = 1, i.e. 4096*dt: 37% off -> refused, with the tolerance named
    g = mlp_graph(rng, [5, 4], tau_syn=3.0)
    g.save(tmp_path / "slow2.npz")
    r = neuro("compile", tmp_path / "slow2.npz", "-o", tmp_path / "out")
    assert_clean_failure(r, "tau_syn", "off")
    assert_no_output(tmp_path / "out")
    # a finer dt makes it representable
    r = neuro("compile", tmp_path / "slow2.npz", "--dt", "0.1", "-o", tmp_path / "ok")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ok" / "network.json").exists()


@pytest.mark.parametrize("x, extra, needles", [
    (np.zeros((10, 6), np.uint8), [], ["wrong shape", "(T, 5)"]),
    (np.full((10, 5), 0.5), [], ["0 or 1"]),
    (np.zeros((10, 5), np.uint8), ["--steps", "11"], ["--steps 11"]),
], ids=["columns", "not-binary", "steps"])
def test_input_wrong_shape(tmp_path, rng, x, extra, needles):
    c = compiled(tmp_path, rng)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    r = neuro("simulate", c, "--input", tmp_path / "x.npy", *extra,
              "--save", out / "run.npz", "--raster", out / "r.png")
    assert_clean_failure(r, *needles)
    assert_no_output(out)


def test_lava_env_missing_names_make_setup(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("EDGEKIT_LAVA_VENV", str(tmp_path / "nowhere"))   # run_cli inherits it
    with pytest.raises(EdgekitError, match="make setup"):
        run_lava(random_network(rng, [4, 3]), np.zeros((5, 4), bool))
    c = compiled(tmp_path, rng)
    np.save(tmp_path / "x.npy", np.zeros((5, 5), np.uint8))
    out = tmp_path / "out"
    r = neuro("simulate", c, "--input", tmp_path / "x.npy", "--backend", "lava",
              "--save", out / "run.npz")
    assert_clean_failure(r, "make setup", "EDGEKIT_LAVA_VENV")
    assert_no_output(out)


def test_other_refusals(tmp_path, rng):
    g = mlp_graph(rng, [5, 4])
    g.nodes["n0"].v_reset = np.array([0.5])
    g.save(tmp_path / "reset.npz")
    r = neuro("compile", tmp_path / "reset.npz", "-o", tmp_path / "o")
    assert_clean_failure(r, "v_reset")
    g = mlp_graph(rng, [5, 4])
    g.nodes["n0"].tau_mem = np.array([1e-2, 2e-2, 1e-2, 1e-2])
    g.save(tmp_path / "mixed_tau.npz")
    r = neuro("compile", tmp_path / "mixed_tau.npz", "-o", tmp_path / "o")
    assert_clean_failure(r, "one time constant per layer")
    assert_no_output(tmp_path / "o")
    (tmp_path / "file").write_text("x")
    g.save(tmp_path / "m.npz")
    r = neuro("compile", tmp_path / "m.npz", "-o", tmp_path / "file")
    assert_clean_failure(r, "is a file")
    assert (tmp_path / "file").read_text() == "x"
    r = neuro("simulate", tmp_path / "nothing", "--input", tmp_path / "m.npz")
    assert_clean_failure(r, "not a compiled edgekit network")
    r = neuro("compile", tmp_path / "m.npz", "--device", "pixel8", "-o", tmp_path / "o")
    assert_clean_failure(r, "device 'pixel8'", "loihi2")
    assert_no_output(tmp_path / "o")
