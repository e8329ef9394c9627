#!/usr/bin/env python
"""fp16 ONNX (`edgekit export --dtype fp16`, the Jetson profiles) against the fp32 export of the
same model, in ONNX Runtime on this CPU, for every bundled trained LM.

    python benchmarks/fp16_parity.py [--steps 256] [--long 20000] [--json out.json]

Per model: max |diff| / std(fp32) of the logits over `--steps` bytes of Python source from
this repository, teacher-forced; 64 greedy bytes after the demo's prompt, "same" or the
first divergence with the fp32 logit margin (top-1 minus top-2) there; whether every logit
and state stays finite over `--long` steps of random bytes (fp16 only); file sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def compare(src: Path, work: Path, steps: int, long: int) -> dict:
    from edgekit.cli.demo import CODE_PROMPT
    from edgekit.export import export
    from edgekit.runtimes.session import StreamingSession
    a = export(src, work / "fp32", formats=("onnx",))
    b = export(src, work / "fp16", formats=("onnx",), dtype="fp16")
    ref, half = StreamingSession(work / "fp32" / "model.onnx"), StreamingSession(work / "fp16" / "model.onnx")
    text = ref.tokenizer.encode((REPO / "edgekit" / "cli" / "demo.py").read_text())[:steps]
    want = np.stack([np.array(ref.step(t)) for t in text])
    got = np.stack([np.array(half.step(t)) for t in text])
    row = {"model": src.parent.name if src.suffix == ".pth" else src.name, "steps": len(text),
           "err": float(np.abs(got - want).max() / want.std()),
           "fp32_bytes": a.artifacts["onnx"].bytes, "fp16_bytes": b.artifacts["onnx"].bytes}
    prompt = ref.tokenizer.encode(CODE_PROMPT)
    ref.reset()
    half.reset()
    ga, gb = ref.generate(64, prompt=prompt), half.generate(64, prompt=prompt)
    i = next((k for k in range(64) if ga[k] != gb[k]), None)
    if i is None:
        row["greedy64"] = "same"
    else:
        ref.reset()
        y = np.sort(np.array(ref.feed([*prompt, *ga[:i]])))
        row["greedy64"] = f"diverge at {i} (fp32 margin {y[-1] - y[-2]:.3g})"
    half.reset()
    rng = np.random.default_rng(0)
    finite = True
    for t in rng.integers(0, ref.manifest.config["vocab_size"], long):
        y = half.step(int(t))
        if not np.isfinite(y).all():
            finite = False
            break
    state = half.backend.get_state()
    row["long_steps"] = long
    row["finite"] = finite and all(np.isfinite(v).all() for v in state.values())
    print(row, flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--long", type=int, default=20000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from edgekit.cli.demo import bundled_lms, bundled_source
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for folder in bundled_lms():
            rows.append(compare(bundled_source(folder), Path(d) / folder.name, a.steps, a.long))
    print("| model | max abs diff / std (fp16 vs fp32, ORT CPU) | greedy 64 bytes | finite over N steps | "
          "model.onnx fp32 -> fp16 |")
    print("|---|---:|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['err']:.2e} | {r['greedy64']} | {'yes' if r['finite'] else 'NO'} "
              f"({r['long_steps']:,}) | {r['fp32_bytes'] / 1e6:.1f} MB -> {r['fp16_bytes'] / 1e6:.1f} MB |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
