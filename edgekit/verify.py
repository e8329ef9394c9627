"""Checksums of an export's files, verified before first use and remembered.

The manifest records each file's size and sha256. A session checks both before it opens a
file: scrambled bytes in a model give different tokens with exit 0, and nothing downstream
would notice. Hashing a 500 MB model costs about a second, so a verified file is remembered
by what would change if it were rewritten: (real path, size, mtime_ns, inode, ctime_ns) ->
sha256, in `$XDG_CACHE_HOME/edgekit/verified.json` (default `~/.cache/edgekit/`). A second
run of an unchanged file pays one `stat`. `--no-verify` (`verify=False`) skips the hash for
users who trust their storage; the size is checked always.

The cache is itself an untrusted file: bounded in size, every entry type-checked, and a
damaged cache is ignored (and rewritten), never an error. It only ever lets a file through
whose identity (path, size, times, inode) and the manifest's checksum both match what was
hashed before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgekit.errors import EdgekitError

MAX_CACHE_BYTES = 1 << 20
MAX_CACHE_ENTRIES = 256


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgekit" / "verified.json"


def _identity(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _load_cache() -> dict[str, dict]:
    p = cache_path()
    try:
        if p.stat().st_size > MAX_CACHE_BYTES:
            return {}
        raw = json.loads(p.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
            and isinstance(v.get("id"), list) and all(isinstance(i, int) for i in v["id"])}


def _remember(key: str, ident: list[int], sha: str) -> None:
    """Best effort: a read-only home or a full disk only costs the next run a hash."""
    from edgekit._io import atomic_write_bytes
    cache = _load_cache()
    cache.pop(key, None)
    cache[key] = {"id": ident, "sha256": sha}
    while len(cache) > MAX_CACHE_ENTRIES:          # oldest first (insertion order)
        cache.pop(next(iter(cache)))
    try:
        atomic_write_bytes(cache_path(), json.dumps(cache).encode())
    except OSError:
        pass


def verify_file(path: Path, size: int | None, sha256: str | None, *, manifest: Path, verify: bool = True) -> None:
    """Raise EdgekitError unless `path` has the size (always) and sha256 (unless verify is
    False) that `manifest` records for it. None: the manifest (an older export) does not
    record it."""
    from edgekit._io import sha256_file
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"'{path}' named by {manifest.name} is missing",
                           fix="copy the whole export folder, or export again")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise EdgekitError(f"'{path}' has {actual:,} bytes", expected=f"{size:,} bytes (per {manifest.name})",
                           fix="the file is truncated or was replaced; copy it again, or export it again")
    if not verify or sha256 is None:
        return
    key, ident = _identity(path)
    hit = _load_cache().get(key)
    if hit is not None and hit["id"] == ident and hit["sha256"] == sha256:
        return
    got = sha256_file(path)
    if got != sha256:
        raise EdgekitError(f"'{path}' is damaged: its sha256 is {got[:16]}…, {manifest.name} records {sha256[:16]}…",
                           fix="copy the file again, or export it again (--no-verify skips this check)")
    _remember(key, ident, got)
