"""Kind `generate`: each model's continuation of the suite's prompts, greedy and sampled, side by side, on
tiny random-weight models on the CPU (so only the pipeline is judged, as a smoke test allows)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import tiny_ref
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.models import load_model
from ssmbench.models.base import Decoder, Sampler
from ssmbench.models.generate import encode
from ssmbench.records import read_records

PROMPTS = {"translation": "mom - maman; dad - papa; green -", "antonyms": "hot - cold; big - small; up -"}


def suite(**changes) -> dict:
    task = {"kind": "generate", "prompts": PROMPTS, "max_new_tokens": 8, "until": ";", "repeats": 2,
            "sampling": {"temperature": 0.8, "top_k": 20, "seeds": [0, 1]}}
    return {"name": "gen", "defaults": {"device": "cpu", "weights": "random"}, "smoke_test": True,
            "models": ["tiny-gpt2", "tiny-mamba"], "tasks": [task | changes]}


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    (out / "gen.yaml").write_text(yaml.safe_dump(suite()))
    result = CliRunner().invoke(app, ["run", str(out / "gen.yaml"), "--out", str(out / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs" / "gen").iterdir()
    return run_dir


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-mamba"])
def test_the_greedy_record_is_the_decoders_text_cut_at_until(gen_run: Path, name: str):
    model = load_model(tiny_ref(name))
    tokenizer = model.tokenizer()
    records = {(r.slice["prompt"], r.slice["mode"], r.slice.get("sample_seed")): r
               for r in read_records(gen_run / "records.jsonl") if r.model == name}
    assert len(records) == 2 * 3 and all(r.status == "ok" and r.metric == "generate_tok_s" for r in records.values())
    for prompt, text in PROMPTS.items():
        ids = torch.tensor([encode(tokenizer, text)])
        with torch.inference_mode():
            tokens = model.decoder(1, ids.shape[1] + 8, False).generate(ids, 8)[0].tolist()
        raw = tokenizer.decode(tokens, skip_special_tokens=True)
        greedy = records[prompt, "greedy", None]
        assert greedy.extra["raw"] == raw and greedy.extra["text"] == raw.partition(";")[0]
        assert greedy.extra["prompt"] == text and greedy.extra["prompt_tokens"] == ids.shape[1]
        assert greedy.stats.n == 2 and greedy.value > 0 and greedy.weights == "random"
        sampled = [records[prompt, "sampled", seed] for seed in (0, 1)]
        assert [r.stats.n for r in sampled] == [1, 1] and sampled[0].extra["temperature"] == 0.8
        assert sampled[0].cuda_graphs is False


def test_a_seed_gives_the_same_sample_and_another_seed_another():
    """Sampling draws from the decoder's own seeded generator: the same seed, the same tokens."""
    model = load_model(tiny_ref("tiny-mamba"))
    ids = torch.tensor([encode(model.tokenizer(), "hot - cold; up -")])

    def sample(seed: int) -> list[int]:
        decoder = model.decoder(1, ids.shape[1] + 16, False)
        decoder.sample_with(Sampler(1.0, None, torch.Generator().manual_seed(seed)))
        with torch.inference_mode():
            return decoder.generate(ids, 16)[0].tolist()

    assert sample(3) == sample(3) and sample(3) != sample(4)
    with pytest.raises(ValueError, match="without CUDA graphs"):  # a captured step could not sample
        Decoder.sample_with(SimpleNamespace(cuda_graphs=True), Sampler(1.0, None, torch.Generator()))


def test_top_k_keeps_the_draw_among_the_k_likeliest_tokens():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    draws = {int(Sampler(1.0, 2, torch.Generator().manual_seed(s))(logits)) for s in range(50)}
    assert draws == {1, 2}


def test_the_tables_set_the_models_side_by_side(gen_run: Path):
    table = (gen_run / "table.md").read_text()
    assert "generate: continuations, side by side" in table and "generate: generation rate (tok/s)" in table
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| translation ")
            or line.startswith("| antonyms ")]
    assert [[cell.strip() for cell in row] for row in rows[:6]] == [
        [prompt, mode] for prompt in ("antonyms", "translation")  # the suite's order (yaml.safe_dump sorts keys)
        for mode in ("greedy", "sampled, seed 0", "sampled, seed 1")]
    assert "translation: 'mom - maman; dad - papa; green -' (" in table and "tokens with tiny-" in table
    assert "random weights: these numbers measure nothing" in table


def test_pretrained_weights_are_needed_outside_smoke_tests():
    from ssmbench.plan import build_plan
    from ssmbench.spec import parse_suite

    plan = build_plan(parse_suite(suite() | {"smoke_test": False}), "cpu")
    assert all("random weights measures nothing" in (j.skip_reason or "") for j in plan.jobs)


def test_a_task_without_prompts_names_the_field():
    from ssmbench.errors import UserError
    from ssmbench.spec import parse_suite

    with pytest.raises(UserError, match="tasks\\[0\\].prompts"):
        parse_suite(suite(prompts={}), source="g.yaml")
    with pytest.raises(UserError, match="translation: the prompt is empty"):
        parse_suite(suite(prompts={"translation": ""}), source="g.yaml")


@pytest.mark.parametrize(("setting", "model_can", "expected"),
                         [("auto", True, True), ("auto", False, False), (True, False, True), (False, True, False)])
def test_auto_graphs_leave_out_a_model_that_cannot_decode_under_them(setting, model_can: bool, expected: bool):
    """On CUDA `auto` replays graphs where the model can (the hybrid decodes eagerly and records so); an
    explicit `true` is asked of every model, and one that cannot fails its point saying why."""
    from ssmbench.kinds.generate.runner import GenerateRunner
    from ssmbench.kinds.generate.task import GenerateTask

    runner = GenerateRunner.__new__(GenerateRunner)
    runner.job = SimpleNamespace(device="cuda")
    runner.task = GenerateTask(kind="generate", cuda_graphs=setting)
    runner.model = SimpleNamespace(graph_decoding=model_can)
    assert runner.graphs() is expected


def test_only_the_hybrid_cannot_decode_under_graphs():
    assert not load_model(tiny_ref("tiny-falcon-h1")).graph_decoding
    assert all(load_model(tiny_ref(name)).graph_decoding for name in ("tiny-gpt2", "tiny-pythia", "tiny-mamba"))
