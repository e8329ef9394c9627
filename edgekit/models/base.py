"""The model contract every architecture implements, and the architecture registry.

Dimension legend (all of edgekit.models):
    B batch, T time steps, C / D model width, H heads, N head size or state size,
    V vocabulary, L layers, I input features, U units.

A model is a `RecurrentModel`: a torch module with a sequence form ``forward(x[B, T],
state)`` and a single-step form ``step(x_t[B], state)``, whose state is a flat, ordered,
named set of tensors described once by ``state_spec`` (STYLE.md §2). Export, runtime
sessions, state save/restore and the manifest all read that one spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class StateSpec:
    """One named state tensor: ``layers.3.wkv`` of shape (B, H, N, N) float32."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape),
                "dtype": str(self.dtype).removeprefix("torch."), "bytes": self.nbytes}


@dataclass(frozen=True)
class TokenizerRef:
    """The tokenizer a model's text goes through: a name the runtime resolves (the RWKV World
    vocabulary, or a file name), and the file an export copies beside the artifact (or None)."""

    name: str
    file: Path | None = None


class RecurrentModel(nn.Module):
    """Base class: one subclass per architecture, registered with `register_arch`."""

    arch: ClassVar[str]
    checkpoint: ClassVar[str] = ""         # the on-disk format it loads (`edgekit archs`)
    input_kind: ClassVar[str] = "tokens"   # "tokens" (int64 ids) or "features" (float)
    output_name: ClassVar[str] = "logits"  # name of the step's output in every artifact

    # -- the contract ------------------------------------------------------------------
    def state_spec(self, batch: int = 1) -> list[StateSpec]:
        raise NotImplementedError

    def input_spec(self, batch: int = 1) -> list[StateSpec]:
        """The step's inputs besides the state, in order. `step` gets a tensor when there
        is one input, else a tuple in this order (e.g. CfC: x (B, I) and dt (B, 1))."""
        return [StateSpec("tokens", (batch,), torch.int64)]

    def init_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        return {s.name: torch.zeros(s.shape, dtype=s.dtype) for s in self.state_spec(batch)}

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        """(x_t[B], state) -> (y_t[B, ...], new_state). The export target. By default
        `forward` over one time step (tokens (B,) int64 -> logits (B, V)); a model whose
        step takes several inputs (CfC's x and dt) overrides it."""
        y, state = self.forward(x[:, None], state)
        return y[:, 0], state

    def forward(self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None):
        """(x[B, T], state) -> (y[B, T, ...], new_state). Prefill and parity."""
        raise NotImplementedError

    def config_dict(self) -> dict:
        raise NotImplementedError

    def tokenizer(self) -> TokenizerRef | None:
        """The tokenizer of a token model: by default the checkpoint's own tokenizer file
        (`tokenizer_file`, e.g. a Hugging Face directory's tokenizer.json), else None."""
        f = getattr(self, "tokenizer_file", None)
        return TokenizerRef(Path(f).name, Path(f)) if f else None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "RecurrentModel":
        raise NotImplementedError

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True if `path` is a checkpoint of this architecture (cheap: no full load)."""
        raise NotImplementedError

    @classmethod
    def weight_files(cls, path: str | Path) -> list[Path]:
        """The files from_pretrained reads the weights of the checkpoint at path from (for
        `edgekit inspect`): the path itself when it is a file."""
        return [Path(path)] if Path(path).is_file() else []

    # -- the registry's parity hooks (tests/test_arch_parity.py, benchmarks/cases) ----------
    @classmethod
    def write_random(cls, path: str | Path, seed: int = 0, **shape) -> Path:
        """A random-weight checkpoint of this architecture, in its real on-disk format, at
        path: tiny by default, `shape` overriding its config (real sizes for benchmarks).
        Returns what the loaders take (the file or folder)."""
        raise NotImplementedError(f"architecture {cls.arch!r} has no write_random")

    @classmethod
    def oracle(cls, path: str | Path):
        """The reference implementation we did not write, over the checkpoint at path:
        (what it is, step), where step(x) takes what StreamingSession.step takes and returns
        y as a float array (logits, or the output features). Imports the oracle package."""
        raise NotImplementedError(f"architecture {cls.arch!r} has no oracle")

    # -- shared helpers ----------------------------------------------------------------
    def manifest(self, *, batch: int = 1, ops: str = "fused", quantization: str = "none",
                 device: str | None = None):
        """The artifact contract's facts about this model (edgekit/artifact.py), with no
        artifacts yet: what an export records and what a torch-eager session reports."""
        from edgekit import __version__
        from edgekit.artifact import Manifest, TensorSpec
        spec = lambda s: TensorSpec(s.name, tuple(s.shape), str(s.dtype).removeprefix("torch."))  # noqa: E731
        tok = self.tokenizer()
        return Manifest(arch=self.arch, model_id=model_fingerprint(self), config=self.config_dict(),
                        input_kind=self.input_kind, batch=batch,
                        inputs=tuple(spec(s) for s in self.input_spec(batch)), output=self.output_name,
                        ops=ops, state=tuple(spec(s) for s in self.state_spec(batch)),
                        quantization=quantization, device=device, tokenizer=tok.name if tok else None,
                        edgekit_version=__version__)

    def state_bytes(self, batch: int = 1) -> int:
        return sum(s.nbytes for s in self.state_spec(batch))


def bytes_read_per_token(model: nn.Module) -> int:
    """Bytes of every parameter and buffer one decode step reads, as stored (fp32, fp16, packed
    codes): the numerator of the bandwidth floor. An nn.Embedding reads one row; a tied
    embedding read from the head (`Linear.rows`) costs nothing beyond the head, which reads
    its whole matrix."""
    emb = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum((p.shape[-1] if id(p) in emb else p.numel()) * p.element_size()
               for p in (*model.parameters(), *model.buffers()))


ARCHITECTURES: dict[str, type[RecurrentModel]] = {}


def register_arch(cls: type[RecurrentModel]) -> type[RecurrentModel]:
    if cls.arch in ARCHITECTURES:
        raise RuntimeError(f"architecture {cls.arch!r} registered twice")
    ARCHITECTURES[cls.arch] = cls
    return cls


def detect_arch(path: str | Path) -> type[RecurrentModel]:
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"checkpoint '{path}' does not exist",
                           fix="check the path; edgekit export takes a .pth file or a model directory")
    for cls in ARCHITECTURES.values():
        if cls.detect(path):
            return cls
    if path.is_dir() and (path / "config.json").is_file():
        # a model folder no architecture claims: say what its config.json is (not an object,
        # not valid JSON, or a model_type edgekit does not load)
        from edgekit.models import hf
        from edgekit.models._checkpoint import json_text
        raw = hf.read_config(path)
        raise EdgekitError(f"'{path / 'config.json'}' has model_type {json_text(raw.get('model_type'))}, "
                           "which edgekit does not load",
                           expected="the config.json of one of: " + ", ".join(sorted(ARCHITECTURES)),
                           fix="pass the folder of a supported model (edgekit archs lists them)")
    raise EdgekitError(f"'{path}' is not a checkpoint edgekit recognizes",
                       expected="one of: " + ", ".join(sorted(ARCHITECTURES)) +
                       " (BlinkDL .pth for rwkv7)",
                       fix="pass a real checkpoint file or model directory")


def load_model(path: str | Path) -> RecurrentModel:
    return detect_arch(path).from_pretrained(path)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the weights (names and bytes): which model a saved state belongs to."""
    import hashlib
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
