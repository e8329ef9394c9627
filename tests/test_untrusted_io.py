"""What edgekit reads and writes on the user's behalf (issue 14): nothing the user owns is
replaced, checksums are verified (and remembered), a full disk does not lose a stream's
state, values are checked where the model uses them (float32), and input streams of any
length run in constant memory. Every test runs the real `edgekit` process unless it tests
a library function."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit_testutil import REPO, assert_clean_failure, run_cli, run_cli_peak


@pytest.fixture(scope="module")
def cfc(tmp_path_factory):
    """A small CfC (6 inputs, 4 units) exported to .onnx and .pte, and a 40-row CSV."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    root = tmp_path_factory.mktemp("cfc")
    src = ARCHITECTURES["cfc"].write_random(root / "ckpt", seed=11, units=4)
    export(src, root / "out", formats=("onnx", "pte"))
    rng = np.random.default_rng(0)
    (root / "in.csv").write_text("a,b,c,d,e,f,dt\n" + "".join(
        ",".join(f"{v:.5f}" for v in rng.normal(size=6)) + f",{rng.uniform(0.05, 0.5):.4f}\n" for _ in range(40)))
    return root


def _tokenizer_json(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({**{c: i for i, c in enumerate("abcdefgh")}, "[UNK]": 8}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(path))
    return path


# -- nothing the user owns is replaced ---------------------------------------------------

def test_export_never_replaces_files_in_a_folder_it_did_not_write(cfc, tmp_path):
    """`export -o DIR` once deleted the user's own model.onnx from a folder that was never an
    edgekit export. Now: refused, naming the files, and the folder untouched; a folder with
    other files is fine (they stay); an earlier export's folder is replaced as before."""
    for name in ("model.pte", "prefill.onnx", "model.onnx.data"):      # each of the names export writes
        own = tmp_path / f"own-{name}"
        own.mkdir()
        (own / name).write_bytes(b"the user's own file")
        r = run_cli("export", cfc / "ckpt", "-o", own, "--format", "both")
        assert_clean_failure(r, "is not an edgekit export", name)
        assert [p.name for p in own.iterdir()] == [name] and (own / name).read_bytes() == b"the user's own file"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"the user's own model")
    (mine / "notes.txt").write_text("keep me")
    r = run_cli("export", cfc / "ckpt", "-o", mine, "--format", "pte")
    assert_clean_failure(r, "'" + str(mine) + "' is not an edgekit export", "model.onnx")
    assert sorted(p.name for p in mine.iterdir()) == ["model.onnx", "notes.txt"]
    assert (mine / "model.onnx").read_bytes() == b"the user's own model"
    (mine / "model.onnx").unlink()
    r = run_cli("export", cfc / "ckpt", "-o", mine, "--format", "onnx")
    assert r.returncode == 0, r.stderr
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "model.onnx").is_file()
    r = run_cli("export", cfc / "ckpt", "-o", mine, "--format", "pte")   # its own export now: replaced
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["edgekit.json", "model.pte", "notes.txt"]


def test_state_out_never_replaces_a_file_that_is_not_a_state(cfc, tmp_path):
    """`run --state-out model.onnx` once replaced the model with a state file (exit 0)."""
    art = cfc / "out"
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    for target in (art / "model.onnx", art / "edgekit.json", other):
        before = target.read_bytes()
        r = run_cli("run", art / "model.pte", "--input", cfc / "in.csv", "--state-out", target)
        assert_clean_failure(r, "is not an edgekit state file")
        assert r.stdout == "" and target.read_bytes() == before
    state = tmp_path / "s.state"
    for _ in range(2):                        # a state file may be replaced by a newer one
        r = run_cli("run", art / "model.pte", "--input", cfc / "in.csv", "--state-out", state)
        assert r.returncode == 0, r.stderr


def test_a_full_disk_keeps_the_state_and_says_where(cfc, tmp_path):
    """A full disk at --state-out once crashed after the whole stream and lost the state. Now
    the state goes to a RAM-backed (or temp) folder and the one error line says where."""
    import subprocess
    target = tmp_path / "fulldisk" / "s.state"
    target.parent.mkdir()
    code = f"""
import errno, sys
import safetensors.numpy as sn
real = sn.save_file
def save_file(tensors, path, metadata=None):
    if "fulldisk" in str(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(tensors, path, metadata=metadata)
sn.save_file = save_file
from edgekit.cli import main
sys.exit(main({["run", str(cfc / "out" / "model.pte"), "--input", str(cfc / "in.csv"), "--state-out", str(target)]!r}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert_clean_failure(r, str(target), "No space left on device", "was saved to")
    rescue = Path(r.stderr.split("was saved to '")[1].split("'")[0])
    try:
        assert not list(target.parent.iterdir()), "a partial state file was left"
        from edgekit.artifact import read
        from edgekit.runtimes.state import load_state
        state, position, _ = load_state(rescue, read(cfc / "out")[0])
        assert position == 40 and np.isfinite(state["h"]).all()
    finally:
        rescue.unlink(missing_ok=True)


# -- checksums ---------------------------------------------------------------------------

def test_sha256_is_verified_once_and_remembered(cfc, tmp_path, monkeypatch):
    """The manifest's sha256 is checked before first use (scrambled bytes once ran and gave
    other outputs); a second open of the unchanged file does not hash it again; a rewrite
    (same size, new bytes) is caught; --no-verify skips the hash, never the size check."""
    import shutil

    import edgekit._io
    from edgekit.errors import EdgekitError
    from edgekit.verify import verify_file
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "art"
    shutil.copytree(cfc / "out", folder)
    entry = json.loads((folder / "edgekit.json").read_text())["artifacts"]["onnx"]
    hashed = []
    real = edgekit._io.sha256_file
    monkeypatch.setattr(edgekit._io, "sha256_file", lambda p: hashed.append(p) or real(p))
    check = lambda **kw: verify_file(folder / "model.onnx", entry["bytes"], entry["sha256"],  # noqa: E731
                                     manifest=folder / "edgekit.json", **kw)
    check()
    check()
    assert len(hashed) == 1, "the second open hashed the file again"
    b = bytearray((folder / "model.onnx").read_bytes())
    b[len(b) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(b))
    with pytest.raises(EdgekitError, match="is damaged: its sha256"):
        check()
    check(verify=False)                       # the user's choice: no hash
    (folder / "model.onnx").write_bytes(bytes(b[:-1]))
    with pytest.raises(EdgekitError, match="bytes"):
        check(verify=False)
    r = run_cli("run", folder / "model.pte", "--input", cfc / "in.csv", env={"XDG_CACHE_HOME": str(tmp_path / "c2")})
    assert r.returncode == 0, r.stderr          # the other file of the folder is intact
    r = run_cli("run", folder / "model.onnx", "--input", cfc / "in.csv")
    assert_clean_failure(r, "model.onnx")


def test_a_relabelled_state_is_refused(cfc, tmp_path):
    """model_id was not covered by the state's checksum: a state of one model, relabelled with
    another's id, loaded into it. Now the checksum covers the header."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    other = tmp_path / "other"
    export(ARCHITECTURES["cfc"].write_random(tmp_path / "ckpt", seed=12, units=4), other, formats=("pte",))
    state = tmp_path / "s.state"
    r = run_cli("run", cfc / "out" / "model.pte", "--input", cfc / "in.csv", "--state-out", state)
    assert r.returncode == 0, r.stderr
    b = state.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header["__metadata__"]["model_id"] = json.loads((other / "edgekit.json").read_text())["model_id"]
    hb = json.dumps(header).encode()
    state.write_bytes(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
    r = run_cli("run", other / "model.pte", "--input", cfc / "in.csv", "--state-in", state)
    assert_clean_failure(r, "checksum mismatch")


def test_a_nan_state_with_a_valid_checksum_is_refused(cfc, tmp_path):
    from edgekit.artifact import read
    from edgekit.runtimes.state import save_state
    manifest = read(cfc / "out")[0]
    p = save_state(tmp_path / "nan.state", manifest, {"h": np.full((1, 4), np.nan, np.float32)}, 5)
    r = run_cli("run", cfc / "out" / "model.onnx", "--input", cfc / "in.csv", "--state-in", p)
    assert_clean_failure(r, "'h' holds NaN")


def test_every_single_bit_flip_of_a_state_is_refused_cleanly(cfc, tmp_path):
    """Each byte of a saved state, flipped in its lowest bit, in turn (the header's JSON, its
    metadata strings and the tensor bytes): load_state either refuses with an EdgekitError or,
    where the flip is invisible to the reader (JSON whitespace), returns the very same state.
    Never another exception (CI once met a JSONDecodeError from a flip inside the saved spec)."""
    from edgekit.artifact import read
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.state import _output_size, load_state, save_state
    manifest = read(cfc / "out")[0]
    h = np.arange(4, dtype=np.float32).reshape(1, 4) / 7
    good = save_state(tmp_path / "good.state", manifest, {"h": h}, 12, 
                      last_output=np.ones(_output_size(manifest), np.float32))
    b = good.read_bytes()
    flipped = tmp_path / "flip.state"
    refused = 0
    for off in range(len(b)):
        flipped.write_bytes(b[:off] + bytes([b[off] ^ 0x01]) + b[off + 1:])
        try:
            state, position, _ = load_state(flipped, manifest)
        except EdgekitError:
            refused += 1
            continue
        assert position == 12 and np.array_equal(state["h"], h), f"flip at {off} changed the state silently"
    assert refused >= len(b) - 8, f"only {refused} of {len(b)} flips refused"


# -- values where the model uses them ----------------------------------------------------

def test_an_npz_named_npy_is_one_line(cfc, tmp_path):
    """An .npz archive renamed .npy was a traceback from numpy's header reader."""
    path = tmp_path / "in.npy"
    with open(path, "wb") as f:
        np.savez(f, rows=np.zeros((4, 7), np.float32))
    r = run_cli("run", cfc / "out" / "model.onnx", "--input", path)
    assert_clean_failure(r, "is an .npz archive named .npy")


def test_inputs_are_checked_in_float32(cfc):
    """dt = 1e-300 passed `dt > 0` in float64 and became 0 in float32 (LTC then gave NaN
    forever); 1e308 became inf. Both are refused, in the CLI (fuzz test) and the API."""
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.session import StreamingSession
    for art in ("model.onnx", "model.pte"):
        s = StreamingSession(cfc / "out" / art)
        x = np.ones(6)
        with pytest.raises(EdgekitError, match="input 'dt' at step 0 is 0 in float32"):
            s.step((x, 1e-300))
        with pytest.raises(EdgekitError, match="input 'x' at step 0 holds NaN, inf"):
            s.step((x * 1e308, 0.1))
        with pytest.raises(EdgekitError, match="input 'dt'"):
            list(s.stream([(x, 0.1), (x, 0.0)]))
        assert np.isfinite(s.step((x, 0.1))).all()


def test_an_ltc_refuses_a_dt_that_float32_rounds_to_zero(tmp_path):
    """The issue's own case: an LTC given dt = 1e-300 (positive in float64, 0 in float32)
    gave NaN from then on. Refused in one line by the CLI; the stream before it is intact."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    src = ARCHITECTURES["ltc"].write_random(tmp_path / "ltc", seed=3, units=4)
    export(src, tmp_path / "out", formats=("onnx",))
    from edgekit.artifact import read
    n_in = read(tmp_path / "out")[0].inputs[0].shape[-1]
    rows = "".join(",".join(["0.5"] * n_in) + f",{dt}\n" for dt in ("0.1", "0.2", "1e-300", "0.1"))
    (tmp_path / "in.csv").write_text(",".join(f"f{i}" for i in range(n_in)) + ",dt\n" + rows)
    r = run_cli("run", tmp_path / "out" / "model.onnx", "--input", tmp_path / "in.csv")
    assert_clean_failure(r, "dt = 1e-300", "0 in float32")


# -- streams -----------------------------------------------------------------------------

def test_csv_from_stdin_and_a_fifo_match_the_file(cfc, tmp_path):
    import subprocess
    import threading
    art = cfc / "out" / "model.pte"
    want = run_cli("run", art, "--input", cfc / "in.csv")
    assert want.returncode == 0 and len(want.stdout.splitlines()) == 40
    r = subprocess.run([sys.executable, "-m", "edgekit", "run", str(art), "--input", "-"], cwd=REPO,
                       input=(cfc / "in.csv").read_text(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == want.stdout, r.stderr
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text((cfc / "in.csv").read_text()))
    writer.start()
    r = run_cli("run", art, "--input", fifo)
    writer.join()
    assert r.returncode == 0 and r.stdout == want.stdout, r.stderr


def test_sigterm_during_run_input_saves_the_state_at_a_row_boundary(cfc, tmp_path):
    """A sensor stream on stdin, stopped by SIGTERM (a service manager's stop) while it waits
    for rows: status 143, every row read so far printed, and the state saved after exactly
    those rows (it loads at that position and continues as the uninterrupted stream does)."""
    import signal
    import subprocess
    import time
    art, state = cfc / "out" / "model.onnx", tmp_path / "s.state"
    lines = (cfc / "in.csv").read_text().splitlines(keepends=True)
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "run", str(art), "--input", "-", "--state-out", str(state)],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write("".join(lines[:11]))                 # the header and 10 rows; the stream stays open
    p.stdin.flush()
    time.sleep(5)
    assert p.poll() is None, p.stderr.read()[-2000:]
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err[-2000:])
    assert "Traceback" not in err and "state saved" in err, err[-2000:]
    assert len(out.splitlines()) == 10, out
    resumed = subprocess.run([sys.executable, "-m", "edgekit", "run", str(art), "--input", "-", "--state-in", str(state)],
                             cwd=REPO, input="".join(lines[:1] + lines[11:]), capture_output=True, text=True, timeout=300)
    whole = run_cli("run", art, "--input", cfc / "in.csv")
    assert resumed.returncode == 0 and whole.returncode == 0, resumed.stderr
    assert out + resumed.stdout == whole.stdout


def test_a_million_rows_stream_in_constant_memory(cfc, tmp_path):
    """`run --input` once read the whole file into a list: now rows are read as they are
    used. The peak resident memory of a 1,000,000-row .npy run (a 28 MB file) and of a
    200,000-row CSV on stdin (6 MB; ~34 MB as Python floats) is within 8 MB of a 10,000-row
    run of the same kind. (A growth-after-start-up check on one run was flaky: allocator
    arenas still grew by 2.7 MB at 1 s into a 6 s run on the CI machine.)"""
    rows = np.random.default_rng(1).normal(size=(1_000_000, 7)).astype(np.float32)
    rows[:, 6] = 0.1
    art = cfc / "out" / "model.pte"

    def peak(n, kind):
        out = tmp_path / f"out-{kind}-{n}.txt"
        if kind == "npy":
            np.save(tmp_path / f"rows{n}.npy", rows[:n])
            args, data = ("--input", tmp_path / f"rows{n}.npy"), None
        else:
            args, data = ("--input", "-"), b"a,b,c,d,e,f,dt\n" + b"0.1,0.2,0.3,-0.1,-0.2,0.5,0.1\n" * n
        with open(out, "wb") as f:
            r, bytes_ = run_cli_peak("run", art, *args, input=data, stdout=f)
        assert r.returncode == 0, r.stderr[-1000:]
        with open(out, "rb") as f:
            assert sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b"")) == n
        return bytes_

    for kind, n in (("npy", 1_000_000), ("csv", 200_000)):
        small, big = peak(10_000, kind), peak(n, kind)
        print(f"\n{kind}: peak RSS {small / 2**20:.1f} MB at 10k rows, {big / 2**20:.1f} MB at {n:,}")
        assert big - small < 8 * 2**20, (kind, small, big)


# -- text in -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny Mamba save_pretrained folder (which holds no tokenizer) exported with
    --tokenizer, and the tokenizer.json."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    root = tmp_path_factory.mktemp("lm")
    tok = _tokenizer_json(root / "tok.json")
    src = ARCHITECTURES["mamba"].write_random(root / "mamba", seed=2)
    export(src, root / "out", formats=("onnx",), tokenizer=tok)
    return root


def test_export_and_run_take_a_tokenizer(lm, tmp_path):
    """A Hugging Face Mamba folder could not take --prompt (save_pretrained writes no
    tokenizer, and there was no --tokenizer). The export ships it (with its sha256); run
    --prompt, --prompt-file and stdin give the tokens of the ids the tokenizer encodes."""
    import subprocess
    from tokenizers import Tokenizer
    m = json.loads((lm / "out" / "edgekit.json").read_text())
    assert m["tokenizer_file"] == "tokenizer.json" and len(m["tokenizer_sha256"]) == 64
    ids = Tokenizer.from_file(str(lm / "tok.json")).encode("badcafe").ids
    want = run_cli("run", lm / "out", "--tokens", ",".join(map(str, ids)), "--steps", 4, "--json")
    assert want.returncode == 0, want.stderr
    want = json.loads(want.stdout)["tokens"]
    (tmp_path / "p.txt").write_text("badcafe")
    for args, stdin in ((["--prompt", "badcafe"], None), (["--prompt-file", tmp_path / "p.txt"], None),
                        (["--prompt-file", "-"], "badcafe")):
        r = subprocess.run([sys.executable, "-m", "edgekit", "run", str(lm / "out"), *map(str, args), "--steps", "4",
                            "--json"], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 0 and json.loads(r.stdout)["tokens"] == want, (args, r.stderr)
    # run --tokenizer on a checkpoint folder that has none
    r = run_cli("run", lm / "mamba", "--tokenizer", lm / "tok.json", "--prompt", "badcafe", "--steps", 4, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["tokens"] == want, r.stderr


def test_bad_text_input_is_one_line(lm, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert_clean_failure(run_cli("run", lm / "out", "--prompt-file", tmp_path / "latin1.txt"), "not UTF-8")
    assert_clean_failure(run_cli("run", lm / "out", "--prompt", "ab\udcffc"), "not valid Unicode")
    assert_clean_failure(run_cli("run", lm / "out", "--tokens", "1", "--temperature", "nan"), "--temperature nan")
    assert_clean_failure(run_cli("run", lm / "out", "--tokens", "1", "--top-p", "0"), "--top-p 0")
    (tmp_path / "broken.json").write_text('{"model": ')
    out = tmp_path / "x"
    assert_clean_failure(run_cli("export", lm / "mamba", "-o", out, "--tokenizer", tmp_path / "broken.json"),
                         "not a readable tokenizer.json")
    assert not out.exists()


def test_a_damaged_tokenizer_in_an_export_is_one_line_even_with_tokens(lm, tmp_path):
    """A corrupt tokenizer.json copied into an export crashed `run` even when the tokens were
    given as ids. Its sha256 is in the manifest: refused in one line, naming it; with
    --no-verify the ids still run and print as ids."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(lm / "out", out)
    (out / "tokenizer.json").write_text('{"model": {"vocab": [')
    r = run_cli("run", out / "model.onnx", "--tokens", "1,2", "--steps", "2")
    assert_clean_failure(r, "tokenizer.json")
    r = run_cli("run", out / "model.onnx", "--tokens", "1,2", "--steps", "2", "--no-verify")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stdout.split()) == 2 and all(t.isdigit() for t in r.stdout.split()), r.stdout


def test_cleanup_finishes_before_a_second_signal_is_taken(tmp_path):
    """An export's temp folder was once left behind after Ctrl-C: a second interrupt (pressed
    again, or re-sent by a library) stopped its removal halfway. Removal now runs with SIGINT
    and SIGTERM held: a signal sent during it is taken right after, and the folder is gone."""
    import signal

    from edgekit._io import remove_tree, signals_held

    class Stop(Exception):
        pass

    def raise_stop(signum, frame):
        raise Stop

    tree = tmp_path / ".edgekit-export-x"
    for i in range(50):
        (tree / f"d{i}").mkdir(parents=True)
        (tree / f"d{i}" / "f").write_bytes(b"x" * 1000)
    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        done = []
        with pytest.raises(Stop):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)          # arrives mid-cleanup
                remove_tree(tree)
                done.append(True)
        assert done == [True] and not tree.exists()
    finally:
        signal.signal(signal.SIGTERM, previous)
