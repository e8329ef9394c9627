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


class HfCheckpoint:
    """Mixin (listed before RecurrentModel) of an architecture whose checkpoint is a
    save_pretrained directory: the files its weights are read from are the directory's."""

    @classmethod
    def weight_files(cls, path) -> list[Path]:
        return weight_files(path)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a directory: model.safetensors, sharded *.safetensors (with or
    without an index), or a pytorch_model.bin read with weights_only=True; each file
    checked (plain dense tensors within its size, finite)."""
    sd = {}
    for f in weight_files(path):
        sd.update(_checkpoint.read_tensors(f))
    q = read_config(path).get("quantization_config")
    if isinstance(q, dict) and q.get("quant_method") == "bitnet":
        unpack_bitnet(sd, q.get("linear_class", "bitlinear"), str(path))
    return sd


def unpack_bitnet(sd: dict, linear_class: str, source: str) -> None:
    """In place: every BitNet-packed weight (uint8 (ceil(out / 4), in) beside its
    `weight_scale`, transformers' packing: edgekit/quant/bitnet_hf.py) becomes the float
    gamma * W~ the model's loaders take. `edgekit export --quant ternary` then reads back the
    very codes and gamma (an already ternary tensor keeps its own magnitude)."""
    from edgekit.quant.bitnet_hf import VALUES_PER_BYTE, scale_from_hf, unpack_hf
    packed = [k for k, v in sd.items() if k.endswith(".weight") and v.dtype == torch.uint8]
    if not packed:
        raise EdgekitError(f"'{source}': quantization_config says bitnet, but no weight is packed (uint8)",
                           fix="the config and the weights disagree; re-export the checkpoint")
    for k in packed:
        scale_key = k.removesuffix("weight") + "weight_scale"
        if scale_key not in sd:
            raise EdgekitError(f"'{source}': the BitNet-packed '{k}' has no '{scale_key}'",
                               fix="the checkpoint is damaged or not BitNet-packed as transformers writes it")
        gamma = scale_from_hf(sd.pop(scale_key), linear_class, scale_key)
        sd[k] = unpack_hf(sd[k], sd[k].shape[0] * VALUES_PER_BYTE).float() * gamma


def tokenizer_file(path: Path) -> Path | None:
    f = Path(path) / "tokenizer.json"
    return f if f.is_file() else None
