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


def test_version_and_archs():
    from edgekit import __version__
    from edgekit.models import ARCHITECTURES
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edgekit {__version__}", r.stdout + r.stderr
    r = run_cli("archs")
    assert r.returncode == 0 and [ln.split()[0] for ln in r.stdout.splitlines()] == sorted(ARCHITECTURES)


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
