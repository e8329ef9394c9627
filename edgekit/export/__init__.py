"""`edgekit export`: checkpoint or module -> single-step artifacts + edgekit.json."""

from __future__ import annotations

from contextlib import contextmanager
from copy import deepcopy
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


DEFAULT_FORMATS = ("onnx", "pte")


def export(src, outdir, *, formats=None, ops: str | None = None, batch: int = 1,
           state_style: str | None = None, progress: Callable[[str], None] | None = None,
           prefill: int = 0, tokenizer: str | Path | None = None, quant: str | None = None,
           group_size: int | None = None, quant_head: str | None = None, device: str | None = None,
           dtype: str | None = None, force: bool = False, quantizer: str = "auto") -> Manifest:
    """Export src (a checkpoint path, a RecurrentModel, or a module an architecture
    converts) to outdir. Returns the manifest. tokenizer: a Hugging Face tokenizer.json to
    ship with the export (a `save_pretrained` folder has none of its own). quant: None, or
    "ternary" | "int8" | "int4" (edgekit/quant/), every Linear in blocks of group_size;
    quant_head: the output head's (and a tied embedding's) scheme, if not quant's.
    quantizer: what makes int4 codes, "nncf" (nncf.compress_weights), "edgekit" (its own copy
    of NNCF's rule: the same bytes, without NNCF installed) or "auto" (NNCF where installed);
    recorded in the manifest.
    device: a profile name (devices/NAME.toml, `edgekit devices`): its format, ops, dtype,
    quantization and pass pipeline are used wherever the call leaves one as None (quant
    "none" is an explicit choice), the manifest records both, and a model that does not
    fit the device's RAM budget is refused unless force. Without a device: formats onnx and
    pte, ops fused, fp32, no quantization.

    Everything is written into a temp folder inside outdir and moved into place only when
    every artifact succeeded, manifest last: a failed export never leaves a half-written
    artifact and never clobbers a good one. In a folder an earlier export wrote, artifacts
    of formats not exported this time are removed, so outdir never mixes two exports; any
    other folder that holds a file of those names is refused.
    """
    formats, ops, quant, dtype, passes, profile, choices = _device_choices(device, formats, ops, quant, dtype)
    state_style = _check_args(formats, ops, batch, state_style)
    if dtype not in ("fp32", "fp16"):
        raise EdgekitError(f"unknown dtype {dtype!r}", expected="fp32 or fp16", fix="pass --dtype fp32")
    if dtype == "fp16" and formats != ("onnx",):
        whose = f" (the {device} profile's)" if device and "dtype" not in choices["overridden"] else ""
        raise EdgekitError(f"dtype fp16{whose} is built for ONNX only, and this export asks for "
                           f"{' and '.join(formats)}", expected="--format onnx with --dtype fp16",
                           fix="pass --format onnx, or --dtype fp32 for a .pte (ExecuTorch's fp16 path is not built)")
    if quant is not None:
        from edgekit.quant import QUANTIZERS, check_scheme
        check_scheme(quant, group_size)
        if quant_head is not None:
            check_scheme(quant_head, None)
        if quantizer not in QUANTIZERS:
            raise EdgekitError(f"unknown quantizer {quantizer!r}", expected=" | ".join(QUANTIZERS),
                               fix="pass --quantizer auto (the default), nncf or edgekit")
    elif group_size is not None or quant_head is not None:
        raise EdgekitError(f"{'group_size' if group_size is not None else 'quant_head'} needs quant",
                           fix="pass quant='ternary', 'int8' or 'int4'")
    if prefill < 0:
        raise EdgekitError(f"--prefill {prefill} is negative", fix="pass --prefill 0 (none) or a chunk length like 16")
    no_prefill = [f for f in formats if fmts.by_name(f).prefill_file is None]
    if prefill and no_prefill:
        raise EdgekitError(f"--prefill does not apply to --format {no_prefill[0]}",
                           expected="no --prefill: its graph takes a whole prompt in one call",
                           fix="drop --prefill, or export --format onnx or pte")
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
    with _borrowed(model, copy=quant is not None and model is src) as model:
        return _export_model(model, outdir, formats, ops, batch, state_style, note, prefill, tok_file, quant,
                             group_size, quant_head, quantizer, device, choices, passes, dtype, profile, force)


@contextmanager
def _borrowed(model, copy: bool):
    """The model in eval mode without gradients for the export, and the caller's model as it
    was afterwards: quantization replaces its Linear layers, so a model the caller passed in is
    deep-copied first (copy=True); otherwise its training mode and requires_grad flags are put
    back (an export in the middle of a training loop must not stop the training)."""
    if copy:
        model = deepcopy(model)
    training = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model.eval().requires_grad_(False)
    finally:
        for m, t in training:
            m.training = t
        for p, g in grads:
            p.requires_grad_(g)


def _export_model(model, outdir, formats, ops, batch, state_style, note, prefill, tok_file, quant, group_size,
                  quant_head, quantizer, device, choices, passes, dtype, profile, force) -> Manifest:
    import tempfile

    from edgekit._io import remove_tree
    quantization = None
    if quant is not None:
        from edgekit.quant import quantize_model
        note(f"quantizing ({quant})")
        quantization = quantize_model(model, quant, group_size, head=quant_head, quantizer=quantizer).to_json()
    if profile is not None:
        choices["fit"] = _check_fit(model, profile, formats, batch, force)
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".edgekit-export-", dir=outdir))
        manifest = _export_into(model, tmp, formats, ops, batch, state_style, note, prefill, tok_file, quantization,
                                device, choices, passes, dtype)
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
                 tok_file: Path | None = None, quantization: dict | None = None, device: str | None = None,
                 choices: dict | None = None, passes: tuple[str, ...] | None = None, dtype: str = "fp32") -> Manifest:
    import json
    import shutil

    from edgekit.models.base import bytes_read_per_token
    manifest = replace(model.manifest(batch=batch, ops=ops, quantization=quantization or "none", device=device),
                       device_choices=choices, bytes_per_token=bytes_read_per_token(model))
    meta = {"edgekit.arch": model.arch, "edgekit.ops": ops,
            "edgekit.manifest": json.dumps(manifest.to_json(artifacts=False))}
    for name in formats:
        fmt = fmts.by_name(name)
        kw = dict(ops=ops, batch=batch, state_style=state_style, metadata=meta, passes=passes, dtype=dtype)
        note(f"exporting {name}")
        manifest = manifest.with_artifact(name, _entry(fmt.export(model, outdir / fmt.file, **kw)))
        if dtype != "fp32":             # the weights as this file stores them
            manifest = replace(manifest, bytes_per_token=manifest.artifacts[name].bytes_per_token)
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


def _device_choices(device, formats, ops, quant, dtype):
    """(formats, ops, quant or None, dtype, passes or None, profile or None, choices record):
    the call's own values, and for each one it left None the device profile's (or the plain
    default). A --format the device does not run is refused: that cannot be honoured."""
    if device is None:
        return (tuple(formats) if formats else DEFAULT_FORMATS), ops or "fused", \
            (None if quant in (None, "none") else quant), dtype or "fp32", None, None, None
    from edgekit.profiles import load_profile
    profile = load_profile(device)
    overridden = {}

    def pick(key, given, theirs):
        if given is None:
            return theirs
        if given != theirs:
            overridden[key] = {"profile": theirs, "flag": given}
        return given
    formats = tuple(pick("format", tuple(formats) if formats else None, (profile.format,)))
    bad = [f for f in formats if f not in profile.formats]
    if bad:
        raise EdgekitError(f"--format {bad[0]} cannot run on device '{device}' ({profile.description})",
                           expected=f"a format it runs: {', '.join(profile.formats)}",
                           fix=f"drop --format (the profile picks {profile.format}), or choose another --device")
    ops = pick("ops", ops, profile.ops)
    quant = pick("quant", quant, profile.quant)
    dtype = pick("dtype", dtype, profile.dtype)
    choices = {"profile": profile.to_json(), "overridden": overridden}
    return formats, ops, (None if quant == "none" else quant), dtype, profile.passes, profile, choices


def _check_fit(model, profile, formats, batch: int, force: bool) -> dict:
    """The model's weights + state + the runtime's working memory against the device's RAM
    budget: refused (by how much) unless force."""
    from edgekit.profiles import fit
    from edgekit.units import human_bytes
    weights = sum(p.numel() * p.element_size() for p in (*model.parameters(), *model.buffers()))
    f = max((fit(profile, weights, model.state_bytes(batch), fmt) for fmt in formats), key=lambda f: f.total)
    if not f.fits and not force:
        raise EdgekitError(f"the model needs {human_bytes(f.total)} on '{profile.name}' (weights "
                           f"{human_bytes(f.weights)}, state {human_bytes(f.state)}, runtime {human_bytes(f.working)}), "
                           f"{human_bytes(f.total - f.budget)} over its RAM budget of {human_bytes(f.budget)}",
                           fix="quantize (--quant int4 or ternary), choose a larger device, or pass --force to "
                               "export anyway")
    return {"weights": f.weights, "state": f.state, "working": f.working, "budget": f.budget, "fits": f.fits}


def _entry(d: dict) -> ArtifactEntry:
    return ArtifactEntry.from_json(d, "the exporter")


class _CallableModule(__import__("types").ModuleType):
    """`edgekit.export(src, outdir, ...)` works as the issue's Python API promises: the
    package `edgekit.export` is itself callable and forwards to `export`."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
