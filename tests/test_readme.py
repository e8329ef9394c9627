"""Every command in the README's tested block runs, in order, and succeeds."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from edgekit_testutil import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- readme-tested -->", 1)[1].split("<!-- /readme-tested -->", 1)[0]
    return [ln[2:] for ln in block.splitlines() if ln.startswith("$ ")]


def test_readme_examples_run(tmp_path):
    cmds = readme_commands()
    assert len(cmds) >= 8
    for cmd in cmds:
        argv = shlex.split(cmd)
        if argv[0] == "edgekit":
            argv = [sys.executable, "-m", "edgekit", *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, str(REPO / argv[1]), *argv[2:]]
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        if "--json" in argv:
            json.loads(r.stdout)
    assert (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "chat.state").exists()
    # run from the repository root, the README's commands write nothing git would see
    written = [p.name + ("/" if p.is_dir() else "") for p in tmp_path.iterdir()]
    seen = [n for n in written if subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "--no-index", n]).returncode]
    assert not seen, f"the README's commands write {seen}: add them to .gitignore"
    assert re.search(r"layers\.1\.wkv", subprocess.run(
        [sys.executable, "-m", "edgekit", "inspect", "out/model.pte"], cwd=tmp_path,
        capture_output=True, text=True).stdout)


def test_readme_says_how_edgekit_gets_on_path():
    """A new user could not tell that `make setup` puts `edgekit` in .venv/bin, not on PATH."""
    text = (REPO / "README.md").read_text()
    assert ".venv/bin/edgekit" in text and "source .venv/bin/activate" in text
