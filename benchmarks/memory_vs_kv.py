"""Resident memory against tokens: an edgekit streaming session (constant state) next to a
transformer of similar width and depth with its growing KV cache (transformers' GPT-2
class, random weights, its own DynamicCache). Each runs in a fresh process, greedy-feeding
its own tokens; RSS (VmRSS) is sampled every `--every` tokens. Prints the table and the
slopes (MB per 1,000 tokens) and draws the plot (PNG).

    python benchmarks/memory_vs_kv.py ARTIFACT --tokens 20000 --plot docs/memory_vs_kv.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def _child_edgekit(artifact: str, tokens: int, every: int) -> list:
    import numpy as np

    from edgekit.runtimes.session import StreamingSession
    s = StreamingSession(artifact)
    y, out = s.step(0), []
    for t in range(tokens):
        y = s.step(int(np.argmax(y)))
        if t % every == 0 or t == tokens - 1:
            out.append((t + 1, _rss_mb()))
    return out


def _child_gpt2(width: int, layers: int, vocab: int, tokens: int, every: int) -> list:
    import torch
    from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    torch.set_num_threads(2)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=width, n_layer=layers, n_head=max(1, width // 64),
                                   n_positions=tokens + 8)).eval()
    cache, tok, out = DynamicCache(), torch.tensor([[0]]), []
    with torch.inference_mode():
        for t in range(tokens):
            o = m(tok, past_key_values=cache, use_cache=True)
            cache, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
            if t % every == 0 or t == tokens - 1:
                out.append((t + 1, _rss_mb()))
    return out


def run(artifact: Path, tokens: int, every: int) -> dict:
    from edgekit.artifact import read
    m = read(artifact)[0]
    cfg = m.config
    width = int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model") or 256)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 4)
    vocab = int(cfg.get("vocab_size") or 256)
    res = {}
    for name, call in (("edgekit", f"_child_edgekit({str(artifact)!r}, {tokens}, {every})"),
                       (f"GPT-2 {width}x{layers} + KV cache", f"_child_gpt2({width}, {layers}, {vocab}, {tokens}, {every})")):
        code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
               f"import memory_vs_kv as M; print(json.dumps(M.{call}))"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"memory_vs_kv: {name} failed: {r.stderr[-2000:]}")
        res[name] = json.loads(r.stdout.strip().splitlines()[-1])
    return res


def slope_mb_per_1k(samples) -> float:
    """Least-squares slope over the second half of the run (start-up allocations excluded)."""
    import numpy as np
    half = samples[len(samples) // 2:]
    t, mb = np.array([s[0] for s in half], float), np.array([s[1] for s in half], float)
    return float(np.polyfit(t, mb, 1)[0] * 1000)


def plot(res: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, samples in res.items():
        ax.plot([s[0] for s in samples], [s[1] for s in samples],
                label=f"{name} ({slope_mb_per_1k(samples):+.2f} MB / 1k tokens)")
    ax.set_xlabel("tokens streamed")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    res = run(a.artifact, a.tokens, a.every)
    print(f"{'run':<32} {'RSS start':>10} {'RSS end':>10} {'MB / 1k tokens':>15}")
    for name, s in res.items():
        print(f"{name:<32} {s[0][1]:>8.1f} MB {s[-1][1]:>8.1f} MB {slope_mb_per_1k(s):>15.3f}")
    if a.plot:
        plot(res, a.plot, f"resident memory over {a.tokens:,} tokens")
        print(f"wrote {a.plot}")
    if a.json:
        a.json.write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
