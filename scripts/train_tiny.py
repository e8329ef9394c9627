"""Train the small byte-level language models edgekit bundles (issue 15), on the Python
standard library's own source (edgekit.data.stdlib: read at run time, train split only).

    python scripts/train_tiny.py ARCH -o models/ARCH [--steps N] [--budget-min M] [--tiny]

ARCH: rwkv7 | mamba | mamba2 | hawk. Each is trained with the code the export path loads:
RWKV-7 is edgekit's own model (its sequence form, with the WKV recurrence as the op's plain
reference so autograd runs through it) and is written as a BlinkDL .pth; Mamba, Mamba-2 and
Hawk are transformers' classes (their training forward) written with save_pretrained, with
a byte tokenizer.json. Weights are stored in bf16. Vocabulary: the 256 byte values.

Mamba (1) on a CPU trains with edgekit.models.mamba_training's scan in place of
transformers' torch fallback (the same recurrence; the fallback's backward takes over 60 s a
step here), and the trained model is checked against transformers' own scan before it is
written.

Deterministic: a fixed seed (torch, data order) and a fixed step count; the config, the
seed, the steps, the wall time and the held-out bits per byte are written to train.json
beside the model. A run that would not fit its time budget (--budget-min) or its memory
budget (--budget-gb) is refused before training (3 steps are timed and measured first).
--tiny trains a tiny config for a few steps (the test).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.models.mamba_training import reference_scan_gap, training_scan  # noqa: E402
from edgekit.models.rwkv7_training import RWKV7Train, save_blink  # noqa: E402

ARCHS = ("rwkv7", "mamba", "mamba2", "hawk")

# Chosen for quality per CPU minute on a 2-core machine (docs/models.md has the table).
CONFIGS = {
    "rwkv7": dict(n_embd=256, n_layer=4, head_size=64),
    "mamba": dict(hidden_size=256, num_hidden_layers=4, state_size=16, expand=2, conv_kernel=4),
    "mamba2": dict(hidden_size=256, num_hidden_layers=6, state_size=32, expand=2, head_dim=64, n_groups=1,
                   conv_kernel=4, chunk_size=64),
    "hawk": dict(hidden_size=256, intermediate_size=768, lru_width=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=1, attention_window_size=64),
}
TINY = {
    "rwkv7": dict(n_embd=64, n_layer=1, head_size=32),
    "mamba": dict(hidden_size=32, num_hidden_layers=1, state_size=8, expand=2, conv_kernel=4),
    "mamba2": dict(hidden_size=32, num_hidden_layers=1, state_size=8, expand=2, head_dim=16, n_groups=1,
                   conv_kernel=4, chunk_size=16),
    "hawk": dict(hidden_size=32, intermediate_size=64, lru_width=32, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, attention_window_size=16),
}
VOCAB = 256


# -- models ----------------------------------------------------------------------------

def _init_rwkv7(cfg, seed: int) -> RWKV7Train:
    """Start from the checkpoint writer's BlinkDL-shaped init (edgekit.models.rwkv7),
    with the output projections zeroed as BlinkDL's trainer does."""
    from edgekit.models.rwkv7 import random_state_dict
    sd = random_state_dict(VOCAB, cfg.n_embd, cfg.n_layer, cfg.head_size, seed=seed, dtype=torch.float32)
    for k in list(sd):
        if k.endswith(("att.output.weight", "ffn.value.weight")):
            sd[k].zero_()
        if k == "emb.weight":
            sd[k].mul_(1e-2)
    return RWKV7Train.from_blink(sd)


def build(arch: str, shape: dict, seed: int):
    torch.manual_seed(seed)
    if arch == "rwkv7":
        from edgekit.models.rwkv7 import RWKV7Config
        cfg = RWKV7Config(VOCAB, shape["n_embd"], shape["n_layer"], shape["head_size"],
                          **RWKV7Config.default_lora(shape["n_embd"]))
        return _init_rwkv7(cfg, seed)
    import transformers
    if arch == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(vocab_size=VOCAB, **shape))
    if arch == "mamba2":
        n_heads = shape["expand"] * shape["hidden_size"] // shape["head_dim"]
        return transformers.Mamba2ForCausalLM(transformers.Mamba2Config(vocab_size=VOCAB, num_heads=n_heads, **shape))
    if arch == "hawk":
        cfg = transformers.RecurrentGemmaConfig(vocab_size=VOCAB, block_types=["recurrent"], **shape)
        return transformers.RecurrentGemmaForCausalLM(cfg)
    raise EdgekitError(f"unknown architecture '{arch}'", expected=", ".join(ARCHS), fix="pass one of them")


def logits_of(arch: str, model, x: torch.Tensor) -> torch.Tensor:
    if arch == "rwkv7":
        return model(x)
    return model(x, use_cache=False).logits


# -- writing ---------------------------------------------------------------------------

def save(arch: str, model, out: Path) -> Path:
    """The model in its architecture's real on-disk format, bf16, beside a byte tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    if arch == "rwkv7":
        path = save_blink(model, out / "rwkv7.pth")
    else:
        model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
        model.to(torch.float32)
        path = out
    write_byte_tokenizer(out / "tokenizer.json")
    return path


def write_byte_tokenizer(path: Path) -> Path:
    """A Hugging Face tokenizer.json whose ids are the byte values 0..255 (byte-level
    alphabet, no merges), so `--prompt` text and the models' bytes agree."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    alphabet = ByteLevel.alphabet()
    table = _bytes_to_unicode()
    assert set(table.values()) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# -- training --------------------------------------------------------------------------

@torch.no_grad()
def heldout_bpb(arch: str, model, max_bytes: int | None = None, seq: int = 512) -> float:
    """Bits per byte over the held-out files, each file on its own (its first byte is not
    predicted), in windows of `seq` bytes that carry no state (a lower bound on what the
    streaming session reaches: edgekit eval measures that)."""
    from edgekit.data.stdlib import heldout_files
    model.eval()
    bits, n = 0.0, 0
    for _, data in heldout_files():
        arr = torch.from_numpy(np.frombuffer(data, np.uint8).astype(np.int64))
        for s in range(0, len(arr) - 1, seq):
            x = arr[s:s + seq + 1]
            if len(x) < 2:
                continue
            lp = F.log_softmax(logits_of(arch, model, x[None, :-1]).float(), -1)[0]
            bits += -lp.gather(-1, x[1:, None]).sum().item() / math.log(2)
            n += len(x) - 1
            if max_bytes and n >= max_bytes:
                model.train()
                return bits / n
    model.train()
    return bits / n


def _train(arch: str, out: Path, *, steps: int | None, batch: int, seq: int, lr: float, seed: int,
          budget_min: float, tiny: bool = False, device: str = "cpu", train_file: Path | None = None,
          minutes: float | None = None, budget_gb: float | None = None, log=print) -> dict:
    """Train for `steps` steps, or (minutes=M) for as many steps as the first 3 steps' pace
    fits in M minutes; the step count is then fixed before the schedule starts, so a rerun
    with `--steps` of the recorded count replays the same run."""
    from edgekit.data.stdlib import train_bytes
    if device == "cpu":
        torch.set_num_threads(2)
    shape = (TINY if tiny else CONFIGS)[arch]
    model = build(arch, shape, seed).to(device)
    params = sum(p.numel() for p in model.parameters())
    budget_gb = budget_gb if budget_gb is not None else 0.8 * _physical_gb()
    # weights, gradients and AdamW's two moments, in float32, before any activation
    if 16 * params / 2**30 > budget_gb:
        raise EdgekitError(f"{arch}: {params:,} parameters need {16 * params / 2**30:.1f} GB for weights, "
                           "gradients and optimizer state alone", expected=f"at most --budget-gb {budget_gb:g}",
                           fix="train a smaller config, or pass a larger --budget-gb")
    raw = train_file.read_bytes() if train_file else train_bytes()
    data = np.frombuffer(raw, np.uint8)
    if steps is None:
        steps = 10**9          # replaced after the pace is measured, then training starts over
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warm = max(1, steps // 20)

    def step_fn(i: int) -> float:
        starts = rng.integers(0, len(data) - seq - 1, size=batch)
        xy = torch.from_numpy(np.stack([data[s:s + seq + 1] for s in starts]).astype(np.int64)).to(device)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (i + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
        loss = F.cross_entropy(logits_of(arch, model, xy[:, :-1]).float().reshape(-1, VOCAB), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    model.train()
    t0 = time.time()
    losses = [step_fn(i) for i in range(3)]
    per_step = (time.time() - t0) / 3
    if minutes is not None:
        # the step count is now fixed: start over from the seed, so that this run is the
        # run `--steps <recorded steps>` makes
        steps = max(10, int(minutes * 60 / per_step))
        warm = max(1, steps // 20)
        model = build(arch, shape, seed).to(device)
        rng = np.random.default_rng(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
        model.train()
        t0 = time.time()
        losses = [step_fn(i) for i in range(3)]
    peak_gb = _peak_rss_gb()                  # the first steps allocate all a step needs
    if device == "cpu" and peak_gb > budget_gb:
        raise EdgekitError(f"{arch}: {peak_gb:.1f} GB resident after 3 steps of batch {batch} x {seq}",
                           expected=f"at most --budget-gb {budget_gb:g}",
                           fix="pass a smaller --batch or --seq, or a larger --budget-gb")
    if per_step * steps / 60 > budget_min:
        raise EdgekitError(f"{arch}: {steps} steps at {per_step:.2f} s each take {per_step * steps / 60:.1f} min",
                           expected=f"at most --budget-min {budget_min:g}",
                           fix=f"pass --steps {int(budget_min * 60 / per_step)} or fewer, or a larger budget")
    log(f"{arch}: {params:,} parameters, {per_step:.2f} s/step, {steps} steps")
    for i in range(3, steps):
        losses.append(step_fn(i))
        if (i + 1) % 50 == 0 or i == steps - 1:
            log(f"  step {i + 1}/{steps}  loss {np.mean(losses[-50:]) / math.log(2):.3f} bits/byte  "
                f"{(time.time() - t0) / 60:.1f} min")
    minutes = (time.time() - t0) / 60
    extra = {}
    if arch == "mamba":
        x = torch.from_numpy(data[:257].astype(np.int64))[None, :256].to(device)
        extra["training_scan"] = {"what": "transformers' Mamba with its torch scan fallback computed one step at a time "
                                          "from contiguous slices (edgekit/models/mamba_training.py)",
                                  "max_rel_diff_vs_transformers_scan": reference_scan_gap(model, x)}
        if extra["training_scan"]["max_rel_diff_vs_transformers_scan"] > 1e-4:
            raise RuntimeError(f"the training scan disagrees with transformers' own: {extra}")
    path = save(arch, model, out)
    record = {"arch": arch, "config": {**shape, "vocab_size": VOCAB}, "parameters": params, "seed": seed,
              "steps": steps, "batch": batch, "seq": seq, "lr": lr, "train_minutes": round(minutes, 2),
              "first_loss_bits": losses[0] / math.log(2), "last_loss_bits": float(np.mean(losses[-20:])) / math.log(2),
              "weights": path.name, "dtype": "bfloat16", "device": _device_name(device),
              "corpus": "stdlib-train (edgekit.data.stdlib)",
              "corpus_sha256": hashlib.sha256(raw).hexdigest(), "corpus_bytes": len(raw), **extra}
    (out / "train.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def train(arch: str, out: Path, **kw) -> dict:
    """_train, with Mamba's training scan swapped in for the run (and only for it)."""
    with training_scan() if arch == "mamba" else contextlib.nullcontext():
        return _train(arch, out, **kw)


def _physical_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _peak_rss_gb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20      # Linux: KiB


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"cpu, {torch.get_num_threads()} threads (torch {torch.__version__})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch", choices=ARCHS)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead of --steps: as many steps as fit in this many minutes at the measured pace")
    ap.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    ap.add_argument("--train-file", type=Path, default=None,
                    help="the train split's bytes as written by `python -m edgekit.data.stdlib --dump-train` "
                         "(to train on a machine whose Python is another version)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-min", type=float, default=20.0, help="refuse a run that would take longer")
    ap.add_argument("--budget-gb", type=float, default=None,
                    help="refuse a run whose resident memory after its first 3 steps exceeds this "
                         "(default: 80%% of this machine's memory)")
    ap.add_argument("--tiny", action="store_true", help="a tiny config (the test)")
    a = ap.parse_args(argv)
    try:
        r = train(a.arch, a.out, steps=None if a.minutes else a.steps, batch=a.batch, seq=a.seq, lr=a.lr,
                  seed=a.seed, budget_min=a.budget_min, budget_gb=a.budget_gb, tiny=a.tiny, device=a.device,
                  train_file=a.train_file,
                  minutes=a.minutes)
    except EdgekitError as e:
        print(f"train_tiny: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
