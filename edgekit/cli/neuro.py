"""`edgekit neuro compile | simulate | export-nir`: the neuromorphic path (docs/neuro.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from edgekit.errors import EdgekitError
from edgekit.neuro.untrusted import MAX_READ_MIB

# the `neuro` group; edgekit/cli/__init__.py adds it to the top-level app
neuro_app = typer.Typer(no_args_is_help=True, help="LIF spiking networks: compile to Loihi-style "
                        "fixed point, simulate bit-exactly (or in Lava), NIR in and out.")

BACKENDS = ("sim", "float", "lava")
SAVE_FORMAT = "edgekit.neuro.run"
_MAX_READ_HELP = (f"refuse input files whose arrays declare more than this many MiB (default "
                  f"{MAX_READ_MIB}: twice the largest network loihi2 maps); raise it for a "
                  "file you trust")


def _progress(console: Console, quiet: bool = False) -> Progress:
    """A transient spinner on stderr. Descriptions are markup: callers escape file names."""
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=quiet or not console.is_terminal)


def _stdout_console() -> Console:
    """Tables on stdout: a terminal's own width; piped or redirected, wide enough that no
    line is wrapped or truncated (rich would use 80 columns). No markup: names and sources
    are printed as they are."""
    c = Console(markup=False, highlight=False)
    return c if c.is_terminal else Console(markup=False, highlight=False, width=100_000)


@neuro_app.command("compile")
def compile_cmd(
    src: Path = typer.Argument(..., help="a .nir file or a saved edgekit SNN (.npz)"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory"),
    device: str = typer.Option("loihi2", "--device", help="neuromorphic device profile"),
    dt: float = typer.Option(None, "--dt", help="time step in seconds (overrides the source's)"),
    integrator: str = typer.Option(None, "--integrator",
                                   help="exact (default) | euler (snnTorch's convention)"),
    calib: Path = typer.Option(None, "--calib", help="spikes .npy (B,T,n_in) to size state ranges"),
    tau_tol: float = typer.Option(0.10, "--tau-tol", help="max relative error of a time constant"),
    max_read_mib: float = typer.Option(MAX_READ_MIB, "--max-read-mib", help=_MAX_READ_HELP),
) -> None:
    """Compile SRC: discretize(dt) -> quantize(device) -> map(device); write network + report."""
    from edgekit._io import atomic_path
    from edgekit.neuro.device import load_device
    from edgekit.neuro.graph import load_graph
    from edgekit.neuro.passes import compile_graph, report_text
    from edgekit.neuro.untrusted import max_read_bytes

    console = Console(stderr=True)
    if out.exists() and not out.is_dir():
        raise EdgekitError(f"output '{out}' is a file", expected="a directory",
                           fix="pass -o with a directory path")
    limit = max_read_bytes(max_read_mib)
    dev = load_device(device)
    graph = load_graph(src, dt=dt, integrator=integrator, max_bytes=limit)
    cal = _load_spikes(calib) if calib is not None else None
    with _progress(console) as bar:
        bar.add_task(escape(f"compile {src.name} for {device}"), total=None)
        net, report = compile_graph(graph, dev, calibration_spikes=cal, tau_tol=tau_tol)
    report["source"] = str(src)
    text = report_text(report)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=_jd))
    with atomic_path(out / "report.txt") as tmp:
        tmp.write_text(text)
    net.save(out)                        # network.json goes last
    sys.stdout.write(text)               # plain text: never wrapped, never read as markup
    print(f"wrote {out}/network.json, network.npz, report.json, report.txt")


@neuro_app.command("simulate")
def simulate_cmd(
    compiled: Path = typer.Argument(..., help="a folder written by `edgekit neuro compile`"),
    input: Path = typer.Option(..., "--input", help="spikes .npy: (T, n_in) or (B, T, n_in), 0/1"),
    steps: int = typer.Option(None, "--steps", help="steps to run (default: the input's T)"),
    backend: str = typer.Option("sim", "--backend", help="sim (fixed point) | float | lava"),
    raster: Path = typer.Option(None, "--raster", help="write a raster plot (png, pdf, svg, ...) "
                                "of stream 0"),
    save: Path = typer.Option(None, "--save", help="write every population's spikes to this "
                              ".npz, one array per population: (T, N) bool, (B, T, N) for a "
                              "batched input"),
    voltages: bool = typer.Option(False, "--voltages", metavar="", help="with --save: also the membrane "
                                  "voltages, as arrays NAME.v"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print the result as JSON"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds before a Lava run is killed"),
    max_read_mib: float = typer.Option(MAX_READ_MIB, "--max-read-mib", help=_MAX_READ_HELP),
) -> None:
    """Run a compiled network on input spikes; print spike counts and an energy estimate."""
    from edgekit.neuro.compiled import CompiledNetwork
    from edgekit.neuro.device import load_device
    from edgekit.neuro.energy import estimate
    from edgekit.neuro.sim import Simulator
    from edgekit.neuro.untrusted import max_read_bytes

    # every option is checked before anything runs
    if backend not in BACKENDS:
        raise EdgekitError(f"backend '{backend}' is unknown", expected=" | ".join(BACKENDS),
                           got=backend)
    if raster is not None:
        from edgekit.neuro.raster import check_raster_dest
        check_raster_dest(raster)
    _check_save_dest(save, voltages)
    net = CompiledNetwork.load(compiled, max_read_bytes(max_read_mib))
    x = _load_spikes(input)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    sim = Simulator(net, "float" if backend == "float" else "fixed")
    xx = sim._check_input(x, steps)
    with _progress(console, quiet=as_json) as bar:
        bar.add_task(f"{backend}: {xx.shape[0]} stream(s) x {xx.shape[1]} steps", total=None)
        if backend == "lava":
            from edgekit.neuro.lava_bridge import run_lava
            lres = run_lava(net, xx, timeout_s=timeout, record_state=voltages)
            spikes, v = lres.spikes, lres.v
            res = sim.run(xx)                     # event counts (identical spikes, bit-exact)
            agree = all(np.array_equal(a, b) for a, b in zip(spikes, res.spikes))
        else:
            res = sim.run(xx, record_state=voltages)
            spikes, v, agree = res.spikes, res.v, None
    wall = time.perf_counter() - t0
    counters = res.counters.as_dict()
    counters["spikes"] = {p.name: int(s.sum()) for p, s in zip(net.populations, spikes)}
    counters["total_spikes"] = int(sum(counters["spikes"].values()))
    try:
        energy = estimate(counters, load_device(net.device))
    except EdgekitError:
        energy = {"label": f"estimate unavailable: device '{net.device}' profile not found"}
    out_pop = net.outputs[0]
    counts = spikes[out_pop].sum(axis=1)                       # (B, N)
    result = {"backend": backend, "streams": int(xx.shape[0]), "steps": int(xx.shape[1]),
              "wall_s": wall, "counters": counters, "energy_estimate": energy,
              "output_population": net.populations[out_pop].name,
              "output_counts": counts.tolist(), "prediction": counts.argmax(axis=1).tolist()}
    if agree is not None:
        result["lava_matches_sim"] = agree
    if save is not None:
        _save_run(save, net, spikes, v if voltages else None, batched=x.ndim == 3,
                  meta={"backend": backend, "streams": int(xx.shape[0]),
                        "steps": int(xx.shape[1]), "dt": net.dt})
        result["saved"] = str(save)
    if raster is not None:
        from edgekit.neuro.raster import save_raster
        save_raster([s[0] for s in spikes], [p.name for p in net.populations], raster,
                    title=f"{compiled.name} ({backend}), stream 0", input_spikes=xx[0])
        result["raster"] = str(raster)
    if as_json:
        print(json.dumps(result, default=_jd))
        return
    t = Table(title=Text(f"{compiled} — backend {backend}, {xx.shape[0]} stream(s) x "
                         f"{xx.shape[1]} steps"))
    t.add_column("population")
    t.add_column("neurons", justify="right")
    t.add_column("spikes", justify="right")
    t.add_column("rate / neuron / step", justify="right")
    for p, sp in zip(net.populations, spikes):
        t.add_row(Text(p.name), str(p.n), str(int(sp.sum())), f"{sp.mean():.4f}")
    _stdout_console().print(t)
    # plain lines: a source like "Davies et al. [S2]" is text, not markup
    print(f"synaptic ops {counters['synaptic_ops']:,}  neuron updates "
          f"{counters['neuron_updates']:,}  wall {wall:.3f} s")
    if "total_pj" in energy:
        print(f"energy {energy['label']}: {energy['total_pj'] / 1e3:,.1f} nJ total, "
              f"{energy['per_stream_nj']:,.1f} nJ per stream  [source: {energy['source']}]")
    else:
        print(f"energy {energy['label']}")
    if agree is not None:
        print(f"Lava vs edgekit simulator: {'identical spikes' if agree else 'DIFFERENT spikes'}")
    if save is not None:
        print(f"saved: {save}")
    if raster is not None:
        print(f"raster: {raster}")


def _check_save_dest(save: Path | None, voltages: bool) -> None:
    if voltages and save is None:
        raise EdgekitError("--voltages needs --save", expected="--save FILE.npz --voltages",
                           fix="add --save FILE.npz")
    if save is None:
        return
    if save.suffix.lower() != ".npz":
        raise EdgekitError(f"--save '{save}' does not end in .npz", expected="FILE.npz",
                           got=save.suffix or "no suffix", fix="pass --save run.npz")
    if save.is_dir():
        raise EdgekitError(f"--save '{save}' is a directory", expected="a file name",
                           fix="pass --save run.npz")


def _save_run(dest: Path, net, spikes: list, v: list | None, *, batched: bool,
              meta: dict) -> None:
    """One .npz, written atomically: per population NAME (T, N) bool spikes ((B, T, N) for a
    batched input), NAME.v its membrane voltage (int32 Loihi v units in fixed point,
    float64 for the float twin), and __run__, a JSON string (format, backend, populations
    in order, dt)."""
    from edgekit._io import atomic_path

    arrays: dict[str, np.ndarray] = {}

    def put(key: str, a: np.ndarray) -> None:
        if key in arrays or key == "__run__":
            raise EdgekitError(f"cannot save: two arrays would be named '{key}'",
                               fix="rename the population (node) in the source model")
        arrays[key] = a if batched else a[0]              # (B, T, N) -> (T, N)

    for i, pop in enumerate(net.populations):
        put(pop.name, np.asarray(spikes[i], bool))
    if v is not None:
        fixed = meta["backend"] != "float"
        for i, pop in enumerate(net.populations):
            vv = np.asarray(v[i])
            put(f"{pop.name}.v", vv.astype(np.int32) if fixed else vv.astype(np.float64))
    info = {"format": SAVE_FORMAT, "version": 1, **meta,
            "populations": [p.name for p in net.populations],
            "voltage_units": None if v is None else
            ("Loihi v units (integers)" if meta["backend"] != "float" else "float twin units")}
    arrays["__run__"] = np.array(json.dumps(info))
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


@neuro_app.command("export-nir")
def export_nir_cmd(
    src: Path = typer.Argument(..., help="a saved edgekit SNN (.npz) or a .nir file"),
    out: Path = typer.Option(..., "-o", "--out", help="the .nir file to write"),
    dt: float = typer.Option(None, "--dt", help="record this dt (s) in the NIR metadata"),
    max_read_mib: float = typer.Option(MAX_READ_MIB, "--max-read-mib", help=_MAX_READ_HELP),
) -> None:
    """Write an SNN graph as NIR (its dt and integrator go into the graph metadata)."""
    from edgekit.neuro.graph import load_graph
    from edgekit.neuro.nir_io import write_nir
    from edgekit.neuro.untrusted import max_read_bytes

    if out.suffix.lower() != ".nir":
        raise EdgekitError(f"output '{out}' does not end in .nir", expected="OUT.nir",
                           fix="pass -o model.nir")
    graph = load_graph(src, dt=dt, max_bytes=max_read_bytes(max_read_mib))
    write_nir(graph, out)
    print(f"wrote {out} ({len(graph.nodes)} nodes, dt = {graph.metadata.get('dt')} s)")


def _load_spikes(path: Path) -> np.ndarray:
    from edgekit._io import require_file

    require_file(path, "input spikes", "pass a .npy file of 0/1 spikes")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EdgekitError(f"input '{path}' is not a .npy array", expected="a numpy .npy file",
                           got=type(e).__name__, fix="save it with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise EdgekitError(f"input '{path}' is not a single .npy array", expected="a .npy file",
                           got="an .npz archive", fix="save one array with numpy.save")
    return arr


def _jd(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))
