"""The `edgekit` command line: one Typer app per command group, joined here.

User mistakes raise EdgekitError; `main` prints them as one line on stderr and exits
with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from edgekit.errors import EdgekitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export recurrent and spiking models to edge devices.")


def _register() -> None:
    from edgekit.cli import export, run, bench, inspect, demo  # noqa: F401  (each adds itself to `app`)
    try:
        from edgekit.cli import neuro  # noqa: F401
    except ImportError:  # the neuro group is optional while it is being built
        pass


def _quiet() -> None:
    """Libraries' import-time chatter is not for users of the CLI."""
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    for name in ("torchao", "torch.utils._pytree", "torch.onnx", "onnxscript", "executorch", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet()
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave: unwritable, a directory, disk full, ...
        where = f"'{e.filename}': " if getattr(e, "filename", None) else ""
        print(f"edgekit: error: {where}{e.strerror or e} — check the path and its permissions",
              file=sys.stderr)
        return 2
    except SystemExit as e:  # typer exits this way for --help
        return int(e.code or 0)
    except Exception as e:  # click usage errors
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


def entry() -> None:
    sys.exit(main())
