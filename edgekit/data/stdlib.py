"""The corpus edgekit's bundled models learn from: the running interpreter's standard library.

Every machine with Python has it, and model hubs are unreachable here, so the bundled
language models are trained and measured on the Python 3.11 standard library's own `.py`
source, read at run time (nothing of it is copied into the repository).

Files: every `.py` under the stdlib folder, except those under a `test`/`tests`/`idle_test`
folder, `site-packages` or `__pycache__`. The split is a hash of the relative path
(sha256, first 32 bits, modulo 20 == 0: held out, ~5%), so it does not depend on the order
files are listed in, or on which other files exist.

The held-out list and each file's sha256 are committed (`stdlib_heldout.json`): evaluation
refuses, in one line, a stdlib whose held-out files differ from it, and never silently
measures other text.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError

HELDOUT_LIST = Path(__file__).with_name("stdlib_heldout.json")
CORPORA = ("stdlib-heldout", "stdlib-train")
_SKIP = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(rel: str) -> str:
    """'heldout' or 'train' for a path relative to the stdlib root (POSIX form)."""
    return "heldout" if int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 20 == 0 else "train"


def corpus_files(split: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of the split's files, sorted by relative path."""
    root = root or stdlib_root()
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root).as_posix()
        if _SKIP & set(rel.split("/")) or not p.is_file():
            continue
        if split_of(rel) == split:
            out.append((rel, p))
    return sorted(out)


def write_heldout_list(dest: Path = HELDOUT_LIST) -> Path:
    """Record this interpreter's held-out files with their sha256 (run once, committed)."""
    import platform

    from edgekit._io import atomic_write_bytes
    files = [{"path": rel, "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for rel, p in corpus_files("heldout")]
    doc = {"python": platform.python_version(), "rule": "sha256(relpath)[:8] % 20 == 0", "files": files}
    atomic_write_bytes(dest, (json.dumps(doc, indent=1) + "\n").encode())
    return dest


def heldout_files() -> list[tuple[str, bytes]]:
    """The held-out files' bytes, checked against the committed list: the same files, with
    the same sha256. Anything else is an error, never other text."""
    doc = json.loads(HELDOUT_LIST.read_text())
    want = {f["path"]: f["sha256"] for f in doc["files"]}
    have = dict(corpus_files("heldout"))
    fix = (f"evaluate with the Python {doc['python']} standard library the list was made from "
           "(edgekit/data/stdlib_heldout.json)")
    if set(have) != set(want):
        diff = sorted(set(want) ^ set(have))
        raise EdgekitError(f"this Python's standard library ({stdlib_root()}) has a different held-out file set "
                           f"than the committed list ({len(diff)} differ, e.g. {diff[0]})", fix=fix)
    out = []
    for rel in sorted(want):
        data = have[rel].read_bytes()
        if hashlib.sha256(data).hexdigest() != want[rel]:
            raise EdgekitError(f"held-out file '{rel}' of this Python's standard library differs from the committed "
                               "list (sha256)", fix=fix)
        out.append((rel, data))
    return out


def train_bytes() -> bytes:
    """The train split, files joined in path order, each followed by a blank line."""
    return b"".join(p.read_bytes() + b"\n\n" for _, p in corpus_files("train"))


def iter_corpus(name: str) -> Iterator[tuple[str, bytes]]:
    if name == "stdlib-heldout":
        yield from heldout_files()
    elif name == "stdlib-train":
        for rel, p in corpus_files("train"):
            yield rel, p.read_bytes()
    else:
        raise EdgekitError(f"unknown corpus '{name}'", expected=", ".join(CORPORA),
                           fix="pass --corpus stdlib-heldout")


if __name__ == "__main__":
    # no argument: record this interpreter's held-out list (run once, committed);
    # --dump-train FILE: the train split's bytes, for training on a machine whose Python
    # is another version (scripts/train_tiny.py --train-file)
    import sys
    if sys.argv[1:2] == ["--dump-train"] and len(sys.argv) == 3:
        Path(sys.argv[2]).write_bytes(train_bytes())
        print(sys.argv[2])
    else:
        print(write_heldout_list())
