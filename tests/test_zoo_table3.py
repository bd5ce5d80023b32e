"""The other rows of the Mamba paper's Table 3 (OPT, GPT-Neo, GPT-J, RWKV-4, Pythia-6.9B) as zoo models.

What is checked, offline on the CPU:
- each Table 3 row names the zoo model of the checkpoint the paper evaluated, and its paper row attaches to
  records of that checkpoint only (whatever the suite called the model);
- each entry's sizes and analytic inference state, by hand from the published configs, and against the state
  transformers itself allocates for a tiny model of the same architecture;
- tiny random-weight models of the four new architectures load through AutoModelForCausalLM, run, and decode
  through ssmbench's decoders with the tokens of transformers' generate (RWKV with a decoder of its own);
- `ssmbench list models` names them, a suite naming them validates, and loading their weights without the
  hub fails at once with the remedy.

(The full-size parameter counts are checked with every zoo entry in test_zoo.py, on the meta device.)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.errors import JobError
from ssmbench.kinds import all_kinds
from ssmbench.models import choose_backend, load_model
from ssmbench.models.hf import RwkvDecoder
from ssmbench.records import Record
from ssmbench.reference import PAPER, zero_shot_sources
from ssmbench.report import build_tables
from ssmbench.zoo import BYTES_EOS_ID, BYTES_TOKENIZER, MODELS, ModelSpec, ResolvedModel

# Table 3 label -> (zoo name, the checkpoint the paper evaluated). The Hybrid H3 rows have no transformers
# implementation, so no zoo entry.
TABLE3 = {
    "GPT-Neo 1.3B": ("gpt-neo-1.3b", "EleutherAI/gpt-neo-1.3B"),
    "GPT-Neo 2.7B": ("gpt-neo-2.7b", "EleutherAI/gpt-neo-2.7B"),
    "OPT-1.3B": ("opt-1.3b", "facebook/opt-1.3b"),
    "OPT-2.7B": ("opt-2.7b", "facebook/opt-2.7b"),
    "OPT-6.7B": ("opt-6.7b", "facebook/opt-6.7b"),
    "GPT-J-6B": ("gpt-j-6b", "EleutherAI/gpt-j-6b"),
    "RWKV-1.5B": ("rwkv-4-1b5", "RWKV/rwkv-4-1b5-pile"),
    "RWKV-3B": ("rwkv-4-3b", "RWKV/rwkv-4-3b-pile"),
    "RWKV-7.4B": ("rwkv-4-7b", "RWKV/rwkv-4-7b-pile"),
    "Pythia-6.9B": ("pythia-6.9b", "EleutherAI/pythia-6.9b"),
}
NEW_ARCHS = ["opt", "gpt_neo", "gptj", "rwkv"]


# --- the rows and the entries ------------------------------------------------------------------------------

def test_every_table3_row_but_h3_names_the_zoo_model_of_its_checkpoint() -> None:
    paper = zero_shot_sources()[PAPER]
    without = {row.label for row in paper.rows if row.model is None}
    assert without == {"Hybrid H3-130M", "Hybrid H3-360M", "Hybrid H3-1.3B", "Hybrid H3-2.7B"}
    for label, (name, hub) in TABLE3.items():
        row = paper.row_for(name)
        assert row is not None and row.label == label
        spec = MODELS[name]
        assert spec.hf_id == hub and spec.mamba_ssm_id is None
        assert spec.tokenizer == hub  # each checkpoint ships its own tokenizer
    assert {r.model for r in paper.rows if r.model} <= set(MODELS)


# (layers, width, hard position limit, trained context, family) as the checkpoints' config.json say.
SIZES = {
    "opt-1.3b": (24, 2048, 2048, 2048, "transformer"),
    "opt-2.7b": (32, 2560, 2048, 2048, "transformer"),
    "opt-6.7b": (32, 4096, 2048, 2048, "transformer"),
    "gpt-neo-1.3b": (24, 2048, 2048, 2048, "transformer"),
    "gpt-neo-2.7b": (32, 2560, 2048, 2048, "transformer"),
    "gpt-j-6b": (28, 4096, 2048, 2048, "transformer"),
    "rwkv-4-1b5": (24, 2048, None, 1024, "rnn"),
    "rwkv-4-3b": (32, 2560, None, 1024, "rnn"),
    "rwkv-4-7b": (32, 4096, None, 1024, "rnn"),
    "pythia-6.9b": (32, 4096, None, 2048, "transformer"),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_sizes_limits_and_family(name: str) -> None:
    spec = MODELS[name]
    assert (spec.n_layers, spec.d_model, spec.max_positions, spec.context_length, spec.family) == SIZES[name]


def test_kv_caches_by_hand() -> None:
    # OPT-1.3B: 24 layers x (keys + values) x 2048 wide x 2048 tokens x fp16 = 384 MiB
    assert MODELS["opt-1.3b"].state_bytes_per_sequence(2048, 2) == 24 * 2 * 2048 * 2048 * 2 == 384 * 2**20
    # GPT-J-6B: 28 layers x 2 x 4096 (16 heads x 256)
    assert MODELS["gpt-j-6b"].state_elements_per_sequence(1000) == 28 * 2 * 4096 * 1000
    # GPT-Neo-1.3B: 12 global layers keep every token, 12 local ones the 256 of their window.
    neo = MODELS["gpt-neo-1.3b"]
    assert neo.state_elements_per_sequence(2048) == 2 * 2048 * (12 * 2048 + 12 * 256)
    assert neo.state_elements_per_sequence(200) == 24 * 2 * 2048 * 200  # inside the window: all 24 alike
    assert neo.state_elements_per_sequence(4096) - neo.state_elements_per_sequence(2048) == 12 * 2 * 2048 * 2048


def test_rwkv_state_by_hand_is_constant_and_partly_float32() -> None:
    spec = MODELS["rwkv-4-1b5"]
    # 24 layers x 5 vectors of 2048: two token shifts (fp16 here) and the WKV aa, bb, pp (always fp32)
    sizes = {spec.state_bytes_per_sequence(length, 2) for length in (1, 1024, 1_000_000)}
    assert sizes == {24 * (2 * 2048 * 2 + 3 * 2048 * 4)}
    assert spec.state_elements_per_sequence(7) == 24 * 5 * 2048
    assert spec.state_bytes_per_sequence(7, 4) == 24 * 5 * 2048 * 4  # all float32 in a float32 model
    assert spec.decode_state_traffic_bytes(64, 2) == 2 * spec.state_bytes_per_sequence(64, 2)  # read and write


# --- tiny models of each new architecture ------------------------------------------------------------------

# Each new architecture's zoo config, shrunk (as a suite's `overrides:` would) to about 100k parameters.
SHRINK = {
    "opt": ("opt-1.3b", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 256,
                         "word_embed_proj_dim": 64, "max_position_embeddings": 64}),
    "gpt_neo": ("gpt-neo-1.3b", {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "window_size": 8,
                                 "attention_types": [[["global", "local"], 1]], "max_position_embeddings": 64}),
    "gptj": ("gpt-j-6b", {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8, "n_positions": 64}),
    # context_length 8: prompts of 12 tokens go through the RWKV decoder in two chunks; rescale_every 1 makes
    # transformers halve the blocks' outputs at inference, as the 6-layer rescaling of the real ones does.
    "rwkv": ("rwkv-4-1b5", {"hidden_size": 64, "num_hidden_layers": 2, "attention_hidden_size": 64,
                            "intermediate_size": 256, "context_length": 8, "rescale_every": 1}),
}
BATCH, PROMPT, NEW = 2, 12, 8


def tiny_spec(arch: str) -> ModelSpec:
    base, small = SHRINK[arch]
    spec = MODELS[base]
    config = {**spec.config, **small, "vocab_size": 512, "bos_token_id": BYTES_EOS_ID, "eos_token_id": BYTES_EOS_ID}
    return dataclasses.replace(spec, name=f"tiny-{arch}", config=config, params_nominal=0, hf_id=None,
                               tokenizer=BYTES_TOKENIZER)


def tiny_ref(arch: str, **changes: object) -> ResolvedModel:
    fields = dict(name=f"tiny-{arch}", spec=tiny_spec(arch), weights="random", dtype="float32", device="cpu")
    return ResolvedModel(**(fields | changes))


@pytest.fixture(scope="module", params=NEW_ARCHS)
def tiny(request):
    return load_model(tiny_ref(request.param))


def prompt(seed: int = 3) -> torch.Tensor:
    return torch.randint(0, 512, (BATCH, PROMPT), generator=torch.Generator().manual_seed(seed))


def test_tiny_model_loads_through_transformers_and_says_what_runs(tiny) -> None:
    spec = tiny.ref.spec
    assert tiny.backend == "hf" and tiny.module.config.model_type == spec.arch
    assert type(tiny.module).__name__.endswith("ForCausalLM")
    assert spec.n_layers == tiny.module.config.num_hidden_layers == 2
    assert spec.d_model == tiny.module.config.hidden_size == 64
    attention = getattr(tiny.module.config, "_attn_implementation", None)
    assert tiny.kernel == ("hf-torch" if spec.arch == "rwkv" else f"hf-{attention}")
    fields = tiny.record_fields()
    assert fields["family"] == spec.family and fields["extra"]["architecture"] == spec.arch
    with torch.inference_mode():
        logits = tiny.module(input_ids=prompt()).logits
    assert logits.shape == (BATCH, PROMPT, 512) and torch.isfinite(logits).all()


def test_decoder_equals_transformers_generate(tiny) -> None:
    ids = prompt()
    with torch.inference_mode():
        decoder = tiny.decoder(BATCH, PROMPT + NEW, cuda_graphs=False)
        ours = decoder.generate(ids, NEW)
        again = decoder.generate(ids, NEW)  # reuse: the state or cache starts afresh
        theirs = tiny.library_generate(ids, NEW, cuda_graphs=False)
    assert isinstance(decoder, RwkvDecoder) == (tiny.ref.spec.arch == "rwkv")
    assert ours.shape == (BATCH, NEW) and torch.equal(ours, theirs) and torch.equal(ours, again)
    assert ours.unique().numel() > 1  # not a degenerate constant output


@pytest.mark.parametrize("arch", ["opt", "gpt_neo", "gptj"])
def test_static_kv_cache_gives_the_same_tokens(arch: str) -> None:
    """The static cache is the one CUDA-graph decoding captures; on the CPU it must change nothing."""
    model = load_model(tiny_ref(arch))
    ids = prompt(seed=5)
    with torch.inference_mode():
        eager = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False).generate(ids, NEW)
        static = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False, static_cache=True).generate(ids, NEW)
    assert torch.equal(eager, static)


@pytest.mark.parametrize("arch", ["opt", "gptj"])
def test_kv_state_equals_what_transformers_caches(arch: str) -> None:
    from transformers import DynamicCache

    model = load_model(tiny_ref(arch))
    cache = DynamicCache(config=model.module.config)
    with torch.inference_mode():
        model.module(input_ids=prompt(), cache=cache, use_cache=True)
    held = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers) // BATCH
    assert held == model.ref.spec.state_elements_per_sequence(PROMPT)


def test_gpt_neo_local_layers_need_their_window_but_transformers_caches_everything() -> None:
    """The approximation GPTNeo's docstring states, measured: the state counted keeps the window (8 here) in
    the local layer, while transformers' cache keeps all 12 positions there too."""
    from transformers import DynamicCache

    model = load_model(tiny_ref("gpt_neo"))
    cache = DynamicCache(config=model.module.config)
    with torch.inference_mode():
        model.module(input_ids=prompt(), cache=cache, use_cache=True)
    held = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers) // BATCH
    counted = model.ref.spec.state_elements_per_sequence(PROMPT)
    assert counted == 2 * 64 * (PROMPT + 8)  # global layer: 12 tokens, local layer: its window of 8
    assert held - counted == 2 * 64 * (PROMPT - 8)
    assert model.ref.spec.state_elements_per_sequence(8) == 2 * 2 * 64 * 8  # within the window: no gap


def test_rwkv_state_is_transformers_own_and_chunked_prefill_is_one_pass() -> None:
    model = load_model(tiny_ref("rwkv"))
    ids = prompt(seed=7)
    with torch.inference_mode():
        whole = model.module(input_ids=ids, use_cache=True)  # RwkvModel allocates its own state
        decoder = model.decoder(BATCH, PROMPT + NEW, cuda_graphs=False)
        decoder.start()
        first_logits = decoder._prompt_logits(ids)  # 12 tokens in chunks of context_length 8
    spec = model.ref.spec
    assert [tuple(s.shape) for s in whole.state] == [(BATCH, 64, 2)] * 5
    assert sum(s.numel() for s in whole.state) // BATCH == spec.state_elements_per_sequence(PROMPT)
    assert sum(s.numel() * s.element_size() for s in whole.state) // BATCH == spec.state_bytes_per_sequence(PROMPT, 4)
    assert [s.dtype for s in decoder._state] == [s.dtype for s in whole.state]
    torch.testing.assert_close(first_logits, whole.logits[:, -1])
    for ours, theirs in zip(decoder._state, whole.state, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_rwkv_half_precision_state_bytes_match_transformers() -> None:
    model = load_model(tiny_ref("rwkv", dtype="bfloat16"))
    with torch.inference_mode():
        state = model.module(input_ids=prompt(), use_cache=True).state
    assert [s.dtype for s in state] == [torch.bfloat16] * 2 + [torch.float32] * 3
    assert sum(s.numel() * s.element_size() for s in state) // BATCH == model.ref.spec.state_bytes_per_sequence(1, 2)


def test_decoders_refuse_what_does_not_apply() -> None:
    rwkv = load_model(tiny_ref("rwkv"))
    with pytest.raises(ValueError, match="no static cache"):
        rwkv.decoder(BATCH, PROMPT + NEW, cuda_graphs=False, static_cache=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        rwkv.decoder(BATCH, PROMPT + NEW, cuda_graphs=True)
    opt = load_model(tiny_ref("opt"))
    with pytest.raises(ValueError, match="takes no `state`"):  # never a silent fallback to another loop
        RwkvDecoder(opt, BATCH, PROMPT + NEW, cuda_graphs=False)


@pytest.mark.parametrize("name", [name for name, _ in TABLE3.values()])
def test_backend_is_transformers_and_mamba_ssm_is_refused(name: str) -> None:
    ref = ResolvedModel(name=name, spec=MODELS[name], weights="pretrained", dtype="float16", device="cuda")
    assert choose_backend(ref) == ("hf", None)
    with pytest.raises(JobError, match="backend mamba_ssm is for Mamba models only"):
        choose_backend(dataclasses.replace(ref, backend="mamba_ssm"))


# --- the CLI and offline loading ---------------------------------------------------------------------------

def test_list_models_names_them() -> None:
    from ssmbench.cli import app

    result = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name, hub in TABLE3.values():
        assert any(name in line and hub in line for line in lines), name
    assert any("rwkv-4-7b" in line and " rnn " in line for line in lines)


def test_a_suite_naming_them_validates(tmp_path: Path) -> None:
    from ssmbench.cli import app

    names = [name for name, _ in TABLE3.values()]
    suite = tmp_path / "table3.yaml"
    suite.write_text(
        "name: table3\ndefaults: {device: cuda, weights: pretrained}\n"
        f"models: [{', '.join(names)}]\n"
        "tasks:\n  - kind: zero_shot\n    tasks: [lambada_openai, hellaswag]\n"
        "  - kind: throughput\n    batch_sizes: [1]\n    prompt_lengths: [128]\n")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 0, result.output
    assert f"ok {suite}: {len(names)} models, 2 tasks" in result.stdout


@pytest.mark.parametrize("name", [name for name, _ in TABLE3.values()])
def test_offline_loading_fails_at_once_with_the_remedy(name: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    ref = ResolvedModel(name=name, spec=MODELS[name], weights="pretrained", dtype="float32", device="cpu")
    started = time.monotonic()
    with pytest.raises(JobError) as info:
        load_model(ref)
    assert time.monotonic() - started < 10  # no download attempted, no retries
    message = str(info.value)
    hub = MODELS[name].hf_id
    assert message.startswith(f"model {name!r}: weights {hub!r} could not be loaded (not in the Hugging Face cache")
    assert f"`hf download {hub}`" in message and "`weights: random`" in message


# --- paper rows follow the published checkpoint ------------------------------------------------------------

def zero_shot_records(model: str, checkpoint: str, family: str) -> list[Record]:
    """One model's records for the paper's seven columns, at its Table 3 row's figures, as loaded from
    `checkpoint`."""
    paper = zero_shot_sources()[PAPER]
    row = next(r for r in paper.rows if MODELS[r.model or "gpt2"].hf_id == checkpoint)
    return [Record(task="zero-shot", kind="zero_shot", job=f"zero-shot/{model}", point=f"lm_eval_task={c.task}",
                   model=model, family=family, metric=c.metric, value=row.figures[c.key],
                   stderr=0.5 if c.metric == "perplexity" else 0.005,
                   unit="ppl" if c.metric == "perplexity" else "fraction", weights="pretrained", dtype="float16",
                   kernel="hf-sdpa", slice={"lm_eval_task": c.task, "num_fewshot": 0, "limit": None,
                                            "batch_size": 8, "lm_eval": "0.4.13", "n_samples": 1000},
                   extra={"checkpoint": checkpoint, "weights_sha256": "0123456789abcdef"})
            for c in paper.columns]


def test_paper_rows_attach_to_the_published_checkpoints_only() -> None:
    records = [
        *zero_shot_records("opt-1.3b", "facebook/opt-1.3b", "transformer"),
        *zero_shot_records("rwkv-4-3b", "RWKV/rwkv-4-3b-pile", "rnn"),
        # the published GPT-J under another name: the row follows the checkpoint
        *zero_shot_records("my-gptj", "EleutherAI/gpt-j-6b", "transformer"),
        # a zoo name that loaded other weights: no row, and a note says why
        *[r.model_copy(update={"model": "gpt-neo-2.7b", "job": "zero-shot/gpt-neo-2.7b",
                               "extra": {"checkpoint": "someone/gpt-neo-2.7B-tuned"}})
          for r in zero_shot_records("x", "EleutherAI/gpt-neo-2.7B", "transformer")],
    ]
    table = next(t for t in build_tables(records, all_kinds()) if "Table 3 layout" in t.title)
    frame = table.frame
    papers = dict(zip(frame["model"][frame["figures"].str.startswith("paper")],
                      frame["figures"][frame["figures"].str.startswith("paper")], strict=True))
    assert papers == {"opt-1.3b": "paper: OPT-1.3B", "rwkv-4-3b": "paper: RWKV-3B", "my-gptj": "paper: GPT-J-6B"}
    deltas = frame[frame["figures"] == "Δ"]
    assert set(deltas["model"]) == set(papers) and not deltas["HellaSwag"].str.contains("⚠").any()
    assert any("gpt-neo-2.7b: it loaded someone/gpt-neo-2.7B-tuned, not the published EleutherAI/gpt-neo-2.7B"
               in note for note in table.notes)
