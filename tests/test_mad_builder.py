"""MAD's architectures in the builder (issue 33): a model is one list of layers, sequence mixers and
channel mixers alike; MAD's presets; the compression auto-encoder; the old hybrid entries unchanged.

Parameter counts are worked out by hand from MAD-lab's layer configs (see ssmbench/models/builder.py's
docstring); the old hybrid suite's counts are what the builder gave before layer lists (commit a31a6f2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from test_builder import one_thread  # noqa: F401  (autouse: these tiny models run on one thread)
from test_synthetic_kind import suite
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UserError
from ssmbench.models.architecture import PRESETS
from ssmbench.models.builder import SmallModelConfig, build_model, sincos_positions
from ssmbench.models.mixers import CHANNEL_MIXERS, Mixer, mixer_family
from ssmbench.models.mixers.channel import MLP, SwiGLU, swiglu_width
from ssmbench.records import read_records
from ssmbench.spec import load_suite, parse_suite

# --- parameter counts and layer order at MAD's sizes (width 128, vocab 16) -----------------------------------

# Per layer, from MAD-lab's configs/layers/*.yml (arithmetic in builder.py's docstring):
MAMBA = 107_264  # d_state 4, expand 2, dt_rank 8
ATTENTION = 66_048  # qkv 128·384 + 384, out 128·128 + 128, whatever the heads
HYENA = 123_964  # order 2, inner_factor 4, proj_groups 4, filter width 4 on emb_dim 3
SWIGLU = 135_168  # 3 · 128 · 352
NORM, EMBEDDING, HEAD = 128, 16 * 128, 128 * 16 + 16 + 128  # the untied head: Linear with a bias, and norm_f
DECODER = 2 * (128 + 128 * 128 + 128)  # compression: two RMSNorm + Linear pairs

MAD_PRESETS = [
    ("mad-attention", ["CausalSelfAttention", "SwiGLU"] * 2, ATTENTION, 407_184),
    ("mad-attention-1h", ["CausalSelfAttention", "SwiGLU"] * 2, ATTENTION, 407_184),
    ("mad-hyena", ["Hyena", "SwiGLU"] * 2, HYENA, 523_016),
    ("mad-mamba", ["TorchMamba", "SwiGLU"] * 2, MAMBA, 489_616),
]


def mad(name: str, **changes) -> SmallModelConfig:
    return SmallModelConfig.preset(name, **({"filter_len": 32} | changes))


def test_every_preset_is_tested_here():
    assert set(PRESETS) == {name for name, *_ in MAD_PRESETS} | {"mad-hybrid"}


@pytest.mark.parametrize(("name", "order", "per_mixer", "total"), MAD_PRESETS, ids=[p[0] for p in MAD_PRESETS])
def test_mad_presets_have_mads_layers_and_counts(name, order, per_mixer, total):
    built = build_model(mad(name))
    layers = built.module.backbone.layers
    assert [type(layer.mixer).__name__ for layer in layers] == order
    assert [sum(p.numel() for p in layer.mixer.parameters()) for layer in layers] == [per_mixer, SWIGLU] * 2
    assert built.n_params == EMBEDDING + 2 * (per_mixer + NORM) + 2 * (SWIGLU + NORM) + HEAD == total
    assert built.module.lm_head.bias is not None and built.module.lm_head.weight is not built.module.backbone.embedding.weight
    assert built.config.n_layers == 4 and built.config.d_model == 128


def test_mad_hybrid_is_mamba_swiglu_attention_swiglu():
    built = build_model(mad("mad-hybrid"))
    assert built.config.mixer == "hybrid" and built.kernel == "torch-chunked-scan+torch.sdpa"
    assert built.config.layer_mixers == ("mamba", "swiglu", "mha-rope", "swiglu")
    mixers = [layer.mixer for layer in built.module.backbone.layers]
    assert [type(m).__name__ for m in mixers] == ["TorchMamba", "SwiGLU", "CausalSelfAttention", "SwiGLU"]
    assert (mixers[0].d_state, mixers[0].d_inner, mixers[0].dt_rank) == (4, 256, 8)
    assert (mixers[2].n_heads, mixers[2].head_dim, mixers[2].rotary) == (16, 8, True)
    assert built.n_params == EMBEDDING + MAMBA + ATTENTION + 2 * SWIGLU + 4 * NORM + HEAD == 448_400


def test_mad_layer_settings():
    attention = build_model(mad("mad-attention-1h")).module.backbone.layers[0].mixer
    assert (attention.n_heads, attention.head_dim) == (1, 128)
    hyena = build_model(mad("mad-hyena")).module.backbone.layers[0].mixer
    assert (hyena.inner, hyena.proj_groups, hyena.in_proj.out_features, hyena.short_conv.in_channels) == (512, 4, 384, 1536)
    assert (hyena.filter.emb_dim, hyena.filter.head.in_features, hyena.filter.head.out_features) == (3, 4, 512)


def test_channel_mixers_are_mad_labs():
    """SwiGLU: int(8/3·D) rounded up to 16 (D = 128: 341 -> 352), w3(SiLU(w1 x) ⊙ w2 x); MLP: 4·D, GELU
    (tanh); neither has biases. The MLP's count at D = 128: 2·128·512 = 131,072."""
    assert [swiglu_width(d) for d in (16, 64, 128)] == [48, 176, 352]
    glu, mlp = SwiGLU(16), MLP(16)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(glu(x), glu.w3(F.silu(glu.w1(x)) * glu.w2(x)))
    torch.testing.assert_close(mlp(x), mlp.proj(F.gelu(mlp.fc(x), approximate="tanh")))
    assert all(m.bias is None for m in (glu.w1, glu.w2, glu.w3, mlp.fc, mlp.proj))
    built = build_model(SmallModelConfig(layers=("mamba", "mlp"), d_model=128, d_state=4, head="untied"))
    assert sum(p.numel() for p in built.module.backbone.layers[1].mixer.parameters()) == 131_072
    assert SwiGLU(16, d_inner=24).w1.out_features == MLP(16, d_inner=24).fc.out_features == 24  # ffn_width


# --- the layer list is the one builder ----------------------------------------------------------------------


def test_a_layer_list_names_its_mixer_and_normalises():
    """mixer is worked out from the layers (a channel mixer is no second mixer); a list of one sequence
    mixer is that mixer repeated, the config it always was."""
    assert SmallModelConfig(layers=("mamba", "swiglu") * 2).mixer == "mamba"
    assert SmallModelConfig(layers=("mamba", "swiglu", "hyena", "mlp")).mixer == "hybrid"
    assert SmallModelConfig(layers=("mamba", "mamba", "mamba")) == SmallModelConfig("mamba", n_layers=3)
    assert SmallModelConfig("mamba").layers is None and SmallModelConfig("mamba").n_layers == 2


# What the builder gave for suites/hybrid_recall.yaml's models before layer lists (commit a31a6f2):
# (task, model, device) -> n_params.
HYBRID_SUITE = {
    ("mqar-hybrid", "hybrid-d64", "cuda"): 639_168, ("mqar-hybrid", "hybrid-d128", "cuda"): 1_464_704,
    ("mqar-hybrid", "mamba-d64", "cuda"): 655_168, ("mqar-hybrid", "attention-d128", "cuda"): 1_313_408,
    ("induction-hybrid", "hybrid", "cuda"): 50_496, ("induction-hybrid", "mamba", "cuda"): 66_496,
    ("mqar-hybrid", "hybrid", "cpu"): 12_272, ("induction-hybrid", "hybrid", "cpu"): 4_624,
}


def mamba_ssm_names(model: torch.nn.Module, n_layers: int) -> set[str]:
    """MambaLMHeadModel's state_dict names (rms_norm, d_intermediate 0) around each layer's own mixer."""
    names = {"backbone.embedding.weight", "backbone.norm_f.weight", "lm_head.weight"}
    for i in range(n_layers):
        mixer = model.backbone.layers[i].mixer
        names |= {f"backbone.layers.{i}.norm.weight"} | {f"backbone.layers.{i}.mixer.{n}" for n in mixer.state_dict()}
    return names


@pytest.mark.parametrize(("task", "model", "device"), list(HYBRID_SUITE), ids=["-".join(k) for k in HYBRID_SUITE])
def test_the_hybrid_suite_builds_the_models_it_built(task, model, device):
    suite, _ = load_suite("suites/hybrid_recall.yaml")
    (spec,) = [t.for_device(device) for t in suite.tasks if t.task_name == task]
    config = spec.architectures[model].config(spec.vocab_size, spec.train.seq_len)
    built = build_model(config, "cpu", seed=0)
    assert built.n_params == HYBRID_SUITE[task, model, device]
    assert set(built.module.state_dict()) == mamba_ssm_names(built.module, config.n_layers)
    assert spec.architectures[model].mixer in ("hybrid", "mamba", "mha-rope")


# --- forward passes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_runs_forward_and_is_causal(name):
    model = build_model(mad(name), seed=1).module
    tokens = torch.randint(0, 16, (2, 32), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 16
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert before.shape == (2, 32, 16) and torch.isfinite(before).all()
    torch.testing.assert_close(after[:, :20], before[:, :20], rtol=0, atol=1e-5)
    assert not torch.allclose(after[:, 20:], before[:, 20:], atol=1e-4)


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_as_compression_model_runs_forward(name):
    built = build_model(mad(name, head="compression"), seed=1)
    assert built.n_params == build_model(mad(name)).n_params + DECODER
    logits = built.module(torch.randint(0, 16, (3, 32)))
    assert logits.shape == (3, 32, 16) and torch.isfinite(logits).all()


# --- compression: one aggregation token -----------------------------------------------------------------


def test_compression_reads_the_sequence_through_one_token():
    """Whatever the encoder computes at positions before the last cannot reach the logits: noise added there
    (after the last block) changes nothing, noise at the last position changes every output. And unlike a
    causal LM, the first output depends on the last token: it is decoded from the whole sequence's vector."""
    model = build_model(SmallModelConfig.preset("mad-hybrid", head="compression", vocab_size=8, d_model=32,
                                                n_heads=4), seed=0).module.eval()
    tokens = torch.randint(0, 7, (2, 12), generator=torch.Generator().manual_seed(0))
    noise = torch.zeros(1, 12, 32)

    def add_noise(module, inputs, output):
        return output + noise

    hook = model.backbone.layers[-1].register_forward_hook(add_noise)
    try:
        with torch.no_grad():
            clean = model(tokens)
            noise[:, :-1] = 100 * torch.randn(1, 11, 32, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(model(tokens), clean, rtol=0, atol=0)
            noise[:, -1] = 1.0
            moved = model(tokens)
    finally:
        hook.remove()
    assert (moved - clean).abs().amax(dim=-1).min() > 1e-4  # every position moved
    changed = tokens.clone()
    changed[:, -1] = 7  # the aggregation token itself
    with torch.no_grad():
        assert not torch.allclose(model(changed)[:, 0], clean[:, 0], atol=1e-5)
    assert model.encode(tokens).shape == (2, 32)


def test_the_decoders_positions_are_mads_sincos():
    """mad-lab's posemb_sincos_1d: sines, then cosines, at 10000^(-i/(D/2 - 1)); unscaled."""
    table = sincos_positions(5, 8, "cpu")
    freqs = 10_000.0 ** (-torch.arange(4) / 3)
    torch.testing.assert_close(table[3], torch.cat([torch.sin(3 * freqs), torch.cos(3 * freqs)]))
    assert sincos_positions(5, 9, "cpu")[:, -1].eq(0).all()


# --- initialisation -------------------------------------------------------------------------------------


def test_mad_init_is_mad_labs():
    """Same seed, same draws: MAD-lab's LanguageModel init differs from mamba_ssm's scheme only where it
    leaves a weight alone (each branch's output projection is not re-drawn and scaled) and where it zeroes a
    bias mamba_ssm's keeps (Hyena's filter FFN; it keeps Mamba's dt_proj bias as both do)."""
    for name in ("mad-hyena", "mad-hybrid"):
        ours = build_model(mad(name, init="mamba_ssm"), seed=3).module.state_dict()
        mads = build_model(mad(name), seed=3).module.state_dict()
        differ = {k for k in ours if not torch.equal(ours[k], mads[k])}
        expected = {k for k in ours if k.endswith(("out_proj.weight", "w3.weight"))}
        expected |= {k for k in ours if ".filter.mlp." in k and k.endswith("bias")}
        assert differ == expected, name
        assert all(mads[k].eq(0).all() for k in expected if k.endswith("bias"))
    dt_bias = build_model(mad("mad-mamba")).module.backbone.layers[0].mixer.dt_proj.bias
    assert F.softplus(dt_bias).min() >= 1e-3 * (1 - 1e-5)


def test_mad_init_of_the_autoencoder_is_mad_labs():
    """MAD-lab's AutoEncoder init: every Linear weight N(0, 0.02) and every bias zero, Mamba's dt_proj too."""
    model = build_model(mad("mad-mamba", head="compression")).module
    mamba = model.backbone.layers[0].mixer
    assert mamba.dt_proj.bias.eq(0).all() and model.decoder[1].bias.eq(0).all()
    assert abs(mamba.in_proj.weight.std().item() - 0.02) < 0.001  # 65,536 draws


# --- suites -----------------------------------------------------------------------------------------------


def test_a_suite_writes_a_preset_and_changes_it():
    task = parse_suite(suite(architectures={
        "mamba": {"preset": "mad-mamba"},
        "compress": {"preset": "mad-mamba", "head": "compression", "d_model": 64},
        "list": {"layers": ["mamba", "swiglu", "mha-rope", "swiglu"], "d_model": 32, "n_heads": 2}})).tasks[0]
    arch = task.architectures
    assert arch["mamba"].config(16, 64) == SmallModelConfig.preset("mad-mamba", filter_len=64)
    assert arch["compress"].config(16, 64).head == "compression" and arch["compress"].d_model == 64
    assert (arch["mamba"].mixer, arch["list"].mixer, arch["list"].n_layers) == ("mamba", "hybrid", 4)
    assert mixer_family(arch["mamba"].mixer) == "ssm" and mixer_family(arch["list"].mixer) == "hybrid"


@pytest.mark.parametrize(("arch", "message"), [
    ({"preset": "mad-mamab"}, "preset: unknown preset 'mad-mamab' (did you mean 'mad-mamba'"),
    ({"layers": ["mamba", "swigul"]}, "layers: unknown mixer 'swigul' (did you mean 'swiglu'"),
    ({"layers": ["swiglu", "mlp"]}, "layers: swiglu, mlp has no sequence mixer"),
    ({"mixer": "swiglu"}, "mixer: swiglu is a channel mixer"),
    ({"preset": "mad-hyena", "hyena_proj_groups": 5}, "hyena_proj_groups: 5 does not divide"),
    ({"preset": "mad-mamba", "head": "lm"}, "head: \"lm\" is not one of 'tied', 'untied' or 'compression'"),
])
def test_a_bad_model_names_its_field(arch, message):
    with pytest.raises(UserError) as err:
        parse_suite(suite(architectures={"m": arch}), source="s.yaml")
    assert f"s.yaml: tasks[0].architectures.m.{message}" in str(err.value)


def relu_glu_mixer(config, *, device="cpu", dtype=None, allow_torch_on_cuda=False) -> Mixer:
    """A channel mixer that is not in the registry: a ReLU-gated GLU (Shazeer 2020's ReGLU)."""

    class ReGLU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = torch.nn.Linear(config.d_model, 2 * config.d_model, bias=False, device=device, dtype=dtype)
            self.w3 = torch.nn.Linear(config.d_model, config.d_model, bias=False, device=device, dtype=dtype)

        def forward(self, x):
            gate, value = self.w1(x).chunk(2, dim=-1)
            return self.w3(F.relu(gate) * value)

    return Mixer(ReGLU(), "torch")


def test_a_channel_mixer_registered_by_one_line_trains_from_a_suite(tmp_path: Path, monkeypatch):
    """The one line a new channel mixer takes (here patched in): a suite lists it, a run trains the model,
    and its records carry the layers."""
    monkeypatch.setitem(CHANNEL_MIXERS, "reglu", f"{__name__}:relu_glu_mixer")
    task = {"name": "ih", "task": "induction_heads", "vocab_size": 8,
            "architectures": {"mamba-reglu": {"layers": ["mamba", "reglu", "mamba", "reglu"], "d_model": 16}},
            "train": {"steps": 4, "batch_size": 4, "seq_len": 16, "eval_every": 2, "eval_samples": 8},
            "eval_samples": 8}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite(**task)))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "syn").iterdir()
    records = [r for r in read_records(run_dir / "records.jsonl") if r.status == "ok"]
    assert records and all(r.extra["layers"] == ["mamba", "reglu", "mamba", "reglu"] for r in records)
    assert {r.kernel for r in records} == {"torch-chunked-scan"} and {r.family for r in records} == {"ssm"}
    per_layer = 16 * 32 + 16 * 16  # w1 + w3
    plain = build_model(SmallModelConfig("mamba", n_layers=2, d_model=16, vocab_size=8)).n_params
    assert records[0].extra["params"] == plain + 2 * (per_layer + 16)


def test_train_speed_leaves_a_mad_mamba_out_of_the_plain_mamba_ssm_loop(tmp_path: Path):
    """mixer: mamba no longer means MambaLMHeadModel's layout (a SwiGLU between, an untied head): the plain
    mamba_ssm loop, which loads the model's state_dict into MambaLMHeadModel, says so instead of failing."""
    task = {"kind": "train_speed", "architecture": {"preset": "mad-mamba", "d_model": 16}, "vocab_size": 8,
            "batch_sizes": [2], "seq_len": 16, "warmup_steps": 1, "steps": 2, "repeats": 1}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "speed", "defaults": {"device": "cpu"}, "tasks": [task]}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "speed").iterdir()
    skipped = {r.slice["loop"]: r.message for r in read_records(run_dir / "records.jsonl") if r.status == "skipped"}
    assert skipped["mamba_ssm-plain"] == "the plain mamba_ssm loop trains Mamba models only (Mamba in every layer, tied head)"
