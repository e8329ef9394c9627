"""Usage mistakes at the command line (a mistyped option, a value of the wrong type, a missing
argument, an unknown command) get click's short usage message and exit 2, never a traceback:
typer 0.29 raises the exceptions of the click it bundles, which the CLI once did not catch."""

from __future__ import annotations

import pytest

from edgekit_testutil import REPO, run_cli


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


def test_export_help_names_every_checkpoint_kind():
    """`export --help` described SRC as an RWKV-7 .pth only."""
    r = run_cli("export", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0
    for kind in ("RWKV-7", "Mamba", "Mamba-2", "RecurrentGemma", "CfC/LTC"):
        assert kind in r.stdout, (kind, r.stdout)


def test_version_and_archs():
    from edgekit import __version__
    from edgekit.models import ARCHITECTURES
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edgekit {__version__}", r.stdout + r.stderr
    r = run_cli("archs")
    assert r.returncode == 0 and [ln.split()[0] for ln in r.stdout.splitlines()] == sorted(ARCHITECTURES)
    r = run_cli("devices")
    names = sorted(p.stem for p in (REPO / "devices").glob("*.toml"))
    assert r.returncode == 0 and [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == names, r.stdout + r.stderr
    assert r.stdout.splitlines()[0].split()[:2] == ["name", "class"]


@pytest.mark.parametrize("sig,code,word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_during_export_exits_non_zero_and_leaves_the_previous_export(sig, code, word, tmp_path):
    """Ctrl-C or SIGTERM in the middle of an export: its exit status (130 / 143), one line, the
    temp folder removed, and the previous export in OUTDIR untouched (so `edgekit export ...
    && deploy` does not ship a stale model)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["mamba"].write_random(tmp_path / "m", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "edgekit.json").write_text('{"schema": "edgekit.manifest/2", "previous": true}')  # the last good export
    before = (out / "edgekit.json").read_bytes()
    # SIGINT at its default even when this test runs as a background job (which ignores it,
    # and a child inherits that): a user's Ctrl-C is what is tested
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "export", str(src), "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(out.glob(".edgekit-export-*")):                 # the export has started
        assert p.poll() is None and time.time() < deadline, "the export ended before the signal"
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, (p.returncode, err[-2000:])
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"edgekit: {word}", err[-2000:]
    assert not list(out.glob(".edgekit-export-*")), "the temp folder was left behind"
    assert (out / "edgekit.json").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["edgekit.json"]


def test_sigterm_during_run_saves_the_state_at_a_token_boundary(tmp_path):
    """SIGTERM (a service manager's stop) ends `edgekit run --state-out` as Ctrl-C does: the
    stream's state is saved, status 143."""
    import json
    import signal
    import subprocess
    import sys
    import time
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    from edgekit.runtimes.session import StreamingSession
    src = ARCHITECTURES["mamba"].write_random(tmp_path / "m", seed=1)
    export(src, tmp_path / "out", formats=("onnx",))
    state = tmp_path / "s.state"
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(tmp_path / "out" / "model.onnx"),
                          "--tokens", "1,2,3", "--steps", "100000000", "--json", "--state-out", str(state)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)                                               # well into the stream
    assert p.poll() is None, p.stderr.read()[-2000:]
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err[-2000:])
    assert "Traceback" not in err and "state saved" in err, err[-2000:]
    n = len(json.loads(out)["tokens"])
    sess = StreamingSession(tmp_path / "out" / "model.onnx")
    sess.load_state(state)
    assert sess.position == 3 + n - 1, (sess.position, n)   # the prompt, and every token but the last fed back


def _commands():
    """Every command and subcommand of the real app: (argv path, its function)."""
    from edgekit.cli import app

    def walk(t, path):
        for info in t.registered_commands:
            yield path + (info.name or info.callback.__name__.replace("_", "-"),), info.callback
        for group in t.registered_groups:
            yield path + (group.name,), None
            yield from walk(group.typer_instance, path + (group.name,))
    return list(walk(app, ()))


def _params(fn):
    """(positional placeholders, required options with a placeholder, numeric options) of a command."""
    import inspect as _inspect
    import typing

    import typer
    hints = typing.get_type_hints(fn)
    args, required, numeric = [], [], []
    for name, p in _inspect.signature(fn).parameters.items():
        info = p.default
        assert getattr(info, "help", None), f"{fn.__name__}: '{name}' has no help text"
        if isinstance(info, typer.models.ArgumentInfo):
            args.append("x")
        elif isinstance(info, typer.models.OptionInfo):
            flag = next(d for d in info.param_decls if d.startswith("--")) if info.param_decls else \
                "--" + name.replace("_", "-")
            if info.default is ...:
                required += [flag, "x"]
            if hints.get(name) in (int, float):
                numeric.append(flag)
    return args, required, numeric


COMMANDS = _commands()
# commands whose job needs no argument: run bare, they do it (covered by their own tests)
RUN_BARE = {("demo",), ("archs",), ("devices",)}


@pytest.mark.parametrize("path,fn", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_answers_usage_mistakes_in_one_line(path, fn):
    """Each command and subcommand, through the real process: --help prints help (exit 0, no
    stderr); an unknown option, a missing argument and a non-number for each numeric option
    each give ONE stderr line `edgekit: error: ...` that names the mistake and where help is,
    exit 2, no traceback, nothing on stdout."""
    def one_line(r, *needles):
        assert r.returncode == 2, (path, r.returncode, r.stderr[-1500:])
        assert r.stdout == "" and "Traceback" not in r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), r.stderr
        assert f"'edgekit {' '.join(path)} --help'" in lines[0], lines[0]
        for n in needles:
            assert n in lines[0], (n, lines[0])

    r = run_cli(*path, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout and r.stderr == "" and "Traceback" not in r.stdout, r
    # flags show as flags, not `--json <bool>` (typer's own --help keeps its <bool>); no Python reprs
    assert not [ln for ln in r.stdout.splitlines() if "<bool>" in ln and "--help" not in ln], r.stdout
    assert not any(w in r.stdout.split() for w in ("None", "True", "False")), r.stdout
    if fn is None:                      # a group: bare, it shows its help
        r = run_cli(*path)
        assert r.returncode == 0 and "Usage:" in r.stdout and "Traceback" not in r.stdout + r.stderr
        return
    args, required, numeric = _params(fn)
    one_line(run_cli(*path, *args, *required, "--no-such-option"), "No such option: --no-such-option")
    if path not in RUN_BARE:
        assert args or required, f"{path} needs no argument: list it in RUN_BARE"
        one_line(run_cli(*path), "Missing")
    for flag in numeric:
        one_line(run_cli(*path, *args, *required, flag, "abc"), f"Invalid value for '{flag}'")


def test_export_to_a_pipe_writes_nothing_on_stderr(tmp_path):
    """Rich's progress is for terminals: an export whose stderr is a log file or a pipe writes
    nothing there (not even the newline a transient progress bar ends with)."""
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["cfc"].write_random(tmp_path / "cfc", seed=0)
    r = run_cli("export", src, "-o", tmp_path / "out", "--format", "onnx")
    assert r.returncode == 0 and r.stderr == "", repr(r.stderr[-500:])


def test_the_python_api_is_as_quiet_as_the_cli(tmp_path):
    """Exporting and stepping from Python printed torchao's and torch._pytree's import-time
    warnings (the CLI silenced them): a library writes nothing its user did not ask for."""
    import subprocess
    import sys
    code = f"""
import edgekit.export
from edgekit.models import ARCHITECTURES
from edgekit.runtimes.session import StreamingSession
src = ARCHITECTURES["cfc"].write_random({str(tmp_path / "cfc")!r}, seed=0)
edgekit.export(src, {str(tmp_path / "out")!r}, formats=("onnx", "pte"))
for f in ("model.onnx", "model.pte"):
    StreamingSession({str(tmp_path / "out")!r} + "/" + f).step(([0.1] * 6, 0.1))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr[-2000:]
