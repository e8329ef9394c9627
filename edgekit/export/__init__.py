"""`edgekit export`: checkpoint or module -> single-step artifacts + edgekit.json."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.export.manifest import FILENAME, new_manifest, write_manifest
from edgekit.models.base import RecurrentModel, load_model

FORMATS = {"onnx": "model.onnx", "pte": "model.pte"}
PREFILL = {"onnx": "prefill.onnx", "pte": "prefill.pte"}   # optional sequence-form graphs


def _tokenizer_for(model) -> str | None:
    """The tokenizer name a manifest records: the RWKV World vocabulary, or the name of
    a tokenizer file (e.g. tokenizer.json) that export copies next to the artifact."""
    from edgekit.tokenizer import WORLD_VOCAB
    if model.arch == "rwkv7" and model.cfg.vocab_size == 65536:
        return WORLD_VOCAB
    f = getattr(model, "tokenizer_file", None)
    return Path(f).name if f else None


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
        if f not in FORMATS:
            raise EdgekitError(f"unknown format '{f}'", expected="onnx, pte or both",
                               fix="pass --format onnx|pte|both")
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


def export(src, outdir, *, formats=("onnx", "pte"), ops: str = "fused", batch: int = 1,
           state_style: str | None = None, progress: Callable[[str], None] | None = None,
           prefill: int = 0) -> dict:
    """Export src (a checkpoint path, a RecurrentModel, or a module an architecture
    converts) to outdir. Returns the manifest.

    Everything is written into a temp folder inside outdir and moved into place only when
    every artifact succeeded, manifest last: a failed export never leaves a half-written
    artifact and never clobbers a good one; artifacts of formats not exported this time
    are removed, so outdir never mixes two exports.
    """
    import shutil
    import tempfile
    state_style = _check_args(formats, ops, batch, state_style)
    if prefill < 0:
        raise EdgekitError(f"--prefill {prefill} is negative", fix="pass --prefill 0 (none) or a chunk length like 16")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise EdgekitError(f"output '{outdir}' is a file", expected="a directory",
                           fix="pass -o with a directory path")
    note = progress or (lambda msg: None)
    note("loading")
    model = src if isinstance(src, RecurrentModel) else _from_module(src) or load_model(src)
    model = model.eval().requires_grad_(False)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".edgekit-export-", dir=outdir))
    try:
        manifest = _export_into(model, tmp, formats, ops, batch, state_style, note, prefill)
        files = [e[k] for e in manifest["artifacts"].values() for k in ("file", "external_data") if e.get(k)]
        files += [manifest["tokenizer_file"]] if manifest.get("tokenizer_file") else []
        stale = {"model.onnx", "model.onnx.data", "model.pte", "prefill.onnx", "prefill.onnx.data",
                 "prefill.pte"} - set(files)
        for name in stale:
            if (outdir / name).exists():
                (outdir / name).unlink()
        for name in files:
            (tmp / name).replace(outdir / name)
        (tmp / FILENAME).replace(outdir / FILENAME)          # the manifest goes last
        return manifest
    except BaseException:
        if created:
            shutil.rmtree(tmp, ignore_errors=True)
            if not any(outdir.iterdir()):
                outdir.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_into(model, outdir: Path, formats, ops, batch, state_style, note, prefill: int = 0) -> dict:
    from edgekit.export.executorch import export_pte
    from edgekit.export.onnx import export_onnx

    manifest = new_manifest(model, batch=batch, ops=ops, tokenizer=_tokenizer_for(model))
    meta = {"edgekit.arch": model.arch, "edgekit.ops": ops,
            "edgekit.manifest": ""}
    for fmt in formats:
        note(f"exporting {fmt}")
        if fmt == "onnx":
            import json
            meta["edgekit.manifest"] = json.dumps({k: v for k, v in manifest.items() if k != "artifacts"})
            manifest["artifacts"]["onnx"] = export_onnx(model, outdir / FORMATS["onnx"], ops=ops, batch=batch,
                                                        metadata=meta)
        else:
            manifest["artifacts"]["pte"] = export_pte(model, outdir / FORMATS["pte"], ops=ops, batch=batch,
                                                      state_style=state_style)
        if prefill:
            note(f"exporting {fmt} prefill (T={prefill})")
            fn = export_onnx if fmt == "onnx" else export_pte
            kw = {"metadata": meta} if fmt == "onnx" else {}
            manifest["artifacts"][f"{fmt}_prefill"] = fn(model, outdir / PREFILL[fmt], ops=ops, batch=batch,
                                                         seq_len=prefill, **kw)
    tok = getattr(model, "tokenizer_file", None)
    if tok:
        import shutil
        shutil.copyfile(tok, outdir / Path(tok).name)
        manifest["tokenizer_file"] = Path(tok).name
    write_manifest(outdir, manifest)
    return manifest


class _CallableModule(__import__("types").ModuleType):
    """`edgekit.export(src, outdir, ...)` works as the issue's Python API promises: the
    package `edgekit.export` is itself callable and forwards to `export`."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
