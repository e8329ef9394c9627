"""Fuzz: systematically corrupted artifacts, manifests, state files, CSVs, tokenizers and
checkpoint configs, each run through the real `edgekit` process.

The contract for every case (issue 14): either the run is refused, with ONE stderr line
`edgekit: error: ...` that names the problem and carries a fix (an em dash and advice),
nothing on stdout, a non-zero exit and no traceback; or the mutation was harmless, and then
stdout is exactly the pristine run's (a corrupted file never yields a different answer with
exit 0). Families whose every mutation breaks the file (artifact bytes, state files, CSVs)
must be refused every time. No case leaves a file behind, and no child grows past a memory
bound. Seeded; two processes at a time.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edgekit_testutil import run_cli, run_cli_peak

SEED = 1405
MAX_CHILD_RSS_MB = 1500


@dataclass
class Case:
    family: str
    name: str
    folder: Path                       # the case's own copy of everything it reads
    argv: list
    must_fail: bool                    # every mutation in the family breaks the file
    stdin: bytes | None = None
    allowed_new: set = field(default_factory=set)   # files the command may create


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A CfC export (features) and an RWKV-7 export (tokens), a CSV, a state file, a
    tokenizer.json, and the CfC checkpoint folder; with each pristine run's stdout."""
    from edgekit.export import export
    from edgekit.models import ARCHITECTURES
    root = tmp_path_factory.mktemp("pristine")
    cfc_src = ARCHITECTURES["cfc"].write_random(root / "cfc_ckpt", seed=3)
    export(cfc_src, root / "cfc", formats=("onnx", "pte"))
    export(ARCHITECTURES["rwkv7"].write_random(root / "rwkv7.pth", seed=4), root / "lm", formats=("onnx",))
    rng = np.random.default_rng(SEED)
    rows = rng.normal(size=(12, 6))
    dts = rng.uniform(0.05, 0.5, size=12)
    (root / "in.csv").write_text("a,b,c,d,e,f,dt\n" + "".join(
        ",".join(f"{v:.6f}" for v in r) + f",{d:.4f}\n" for r, d in zip(rows, dts)))
    r = run_cli("run", root / "cfc" / "model.onnx", "--input", root / "in.csv", "--steps", 3,
                "--state-out", root / "cfc.state")
    assert r.returncode == 0, r.stderr
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({**{c: i for i, c in enumerate("abcdefgh ")}, "[UNK]": 9}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    return root


def _cases(root: Path, work: Path) -> list[Case]:
    rnd = random.Random(SEED)
    cases: list[Case] = []

    def folder(name: str, *items: str) -> Path:
        d = work / name
        d.mkdir()
        for it in items:
            src = root / it
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, d / it)
        return d

    def run_cfc(d: Path, art: str = "model.onnx", *extra):
        return ["run", d / "cfc" / art, "--input", d / "in.csv", "--steps", 3, *extra]

    # 1. artifact bytes: truncated, or one byte flipped (the manifest's sha256 catches both)
    for art in ("model.onnx", "model.pte"):
        size = (root / "cfc" / art).stat().st_size
        for k, off in enumerate(sorted(rnd.sample(range(size), 5)) + [0, size - 1]):
            for how in ("truncate", "flip"):
                d = folder(f"art-{art}-{how}-{k}", "cfc", "in.csv")
                b = bytearray((d / "cfc" / art).read_bytes())
                b = b[:off] if how == "truncate" else b[:off] + bytes([b[off] ^ 0x5A]) + b[off + 1:]
                (d / "cfc" / art).write_bytes(bytes(b))
                cases.append(Case("artifact", f"{art} {how} at {off}", d, run_cfc(d, art), True))

    # 2. manifest: keys deleted, types swapped, paths injected, huge shapes, broken JSON
    base = json.loads((root / "cfc" / "edgekit.json").read_text())

    def manifest_case(name: str, text: str | bytes, art: str = "model.onnx"):
        d = folder(f"man-{len(cases)}", "cfc", "in.csv")
        (d / "cfc" / "edgekit.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append(Case("manifest", name, d, run_cfc(d, art), False))

    swaps = [None, 7, "x", [], {}, True, -1, 1 << 62]
    for key in base:
        m = dict(base)
        del m[key]
        manifest_case(f"delete {key}", json.dumps(m))
        m[key] = rnd.choice(swaps)
        manifest_case(f"{key} = {m[key]!r}", json.dumps(m))
    for art in ("onnx", "pte"):
        for key in base["artifacts"][art]:
            m = json.loads(json.dumps(base))
            del m["artifacts"][art][key]
            manifest_case(f"delete artifacts.{art}.{key}", json.dumps(m), f"model.{art}")
    for evil in ("../cfc/model.onnx", "/etc/passwd", "sub/model.onnx", "..", "", "model.onnx\0x"):
        m = json.loads(json.dumps(base))
        m["artifacts"]["onnx"]["file"] = evil
        manifest_case(f"file = {evil!r}", json.dumps(m))
        m = json.loads(json.dumps(base))
        m["tokenizer_file"] = evil
        manifest_case(f"tokenizer_file = {evil!r}", json.dumps(m))
    for where in ("state", "inputs"):
        m = json.loads(json.dumps(base))
        m[where][0]["shape"] = [1, 1 << 39]
        manifest_case(f"{where} shape huge", json.dumps(m))
        m[where][0]["shape"] = [1, 5]
        manifest_case(f"{where} shape wrong", json.dumps(m))
    for art in ("onnx", "pte"):
        m = json.loads(json.dumps(base))
        m["artifacts"][art]["bytes"] = -5
        manifest_case(f"{art} bytes negative", json.dumps(m), f"model.{art}")
        m["artifacts"][art]["sha256"] = "0" * 64
        m["artifacts"][art]["bytes"] = base["artifacts"][art]["bytes"]
        manifest_case(f"{art} sha256 wrong", json.dumps(m), f"model.{art}")
    text = json.dumps(base)
    for off in sorted(rnd.sample(range(1, len(text)), 6)):
        manifest_case(f"truncated at {off}", text[:off])
    manifest_case("not UTF-8", b"\xff\xfe" + text.encode())
    manifest_case("deep nesting", "[" * 100000 + "]" * 100000)
    manifest_case("a JSON list", "[1, 2]")
    manifest_case("huge", b" " * (17 << 20))

    # 3. state files: truncated, flipped, relabelled, NaN with a valid checksum
    sbytes = (root / "cfc.state").read_bytes()
    hlen = struct.unpack("<Q", sbytes[:8])[0]

    def state_case(name: str, data: bytes):
        d = folder(f"state-{len(cases)}", "cfc", "in.csv")
        (d / "s.state").write_bytes(data)
        cases.append(Case("state", name, d, run_cfc(d, "model.pte", "--state-in", d / "s.state"), True))

    for off in sorted(rnd.sample(range(len(sbytes)), 5)) + [4, 8 + hlen]:
        state_case(f"truncated at {off}", sbytes[:off])
    for off in sorted(rnd.sample(range(8, len(sbytes)), 6)):
        state_case(f"flip at {off}", sbytes[:off] + bytes([sbytes[off] ^ 0x01]) + sbytes[off + 1:])
    header = json.loads(sbytes[8:8 + hlen])
    for key, value in (("model_id", "f" * 64), ("arch", "ltc"), ("position", "abc"), ("position", "-3"),
                       ("edgekit_state", "9"), ("spec", "[]")):
        h = json.loads(json.dumps(header))
        h["__metadata__"][key] = value
        hb = json.dumps(h).encode()
        state_case(f"{key} = {value}", struct.pack("<Q", len(hb)) + hb + sbytes[8 + hlen:])
    from edgekit.artifact import read
    from edgekit.runtimes.state import save_state
    manifest = read(root / "cfc")[0]
    for bad in (np.nan, np.inf):
        p = work / f"nan-{bad}.state"
        save_state(p, manifest, {"h": np.full((1, 16), bad, np.float32)}, 3)   # a valid checksum
        state_case(f"state of {bad} (valid checksum)", p.read_bytes())
        p = work / f"last-{bad}.state"
        save_state(p, manifest, {"h": np.zeros((1, 16), np.float32)}, 3, last_output=np.zeros((1, 99), np.float32))
        state_case("last output of the wrong size", p.read_bytes())

    # 4. CSV rows: every mutation is invalid data
    csv_lines = (root / "in.csv").read_text().splitlines(keepends=True)

    def csv_case(name: str, data: bytes, stdin: bool = False):
        d = folder(f"csv-{len(cases)}", "cfc")
        (d / "in.csv").write_bytes(data)
        argv = ["run", d / "cfc" / "model.pte", "--input", "-" if stdin else d / "in.csv"]
        cases.append(Case("csv", name, d, argv, True, stdin=data if stdin else None))

    body = "".join(csv_lines)
    for line in (2, 7):
        for cell, label in (("abc", "text"), ("nan", "nan"), ("1e308", "beyond float32"), ("", "empty cell")):
            row = csv_lines[line - 1].rstrip("\n").split(",")
            row[rnd.randrange(6)] = cell
            csv_case(f"line {line}: {label}", "".join(csv_lines[:line - 1] + [",".join(row) + "\n"]
                                                       + csv_lines[line:]).encode())
        for dt in ("0", "-1", "1e-300", "inf"):
            row = csv_lines[line - 1].rstrip("\n").split(",")
            row[-1] = dt
            csv_case(f"line {line}: dt {dt}", "".join(csv_lines[:line - 1] + [",".join(row) + "\n"]
                                                       + csv_lines[line:]).encode(), stdin=line == 7)
    csv_case("a row with a missing cell", (body + "1,2,3\n").encode())
    csv_case("not UTF-8", body.encode()[:40] + b"\xff\xfe" + body.encode()[40:])
    csv_case("empty", b"")
    csv_case("wrong columns", b"a,b\n1,2\n")
    csv_case("binary", bytes(rnd.randrange(256) for _ in range(300)))

    # 5. tokenizer.json for --prompt: truncated, flipped, keys removed, a vocabulary too big
    tok_text = (root / "tokenizer.json").read_text()

    def tok_case(name: str, data: bytes):
        d = folder(f"tok-{len(cases)}", "lm")
        (d / "t.json").write_bytes(data)
        argv = ["run", d / "lm" / "model.onnx", "--tokenizer", d / "t.json", "--prompt", "abc", "--steps", 2]
        cases.append(Case("tokenizer", name, d, argv, True))

    for off in sorted(rnd.sample(range(1, len(tok_text)), 4)):
        tok_case(f"truncated at {off}", tok_text[:off].encode())
    t = json.loads(tok_text)
    for key in ("model", "pre_tokenizer"):
        tt = dict(t)
        tt[key] = 5
        tok_case(f"{key} = 5", json.dumps(tt).encode())
    tt = json.loads(tok_text)
    tt["model"]["vocab"] = {f"w{i}": i for i in range(70000)}
    tok_case("a vocabulary larger than the model's", json.dumps(tt).encode())
    tok_case("not JSON", b"\x00\x01garbage")

    # 6. checkpoint config.json (CfC, ncps folder): deleted keys, swapped types, not an object
    cfg = json.loads((root / "cfc_ckpt" / "config.json").read_text())

    def cfg_case(name: str, text: str):
        d = folder(f"cfg-{len(cases)}", "cfc_ckpt", "in.csv")
        (d / "cfc_ckpt" / "config.json").write_text(text)
        argv = ["run", d / "cfc_ckpt", "--input", d / "in.csv", "--steps", 3]
        cases.append(Case("config", name, d, argv, False))

    for text in ("[]", "null", "7", "{", json.dumps({**cfg, "units": "many"}), json.dumps({**cfg, "units": 10**9}),
                 json.dumps({**cfg, "input_size": -1})):
        cfg_case(f"config {text[:30]}", text)
    for key in list(cfg)[:3]:
        cfg_case(f"config without {key}", json.dumps({k: v for k, v in cfg.items() if k != key}))
    return cases


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_hostile_inputs_get_one_clear_line(pristine, tmp_path):
    import time
    work = tmp_path / "cases"
    work.mkdir()
    cases = _cases(pristine, work)
    baseline = {}
    for art in ("model.onnx", "model.pte"):
        r = run_cli("run", pristine / "cfc" / art, "--input", pristine / "in.csv", "--steps", 3)
        assert r.returncode == 0, r.stderr
        baseline[art] = r.stdout
    before = {c.name: _listing(c.folder) for c in cases}

    def run(c: Case):
        return run_cli_peak(*c.argv, input=c.stdin, timeout=300)

    t0 = time.time()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases))
    elapsed = time.time() - t0
    problems, refused = [], {}
    peak_mb = max(p for _, p in results) / 2**20
    for c, (r, _) in zip(cases, results):
        out = r.stdout if isinstance(r.stdout, str) else r.stdout.decode(errors="replace")
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if r.returncode == 0:
            harmless = c.family in ("manifest",) and out == baseline[Path(c.argv[1]).name]
            if c.must_fail or not harmless:
                problems.append(f"{c.family}: {c.name}: exit 0 with different output / must fail: {out[:80]!r}")
        else:
            refused[c.family] = refused.get(c.family, 0) + 1
            if "Traceback" in err or len(lines) != 1 or not lines[0].startswith("edgekit: error: ") \
                    or " — " not in lines[0]:
                problems.append(f"{c.family}: {c.name}: exit {r.returncode}, stderr {err[-600:]!r}")
            elif out:
                problems.append(f"{c.family}: {c.name}: partial stdout {out[:80]!r}")
        left = _listing(c.folder) - before[c.name] - c.allowed_new
        if left:
            problems.append(f"{c.family}: {c.name}: left {sorted(left)}")
    print(f"\n{len(cases)} cases in {elapsed:.0f} s; refused per family {refused}; largest child {peak_mb:.0f} MB")
    assert not problems, "\n".join(problems)
    assert peak_mb < MAX_CHILD_RSS_MB
    assert len(cases) >= 150
