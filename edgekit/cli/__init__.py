"""The `edgekit` command line: one Typer app per command group, joined here.

Registration flows down: each command module defines its command function (or, for a
group, its own `typer.Typer`, e.g. `neuro.neuro_app`) and never imports this package;
this module imports them and adds them to `app`. A command module that fails to import
fails `import edgekit.cli` loudly instead of dropping its commands.

User mistakes raise EdgekitError; `main` prints them as one line on stderr and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from edgekit.cli import bench, bundle, demo, eval, export, inspect, neuro, quantize, run
from edgekit.errors import EdgekitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export recurrent and spiking models to edge devices.")


def _version(value: bool) -> None:
    if value:
        from edgekit import __version__
        print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                       help="Print edgekit's version and exit.")) -> None:
    """Export recurrent and spiking models to edge devices."""


def archs_cmd() -> None:
    """List the architectures edgekit loads, with the checkpoint format each reads."""
    from edgekit.models import ARCHITECTURES
    for name, cls in sorted(ARCHITECTURES.items()):
        print(f"{name:<16} {cls.checkpoint}")
def devices_cmd(name: str = typer.Argument(None, help="a profile to show in full (default: list them all)",
                                           show_default=False)) -> None:
    """List the device profiles (devices/*.toml), or show one: format, dtype, quantization,
    threads, memory bandwidth and RAM budget."""
    from edgekit import profiles
    if name is not None:
        _show_profile(name)
        return
    print(f"{'name':<18} {'class':<13} {'format':<6} {'dtype':<5} {'quant':<5} {'GB/s':>7} {'RAM budget':>10}  "
          "description")
    for n in profiles.available():
        try:
            d = profiles.read_toml(profiles.profile_path(n))
        except (EdgekitError, OSError) as e:
            print(f"{n:<18} (unreadable profile: {str(e).splitlines()[0][:80]})")
            continue
        if d.get("class") == "neuromorphic":
            print(f"{n:<18} {'neuromorphic':<13} {'-':<6} {'fixed':<5} {'-':<5} {'-':>7} {'-':>10}  "
                  f"{d.get('description', '')}")
            continue
        try:
            p = profiles.load_profile(n)
        except EdgekitError as e:
            print(f"{n:<18} (invalid profile: {str(e).splitlines()[0][:80]})")
            continue
        print(f"{p.name:<18} {p.klass:<13} {p.format:<6} {p.dtype:<5} {p.quant:<5} {p.bandwidth_gbs:>7.1f} "
              f"{p.ram_budget_mb:>7,} MB  {p.description}")


def _show_profile(name: str) -> None:
    from edgekit import profiles
    d = profiles.read_toml(profiles.profile_path(name))
    if d.get("class") == "neuromorphic":
        from edgekit.neuro.device import load_device
        dev = load_device(name)
        print(f"{name}: neuromorphic ({dev.path})")
        for table in ("limits", "fixed_point", "energy"):
            for k, v in getattr(dev, table).items():
                print(f"  {table}.{k} = {v}")
        return
    p = profiles.load_profile(name)
    print(f"{p.name}: {p.description}")
    print(f"  profile      {p.path}")
    print(f"  class        {p.klass}")
    print(f"  format       {p.format} (runs: {', '.join(p.formats)}), {p.backend} with {p.accelerator}")
    print(f"  dtype        {p.dtype}" + ("  (weights and compute fp16, the recurrent state fp32)" if p.dtype == "fp16" else ""))
    print(f"  quantization {p.quant}")
    print(f"  ops, passes  {p.ops}, {'the format default' if p.passes is None else ', '.join(p.passes)}")
    print(f"  threads      {p.threads}")
    print(f"  bandwidth    {p.bandwidth_gbs:g} GB/s ({p.bandwidth_kind})")
    print(f"  RAM budget   {p.ram_budget_mb:,} MB")
    print(f"  ISA          {', '.join(p.isa)}")
    print(f"  static shapes {'yes' if p.static_shapes else 'no'}")
    if p.notes:
        print(f"  notes        {p.notes}")


# in this order in `edgekit --help`
app.command("export")(export.export_cmd)
app.command("run")(run.run_cmd)
app.command("bench")(bench.bench_cmd)
app.command("eval")(eval.eval_cmd)
app.command("quantize")(quantize.quantize_cmd)
app.command("inspect")(inspect.inspect_cmd)
app.command("bundle")(bundle.bundle_cmd)
app.command("demo")(demo.demo_cmd)
app.command("archs")(archs_cmd)
app.command("devices")(devices_cmd)
app.add_typer(neuro.neuro_app, name="neuro")


def _quiet() -> None:
    """Libraries' import-time chatter is not for users of the CLI."""
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    for name in ("torchao", "torch.utils._pytree", "torch.onnx", "onnxscript", "executorch", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so every command unwinds (temp files removed,
    an export's previous folder untouched) as it does for Ctrl-C; exit status 143."""


_terminated: list[bool] = [False]


def _on_sigterm(signum, frame):
    _terminated[0] = True
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal
    _quiet()
    _terminated[0] = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = app(args=argv, prog_name="edgekit", standalone_mode=False)
        if code == 130:     # typer returns (does not raise) 130 for a Ctrl-C (or SIGTERM) in a command
            raise KeyboardInterrupt
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        # Unwinding from a signal: a second one (or a library that re-sends it, e.g. a worker
        # pool's handler) must not turn the exit into a death by signal (-2, no status)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("edgekit: terminated" if _terminated[0] else "edgekit: interrupted", file=sys.stderr)
        return 143 if _terminated[0] else 130
    except OSError as e:  # a path the user gave: unwritable, a directory, disk full, ...
        where = f"'{e.filename}': " if getattr(e, "filename", None) else ""
        print(f"edgekit: error: {where}{e.strerror or e} — check the path and its permissions",
              file=sys.stderr)
        return 2
    except SystemExit as e:  # typer exits this way for --help
        return int(e.code or 0)
    except Exception as e:  # usage errors: a bad option, a missing argument, a value of the wrong type
        if isinstance(e, _usage_errors()):
            return _usage_error(e)
        raise
    finally:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _usage_error(e) -> int:
    """One line for a usage mistake, naming it and where help is; help itself where the
    user asked for nothing (a bare group)."""
    from typer import _click
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        return 0
    where = f" — see '{ctx.command_path} --help'" if ctx is not None else " — see 'edgekit --help'"
    message = e.format_message() if isinstance(e, _click.exceptions.ClickException) else str(e)
    print(f"edgekit: error: {' '.join(message.split())}{where}", file=sys.stderr)
    return getattr(e, "exit_code", 2) or 2


def _usage_errors() -> tuple[type, ...]:
    """The exception types of a usage error. typer 0.29 raises those of the click it bundles
    (`typer._click`), not the separately installed click's: catching only the latter printed
    a traceback for every mistyped option."""
    from typer import _click          # typer is pinned (pyproject): its bundled click raises these
    return (_click.exceptions.ClickException,)


def entry() -> None:
    code = main()
    if code in (130, 143):
        # Interrupted, already unwound (temp files removed, "edgekit: interrupted" printed):
        # leave now. Interpreter shutdown could still meet the pending interrupt (a library's
        # atexit hook) and end the process BY the signal (status -2, seen in the CI replica
        # after the line was printed), which `edgekit export ... && deploy` cannot tell apart.
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
