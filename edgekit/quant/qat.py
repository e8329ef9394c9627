"""Quantization-aware fine-tuning to BitNet b1.58 ternary:
`edgekit quantize SRC --ternary --steps N -o DIR`.

Ternary post-training quantization of an fp32-trained model collapses (the bundled Hawk:
+74% bits per byte, benchmarks/quant_quality.py). What recovers it, from the literature
(QUANT-DEVICES.md): fine-tuning with straight-through estimators while the quantization is
ramped in, x + λ·(quant(x) − x).detach() with λ = min(step / W, 1) (HF's "Fine-tuning LLMs to
1.58bit"), and distilling the fp32 teacher's logits (BitDistill, arXiv 2510.13998).

Each Linear (head included; a tied embedding's lookups too, since the export reads the
embedding from the head's ternary codes) sees W + λ·(γ·RoundClip(W/γ, −1, 1) − W).detach(),
γ = mean|W|, and its input int8-quantized per block of G as the exported kernels do it. The
loss is next-byte cross entropy plus KL(teacher ‖ student). The result is written in the
architecture's own format with every quantized weight exactly γ·W~ (exact in bf16: one
magnitude per tensor), so `edgekit export DIR --quant ternary` reads back the very codes and
scales (edgekit/quant/schemes.py `ternary_codes`) and loses nothing more.

Runs on transformers' own classes for the Hugging Face layouts (Mamba, Mamba-2,
RecurrentGemma/Hawk), and on edgekit's own RWKV7 for a BlinkDL x070 .pth
(edgekit/models/rwkv7_training.py: ln0 kept apart from the embedding table, the WKV
recurrence's differentiable reference), written back as a .pth; the recurrences and norms
stay fp32. The layers quantized are the ones `edgekit export --quant` quantizes: every
`nn.Linear` / edgekit `layers.Linear` whose width a block divides (RWKV-7's LoRA matrices,
`layers.LowRank`, are kept fp32 by the export, and left alone here). The corpus is the running Python's
standard library, train split (edgekit/data/stdlib.py).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.quant import FALLBACK
from edgekit.quant.schemes import DEFAULT_GROUP, quantize_activations

MIN_STEPS = 8
GROUP = DEFAULT_GROUP["ternary"]


class Ramp:
    """λ, shared by every fake-quantized layer: 0 = float, 1 = fully ternary."""

    lam = 0.0


def _fake(w: torch.Tensor, scheme: str, group: int) -> torch.Tensor:
    """The float weight the export will hold: dequantize(quantize(W)) by edgekit's own rule
    (gamma * RoundClip(W / gamma, -1, 1) for ternary)."""
    from edgekit.quant.schemes import dequantize, quantize
    with torch.no_grad():
        p = quantize(w.detach(), scheme, group)
        return dequantize(p.codes, p.scales, p.zero_points, w.shape[1]).to(w.dtype)


def _ste(x: torch.Tensor, q: torch.Tensor, lam: float) -> torch.Tensor:
    return x if lam == 0.0 else x + lam * (q - x).detach()


class FakeQuantLinear(nn.Module):
    """A Linear with the ramped straight-through quantized weight and int8 block activations:
    torch's nn.Linear (weight (out, in)) or edgekit's layers.Linear (weight stored (in, out),
    `transposed`)."""

    def __init__(self, lin: nn.Module, scheme: str, group: int, ramp: Ramp):
        super().__init__()
        self.weight, self.bias, self.scheme, self.group, self.ramp = lin.weight, lin.bias, scheme, group, ramp
        self.transposed = not isinstance(lin, nn.Linear)
        self.in_features, self.out_features = _widths(lin)

    def weight_out_in(self) -> torch.Tensor:
        return self.weight.t() if self.transposed else self.weight

    def forward(self, x):
        lam = self.ramp.lam
        w = self.weight_out_in()
        w = _ste(w, _fake(w, self.scheme, self.group), lam)
        x = _ste(x, quantize_activations(x.detach(), self.group).to(x.dtype), lam)
        return F.linear(x, w, self.bias)


def _widths(lin: nn.Module) -> tuple[int, int]:
    return (lin.in_features, lin.out_features) if isinstance(lin, nn.Linear) else (lin.d_in, lin.d_out)


def _is_linear(m: nn.Module) -> bool:
    from edgekit.models.layers import Linear, LowRank
    return isinstance(m, (nn.Linear, Linear)) and not isinstance(m, LowRank)   # LowRank stays float (its KEPT)


class FakeQuantEmbedding(nn.Module):
    """A tied nn.Embedding whose lookups see the head's ramped quantized weight (the export
    reads a tied embedding from the head's codes)."""

    def __init__(self, emb: nn.Embedding, scheme: str, group: int, ramp: Ramp):
        super().__init__()
        self.weight, self.padding_idx, self.scheme, self.group, self.ramp = emb.weight, emb.padding_idx, scheme, group, ramp

    def forward(self, ids):
        return F.embedding(ids, _ste(self.weight, _fake(self.weight, self.scheme, self.group), self.ramp.lam),
                           self.padding_idx)


def _group_for(K: int, scheme: str) -> int | None:
    from edgekit.quant import MIN_GROUP, SCHEME_MIN_GROUP, _group_for
    return _group_for(K, DEFAULT_GROUP[scheme], SCHEME_MIN_GROUP.get(scheme, MIN_GROUP))


def _swap(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, m in list(model.named_modules()):
        if m is old:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)


def _embeddings(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """(input embedding, output head) of a transformers model or an RWKV7Train."""
    if hasattr(model, "get_output_embeddings"):
        return model.get_input_embeddings(), model.get_output_embeddings()
    return None, model.model.head


def wrap(model: nn.Module, ramp: Ramp, head: str = "ternary") -> list[str]:
    """Swap every Linear edgekit's export quantizes (widths a block divides) for
    FakeQuantLinear, ternary (the head in `head`'s scheme), and a tied input embedding for
    FakeQuantEmbedding in the head's scheme. Returns the names."""
    names = []
    emb, out_emb = _embeddings(model)
    for name, m in list(model.named_modules()):
        if not _is_linear(m):
            continue
        scheme = head if m is out_emb else "ternary"
        K = _widths(m)[0]
        if not _group_for(K, scheme):
            scheme = FALLBACK.get(scheme, scheme)        # as the export quantizes it
        if _group_for(K, scheme):
            _swap(model, m, FakeQuantLinear(m, scheme, _group_for(K, scheme), ramp))
            names.append(name)
    if emb is not None and out_emb is not None and emb.weight is out_emb.weight and _group_for(emb.weight.shape[1], head):
        _swap(model, emb, FakeQuantEmbedding(emb, head, _group_for(emb.weight.shape[1], head), ramp))
        names.append("embedding (tied)")
    return names


@torch.no_grad()
def unwrap(model: nn.Module) -> None:
    """Put the Linear layers / nn.Embedding back, each quantized weight replaced by what the export
    holds (ternary: exactly gamma * W~)."""
    from edgekit.models.layers import Linear
    for name, m in list(model.named_modules()):
        if isinstance(m, FakeQuantLinear):
            w = m.weight_out_in()
            w.copy_(_fake(w, m.scheme, m.group))
            new = (Linear(m.in_features, m.out_features, bias=m.bias is not None) if m.transposed
                   else nn.Linear(m.in_features, m.out_features, bias=m.bias is not None))
            new.weight, new.bias = m.weight, m.bias
            _swap(model, m, new)
        elif isinstance(m, FakeQuantEmbedding):
            m.weight.copy_(_fake(m.weight, m.scheme, m.group))
            new = nn.Embedding(m.weight.shape[0], m.weight.shape[1], padding_idx=m.padding_idx)
            new.weight = m.weight
            _swap(model, m, new)


HF_CLASSES = {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM",
              "recurrent_gemma": "RecurrentGemmaForCausalLM"}


def rwkv7_checkpoint(src: Path) -> Path | None:
    """The RWKV-7 BlinkDL .pth that src names: src itself, or the one .pth of a folder with no
    config.json (a bundled model's folder); None otherwise."""
    src = Path(src)
    if src.is_file() and src.suffix == ".pth":
        return src
    if src.is_dir() and not (src / "config.json").exists():
        found = sorted(src.glob("*.pth"))
        return found[0] if len(found) == 1 else None
    return None


def model_kind(src: Path) -> str:
    """"rwkv7" for a BlinkDL .pth (or a folder holding one), else the model_type of a
    save_pretrained folder this command trains; a clear error for anything else."""
    if rwkv7_checkpoint(src) is not None:
        return "rwkv7"
    cfg_path = Path(src) / "config.json"
    if not cfg_path.is_file():
        raise EdgekitError(f"'{src}' is neither a Hugging Face save_pretrained folder (no config.json) "
                           "nor an RWKV-7 .pth",
                           expected="a Mamba, Mamba-2 or RecurrentGemma/Hawk folder with config.json and "
                                    "safetensors, or an RWKV-7 BlinkDL .pth (or a folder holding exactly one)",
                           fix="pass the model's folder or its .pth file")
    from edgekit.models._checkpoint import read_config
    kind = read_config(cfg_path).get("model_type")
    if kind not in HF_CLASSES:
        raise EdgekitError(f"'{src}' is a {kind!r} model", expected=", ".join(HF_CLASSES),
                           fix="pass a Mamba, Mamba-2 or RecurrentGemma/Hawk save_pretrained folder")
    return kind


def load_hf(src: Path):
    """transformers' model of a save_pretrained folder (Mamba, Mamba-2, RecurrentGemma)."""
    import logging

    import transformers
    kind = model_kind(src)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cls = getattr(transformers, HF_CLASSES[kind])
    return cls.from_pretrained(str(src), torch_dtype=torch.float32), kind


def load_student(src: Path) -> tuple[nn.Module, str]:
    """(the trainable model, its kind): transformers' class for a save_pretrained folder,
    edgekit's RWKV7Train for a BlinkDL .pth."""
    pth = rwkv7_checkpoint(src)
    if pth is None:
        return load_hf(src)
    from edgekit.models.rwkv7_training import RWKV7Train
    return RWKV7Train.from_checkpoint(pth), "rwkv7"


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x) if not hasattr(model, "get_output_embeddings") else model(x, use_cache=False).logits
    return out.float()


def corpus_ids(tokenizer_file: Path) -> np.ndarray:
    """The stdlib train split, tokenized with the model's own tokenizer."""
    from edgekit.data.stdlib import train_bytes
    from edgekit.tokenizer import HFTokenizer
    text = train_bytes().decode("utf-8", errors="replace")
    return np.asarray(HFTokenizer(tokenizer_file).encode(text), dtype=np.int64)


def finetune(src: Path, out: Path, **kw) -> dict:
    """Fine-tune src to ternary (_finetune); transformers' Mamba (1) trains with
    edgekit.models.mamba_training's scan, which its torch fallback's backward needs on a CPU."""
    if model_kind(Path(src)) != "mamba":
        return _finetune(src, out, **kw)
    from edgekit.models.mamba_training import training_scan
    with training_scan():
        return _finetune(src, out, **kw)


def _finetune(src: Path, out: Path, *, steps: int, batch: int = 16, seq: int = 256, lr: float = 2e-3,
              ramp_frac: float = 0.5, distill: float = 1.0, seed: int = 0, tokenizer: Path | None = None,
              head: str = "int4", bitnet_packing: bool = False,
              log: Callable[[str], None] = print, progress: Callable[[int], None] | None = None) -> dict:
    """Fine-tune src to ternary for `steps` steps; write the result (same format, bf16) to out."""
    if steps < MIN_STEPS:
        raise EdgekitError(f"--steps {steps} is too few to ramp the quantization in",
                           expected=f"at least {MIN_STEPS} steps (λ rises over the first {ramp_frac:.0%})",
                           fix="pass --steps 80 or more (about a quarter of the model's training steps)")
    src, out = Path(src), Path(out)
    kind = model_kind(src)
    if bitnet_packing and kind == "rwkv7":
        raise EdgekitError("--bitnet-packing is transformers' BitNet layout, and an RWKV-7 .pth is no "
                           "transformers checkpoint", fix="drop --bitnet-packing for RWKV-7")
    _check_out(out)
    pth = rwkv7_checkpoint(src)
    tok = Path(tokenizer) if tokenizer else (pth.parent if pth else src) / "tokenizer.json"
    if not tok.is_file():
        raise EdgekitError(f"no tokenizer.json beside '{pth or src}'", fix="pass --tokenizer PATH/tokenizer.json")
    torch.manual_seed(seed)
    student, kind = load_student(src)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    ramp = Ramp()
    wrapped = wrap(student, ramp, head)
    data = corpus_ids(tok)
    if len(data) < 4 * (seq + 1):
        raise EdgekitError(f"the training corpus holds {len(data):,} tokens", expected=f"at least {4 * (seq + 1)}",
                           fix="run with a Python whose standard library is installed in full")
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    ramp_steps = max(1, int(steps * ramp_frac))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    student.train()
    losses, t0 = [], time.time()
    for i in range(steps):
        ramp.lam = min((i + 1) / ramp_steps, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
        starts = rng.integers(0, len(data) - seq - 1, size=batch)
        xy = torch.from_numpy(np.stack([data[s:s + seq + 1] for s in starts]))
        x, y = xy[:, :-1], xy[:, 1:]
        logits = _logits(student, x)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss = ce
        if distill:
            with torch.no_grad():
                t_logp = F.log_softmax(_logits(teacher, x), -1)
            kl = F.kl_div(F.log_softmax(logits, -1), t_logp, log_target=True, reduction="batchmean") / seq
            loss = ce + distill * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(ce.item() / math.log(2))
        if progress:
            progress(i + 1)
        if (i + 1) % 20 == 0 or i == steps - 1:
            log(f"step {i + 1}/{steps}  λ {ramp.lam:.2f}  cross entropy {np.mean(losses[-20:]):.3f} bits/token  "
                f"{(time.time() - t0) / 60:.1f} min")
    emb = _embeddings(student)[0]
    packable = [n for n, m in student.named_modules() if isinstance(m, FakeQuantLinear)
                and m.scheme == "ternary" and m.weight is not getattr(emb, "weight", None)]
    unwrap(student)
    scan_check = {}
    if kind == "mamba":
        from edgekit.models.mamba_training import reference_scan_gap
        gap = reference_scan_gap(student, torch.from_numpy(data[:seq])[None])
        if gap > 1e-4:
            raise RuntimeError(f"the training scan disagrees with transformers' own (max rel diff {gap:.2e})")
        scan_check = {"training_scan": {"what": "transformers' Mamba scan computed one step at a time "
                                                "(edgekit/models/mamba_training.py)",
                                        "max_rel_diff_vs_transformers_scan": gap}}
    if kind != "rwkv7":
        student.config.edgekit_quantization = {"scheme": "ternary", "head": head, "method": "qat",
                                               "group_size": GROUP, "extra_rmsnorm": False}
    record = {"source": str(src), "arch": kind, "scheme": "ternary", "head": head, "steps": steps, "batch": batch, "seq": seq,
              "lr": lr, "ramp_steps": ramp_steps,
              "export": f"edgekit export OUT{'/' + RWKV7_FILE if kind == 'rwkv7' else ''} --quant ternary"
              + ("" if head == "int4" else f" --quant-head {head}"), "distill_weight": distill, "seed": seed,
              "quantized": wrapped, "extra_rmsnorm": False, "minutes": round((time.time() - t0) / 60, 2),
              "first_ce_bits": losses[0], "last_ce_bits": float(np.mean(losses[-10:])),
              "corpus": "stdlib-train (edgekit.data.stdlib)", **scan_check}
    _write(student, tok, out, record, packable if bitnet_packing else [])
    return record


def _pack_bitnet(folder: Path, names: list[str]) -> list[str]:
    """Rewrite the saved weights of `names` (ternary, out a multiple of 4) in transformers'
    BitNet packing, and say so in config.json. Returns the names packed."""
    from safetensors.torch import load_file, save_file

    from edgekit.quant.bitnet_hf import pack_hf, scale_to_hf
    from edgekit.quant.schemes import ternary_codes
    done = []
    for f in sorted(folder.glob("*.safetensors")):
        sd = load_file(str(f))
        for n in names:
            w = sd.get(n + ".weight")
            if w is None or w.shape[0] % 4:
                continue
            t, gamma = ternary_codes(w.float())
            sd[n + ".weight"] = pack_hf(t)
            sd[n + ".weight_scale"] = torch.tensor([scale_to_hf(float(gamma), "autobitlinear")], dtype=torch.bfloat16)
            done.append(n)
        save_file(sd, str(f), metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                  "quantization_mode": "offline",
                                  "modules_to_not_convert": sorted(set(names) - set(done)) + ["lm_head"]}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return done


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgekitError(f"output '{out}' exists and is not empty", fix="pass -o with a new folder")


RWKV7_FILE = "rwkv7.pth"      # an RWKV-7 result's checkpoint in its folder


def _write(model, tok: Path, out: Path, record: dict, pack: list[str]) -> None:
    """save_pretrained, or a BlinkDL .pth for RWKV-7 (bf16: γ·W~ stays exactly ternary) + tokenizer.json + quantize.json, built
    in a temp folder and renamed into place. pack: Linear names to store in transformers'
    BitNet packing (`quantization_config` bitnet, autobitlinear: weight_scale = gamma)."""
    import os
    import shutil
    import tempfile
    _check_out(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgekit-quantize-", dir=parent))
    try:
        if record["arch"] == "rwkv7":
            from edgekit.models.rwkv7_training import save_blink
            save_blink(model, tmp / RWKV7_FILE)
        else:
            model.to(torch.bfloat16).save_pretrained(str(tmp), safe_serialization=True)
        if pack:
            record["bitnet_packed"] = _pack_bitnet(tmp, pack)
        shutil.copyfile(tok, tmp / "tokenizer.json")
        (tmp / "quantize.json").write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
