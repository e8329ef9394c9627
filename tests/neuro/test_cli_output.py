"""What `edgekit neuro` writes: `simulate --save` (spikes and voltages a user can load and
compare), and text reports that survive a pipe (no 80-column wrapping, no rich markup
eaten from names or the energy source). Through the real `edgekit` process."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgekit.neuro import graph as G
from edgekit.neuro.device import load_device
from edgekit.neuro.passes import compile_graph
from edgekit.neuro.sim import Simulator
from edgekit_testutil import REPO, assert_clean_failure, run_cli
from tests.neuro.test_compile import mlp_graph


def renamed(g: G.SNNGraph, names: dict[str, str]) -> G.SNNGraph:
    nodes = {names.get(k, k): v for k, v in g.nodes.items()}
    edges = [(names.get(a, a), names.get(b, b)) for a, b in g.edges]
    return G.SNNGraph(nodes, edges, dict(g.metadata)).validate()


@pytest.fixture(scope="module")
def net_dir(tmp_path_factory):
    """A 30 -> 40 -> 10 network whose two layers both fire on 30% input."""
    d = tmp_path_factory.mktemp("net")
    g = mlp_graph(np.random.default_rng(5), [30, 40, 10], wscale=3.0)
    net, _ = compile_graph(g, load_device("loihi2"))
    net.save(d / "c")
    x = (np.random.default_rng(6).random((3, 60, 30)) < 0.3).astype(np.uint8)
    np.save(d / "x3.npy", x)
    np.save(d / "x2.npy", x[0])
    return d, net, x


@pytest.mark.parametrize("backend, batched", [("sim", True), ("sim", False), ("float", True)])
def test_simulate_save_spikes_and_voltages(tmp_path, net_dir, backend, batched):
    d, net, x = net_dir
    x = x if batched else x[0]
    dest = tmp_path / "run.npz"
    r = run_cli("neuro", "simulate", d / "c", "--input", d / ("x3.npy" if batched else "x2.npy"),
                "--backend", backend, "--save", dest, "--voltages", "--json")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    ref = Simulator(net, "fixed" if backend == "sim" else "float").run(x, record_state=True)
    z = np.load(dest, allow_pickle=False)
    info = json.loads(str(z["__run__"]))
    assert info["populations"] == ["n0", "n1"] and info["backend"] == backend
    assert sorted(z.files) == sorted(["__run__", "n0", "n0.v", "n1", "n1.v"])
    for i, name in enumerate(info["populations"]):
        s, v = z[name], z[f"{name}.v"]
        want_s, want_v = (ref.spikes[i], ref.v[i]) if batched else (ref.spikes[i][0], ref.v[i][0])
        assert s.dtype == bool and s.shape == want_s.shape == (*x.shape[:-1], net.populations[i].n)
        assert int(s.sum()) == printed["counters"]["spikes"][name] == ref.counters.spikes[name] > 0
        np.testing.assert_array_equal(s, want_s)
        assert v.dtype == (np.int32 if backend == "sim" else np.float64)
        np.testing.assert_array_equal(v, want_v)
    # the output population's per-neuron counts are what the command printed
    counts = z["n1"].sum(axis=-2).reshape(-1, net.populations[1].n)
    assert counts.tolist() == printed["output_counts"]
    assert not list(tmp_path.glob(".run.npz.*"))                  # no temp file left
    # text mode: the table's spike column says the same
    r = run_cli("neuro", "simulate", d / "c", "--input", d / "x2.npy", "--backend", backend,
                "--save", dest)
    assert r.returncode == 0, r.stderr
    z = np.load(dest, allow_pickle=False)
    assert sorted(z.files) == ["__run__", "n0", "n1"]            # no voltages unless asked
    for name in ("n0", "n1"):
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"│ {name} "))
        assert int(row.split("│")[3]) == int(z[name].sum())


def test_save_options_refused_up_front(tmp_path, net_dir):
    """Checked before anything is read: the input here does not exist."""
    d = net_dir[0]
    missing = tmp_path / "missing.npy"
    r = run_cli("neuro", "simulate", d / "c", "--input", missing, "--save", tmp_path / "run.txt")
    assert_clean_failure(r, "run.txt", "does not end in .npz")
    r = run_cli("neuro", "simulate", d / "c", "--input", missing, "--voltages")
    assert_clean_failure(r, "--voltages needs --save")
    assert not list(tmp_path.iterdir())


def test_piped_reports_do_not_wrap_or_eat_markup(tmp_path, rng):
    """Long lines stay whole when stdout is a pipe (rich defaulted to 80 columns), and
    [brackets] in population names and in the energy source are printed, not parsed."""
    source = "Someone [S2] et al., [bold]Table 1[/bold] (a source line well past 80 columns)"
    devs = tmp_path / "devices"
    devs.mkdir()
    toml = (REPO / "devices" / "loihi2.toml").read_text()
    toml = re.sub(r'(?m)^source = .*$', f"source = {json.dumps(source)}", toml)
    (devs / "bracket_dev.toml").write_text(toml)
    env = {"EDGEKIT_DEVICES": str(devs)}
    names = {"n0": "encoder_layer_with_a_rather_long_name_[0]", "n1": "readout_[bold]1[/bold]"}
    renamed(mlp_graph(rng, [30, 40, 10], wscale=3.0), names).save(tmp_path / "m.npz")
    out = tmp_path / "c"
    r = run_cli("neuro", "compile", tmp_path / "m.npz", "--device", "bracket_dev", "-o", out,
                env=env)
    assert r.returncode == 0, r.stderr
    report = (out / "report.txt").read_text()
    assert max(len(ln) for ln in report.splitlines()) > 80
    assert r.stdout.startswith(report)                             # byte for byte
    np.save(tmp_path / "x.npy", (rng.random((60, 30)) < 0.3).astype(np.uint8))
    r = run_cli("neuro", "simulate", out, "--input", tmp_path / "x.npy", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in names.values():
        assert any(f"│ {name} " in ln for ln in lines), r.stdout
    energy = next(ln for ln in lines if ln.startswith("energy "))
    assert energy.endswith(f"[source: {source}]"), energy
    assert len(energy) > 80
