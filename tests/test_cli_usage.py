"""Usage mistakes at the command line (a mistyped option, a value of the wrong type, a missing
argument, an unknown command) get click's short usage message and exit 2, never a traceback:
typer 0.29 raises the exceptions of the click it bundles, which the CLI once did not catch."""

from __future__ import annotations

import pytest

from edgekit_testutil import run_cli


@pytest.mark.parametrize("args,words", [
    (["run", "--steps", "abc", "x.onnx"], "Invalid value for '--steps'"),
    (["run", "--bogus"], "No such option"),
    (["export"], "Missing argument"),
    (["nonsense"], "No such command"),
])
def test_usage_error_is_short_and_exits_2(args, words):
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and words in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.splitlines()) <= 8, r.stderr


def test_bare_command_prints_help_without_a_traceback():
    r = run_cli()
    assert "Traceback" not in r.stdout + r.stderr and "export" in r.stdout + r.stderr
