"""Reading Hugging Face `save_pretrained` directories: config.json + safetensors.

Shared by every HF-format architecture (Mamba, Mamba-2, RecurrentGemma, BitNet). Only
safetensors and `torch.load(weights_only=True)` are used: nothing is unpickled. Every file
goes through edgekit/models/_checkpoint.py, which refuses corrupt or crafted ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.errors import EdgekitError
from edgekit.models import _checkpoint


def is_hf_dir(path: Path, model_types: tuple[str, ...] = ()) -> bool:
    """A directory with a config.json whose model_type is one of model_types (any if empty)."""
    cfg = Path(path) / "config.json"
    if not (Path(path).is_dir() and cfg.is_file()):
        return False
    if not model_types:
        return True
    raw = _checkpoint.peek_config(cfg)
    return raw is not None and raw.get("model_type") in model_types


def read_config(path: Path) -> dict:
    """config.json of a model directory, as a JSON object (anything else is refused)."""
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise EdgekitError(f"model directory '{path}' has no config.json",
                           expected="a Hugging Face save_pretrained directory (config.json + *.safetensors)",
                           fix="pass the directory written by save_pretrained, with its config.json")
    return _checkpoint.read_config(cfg)


def weight_files(path: Path) -> list[Path]:
    """The weight files of a directory, in the order they are read: *.safetensors (one file
    or shards), else pytorch_model*.bin."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise EdgekitError(f"model directory '{path}' has no weights",
                           expected="model.safetensors (or *.safetensors shards, or pytorch_model.bin)",
                           fix="save the model with save_pretrained, which writes model.safetensors")
    return files


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a directory: model.safetensors, sharded *.safetensors (with or
    without an index), or a pytorch_model.bin read with weights_only=True; each file
    checked (plain dense tensors within its size, finite)."""
    sd = {}
    for f in weight_files(path):
        sd.update(_checkpoint.read_tensors(f))
    return sd


def tokenizer_file(path: Path) -> Path | None:
    f = Path(path) / "tokenizer.json"
    return f if f.is_file() else None
