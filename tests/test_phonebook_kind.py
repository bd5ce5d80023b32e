"""Kind `phonebook`: request-level generation cut at a newline for both families, the context limit, and a
tiny end-to-end run on the CPU (random weights, so only the pipeline is judged)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_ref
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.models import load_model
from ssmbench.models.generate import encode, generate_until
from ssmbench.models.tokenizers import byte_tokenizer
from ssmbench.records import read_records

# --- generate_until --------------------------------------------------------------------------------------


@dataclass
class ScriptedDecoder:
    """Writes back, for each row, the prompt's first token + 1, 2, 3, ...: a known continuation."""

    batch: int
    calls: list

    def generate(self, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        self.calls.append(tuple(ids.shape))
        return ids[:, :1] + torch.arange(1, new_tokens + 1)


class ScriptedModel:
    def __init__(self):
        self.calls: list = []
        self.made: list = []
        self.ref = tiny_ref("tiny-gpt2")

    def decoder(self, batch: int, max_len: int, cuda_graphs: bool) -> ScriptedDecoder:
        self.made.append((batch, max_len))
        return ScriptedDecoder(batch, self.calls)


def test_equal_lengths_share_a_batch_and_nothing_is_padded():
    model = ScriptedModel()
    # byte tokens: "a" is 97, so the continuation of "a.." is "bcdef"; "\t" (9) continues with "\n" (10)
    prompts = ["abc", "\tx", "xyz", "ab", "a"]
    out = generate_until(model, prompts, max_new_tokens=5, tokenizer=byte_tokenizer(), batch_size=8)
    assert sorted(model.calls) == sorted([(2, 3), (2, 2), (1, 1)])  # by length: abc+xyz, \tx+ab, a
    assert sorted(model.made) == [(1, 8), (2, 8)]  # a decoder per batch size, for the longest prompt + 5
    assert [g.text for g in out] == ["bcdef", "", "yz{|}", "bcdef", "bcdef"]
    assert [g.stopped for g in out] == [False, True, False, False, False]
    assert [g.prompt_tokens for g in out] == [3, 2, 3, 2, 1]


def test_batches_are_capped():
    model = ScriptedModel()
    generate_until(model, ["aa"] * 5, max_new_tokens=2, tokenizer=byte_tokenizer(), batch_size=2)
    assert model.calls == [(2, 2), (2, 2), (1, 2)]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-mamba"])
def test_generate_until_is_the_decoders_greedy_text_cut_at_the_stop(name: str):
    model = load_model(tiny_ref(name))
    tokenizer = model.tokenizer()
    prompts = ["Ada Byron: 6123456789\nAda Byron:", "Alan Turing: 7", "Alan Turing: 7"]
    full = []
    for prompt in prompts:
        ids = torch.tensor([encode(tokenizer, prompt)])
        with torch.inference_mode():
            tokens = model.decoder(1, ids.shape[1] + 12, False).generate(ids, 12)[0].tolist()
        full.append(tokenizer.decode(tokens, skip_special_tokens=True))
    # Stop at a character the greedy text does contain, so the cut is exercised with real models.
    stop = next(ch for ch in full[0][1:] if ch.strip())
    out = generate_until(model, prompts, 12, until=stop)
    assert [g.text for g in out] == [text.partition(stop)[0] for text in full]
    assert out[0].stopped and out[1].text == out[2].text


# --- the kind ---------------------------------------------------------------------------------------------


def suite(**changes) -> dict:
    task = {"kind": "phonebook", "book_sizes": [4, 60], "positions": ["start", "end"],
            "formats": ["standard", "reversed"], "queries": 2, "max_new_tokens": 12, "examples": 1}
    return {"name": "pb", "defaults": {"device": "cpu", "weights": "random"}, "smoke_test": True,
            "models": ["tiny-gpt2", "tiny-mamba"], "tasks": [task | changes]}


@pytest.fixture(scope="module")
def pb_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    (out / "pb.yaml").write_text(yaml.safe_dump(suite()))
    result = CliRunner().invoke(app, ["run", str(out / "pb.yaml"), "--out", str(out / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs" / "pb").iterdir()
    return run_dir


def test_every_point_records_three_scores(pb_run: Path):
    records = read_records(pb_run / "records.jsonl")
    ok = [r for r in records if r.status == "ok"]
    points = {(r.model, r.point) for r in ok}
    assert len(points) == 2 * 2 * 2 + 1 * 2 * 2  # tiny-mamba every point; tiny-gpt2 only the 4-entry books
    for r in ok:
        assert r.metric in {"exact_match", "digit_accuracy", "edit_distance"}
        assert r.weights == "random" and r.extra["n_queries"] == 2 and r.stderr is not None
        assert 0 <= r.value <= (12 if r.metric == "edit_distance" else 1)
    assert {r.kernel for r in ok} == {"hf-sdpa", "hf-torch"}


def test_a_book_beyond_the_context_is_not_applicable(pb_run: Path):
    records = read_records(pb_run / "records.jsonl")
    skipped = [r for r in records if r.status == "skipped"]
    assert {(r.model, r.slice["book_size"]) for r in skipped} == {("tiny-gpt2", 60)}
    assert all(r.message.startswith("n/a (context): prompts of up to") and "1,024-token context" in r.message
               for r in skipped)
    table = (pb_run / "table.md").read_text()
    assert "| n/a (context) " in table
    assert "n/a (context) tiny-gpt2: 60 entries do not fit" in table


def test_tables_examples_and_plots(pb_run: Path):
    table = (pb_run / "table.md").read_text()
    for heading in ("pb (phonebook)", "recall by book size (standard format)", "recall by query position (reversed"):
        assert heading.split(" (phonebook)")[0] in table
    assert "random weights: these numbers measure nothing" in table
    examples = [json.loads(line) for line in
                (pb_run / "artifacts" / "phonebook" / "tiny-mamba" / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 8  # one per point
    first = examples[0]
    assert first["prompt"].endswith(f"\n\n{first['name']}:") and len(first["number"]) == 10
    assert {p.name for p in pb_run.glob("*.png")} == {"phonebook_recall_standard.png", "phonebook_recall_reversed.png"}


def test_random_weights_are_refused_outside_smoke_tests():
    from ssmbench.plan import build_plan
    from ssmbench.spec import parse_suite

    plan = build_plan(parse_suite(suite() | {"smoke_test": False}), "cpu")
    assert all("random weights measures nothing" in (j.skip_reason or "") for j in plan.jobs)
