"""Reading Hugging Face `save_pretrained` directories: config.json + safetensors.

Shared by every HF-format architecture (Mamba, Mamba-2, RecurrentGemma, BitNet). Only
safetensors and `torch.load(weights_only=True)` are used: nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from edgekit.errors import EdgekitError


def is_hf_dir(path: Path, model_types: tuple[str, ...] = ()) -> bool:
    """A directory with a config.json whose model_type is one of model_types (any if empty)."""
    cfg = Path(path) / "config.json"
    if not (Path(path).is_dir() and cfg.is_file()):
        return False
    if not model_types:
        return True
    try:
        return json.loads(cfg.read_text()).get("model_type") in model_types
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False


def read_config(path: Path) -> dict:
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise EdgekitError(f"model directory '{path}' has no config.json",
                           expected="a Hugging Face save_pretrained directory (config.json + *.safetensors)",
                           fix="pass the directory written by save_pretrained, with its config.json")
    try:
        return json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"'{cfg}' is not valid JSON ({e})", fix="restore the original config.json") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a directory: model.safetensors, sharded *.safetensors (with or
    without an index), or a pytorch_model.bin read with weights_only=True."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if files:
        sd = {}
        for f in files:
            try:
                sd.update(load_file(str(f)))
            except (SafetensorError, OSError) as e:
                raise EdgekitError(f"'{f}' is not a readable safetensors file ({e})",
                                   fix="the file is truncated or corrupt; download it again") from None
        return sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        from edgekit.models.rwkv7 import load_torch_checkpoint
        sd = {}
        for f in bins:
            sd.update(load_torch_checkpoint(f))
        return sd
    raise EdgekitError(f"model directory '{path}' has no weights",
                       expected="model.safetensors (or *.safetensors shards, or pytorch_model.bin)",
                       fix="save the model with save_pretrained, which writes model.safetensors")


def tokenizer_file(path: Path) -> Path | None:
    f = Path(path) / "tokenizer.json"
    return f if f.is_file() else None
