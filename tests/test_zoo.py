"""The model zoo: every entry is the real architecture (its parameter count matches the published one), the
analytic state sizes follow the formulas, and resolve_model makes every choice a job depends on."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ssmbench.errors import UserError
from ssmbench.plan import resolve_model
from ssmbench.spec import ModelRef, parse_suite
from ssmbench.zoo import MODELS, ModelSpec, ResolvedModel, get_model, is_tiny


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_config_builds_with_its_nominal_parameter_count(name: str):
    from transformers import AutoModelForCausalLM

    from ssmbench.models.common import build_config

    spec = MODELS[name]
    ref = ResolvedModel(name=name, spec=spec, weights="random", dtype="float32", device="meta")
    with torch.device("meta"):  # shapes only: the 2.8B models cost nothing
        module = AutoModelForCausalLM.from_config(build_config(ref))
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == pytest.approx(spec.params_nominal, rel=0.05)
    assert module.config.model_type == spec.arch
    assert spec.n_layers == module.config.num_hidden_layers
    assert spec.d_model == module.config.hidden_size


def test_zoo_families_and_sources():
    for spec in MODELS.values():
        expected = ("ssm" if spec.arch in ("mamba", "mamba2") else "rnn" if spec.arch == "rwkv" else
                    "hybrid" if spec.arch == "falcon_h1" else "transformer")
        assert spec.family == expected
        if is_tiny(spec):
            assert spec.tokenizer == "bytes" and spec.hf_id is None
            assert spec.config["eos_token_id"] == 256 and spec.config["vocab_size"] > 256
        else:
            assert spec.hf_id or spec.mamba_ssm_id
    assert {n for n, s in MODELS.items() if is_tiny(s)} == {"tiny-gpt2", "tiny-pythia", "tiny-mamba", "tiny-falcon-h1"}
    assert MODELS["mamba2-130m"].hf_id is None and MODELS["mamba2-130m"].mamba_ssm_id == "state-spaces/mamba2-130m"


def test_get_model_suggests_close_names():
    assert get_model("mamba-130m") is MODELS["mamba-130m"]
    with pytest.raises(UserError) as info:
        get_model("mamba-13m")
    message = str(info.value)
    assert message.startswith("unknown model 'mamba-13m' (did you mean 'mamba-130m'")
    assert "`ssmbench list models`" in message
    with pytest.raises(UserError, match=r"^unknown model 'llama'; "):  # nothing close: no suggestion
        get_model("llama")


# --- analytic state -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt2", "gpt2-xl", "pythia-160m", "pythia-1.4b", "tiny-pythia"])
@pytest.mark.parametrize("bytes_per_element", [2, 4])
def test_transformer_kv_cache_grows_linearly(name: str, bytes_per_element: int):
    spec = MODELS[name]
    for length in (1, 128, 2048):
        assert spec.state_bytes_per_sequence(length, bytes_per_element) == (
            2 * spec.n_layers * spec.d_model * length * bytes_per_element)
    one = spec.state_bytes_per_sequence(1, bytes_per_element)
    assert spec.state_bytes_per_sequence(1000, bytes_per_element) == 1000 * one


def test_gpt2_kv_cache_by_hand():
    # 12 layers x (keys + values) x 768 x 1024 tokens x fp16 = 36 MiB
    assert MODELS["gpt2"].state_bytes_per_sequence(1024, 2) == 12 * 2 * 768 * 1024 * 2 == 36 * 2**20


@pytest.mark.parametrize("name", ["mamba-130m", "mamba-2.8b", "mamba2-130m", "mamba2-2.7b", "tiny-mamba"])
def test_ssm_state_does_not_grow_with_context(name: str):
    spec = MODELS[name]
    sizes = {spec.state_bytes_per_sequence(length, 2) for length in (1, 2048, 1_000_000)}
    assert len(sizes) == 1 and sizes.pop() > 0


def test_mamba_130m_state_by_hand():
    # 24 layers x d_inner 1536 (2 x 768) x (16 SSM states + 4 conv taps)
    spec = MODELS["mamba-130m"]
    assert spec.state_elements_per_sequence(4096) == 24 * 1536 * (16 + 4) == 737_280
    assert spec.state_bytes_per_sequence(4096, 2) == 737_280 * 2


def test_mamba2_state_by_hand():
    # 24 layers x (d_inner 1536 x 128 states + conv over (1536 + 2 x 128) channels x 4 taps)
    assert MODELS["mamba2-130m"].state_elements_per_sequence(1) == 24 * (1536 * 128 + (1536 + 256) * 4)


@pytest.mark.parametrize("name", ["gpt2", "pythia-410m", "mamba-130m", "mamba2-370m"])
def test_decode_state_traffic_doubles_for_ssms(name: str):
    spec = MODELS[name]
    size = spec.state_bytes_per_sequence(512, 2)
    traffic = spec.decode_state_traffic_bytes(512, 2)
    assert traffic == (2 * size if spec.family == "ssm" else size)


def test_a_hybrid_carries_a_kv_cache_and_a_fixed_ssm_state():
    # Falcon-H1-0.5B, each of 36 layers: keys and values of 2 KV heads x 64 per token, beside Mamba-2's
    # 24 heads x 64 x 128 states and a convolution over (1536 + 2 x 128) channels x 4 taps
    spec = MODELS["falcon-h1-0.5b"]
    kv, ssm = 2 * 2 * 64, 24 * 64 * 128 + (1536 + 256) * 4
    assert spec.state_elements_per_sequence(4096) == 36 * (kv * 4096 + ssm)
    assert spec.decode_state_traffic_bytes(4096, 2) == 36 * (kv * 4096 + 2 * ssm) * 2  # SSM read and written back
    assert spec.family == "hybrid" and spec.context_length == 4096 and spec.max_positions is None


def cache_elements(cache: object) -> int:
    """Every element of the tensors a transformers cache holds for one sequence (its per-layer objects'
    tensors, in dicts too), whatever the cache's layout."""
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            for tensor in value.values() if isinstance(value, dict) else [value]:
                if torch.is_tensor(tensor) and tensor.dim() >= 2:
                    total += tensor.numel()
    return total


@pytest.mark.parametrize("length", [1, 50])
def test_the_hybrid_state_is_what_transformers_caches(length: int):
    from conftest import tiny_ref

    from ssmbench.models import load_model

    model = load_model(tiny_ref("tiny-falcon-h1"))
    with torch.inference_mode():
        out = model.module(torch.randint(0, 256, (1, length)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    assert cache_elements(cache) == MODELS["tiny-falcon-h1"].state_elements_per_sequence(length)


def test_a_short_context_kv_cache_is_smaller_than_mamba_state_and_a_long_one_larger():
    gpt2, mamba = MODELS["gpt2"], MODELS["mamba-130m"]
    assert gpt2.state_bytes_per_sequence(16, 2) < mamba.state_bytes_per_sequence(16, 2)
    assert gpt2.state_bytes_per_sequence(2048, 2) > mamba.state_bytes_per_sequence(2048, 2)


def test_max_positions_only_for_position_tables():
    """A hard limit where the model indexes a table of positions: GPT-2's, OPT's and GPT-Neo's learned ones,
    GPT-J's precomputed rotary sines; none for rotary Pythia or the recurrent models."""
    for name, spec in MODELS.items():
        if spec.arch == "gpt2":
            assert spec.max_positions == spec.config["n_positions"] == 1024, name
        elif spec.arch in ("opt", "gpt_neo", "gptj"):
            assert spec.max_positions == 2048, name
        else:
            assert spec.max_positions is None, name
    longer = dataclasses.replace(MODELS["gpt2"], config={**MODELS["gpt2"].config, "n_positions": 2176})
    assert longer.max_positions == 2176


# --- resolve_model --------------------------------------------------------------------------------------

def suite_with(models: list, **defaults) -> object:
    return parse_suite({"name": "t", "defaults": defaults, "models": models, "tasks": [{"kind": "memory"}]})


def test_dtype_auto_follows_the_device():
    s = suite_with(["gpt2"], weights="random")
    (ref,) = s.models
    assert resolve_model(ref, s, "cpu").dtype == "float32"
    assert resolve_model(ref, s, "cuda").dtype == "float16"
    explicit = suite_with(["gpt2"], dtype="bfloat16")
    assert resolve_model(explicit.models[0], explicit, "cuda").dtype == "bfloat16"
    per_model = suite_with([{"name": "gpt2", "dtype": "float32"}], dtype="bfloat16")
    assert resolve_model(per_model.models[0], per_model, "cuda").dtype == "float32"


def test_resolved_fields_come_from_the_suite():
    s = parse_suite({"name": "t", "require_fused_kernels": True, "defaults": {"seed": 7, "weights": "pretrained"},
                     "models": [{"name": "mamba-130m", "backend": "hf"}], "tasks": [{"kind": "memory"}]})
    ref = resolve_model(s.models[0], s, "cpu")
    assert ref == ResolvedModel(name="mamba-130m", spec=MODELS["mamba-130m"], weights="pretrained", dtype="float32",
                                device="cpu", backend="hf", seed=7, require_fused=True)
    assert ref.spec is MODELS["mamba-130m"]  # no overrides: the zoo entry itself
    assert ref.hf_source == "state-spaces/mamba-130m-hf" and ref.describe_source() == "state-spaces/mamba-130m-hf"


def test_weights_default_and_per_model():
    s = suite_with(["gpt2", {"name": "mamba-130m", "weights": "random"}], weights="pretrained")
    gpt2, mamba = (resolve_model(m, s, "cpu") for m in s.models)
    assert gpt2.weights == "pretrained" and mamba.weights == "random"
    assert mamba.describe_source() == "random init"


def test_tiny_models_are_forced_to_random_weights(tmp_path):
    s = suite_with(["tiny-gpt2", {"name": "tiny-mamba", "weights": "pretrained"}], weights="pretrained")
    assert [resolve_model(m, s, "cpu").weights for m in s.models] == ["random", "random"]
    # ... unless the suite names weights for them (a `path:` must be a checkpoint directory: validated).
    (tmp_path / "config.json").write_text(json.dumps(MODELS["tiny-gpt2"].config))
    s = suite_with([{"name": "tiny-gpt2", "path": str(tmp_path)}, {"name": "tiny-pythia", "hf_id": "me/tiny"}],
                   weights="pretrained")
    gpt2, pythia = (resolve_model(m, s, "cpu") for m in s.models)
    assert gpt2.weights == pythia.weights == "pretrained"
    assert gpt2.hf_source == str(tmp_path) and gpt2.describe_source() == str(tmp_path)
    assert pythia.hf_source == "me/tiny"


def test_base_and_overrides_make_a_variant():
    s = suite_with([{"name": "gpt2-2k", "base": "gpt2", "overrides": {"n_positions": 2176}}], weights="random")
    ref = resolve_model(s.models[0], s, "cpu")
    assert ref.name == ref.spec.name == "gpt2-2k"
    assert ref.spec.config == {**MODELS["gpt2"].config, "n_positions": 2176}
    assert ref.spec.max_positions == 2176 and ref.spec.arch == "gpt2" and ref.spec.tokenizer == MODELS["gpt2"].tokenizer
    assert MODELS["gpt2"].config["n_positions"] == 1024  # the zoo is untouched


def test_overrides_change_the_analytic_sizes():
    s = suite_with([{"name": "mamba-130m", "weights": "random",
                     "overrides": {"num_hidden_layers": 12, "state_size": 32}}])
    spec: ModelSpec = resolve_model(s.models[0], s, "cpu").spec
    assert spec.state_elements_per_sequence(1) == 12 * 1536 * (32 + 4)


def test_overrides_on_pretrained_weights_are_refused():
    s = suite_with([{"name": "mamba-130m", "weights": "pretrained", "overrides": {"num_hidden_layers": 12}}])
    with pytest.raises(UserError, match="weights: random"):
        resolve_model(s.models[0], s, "cpu")


def test_tokenizer_override():
    s = suite_with([{"name": "gpt2", "tokenizer": "bytes"}, "pythia-70m"])
    gpt2, pythia = (resolve_model(m, s, "cpu") for m in s.models)
    assert gpt2.spec.tokenizer == "bytes" and gpt2.spec.config == MODELS["gpt2"].config
    assert pythia.spec.tokenizer == "EleutherAI/pythia-70m"


def test_model_refs_are_validated_against_the_zoo():
    with pytest.raises(ValueError, match="unknown model 'gpt3'"):
        ModelRef(name="gpt3")
    assert ModelRef(name="anything", base="gpt2").zoo_name == "gpt2"
