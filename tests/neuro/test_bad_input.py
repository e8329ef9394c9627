"""Acceptance 6: every bad input gets one clear error (exit 2 from the CLI) and no artifact."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.neuro.lava_bridge import run_lava
from tests.neuro.conftest import random_network
from tests.neuro.test_compile import mlp_graph


def cli(capsys, *args):
    code = main(["neuro", *map(str, args)])
    return code, capsys.readouterr()


def test_corrupt_nir_file(tmp_path, capsys):
    bad = tmp_path / "model.nir"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    code, out = cli(capsys, "compile", bad, "-o", tmp_path / "out")
    assert code == 2 and "not a readable NIR file" in out.err and "Traceback" not in out.err
    assert not (tmp_path / "out").exists()


def test_non_nir_file(tmp_path, capsys):
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    code, out = cli(capsys, "compile", txt, "-o", tmp_path / "out")
    assert code == 2 and "unknown extension" in out.err
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.zeros(3))
    code, out = cli(capsys, "compile", npz, "-o", tmp_path / "out")
    assert code == 2 and "not a saved edgekit SNN" in out.err


def test_unsupported_node_named(tmp_path, capsys):
    import nir
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                            "d": nir.Delay(delay=np.ones(3)),
                            "output": nir.Output(output_type={"output": np.array([3])})},
                     edges=[("input", "d"), ("d", "output")], type_check=False)
    nir.write(tmp_path / "delay.nir", g)
    code, out = cli(capsys, "compile", tmp_path / "delay.nir", "-o", tmp_path / "out")
    assert code == 2 and "'d'" in out.err and "unsupported type Delay" in out.err


def test_non_finite_parameters(tmp_path, capsys, rng):
    g = mlp_graph(rng, [5, 4])
    g.nodes["w0"].weight[1, 2] = np.nan
    g.save(tmp_path / "nan.npz")
    code, out = cli(capsys, "compile", tmp_path / "nan.npz", "-o", tmp_path / "out")
    assert code == 2 and "'w0'" in out.err and "not finite" in out.err


def test_time_constant_not_representable(tmp_path, capsys, rng):
    g = mlp_graph(rng, [5, 4], tau_mem=50.0)              # 50 s at dt = 1 ms
    g.save(tmp_path / "slow.npz")
    code, out = cli(capsys, "compile", tmp_path / "slow.npz", "-o", tmp_path / "out")
    assert code == 2 and "tau_mem" in out.err and "not representable" in out.err
    # 3000*dt rounds to du/dv = 1, i.e. 4096*dt: 37% off -> refused, with the tolerance named
    g = mlp_graph(rng, [5, 4], tau_syn=3.0)
    g.save(tmp_path / "slow2.npz")
    code, out = cli(capsys, "compile", tmp_path / "slow2.npz", "-o", tmp_path / "out")
    assert code == 2 and "tau_syn" in out.err and "off" in out.err
    # a finer dt makes it representable
    code, out = cli(capsys, "compile", tmp_path / "slow2.npz", "--dt", "0.1", "-o", tmp_path / "ok")
    assert code == 0, out.err


def test_input_wrong_shape(tmp_path, capsys, rng):
    g = mlp_graph(rng, [5, 4])
    g.save(tmp_path / "m.npz")
    assert cli(capsys, "compile", tmp_path / "m.npz", "-o", tmp_path / "c")[0] == 0
    np.save(tmp_path / "x.npy", np.zeros((10, 6), np.uint8))
    code, out = cli(capsys, "simulate", tmp_path / "c", "--input", tmp_path / "x.npy")
    assert code == 2 and "wrong shape" in out.err and "(T, 5)" in out.err
    np.save(tmp_path / "x2.npy", np.full((10, 5), 0.5))
    code, out = cli(capsys, "simulate", tmp_path / "c", "--input", tmp_path / "x2.npy")
    assert code == 2 and "0 or 1" in out.err
    np.save(tmp_path / "x3.npy", np.zeros((10, 5), np.uint8))
    code, out = cli(capsys, "simulate", tmp_path / "c", "--input", tmp_path / "x3.npy",
                    "--steps", "11")
    assert code == 2 and "--steps 11" in out.err


def test_lava_env_missing_names_make_setup(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("EDGEKIT_LAVA_VENV", str(tmp_path / "nowhere"))
    net = random_network(rng, [4, 3])
    with pytest.raises(EdgekitError, match="make setup"):
        run_lava(net, np.zeros((5, 4), bool))


def test_other_refusals(tmp_path, capsys, rng):
    g = mlp_graph(rng, [5, 4])
    g.nodes["n0"].v_reset = np.array([0.5])
    g.save(tmp_path / "reset.npz")
    code, out = cli(capsys, "compile", tmp_path / "reset.npz", "-o", tmp_path / "o")
    assert code == 2 and "v_reset" in out.err
    g = mlp_graph(rng, [5, 4])
    g.nodes["n0"].tau_mem = np.array([1e-2, 2e-2, 1e-2, 1e-2])
    g.save(tmp_path / "mixed_tau.npz")
    code, out = cli(capsys, "compile", tmp_path / "mixed_tau.npz", "-o", tmp_path / "o")
    assert code == 2 and "one time constant per layer" in out.err
    (tmp_path / "file").write_text("x")
    g.save(tmp_path / "m.npz")
    code, out = cli(capsys, "compile", tmp_path / "m.npz", "-o", tmp_path / "file")
    assert code == 2 and "is a file" in out.err
    code, out = cli(capsys, "simulate", tmp_path / "nothing", "--input", tmp_path / "m.npz")
    assert code == 2 and "not a compiled edgekit network" in out.err
    code, out = cli(capsys, "compile", tmp_path / "m.npz", "--device", "pixel8", "-o", tmp_path / "o")
    assert code == 2 and "device 'pixel8'" in out.err
