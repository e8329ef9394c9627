"""Quality of quantized exports: held-out bits per byte of a bundled model exported fp32 and
with each --quant scheme, in ONNX Runtime, in one table.

    python benchmarks/quant_quality.py [--model edgekit/bundled/hawk-stdlib] [--max-bytes N]
                                       [--schemes int8,int4,ternary] [--json OUT]

Each row: the scheme, its bits per weight over the quantized layers, the model.onnx size,
bits per byte on the stdlib held-out corpus (edgekit eval's scorer), and the change against
fp32. Rows are post-training quantization (ternary PTQ of an fp32-trained model is expected to
lose most of its quality: BitNet b1.58 models are trained ternary), and "ternary QAT", the
bundled `<model>-ternary` that `edgekit quantize --ternary` made from the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "edgekit" / "bundled" / "hawk-stdlib"))
    ap.add_argument("--max-bytes", type=int, default=None, help="score only the first N corpus bytes")
    ap.add_argument("--schemes", default="int8,int4,ternary,ternary/ternary",
                    help="comma-separated; SCHEME/HEAD quantizes the head (and a tied embedding) as HEAD")
    ap.add_argument("--qat", default=None, help="also a row for this `edgekit quantize --ternary` output, "
                    "exported with --quant ternary (default: the bundled hawk-stdlib-ternary beside --model)")
    ap.add_argument("--prefill", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgekit.cli.demo import bundled_source
    from edgekit.evaluate import bits_per_byte, corpus_bytes
    from edgekit.export import export
    from edgekit.runtimes.session import StreamingSession
    from edgekit.units import human_bytes

    files = corpus_bytes("stdlib-heldout", args.max_bytes)
    rows = []
    console = Console()
    with tempfile.TemporaryDirectory() as d:
        qat = Path(args.qat) if args.qat else Path(args.model).with_name(Path(args.model).name + "-ternary")
        for scheme in ["fp32", *[s for s in args.schemes.split(",") if s], *(["ternary QAT"] if qat.is_dir() else [])]:
            out = Path(d) / scheme.replace("/", "-head-").replace(" ", "-")
            body, _, head = scheme.partition("/")            # "ternary/int8": int8 head and embedding
            src = bundled_source(qat if scheme == "ternary QAT" else Path(args.model))   # RWKV-7: its .pth
            with console.status(f"export {scheme}"):
                m = export(src, out, formats=("onnx",), prefill=args.prefill,
                           quant=None if body == "fp32" else body.split()[0], quant_head=head or None)
            with console.status(f"eval {scheme}"):
                r = bits_per_byte(StreamingSession(out / "model.onnx"), files)
            q = m.quantization if scheme != "fp32" else None   # noqa: E501
            rows.append({"scheme": scheme, "bits_per_weight": q["bits_per_weight"] if q else 32.0,
                         "onnx_bytes": m.artifacts["onnx"].bytes, "bits_per_byte": r["bits_per_byte"],
                         "scored_bytes": r["scored_bytes"], "ms_per_token": r["ms_per_token"],
                         "kept_float32": dict(q["kept_float32"]) if q else {}})
            console.print(f"{scheme}: {r['bits_per_byte']:.4f} bits/byte")
    base = rows[0]["bits_per_byte"]
    t = Table(title=f"{Path(args.model).name}: held-out bits per byte ({rows[0]['scored_bytes']:,} bytes), ONNX Runtime")
    for c in ("scheme", "bits/weight", "model.onnx", "bits/byte", "vs fp32"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["scheme"], f"{r['bits_per_weight']:.2f}", human_bytes(r["onnx_bytes"]),
                  f"{r['bits_per_byte']:.4f}", f"{100 * (r['bits_per_byte'] / base - 1):+.2f}%")
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "max_bytes": args.max_bytes, "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
