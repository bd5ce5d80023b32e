"""The decoders on the CPU: ssmbench's greedy loop gives the library's tokens, reuse and the static KV cache
change nothing; the byte tokenizer; loading weights offline fails with the remedy; the backend choice.

The CUDA-graph counterparts live in tests/gpu/test_decoders_gpu.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_ref

from ssmbench.errors import JobError
from ssmbench.models import choose_backend, load_model
from ssmbench.models.tokenizers import byte_tokenizer, load_tokenizer
from ssmbench.zoo import BYTES_EOS_ID, MODELS, ResolvedModel

TINY = ["tiny-gpt2", "tiny-pythia", "tiny-mamba", "tiny-falcon-h1"]
BATCH, PROMPT, NEW = 2, 12, 8


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    return load_model(tiny_ref(request.param))


def prompt(vocab: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (BATCH, PROMPT), generator=gen)


def test_loaded_model_says_what_runs(tiny):
    spec = MODELS[tiny.name]
    assert tiny.backend == "hf"
    assert tiny.kernel == {"ssm": "hf-torch", "hybrid": "hf-sdpa+torch"}.get(spec.family, "hf-sdpa")
    assert tiny.n_params == sum(p.numel() for p in tiny.module.parameters())
    assert tiny.n_params == pytest.approx(spec.params_nominal, rel=0.05)
    assert tiny.vocab_size == 512 and not tiny.module.training
    assert next(tiny.module.parameters()).dtype == torch.float32
    assert tiny.record_fields() == {"model": tiny.name, "family": spec.family, "kernel": tiny.kernel,
                                    "weights": "random", "dtype": "float32", "seed": 0,
                                    "extra": {"checkpoint": "random init", "weights_sha256": None,
                                              "architecture": spec.arch, "tokenizer": "bytes"}}
    assert tiny.library_generate_label == "transformers.generate"


def test_random_weights_follow_the_seed():
    a, b = load_model(tiny_ref("tiny-pythia")), load_model(tiny_ref("tiny-pythia"))
    c = load_model(tiny_ref("tiny-pythia", seed=1))
    pa, pb, pc = (next(m.module.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_decoder_equals_library_generate(tiny):
    ids = prompt(tiny.vocab_size)
    with torch.inference_mode():
        ours = tiny.decoder(BATCH, PROMPT + NEW, cuda_graphs=False).generate(ids, NEW)
        theirs = tiny.library_generate(ids, NEW, cuda_graphs=False)
    assert ours.shape == (BATCH, NEW) and ours.dtype == torch.long
    assert torch.equal(ours, theirs)
    assert ours.unique().numel() > 1  # not a degenerate constant output


def test_prefill_and_decode_compose_to_generate(tiny):
    ids = prompt(tiny.vocab_size, seed=5)
    with torch.inference_mode():
        decoder = tiny.decoder(BATCH, PROMPT + NEW, cuda_graphs=False)
        whole = decoder.generate(ids, NEW)
        decoder.start()
        first = decoder.prefill(ids)
        rest = decoder.decode(first, NEW - 1)
    assert torch.equal(first, whole[:, 0]) and torch.equal(rest, whole[:, 1:])


def test_decoder_reuse_gives_identical_tokens(tiny):
    ids, other = prompt(tiny.vocab_size), prompt(tiny.vocab_size, seed=9)
    with torch.inference_mode():
        decoder = tiny.decoder(BATCH, PROMPT + NEW, cuda_graphs=False)
        first = decoder.generate(ids, NEW)
        decoder.generate(other, NEW)  # a different sequence in between must leave nothing behind
        again = decoder.generate(ids, NEW)
        fresh = tiny.decoder(BATCH, PROMPT + NEW, cuda_graphs=False).generate(ids, NEW)
    assert torch.equal(first, again) and torch.equal(first, fresh)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-pythia"])
def test_static_cache_equals_dynamic_cache(name: str):
    model = load_model(tiny_ref(name))
    ids = prompt(model.vocab_size)
    with torch.inference_mode():
        dynamic = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False).generate(ids, NEW)
        static_decoder = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False, static_cache=True)
        static = static_decoder.generate(ids, NEW)
        static_again = static_decoder.generate(ids, NEW)  # the reset in place works
    assert static_decoder.static_cache
    assert torch.equal(static, dynamic) and torch.equal(static_again, dynamic)


@pytest.mark.parametrize("name", ["tiny-mamba", "tiny-falcon-h1"])
def test_mamba_and_hybrids_have_no_static_cache_to_choose(name: str):
    model = load_model(tiny_ref(name))
    with pytest.raises(ValueError, match="no static cache"):
        model.decoder(1, 16, cuda_graphs=False, static_cache=True)


def test_a_hybrid_refuses_graphed_decoding_as_impossible_not_misconfigured():
    import dataclasses

    from ssmbench.models.base import NoGraphDecoding

    model = load_model(tiny_ref("tiny-falcon-h1"))
    on_a_gpu = dataclasses.replace(model, ref=dataclasses.replace(model.ref, device="cuda"))
    with pytest.raises(NoGraphDecoding, match="no static cache in transformers .* hybrids decode eagerly only"):
        on_a_gpu.decoder(1, 16, cuda_graphs=True)


def test_a_graphed_point_a_model_cannot_decode_is_skipped_with_the_reason(tmp_path: Path, monkeypatch):
    """The throughput runner turns NoGraphDecoding into a skipped point (not an error); the run goes on."""
    from typer.testing import CliRunner

    from ssmbench.cli import app
    from ssmbench.models.base import NoGraphDecoding
    from ssmbench.models.hf import HFModel
    from ssmbench.records import read_records

    def refuse(self, *args, **kwargs):
        raise NoGraphDecoding("no graphs for this one")

    monkeypatch.setattr(HFModel, "decoder", refuse)
    (tmp_path / "s.yaml").write_text("name: s\ndefaults: {device: cpu}\nmodels: [tiny-falcon-h1]\n"
                                     "tasks: [{kind: throughput, batch_sizes: [1], prompt_lengths: [8], new_tokens: 2}]\n")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "s").iterdir()
    (record,) = read_records(run_dir / "records.jsonl")
    assert (record.status, record.message) == ("skipped", "no graphs for this one")


def test_a_hybrid_decodes_what_its_whole_forward_predicts():
    """Falcon-H1's cache (keys and values beside Mamba's states) carries each step: every greedy token is
    the argmax of the full forward pass over the prompt and the tokens before it."""
    model = load_model(tiny_ref("tiny-falcon-h1"))
    ids = prompt(model.vocab_size)
    with torch.inference_mode():
        tokens = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False).generate(ids, NEW)
        logits = model.module(torch.cat([ids, tokens], dim=1)).logits
    assert torch.equal(logits[:, PROMPT - 1:-1].argmax(-1), tokens)


@pytest.mark.parametrize("name", TINY)
def test_cuda_graphs_on_the_cpu_are_refused(name: str):
    model = load_model(tiny_ref(name))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        model.decoder(1, 16, cuda_graphs=True)
    with pytest.raises(ValueError, match="eager only"):
        model.library_generate(prompt(model.vocab_size), 4, cuda_graphs=True)


# --- tokenizers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["hello world", "  two  spaces\n\ttab\r\n", "héllo — 日本語 🐍", "\x00\xff"])
def test_byte_tokenizer_round_trips(text: str):
    tok = byte_tokenizer()
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8"))  # one token per UTF-8 byte, no specials added
    assert tok.decode(ids) == text


def test_byte_tokenizer_end_of_text():
    tok = byte_tokenizer()
    assert tok.eos_token_id == BYTES_EOS_ID == 256
    assert tok.pad_token_id == tok.bos_token_id == 256
    assert len(tok) == 257
    assert tok("<|endoftext|>")["input_ids"] == [256]
    assert tok.decode([104, 105, 256], skip_special_tokens=True) == "hi"
    assert load_tokenizer(tiny_ref("tiny-mamba")) is tok  # tiny models use it, built once


# --- weights offline ------------------------------------------------------------------------------------

def pretrained(name: str = "gpt2", **changes) -> ResolvedModel:
    return ResolvedModel(**{"name": name, "spec": MODELS[name], "weights": "pretrained", "dtype": "float32",
                            "device": "cpu"} | changes)


def assert_remedies(message: str, name: str, source: str) -> None:
    assert message.startswith(f"model {name!r}: weights {source!r} could not be loaded")
    assert f"`hf download {source}`" in message and "`path:`" in message and "`weights: random`" in message


def test_uncached_hub_weights_fail_with_the_remedies():
    with pytest.raises(JobError) as info:
        load_model(pretrained(hf_id="ssmbench-tests/never-cached"))
    assert_remedies(str(info.value), "gpt2", "ssmbench-tests/never-cached")


def test_a_missing_local_checkpoint_fails_naming_the_path(tmp_path: Path):
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(JobError) as info:
        load_model(pretrained(path=missing))
    assert str(info.value) == f"model 'gpt2': `path:` {missing}: no such directory"  # nothing to download


def test_an_empty_checkpoint_directory_fails_naming_the_path(tmp_path: Path):
    with pytest.raises(JobError) as info:
        load_model(pretrained(path=str(tmp_path)))
    message = str(info.value)
    assert message.startswith(f"model 'gpt2': `path:` {tmp_path}: no config.json")
    assert "hf download" not in message


def test_no_transformers_checkpoint_for_mamba2():
    with pytest.raises(JobError, match=r"model 'mamba2-130m': no transformers checkpoint is published"):
        load_model(pretrained("mamba2-130m"))


def test_uncached_tokenizer_fails_with_the_remedy():
    with pytest.raises(JobError, match=r"tokenizer 'ssmbench-tests/never-cached' is not available offline.*"
                                       r"`hf download ssmbench-tests/never-cached`"):
        load_tokenizer(pretrained(tokenizer="ssmbench-tests/never-cached"))


def test_a_local_checkpoint_loads_as_pretrained(tmp_path: Path):
    source = load_model(tiny_ref("tiny-gpt2", seed=4))
    source.module.save_pretrained(tmp_path)
    loaded = load_model(tiny_ref("tiny-gpt2", weights="pretrained", path=str(tmp_path)))
    assert loaded.ref.describe_source() == str(tmp_path)
    for (name, a), b in zip(source.module.state_dict().items(), loaded.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --- backend choice -------------------------------------------------------------------------------------

def test_choose_backend_on_the_cpu():
    assert choose_backend(tiny_ref("tiny-gpt2")) == ("hf", None)
    assert choose_backend(tiny_ref("tiny-gpt2", require_fused=True)) == ("hf", None)  # no fused path to require
    backend, note = choose_backend(tiny_ref("tiny-mamba"))
    assert backend == "hf"
    assert note == "tiny-mamba: fused Mamba kernels unavailable (on CPU); running transformers' PyTorch path"
    assert choose_backend(tiny_ref("tiny-mamba", backend="hf")) == ("hf", None)  # asked for: no note


@pytest.mark.parametrize("changes", [{"require_fused": True}, {"backend": "mamba_ssm"}])
def test_fused_kernels_demanded_on_the_cpu_fail_the_job(changes: dict):
    with pytest.raises(JobError, match=r"^model 'tiny-mamba': fused Mamba kernels required but unavailable: "
                                       r"the device is the CPU$"):
        choose_backend(tiny_ref("tiny-mamba", **changes))
    with pytest.raises(JobError):
        load_model(tiny_ref("tiny-mamba", **changes))


def test_mamba_ssm_backend_is_for_mamba_only():
    with pytest.raises(JobError, match="backend mamba_ssm is for Mamba models only"):
        choose_backend(tiny_ref("tiny-pythia", backend="mamba_ssm"))


def test_required_fused_kernels_refuse_transformers_torch_path():
    with pytest.raises(JobError, match="fused Mamba kernels required but transformers runs its PyTorch path"):
        load_model(tiny_ref("tiny-mamba", backend="hf", require_fused=True))
