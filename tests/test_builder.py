"""Small models built from scratch (ssmbench.models.builder) and their mixers, on the CPU.

The mixer registry; parameter counts at the paper's sizes, worked out by hand; causality of every mixer;
the chunked selective scan against the sequential reference, forward and backward; TorchMamba against
mamba_ssm's Mamba (parameter layout from the source, forward from its non-fused path); position limits;
a few training steps. tests/gpu/test_builder_gpu.py compares with mamba_ssm's CUDA kernels themselves.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ssmbench.errors import JobError
from ssmbench.models.builder import SmallModelConfig, build_model
from ssmbench.models.mixers import MIXERS, get_mixer, register_mixer
from ssmbench.models.mixers.attention import PositionLimitError, apply_rotary, rotary_tables
from ssmbench.models.mixers.mamba import TorchMamba, make_mamba
from ssmbench.models.mixers.selective_scan import selective_scan_chunked, selective_scan_ref

MIXER_NAMES = ["mamba", "mha-abs", "mha-rope"]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: their ops are too small to share among threads, and with several threads a
    busy machine stalls every op on a descheduled one (seen here: 0.5 s became 40 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(mixer: str, **changes) -> SmallModelConfig:
    """A config small enough for quick CPU tests."""
    return SmallModelConfig(mixer, **({"d_model": 32, "n_heads": 4} | changes))


# --- registry -------------------------------------------------------------------------------------------


def test_registry_names_and_targets():
    assert set(MIXER_NAMES) <= set(MIXERS)
    for name, target in MIXERS.items():
        module, _, attr = target.partition(":")
        assert module.startswith("ssmbench.models.mixers.") and attr, name
        assert callable(get_mixer(name))


def test_registry_imports_nothing_until_asked():
    """Nor do the config and its presets: a suite's validation builds a SmallModelConfig to check a model."""
    code = ("import sys, ssmbench.models.mixers as m, ssmbench.models.architecture as a; assert m.MIXERS; "
            "a.SmallModelConfig.preset('mad-hybrid'); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_target_is_resolved_lazily():
    register_mixer("not-yet", "ssmbench.models.mixers.no_such_module:factory")  # nothing imported yet
    try:
        with pytest.raises(ModuleNotFoundError):
            get_mixer("not-yet")
    finally:
        MIXERS.pop("not-yet")
    with pytest.raises(ValueError, match="module:factory"):
        register_mixer("bad", "no_colon_here")


@pytest.mark.parametrize(("typo", "suggestion"), [("mamab", "mamba"), ("mha_rope", "mha-rope")])
def test_unknown_mixer_says_did_you_mean(typo, suggestion):
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'") as err:
        get_mixer(typo)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=f"did you mean '{suggestion}'"):
        SmallModelConfig(typo)


@pytest.mark.parametrize("changes", [{"abs_positions": "learned"}, {"abs_positions": "alibi"}, {"d_model": 0},
                                     {"n_layers": 1.5}, {"embed_dropout": 1.0}, {"attn_dropout": -0.1}])
def test_bad_config_is_refused_when_made(changes):
    with pytest.raises(ValueError, match="SmallModelConfig"):
        SmallModelConfig("mha-abs", **changes)


# --- parameter counts, shapes, causality ----------------------------------------------------------------

# Counted by hand from the modules' definitions (see ssmbench/models/builder.py's docstring).
# mamba, d_model 64, d_state 16, d_conv 4, expand 2 -> d_inner 128, dt_rank ceil(64/16) = 4; per mixer:
#   in_proj 64*256 = 16384, conv1d 128*4 + 128 = 640, x_proj 128*(4 + 32) = 4608, dt_proj 4*128 + 128 = 640,
#   A_log 128*16 = 2048, D 128, out_proj 128*64 = 8192                                       -> 32640
#   model: embedding 16*64 = 1024 (head tied) + 2 * (32640 + RMSNorm 64) + final RMSNorm 64  -> 66496
# attention, d_model 128, 8 heads; per mixer: qkv 128*384 + 384 = 49536, out_proj 128*128 + 128 = 16512
#                                                                                           -> 66048
#   model: embedding 16*128 = 2048 + 2 * (66048 + 128) + 128                                 -> 134528
#   learned positions, 256 of them: + 256*128 = 32768                                        -> 167296
PAPER_SIZES = [
    (SmallModelConfig("mamba"), 32_640, 66_496),
    (SmallModelConfig("mha-abs", d_model=128), 66_048, 134_528),
    (SmallModelConfig("mha-rope", d_model=128), 66_048, 134_528),
    (SmallModelConfig("mha-abs", d_model=128, abs_positions="learned", max_positions=256), 66_048, 167_296),
]


@pytest.mark.parametrize(("config", "per_mixer", "total"), PAPER_SIZES,
                         ids=["mamba", "mha-abs", "mha-rope", "mha-abs-learned"])
def test_parameter_counts_at_paper_sizes(config, per_mixer, total):
    built = build_model(config, "cpu")
    assert built.n_params == total
    assert built.n_params == sum(p.numel() for p in set(built.module.parameters()))  # tied head counted once
    mixer = built.module.backbone.layers[0].mixer
    assert sum(p.numel() for p in mixer.parameters()) == per_mixer


@pytest.mark.parametrize(("mixer", "kernel"), [("mamba", "torch-chunked-scan"), ("mha-abs", "torch.sdpa"),
                                               ("mha-rope", "torch.sdpa")])
def test_logits_shape_and_kernel(mixer, kernel):
    built = build_model(small(mixer), "cpu")
    assert built.kernel == kernel
    assert built.module.lm_head.weight is built.module.backbone.embedding.weight
    logits = built.module(torch.randint(0, 16, (3, 37)))
    assert logits.shape == (3, 37, 16) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("mixer", MIXER_NAMES)
def test_outputs_up_to_t_ignore_later_tokens(mixer):
    model = build_model(small(mixer), "cpu", seed=1).module
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 16, (2, 45), generator=gen)
    changed = tokens.clone()
    t = 20
    changed[:, t + 1:] = (tokens[:, t + 1:] + 1 + torch.randint(0, 14, (2, 45 - t - 1), generator=gen)) % 16
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-5)
    assert not torch.allclose(after[:, t + 1:], before[:, t + 1:], atol=1e-3)  # later outputs do see them


def test_seed_decides_the_weights_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (build_model(small("mamba"), "cpu", seed=s).module.state_dict() for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "backbone.layers.0.mixer.in_proj.weight"
    assert not torch.equal(a[key], c[key])


# --- selective scan: chunked against the sequential reference --------------------------------------------


def scan_inputs(batch=2, d_inner=6, d_state=5, length=50, seed=0, extras=True):
    """Random float32 inputs that require grad, A negative (as S4D-real), delta positive."""
    gen = torch.Generator().manual_seed(seed)
    t = {"u": torch.randn(batch, d_inner, length, generator=gen),
         "delta": 0.5 * torch.rand(batch, d_inner, length, generator=gen),
         "A": -0.5 - 4 * torch.rand(d_inner, d_state, generator=gen),
         "B": torch.randn(batch, d_state, length, generator=gen),
         "C": torch.randn(batch, d_state, length, generator=gen)}
    if extras:
        t |= {"D": torch.randn(d_inner, generator=gen),
              "z": torch.randn(batch, d_inner, length, generator=gen),
              "delta_bias": 0.5 * torch.randn(d_inner, generator=gen)}
    return {k: v.requires_grad_() for k, v in t.items()}


# float32, the two summing in different orders: (1e-5, 1e-5) per element; the gradients of A, D and
# delta_bias sum over batch and length, with cancellations (random output gradients), so (1e-4, 1e-4).
TOL = (1e-5, 1e-5)
SUMMED_TOL = {"A": (1e-4, 1e-4), "D": (1e-4, 1e-4), "delta_bias": (1e-4, 1e-4)}


def assert_scans_agree(inputs, chunk_size, softplus, tol=TOL):
    twin = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = selective_scan_chunked(**inputs, delta_softplus=softplus, chunk_size=chunk_size)
    want = selective_scan_ref(**twin, delta_softplus=softplus)
    torch.testing.assert_close(out, want, rtol=tol[0], atol=tol[1])
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, list(inputs.values()), grad)
    expected = torch.autograd.grad(want, list(twin.values()), grad)
    for name, g, e in zip(inputs, got, expected, strict=True):
        rtol, atol = max(SUMMED_TOL.get(name, TOL), tol)
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 16, 50, 64, None])
@pytest.mark.parametrize("extras", [True, False], ids=["z-D-bias-softplus", "plain"])
def test_chunked_scan_matches_reference(chunk_size, extras):
    assert_scans_agree(scan_inputs(length=50, extras=extras), chunk_size, softplus=extras)


def test_chunked_scan_matches_reference_at_a_longer_length():
    assert_scans_agree(scan_inputs(batch=2, d_inner=8, d_state=16, length=700, seed=1), None, softplus=True)


def test_chunked_scan_is_stable_under_strong_decay():
    """delta up to ~20 and A down to -100: steps decay to exp(-2000) = 0; nothing overflows. The states are
    some 20 times larger than above, so are the tolerances."""
    inputs = scan_inputs(length=200, seed=2, extras=False)
    with torch.no_grad():
        inputs["delta"].mul_(40)
        inputs["A"].mul_(20)
    out = selective_scan_chunked(**inputs, chunk_size=64)
    assert torch.isfinite(out).all()
    assert_scans_agree(inputs, 64, softplus=False, tol=(1e-4, 1e-4))


def test_chunked_scan_without_grad_and_in_bfloat16():
    inputs = {k: v.detach() for k, v in scan_inputs(length=90).items()}
    with torch.no_grad():
        out = selective_scan_chunked(**inputs, delta_softplus=True, chunk_size=16)
    torch.testing.assert_close(out, selective_scan_ref(**inputs, delta_softplus=True), rtol=1e-5, atol=1e-5)
    low = {k: v.bfloat16() if k in ("u", "delta", "z", "B", "C") else v for k, v in inputs.items()}
    out = selective_scan_chunked(**low, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, selective_scan_ref(**low, delta_softplus=True), rtol=2**-7, atol=1e-5)


def test_chunked_scan_refuses_other_shapes():
    inputs = {k: v.detach() for k, v in scan_inputs(extras=False).items()}
    with pytest.raises(ValueError, match="B has shape"):
        selective_scan_chunked(**(inputs | {"B": inputs["B"][0]}))  # B (d_state, L): not the selective case


# --- TorchMamba against mamba_ssm's Mamba -----------------------------------------------------------------

# mamba_ssm 2.3.2, mamba_ssm/modules/mamba_simple.py, Mamba(d_model, d_state=16, d_conv=4, expand=2) with
# d_inner = expand * d_model and dt_rank = ceil(d_model / 16): its named_parameters() in order (the module's
# own A_log and D first, then its submodules in the order __init__ creates them). Here d_model 64.
MAMBA_SSM_PARAMETERS = [
    ("A_log", (128, 16)),  # log of S4D-real A = 1..d_state per channel, float32
    ("D", (128,)),  # ones, float32
    ("in_proj.weight", (256, 64)),  # nn.Linear(d_model, 2 * d_inner, bias=False)
    ("conv1d.weight", (128, 1, 4)),  # nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv-1)
    ("conv1d.bias", (128,)),
    ("x_proj.weight", (36, 128)),  # nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
    ("dt_proj.weight", (128, 4)),  # nn.Linear(dt_rank, d_inner), weight uniform in ±dt_rank^-0.5
    ("dt_proj.bias", (128,)),  # inverse softplus of dt, log-uniform in [1e-3, 0.1]
    ("out_proj.weight", (64, 128)),  # nn.Linear(d_inner, d_model, bias=False)
]


def test_torch_mamba_has_mamba_ssm_parameters():
    module = TorchMamba(64, d_state=16, d_conv=4, expand=2)
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == MAMBA_SSM_PARAMETERS
    assert list(module.state_dict()) == [n for n, _ in MAMBA_SSM_PARAMETERS]  # no buffers either


def test_torch_mamba_initialisation_is_mamba_ssm_s():
    module = TorchMamba(64, d_state=16, dtype=torch.bfloat16)
    assert module.A_log.dtype == module.D.dtype == torch.float32  # kept float32, as in mamba_ssm
    assert module.in_proj.weight.dtype == torch.bfloat16
    module = TorchMamba(64, d_state=16)
    torch.testing.assert_close(module.A_log, torch.log(torch.arange(1.0, 17.0)).expand(128, 16))
    assert torch.equal(module.D, torch.ones(128))
    assert module.dt_proj.weight.abs().max() <= 4**-0.5
    dt = F.softplus(module.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert module.dt_proj.bias._no_reinit
    # the model-level init (GPT-2 scheme) zeroes Linear biases but must leave dt_proj's alone
    built = build_model(SmallModelConfig("mamba"), "cpu").module.backbone.layers[0].mixer
    assert F.softplus(built.dt_proj.bias).min() >= 1e-3 * (1 - 1e-5)


def mamba_simple_forward(m: TorchMamba, hidden_states: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's Mamba.forward, non-fused path without causal_conv1d and without a cache, line by line
    (einops rearranges written out), with the sequential reference as selective_scan_fn."""
    batch, seqlen, dim = hidden_states.shape
    xz = (m.in_proj.weight @ hidden_states.permute(2, 0, 1).reshape(dim, batch * seqlen))
    xz = xz.reshape(-1, batch, seqlen).permute(1, 0, 2)  # "d (b l) -> b d l"
    A = -torch.exp(m.A_log.float())
    x, z = xz.chunk(2, dim=1)
    x = F.silu(m.conv1d(x)[..., :seqlen])
    x_dbl = m.x_proj(x.permute(0, 2, 1).reshape(batch * seqlen, -1))  # "b d l -> (b l) d"
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = m.dt_proj.weight @ dt.t()
    dt = dt.reshape(-1, batch, seqlen).permute(1, 0, 2)  # "d (b l) -> b d l"
    B = B.reshape(batch, seqlen, -1).permute(0, 2, 1).contiguous()  # "(b l) dstate -> b dstate l"
    C = C.reshape(batch, seqlen, -1).permute(0, 2, 1).contiguous()
    y = selective_scan_ref(x, dt, A, B, C, m.D.float(), z=z, delta_bias=m.dt_proj.bias.float(),
                           delta_softplus=True)
    return m.out_proj(y.permute(0, 2, 1))


@pytest.mark.parametrize("length", [1, 5, 77])
def test_torch_mamba_computes_mamba_forward(length):
    torch.manual_seed(0)
    module = TorchMamba(32, d_state=8)
    hidden = torch.randn(3, length, 32)
    torch.testing.assert_close(module(hidden), mamba_simple_forward(module, hidden), rtol=1e-5, atol=1e-5)


def test_state_dict_moves_between_twins():
    a, b = TorchMamba(32, d_state=8), TorchMamba(32, d_state=8, chunk_size=4)
    b.load_state_dict(a.state_dict(), strict=True)
    hidden = torch.randn(2, 30, 32)
    torch.testing.assert_close(a(hidden), b(hidden), rtol=1e-5, atol=1e-5)


def test_mamba_on_cuda_never_falls_back_silently():
    from ssmbench.models.kernels import fused_mamba_kernels

    if torch.cuda.is_available() and fused_mamba_kernels():
        pytest.skip("mamba_ssm's kernels are here: nothing to refuse")
    with pytest.raises(JobError, match="allow_torch_on_cuda=True"):
        make_mamba(64, device="cuda")
    with pytest.raises(JobError, match="fused kernels are unavailable"):
        build_model(SmallModelConfig("mamba"), "cuda")
    assert make_mamba(64, device="cpu")[1] == "torch-chunked-scan"


# --- positions --------------------------------------------------------------------------------------------


def test_learned_positions_stop_at_their_table():
    model = build_model(small("mha-abs", abs_positions="learned", max_positions=24), "cpu").module
    assert model(torch.randint(0, 16, (1, 24))).shape == (1, 24, 16)
    with pytest.raises(PositionLimitError, match=r"length 25 exceeds the learned position table \(24 "):
        model(torch.randint(0, 16, (1, 25)))
    assert issubclass(PositionLimitError, ValueError)


@pytest.mark.parametrize("mixer", ["mha-rope", "mha-abs"])
def test_attention_runs_past_any_length_seen(mixer):
    """Rotary and sinusoidal positions are computed for the input's length: a model that has only ever
    seen 16 tokens runs at 1,000."""
    built = build_model(small(mixer), "cpu")
    opt = torch.optim.Adam(built.module.parameters(), lr=1e-3)
    tokens = torch.randint(0, 16, (4, 16))
    F.cross_entropy(built.module(tokens).flatten(0, 1), tokens.flatten()).backward()
    opt.step()
    with torch.no_grad():
        logits = built.module(torch.randint(0, 16, (1, 1000)))
    assert logits.shape == (1, 1000, 16) and torch.isfinite(logits).all()


def test_rotary_scores_depend_on_relative_position_only():
    cos, sin = rotary_tables(300, 16, "cpu")
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        return apply_rotary(q.expand(300, 16), cos, sin)[m] @ apply_rotary(k.expand(300, 16), cos, sin)[n]

    torch.testing.assert_close(score(7, 3), score(257, 253), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(7, 3), score(7, 5))


# --- training ---------------------------------------------------------------------------------------------


def train_losses(mixer: str, steps: int = 25) -> list[float]:
    """A fixed random batch, memorised: the loss must fall. Seeded end to end."""
    built = build_model(small(mixer), "cpu", seed=0)
    tokens = torch.randint(0, 16, (8, 33), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(built.module.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        logits = built.module(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("mixer", MIXER_NAMES)
def test_a_few_training_steps_lower_the_loss(mixer):
    losses = train_losses(mixer)
    assert all(math.isfinite(v) for v in losses)
    assert abs(losses[0] - math.log(16)) < 0.1  # tied head, N(0, 0.02) embeddings: near-uniform at start
    assert losses[-1] < losses[0] - 0.3, losses
    assert train_losses(mixer, steps=3) == losses[:3]  # deterministic


def test_dropout_acts_in_training_only_and_adds_no_parameters():
    """zoology's attention baseline: dropout 0.1 on the embeddings and on the attention weights. A model
    in training draws a different mask each call; in eval mode it is deterministic, and p = 0 adds no
    module at all (a dropout of nothing would still draw random numbers each step)."""
    plain = build_model(SmallModelConfig("mha-abs", d_model=32, n_heads=1, vocab_size=16), seed=0)
    dropped = build_model(SmallModelConfig("mha-abs", d_model=32, n_heads=1, vocab_size=16, embed_dropout=0.1,
                                           attn_dropout=0.1), seed=0)
    assert plain.n_params == dropped.n_params and plain.module.backbone.embed_dropout is None
    ids = torch.randint(0, 16, (2, 24), generator=torch.Generator().manual_seed(0))
    dropped.module.train()
    assert not torch.equal(dropped.module(ids), dropped.module(ids))
    dropped.module.eval()
    plain.module.eval()
    with torch.no_grad():  # same weights (same seed): without dropout the two models agree
        torch.testing.assert_close(dropped.module(ids), plain.module(ids))


# --- hybrids ------------------------------------------------------------------------------------------


def test_a_hybrid_is_its_layers_mixers_and_nothing_else():
    """Each layer is made by its own mixer's factory: the parameters are the pure models' per-layer counts
    added up, the kernel names each code path in layer order, and a later token still cannot reach back."""
    pattern = ("mamba", "mamba", "mha-rope", "mamba")
    hybrid = build_model(SmallModelConfig("hybrid", n_layers=4, d_model=32, n_heads=4, layers=pattern), seed=0)
    per_layer = {}
    for mixer in ("mamba", "mha-rope"):
        pure = build_model(SmallModelConfig(mixer, n_layers=4, d_model=32, n_heads=4), seed=0)
        per_layer[mixer] = (pure.n_params - 16 * 32 - 32) // 4  # less the embedding and the final norm
    assert hybrid.n_params == 16 * 32 + 32 + sum(per_layer[m] for m in pattern)
    assert hybrid.kernel == "torch-chunked-scan+torch.sdpa"
    assert [type(layer.mixer).__name__ for layer in hybrid.module.backbone.layers] == \
           ["TorchMamba", "TorchMamba", "CausalSelfAttention", "TorchMamba"]
    ids = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 16
    with torch.no_grad():
        torch.testing.assert_close(hybrid.module(ids)[:, :8], hybrid.module(changed)[:, :8])


def test_a_hybrid_with_absolute_attention_adds_positions_once_at_the_input():
    hybrid = build_model(SmallModelConfig("hybrid", n_layers=2, d_model=16, n_heads=2, layers=("mamba", "mha-abs"),
                                          abs_positions="learned", max_positions=32), seed=0)
    assert hybrid.module.backbone.positions is not None and hybrid.kernel == "torch-chunked-scan+torch.sdpa"


@pytest.mark.parametrize(("changes", "message"), [
    ({"layers": ("mamba", "mha-rope")}, r"SmallModelConfig\.layers: 2 mixers for n_layers=4"),
    ({"layers": ("mamba",) * 4}, "two or more sequence mixers"),
    ({"layers": ("mamba", "swiglu") * 2}, "two or more sequence mixers"),  # a channel mixer is no second mixer
    ({"layers": ("mamba", "mamba", "hybrid", "mamba")}, "unknown mixer 'hybrid'"),
    ({"mixer": None, "layers": ("swiglu", "mlp") * 2}, "has no sequence mixer"),
    ({"layers": None}, r"SmallModelConfig\.mixer: hybrid needs its layers"),
])
def test_a_bad_layer_list_is_refused_when_made(changes, message):
    with pytest.raises(ValueError, match=message):
        SmallModelConfig(**({"mixer": "hybrid", "n_layers": 4, "layers": ("mamba", "mamba", "mha-rope", "mamba")}
                            | changes))
    with pytest.raises(ValueError, match="are mamba, mha-rope, not mixer mamba; leave mixer out"):
        SmallModelConfig("mamba", layers=("mamba", "mha-rope"))
    with pytest.raises(ValueError, match="swiglu is a channel mixer"):
        SmallModelConfig("swiglu")


# --- zoology's models (block: zoology, init: zoology) -------------------------------------------------------

def _zoology_attention(**changes):
    fields = dict(mixer="mha-abs", d_model=32, n_heads=1, vocab_size=64, abs_positions="learned", max_positions=16,
                  block="zoology", init="zoology") | changes
    return SmallModelConfig(**fields)


def _zoology_forward(model, input_ids):
    """zoology's LMBackbone.forward written out as zoology/model.py (dbcb60d) has it: (hidden, residual) pairs,
    each TransformerBlock adding its input to the residual first, the identity state mixer returning norm2's
    output as the next block's hidden state, and the final residual add before ln_f (no dropout: eval)."""
    backbone = model.backbone
    hidden = backbone.embedding(input_ids) + backbone.positions(input_ids.shape[1], input_ids.device, torch.float32)
    residual = None
    for block in backbone.layers:
        residual = hidden if residual is None else hidden + residual
        hidden = block.mixer(block.norm(residual))
        residual = hidden + residual
        hidden = block.norm2(residual)  # TransformerBlock's state mixer: the identity
    residual = hidden + residual  # LMBackbone: drop_f(hidden) + residual, then ln_f
    return model.lm_head(backbone.norm_f(residual))


def test_zoology_blocks_add_their_second_norm_to_the_residual_stream_as_zoology_does():
    model = build_model(_zoology_attention(), seed=0).module.eval()
    input_ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    assert all(isinstance(b.norm, torch.nn.LayerNorm) and isinstance(b.norm2, torch.nn.LayerNorm)
               for b in model.backbone.layers)
    assert isinstance(model.backbone.norm_f, torch.nn.LayerNorm)
    torch.testing.assert_close(model(input_ids), _zoology_forward(model, input_ids))
    plain = build_model(_zoology_attention(block="prenorm"), seed=0).module.eval()
    assert not torch.allclose(plain(input_ids), model(input_ids))  # the pre-norm block is another model


def test_zoology_mamba_models_keep_rmsnorm_blocks_and_end_in_a_layernorm():
    model = build_model(SmallModelConfig(mixer="mamba", d_model=16, vocab_size=32, block="zoology", init="zoology"),
                        seed=0).module
    assert all(type(b.norm) is torch.nn.RMSNorm and not hasattr(b, "norm2") for b in model.backbone.layers)
    assert isinstance(model.backbone.norm_f, torch.nn.LayerNorm)


def test_zoology_init_of_a_mamba_model_is_mamba_ssms_scheme():
    zoology = build_model(SmallModelConfig(mixer="mamba", d_model=16, vocab_size=32, init="zoology"), seed=3).module
    mamba_ssm = build_model(SmallModelConfig(mixer="mamba", d_model=16, vocab_size=32), seed=3).module
    for (name, a), (_, b) in zip(zoology.state_dict().items(), mamba_ssm.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_zoology_init_of_an_attention_model_is_gpt2s_with_scaled_output_projections():
    model = build_model(_zoology_attention(d_model=256, n_layers=2), seed=0).module
    params = dict(model.named_parameters())
    for i in range(2):
        assert params[f"backbone.layers.{i}.mixer.qkv.weight"].std().item() == pytest.approx(0.02, rel=0.02)
        assert params[f"backbone.layers.{i}.mixer.out_proj.weight"].std().item() == pytest.approx(0.01, rel=0.02)
        assert not params[f"backbone.layers.{i}.mixer.qkv.bias"].any()
        assert not params[f"backbone.layers.{i}.mixer.out_proj.bias"].any()
    assert params["backbone.embedding.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert params["backbone.positions.table.weight"].std().item() == pytest.approx(0.02, rel=0.05)


def test_zoology_blocks_refuse_channel_mixers():
    with pytest.raises(ValueError, match="block: zoology's blocks hold the channel mixing themselves.*'swiglu'"):
        SmallModelConfig(layers=["mha-rope", "swiglu"], d_model=16, block="zoology")
