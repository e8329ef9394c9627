"""`edgekit export`: checkpoint or module -> single-step artifacts + edgekit.json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import logging as _logging

from edgekit import formats as fmts
from edgekit.artifact import FILENAME, ArtifactEntry, Manifest, write
from edgekit.errors import EdgekitError
from edgekit.models.base import RecurrentModel, load_model

def _from_module(obj) -> RecurrentModel | None:
    """A live framework module (e.g. ncps.torch.CfC) converted by the first registered
    architecture whose `from_module(obj)` accepts it; None for paths and unknown objects."""
    if isinstance(obj, (str, Path)):
        return None
    from edgekit.models import ARCHITECTURES
    for cls in ARCHITECTURES.values():
        hook = getattr(cls, "from_module", None)
        model = hook(obj) if hook is not None else None
        if model is not None:
            return model
    if not hasattr(obj, "__fspath__"):
        raise EdgekitError(f"cannot export a {type(obj).__name__}",
                           expected="a checkpoint path, an edgekit RecurrentModel, or a module an "
                                    "architecture converts (ncps.torch.CfC / LTC)",
                           fix="pass a checkpoint path or a supported module")
    return None


def _check_args(formats, ops, batch, state_style) -> str:
    from edgekit.export.executorch import DEFAULT_STATE_STYLE, STATE_STYLES
    for f in formats:
        fmts.by_name(f)
    if ops not in ("fused", "decomposed"):
        raise EdgekitError(f"unknown --ops '{ops}'", expected="fused or decomposed",
                           fix="pass --ops fused (custom ops) or --ops decomposed (stock ops only)")
    state_style = state_style or DEFAULT_STATE_STYLE
    if state_style not in STATE_STYLES:
        raise EdgekitError(f"unknown state style '{state_style}'", expected=" or ".join(STATE_STYLES),
                           fix="pass --state-style buffers (default) or io")
    if batch < 1:
        raise EdgekitError(f"batch {batch} is not positive", fix="pass --batch 1 or more")
    return state_style


# Importing the exporters' dependencies logs warnings no edgekit user can act on (torchao's
# optional CUDA kernels failing to load on a CPU build, torch's _pytree deprecation of Enum
# constants). The Python API is as quiet as the CLI: those two loggers are raised to ERROR,
# unless the application configured them itself.
for _name in ("torchao", "torch.utils._pytree"):
    if _logging.getLogger(_name).level == _logging.NOTSET:
        _logging.getLogger(_name).setLevel(_logging.ERROR)

TOKENIZER_FILE = "tokenizer.json"     # the name a tokenizer file gets in an export folder


def _owned_files(outdir: Path) -> set[str] | None:
    """The files of outdir an earlier export wrote (its edgekit.json says so), or None when
    outdir holds no edgekit manifest: then it is the user's folder, and nothing in it may
    be replaced or removed."""
    import json
    path = outdir / FILENAME
    if not path.is_file() or path.stat().st_size > (16 << 20):
        return None
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or not str(raw.get("schema", "")).startswith("edgekit.manifest/"):
        return None
    return export_file_names() | {FILENAME}


def export_file_names() -> set[str]:
    """Every file name an export can write into its folder (besides edgekit.json)."""
    return fmts.all_written_files() | {TOKENIZER_FILE}


def _check_outdir(outdir: Path) -> None:
    """An export replaces only what an earlier export wrote. In any other folder it refuses
    to overwrite a file of the user's, and names them."""
    if not outdir.is_dir() or _owned_files(outdir) is not None:
        return
    clash = sorted(n for n in export_file_names() | {FILENAME} if (outdir / n).exists())
    if clash:
        raise EdgekitError(f"output folder '{outdir}' is not an edgekit export and holds {', '.join(clash)}",
                           expected="a new or empty folder, or one an earlier `edgekit export` wrote",
                           fix="choose another -o folder; edgekit never overwrites files it did not write")


def export(src, outdir, *, formats=("onnx", "pte"), ops: str = "fused", batch: int = 1,
           state_style: str | None = None, progress: Callable[[str], None] | None = None,
           prefill: int = 0, tokenizer: str | Path | None = None, quant: str | None = None,
           group_size: int | None = None, quant_head: str | None = None) -> Manifest:
    """Export src (a checkpoint path, a RecurrentModel, or a module an architecture
    converts) to outdir. Returns the manifest. tokenizer: a Hugging Face tokenizer.json to
    ship with the export (a `save_pretrained` folder has none of its own). quant: None, or
    "ternary" | "int8" | "int4" (edgekit/quant/), every Linear in blocks of group_size;
    quant_head: the output head's (and a tied embedding's) scheme, if not quant's.

    Everything is written into a temp folder inside outdir and moved into place only when
    every artifact succeeded, manifest last: a failed export never leaves a half-written
    artifact and never clobbers a good one. In a folder an earlier export wrote, artifacts
    of formats not exported this time are removed, so outdir never mixes two exports; any
    other folder that holds a file of those names is refused.
    """
    import tempfile

    from edgekit._io import remove_tree
    state_style = _check_args(formats, ops, batch, state_style)
    if quant is not None:
        from edgekit.quant import check_scheme
        check_scheme(quant, group_size)
        if quant_head is not None:
            check_scheme(quant_head, None)
    elif group_size is not None or quant_head is not None:
        raise EdgekitError(f"{'group_size' if group_size is not None else 'quant_head'} needs quant",
                           fix="pass quant='ternary', 'int8' or 'int4'")
    if prefill < 0:
        raise EdgekitError(f"--prefill {prefill} is negative", fix="pass --prefill 0 (none) or a chunk length like 16")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise EdgekitError(f"output '{outdir}' is a file", expected="a directory",
                           fix="pass -o with a directory path")
    _check_outdir(outdir)
    tok_file = None
    if tokenizer is not None:
        from edgekit.tokenizer import HFTokenizer
        tok_file = Path(tokenizer)
        HFTokenizer(tok_file)                  # a file that does not load is refused now
    note = progress or (lambda msg: None)
    note("loading")
    model = src if isinstance(src, RecurrentModel) else _from_module(src) or load_model(src)
    model = model.eval().requires_grad_(False)
    quantization = None
    if quant is not None:
        from edgekit.quant import quantize_model
        note(f"quantizing ({quant})")
        quantization = quantize_model(model, quant, group_size, head=quant_head).to_json()
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".edgekit-export-", dir=outdir))
        manifest = _export_into(model, tmp, formats, ops, batch, state_style, note, prefill, tok_file, quantization)
        files = manifest.files()
        stale = export_file_names() - set(files)     # _check_outdir: an earlier export wrote these
        for name in stale:
            if (outdir / name).exists():
                (outdir / name).unlink()
        for name in files:
            (tmp / name).replace(outdir / name)
        (tmp / FILENAME).replace(outdir / FILENAME)          # the manifest goes last
        return manifest
    except BaseException:
        if created:
            remove_tree(tmp)
            if not any(outdir.iterdir()):
                outdir.rmdir()
        raise
    finally:
        remove_tree(tmp)


def _export_into(model, outdir: Path, formats, ops, batch, state_style, note, prefill: int = 0,
                 tok_file: Path | None = None, quantization: dict | None = None) -> Manifest:
    import json
    import shutil
    manifest = model.manifest(batch=batch, ops=ops, quantization=quantization or "none")
    meta = {"edgekit.arch": model.arch, "edgekit.ops": ops,
            "edgekit.manifest": json.dumps(manifest.to_json(artifacts=False))}
    for name in formats:
        fmt = fmts.by_name(name)
        kw = dict(ops=ops, batch=batch, state_style=state_style, metadata=meta)
        note(f"exporting {name}")
        manifest = manifest.with_artifact(name, _entry(fmt.export(model, outdir / fmt.file, **kw)))
        if prefill:
            note(f"exporting {name} prefill (T={prefill})")
            entry = fmt.export(model, outdir / fmt.prefill_file, seq_len=prefill, **kw)
            manifest = manifest.with_artifact(f"{name}_prefill", _entry(entry))
    tok = model.tokenizer()
    tok_file = tok_file or (tok.file if tok else None)
    if tok_file is not None:
        from edgekit._io import sha256_file
        from edgekit.tokenizer import HFTokenizer
        vocab = HFTokenizer(tok_file).vocab_size          # refuses a file that does not load
        V = manifest.config.get("vocab_size")
        if isinstance(V, int) and vocab > V:
            raise EdgekitError(f"tokenizer '{tok_file}' has {vocab:,} tokens, the model's vocabulary {V:,}",
                               fix="pass the tokenizer this model was trained with")
        shutil.copyfile(tok_file, outdir / TOKENIZER_FILE)
        manifest = replace(manifest, tokenizer=TOKENIZER_FILE, tokenizer_file=TOKENIZER_FILE,
                           tokenizer_sha256=sha256_file(outdir / TOKENIZER_FILE))
    write(outdir, manifest)
    return manifest


def _entry(d: dict) -> ArtifactEntry:
    return ArtifactEntry.from_json(d, "the exporter")


class _CallableModule(__import__("types").ModuleType):
    """`edgekit.export(src, outdir, ...)` works as the issue's Python API promises: the
    package `edgekit.export` is itself callable and forwards to `export`."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
