"""The lowering passes (edgekit/export/passes/): each one fires on every architecture it
applies to, on none it does not, and leaves the step's outputs unchanged within the parity
bound; the pipelines are data, recorded in the manifest.

Each case traces one tiny model of each architecture (real on-disk formats) through its
step wrapper with a pipeline of that one pass, as the exporters do, then runs the traced
program and compares its output and new state with the model's own eager step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.export import passes
from edgekit.export.passes import PASS_MODULES, pipeline_for, trace
from edgekit.export.wrappers import StepBuffers, StepIO, buffer_name, example_inputs
from edgekit.models import load_model

TOL = 1e-5
# What each pass rewrites, by architecture (the paper math of each model decides it).
APPLIES = {
    "decompose": {"rwkv7", "mamba", "mamba2", "recurrent_gemma", "cfc", "ltc"},
    "fuse_add_rms_norm": {"mamba", "mamba2", "recurrent_gemma"},
    "fuse_gated_rms_norm": {"mamba2"},
    "fuse_silu_mul": {"mamba"},
    "fuse_gelu_tanh_mul": {"recurrent_gemma"},
    "fuse_softplus_bias": {"mamba", "mamba2"},
    "fuse_conv_silu": {"mamba", "mamba2"},
    "reinplace_state": {"rwkv7", "mamba", "mamba2", "recurrent_gemma", "cfc", "ltc"},
    "pack_dense": {"rwkv7", "mamba", "mamba2", "recurrent_gemma"},
    "xnnpack_forms": {"mamba", "mamba2", "recurrent_gemma"},
    "xnnpack_slices": {"mamba", "mamba2"},
}
ARCHS = sorted(set().union(*APPLIES.values()))


def test_every_architecture_says_which_passes_apply():
    """A new architecture adds its name to APPLIES above (docs/adding-an-architecture.md)."""
    from edgekit.models import ARCHITECTURES
    assert set(ARCHITECTURES) == set(ARCHS)


def test_every_pass_has_a_case_and_a_docstring_with_its_reason():
    assert set(APPLIES) == set(PASS_MODULES)
    for name in PASS_MODULES:
        mod = __import__(f"edgekit.export.passes.{name}", fromlist=["PASS"])
        assert mod.PASS.name == name
        assert mod.__doc__ and len(mod.__doc__) > 200, f"{name}: say what it rewrites and why"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from edgekit.models.cfc import random_ncps_module, save_ncps_dir
    from edgekit.models.hawk import write_random_hf_dir
    from edgekit.models.mamba import write_random_hf
    from edgekit.models.rwkv7 import write_random_checkpoint
    d = tmp_path_factory.mktemp("passes")
    V = 256
    paths = {
        "rwkv7": write_random_checkpoint(d / "rwkv7.pth", vocab_size=V, n_embd=128, n_layer=2, head_size=64, seed=1),
        "mamba": write_random_hf(d / "mamba", "mamba", seed=1, vocab_size=V, hidden_size=64, state_size=16,
                                 num_hidden_layers=2, expand=2, conv_kernel=4),
        "mamba2": write_random_hf(d / "mamba2", "mamba2", seed=1, vocab_size=V, hidden_size=64, state_size=16,
                                  num_hidden_layers=2, num_heads=8, head_dim=16, n_groups=2, expand=2),
        "recurrent_gemma": write_random_hf_dir(d / "hawk", seed=1, vocab_size=V, hidden_size=48, intermediate_size=96,
                                    num_attention_heads=4, num_key_value_heads=2, lru_width=64,
                                    num_hidden_layers=3, attention_window_size=8),
        "cfc": save_ncps_dir(random_ncps_module("CfC", 5, 16, seed=1), d / "cfc"),
        "ltc": save_ncps_dir(random_ncps_module("LTC", 5, 8, seed=1), d / "ltc"),
    }
    return {a: load_model(p).eval().requires_grad_(False) for a, p in paths.items()}


def _inputs(model, seed=0):
    xs = list(example_inputs(model))
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randint(0, 200, x.shape, generator=g) if x.dtype == torch.int64 else
          (torch.rand(x.shape, generator=g) + 0.5 if i == 1 else torch.randn(x.shape, generator=g))
          for i, x in enumerate(xs)]
    state = {k: torch.randn(v.shape, generator=g) * 0.5 if v.dtype.is_floating_point else v
             for k, v in model.init_state().items()}
    return xs, state


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(b.std(), 1e-12))


@pytest.mark.parametrize("name", PASS_MODULES)
@pytest.mark.parametrize("arch", ARCHS)
def test_pass_fires_where_it_applies_and_keeps_the_outputs(models, arch, name):
    model = models[arch]
    xs, state = _inputs(model)
    step_in = xs[0] if len(xs) == 1 else tuple(xs)
    with torch.no_grad():
        want_y, want_state = model.step(step_in, {k: v.clone() for k, v in state.items()})
    names = [s.name for s in model.state_spec()]
    if name == "reinplace_state":                  # the state is the program's own buffers
        wrapper = StepBuffers(model).eval()
        for n in names:
            getattr(wrapper, buffer_name(n)).copy_(state[n])
        args = tuple(xs)
    else:
        wrapper, args = StepIO(model).eval(), (*xs, *[state[n].clone() for n in names])
    ep, fired = trace(wrapper, args, model, [name])
    assert (fired[name] > 0) == (arch in APPLIES[name]), (arch, name, fired)
    program = ep.module()
    with torch.no_grad():
        out = program(*args)
    if name == "reinplace_state":                  # y; the new state is in the buffers
        got_y = out[0] if isinstance(out, tuple) else out
        got_state = {n: getattr(program, buffer_name(n)) for n in names}
    else:
        got_y, got_state = out[0], dict(zip(names, out[1:]))
    assert _rel(got_y, want_y) <= TOL, (arch, name, _rel(got_y, want_y))
    for n in names:
        if want_state[n].dtype.is_floating_point:
            assert _rel(got_state[n], want_state[n]) <= TOL, (arch, name, n)
        else:
            assert torch.equal(got_state[n], want_state[n]), (arch, name, n)
    # the model is itself again after the trace (module rewrites restored)
    with torch.no_grad():
        again, _ = model.step(step_in, {k: v.clone() for k, v in state.items()})
    assert torch.equal(again, want_y)


def test_pipelines_are_data_and_name_only_known_passes():
    for fmt in ("onnx", "pte"):
        for ops in ("fused", "decomposed"):
            for style in ("buffers", "io"):
                pipe = pipeline_for(fmt, ops, style)
                assert all(p in PASS_MODULES for p in pipe)
    assert "reinplace_state" in pipeline_for("pte", "fused", "buffers")
    assert "reinplace_state" not in pipeline_for("pte", "fused", "io")
    assert pipeline_for("onnx", "decomposed") == ["decompose"]
    with pytest.raises(KeyError, match="unknown lowering pass"):
        passes.get("nope")


def test_manifest_records_the_pipeline_that_ran(models, tmp_path):
    from edgekit.export import export
    m = export(models["mamba2"], tmp_path, formats=("onnx", "pte"), ops="fused")
    for fmt, art in m.artifacts.items():
        assert list(art.passes) == pipeline_for(fmt, "fused", art.state_style)
        assert all(art.passes_fired[p] > 0 for p in art.passes if "mamba2" in APPLIES[p])
