"""Zero-shot evaluation through lm-eval: offline, on the CPU, with tiny random models and fixture tasks.

The fixture tasks are small JSONL files in the shapes of LAMBADA (a passage whose last word is the
target) and of ARC (a question, choices, the gold label), plus a task whose hub dataset exists nowhere, to
stand for a dataset that was never cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lm_eval_fixtures import FIXTURE_TASKS, LIMIT, UNCACHED, suite_data  # noqa: E402 (fixture `task_dir` too)
from typer.testing import CliRunner

from ssmbench.errors import JobError
from ssmbench.kinds import all_kinds
from ssmbench.kinds.base import JobContext
from ssmbench.kinds.zero_shot.runner import ZeroShotRunner, scores, unit_of
from ssmbench.plan import build_plan
from ssmbench.records import Record, read_records
from ssmbench.reference import PAPER, SLIDES, reported_metrics, zero_shot_sources
from ssmbench.report import build_tables
from ssmbench.spec import parse_suite
from ssmbench.zoo import MODELS

# --- (1) ssmbench's figures are lm-eval's -----------------------------------------------------------------

@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-mamba", "tiny-falcon-h1"])
def test_figures_equal_lm_eval_simple_evaluate(task_dir: Path, model: str) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    suite = parse_suite(suite_data(task_dir, [model], FIXTURE_TASKS))
    job = build_plan(suite, "cpu").jobs[0]
    runner = ZeroShotRunner(job, JobContext("test", suite.name, task_dir / "artifacts"))
    runner.setup()
    try:
        records = [r for pt in job.points for r in runner.measure(pt)]
        # The same model and tokenizer, evaluated by lm-eval directly, task by task as the runner does.
        lm = HFLM(pretrained=runner.model.module, tokenizer=runner.model.tokenizer(), batch_size=4)
        manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        direct = {name: simple_evaluate(model=lm, tasks=[name], num_fewshot=0, limit=LIMIT, task_manager=manager,
                                        log_samples=False)["results"][name] for name in FIXTURE_TASKS}
    finally:
        runner.teardown()
    got = {(r.slice["lm_eval_task"], r.metric): (r.value, r.stderr) for r in records}
    want = {(task, key.split(",")[0]): (value, row[key.replace(",", "_stderr,")])
            for task, row in direct.items() for key, value in row.items()
            if key.endswith(",none") and "_stderr" not in key}
    assert got == want  # exact: the same numbers, not close ones
    assert set(got) == {("fixture_lambada", "perplexity"), ("fixture_lambada", "acc"),
                        ("fixture_arc", "acc"), ("fixture_arc", "acc_norm")}
    assert all(r.slice["n_samples"] == LIMIT and r.extra["n_samples_total"] == 12 for r in records)
    assert {r.kernel for r in records} == {{"tiny-gpt2": "hf-sdpa", "tiny-mamba": "hf-torch"}.get(model, "hf-sdpa+torch")}


# --- (2) which metric per task -----------------------------------------------------------------------------

def _results(rows: dict[str, dict], n: int = 100) -> dict:
    better = {t: {k.split(",")[0]: k.split(",")[0] != "perplexity" for k in row if "," in k} for t, row in rows.items()}
    return {"results": rows, "n-samples": {t: {"original": 2 * n, "effective": n} for t in rows},
            "higher_is_better": better}


def test_paper_tasks_keep_the_metrics_the_sources_print() -> None:
    results = _results({
        "lambada_openai": {"alias": "lambada_openai", "perplexity,none": 16.07, "perplexity_stderr,none": 0.51,
                           "acc,none": 0.443, "acc_stderr,none": 0.0069},
        "hellaswag": {"acc,none": 0.30, "acc_stderr,none": 0.0046, "acc_norm,none": 0.353,
                      "acc_norm_stderr,none": 0.0048},
        "arc_challenge": {"acc,none": 0.197, "acc_stderr,none": 0.0116, "acc_norm,none": 0.243,
                          "acc_norm_stderr,none": 0.0125},
    })
    got = {(s.task, s.metric): s for s in scores(results, "lambada_openai")}
    assert set(got) == {("lambada_openai", "perplexity"), ("lambada_openai", "acc"), ("hellaswag", "acc_norm"),
                        ("arc_challenge", "acc_norm"), ("arc_challenge", "acc")}
    assert got[("lambada_openai", "perplexity")].stderr == 0.51
    assert got[("lambada_openai", "perplexity")].higher_is_better is False
    assert got[("hellaswag", "acc_norm")].stderr == 0.0048
    # ARC-C: the paper's acc_norm is primary; the slides' acc is kept beside it.
    assert got[("arc_challenge", "acc_norm")].primary and not got[("arc_challenge", "acc")].primary
    assert got[("lambada_openai", "acc")].n_samples == 100 and got[("lambada_openai", "acc")].n_total == 200
    assert reported_metrics()["winogrande"] == {"acc": True} and reported_metrics()["piqa"] == {"acc": True}


def test_other_tasks_keep_every_metric_first_primary() -> None:
    results = _results({"gsm8k": {"exact_match,strict-match": 0.02, "exact_match_stderr,strict-match": 0.004,
                                  "exact_match,flexible-extract": 0.03, "exact_match_stderr,flexible-extract": "N/A"}})
    got = scores(results, "gsm8k")
    assert [(s.metric, s.primary, s.stderr) for s in got] == [
        ("exact_match,strict-match", True, 0.004), ("exact_match,flexible-extract", False, None)]
    assert [unit_of(m) for m in ("perplexity", "acc_norm", "exact_match,strict-match", "bits_per_byte", "f1")] == [
        "ppl", "fraction", "fraction", "bits/byte", ""]


def test_paper_task_without_its_metric_is_an_error() -> None:
    results = _results({"hellaswag": {"acc,none": 0.30, "acc_stderr,none": 0.0046}})
    with pytest.raises(JobError, match="hellaswag.*no acc_norm"):
        scores(results, "hellaswag")


# --- reference data ----------------------------------------------------------------------------------------

def test_reference_figures_as_printed_and_avg_is_the_mean_of_six() -> None:
    paper, slides = zero_shot_sources()[PAPER], zero_shot_sources()[SLIDES]
    assert "2312.00752" in paper.citation and "Table 3" in paper.citation and "slides" in slides.citation
    mamba = paper.row_for("mamba-130m")
    assert mamba.label == "Mamba-130M" and mamba.figures["lambada_ppl"] == 16.07
    assert round(mamba.figures["hellaswag"] * 100, 2) == 35.3
    assert [paper.row_for(m).label for m in ("pythia-160m", "pythia-2.8b", "mamba-2.8b")] == [
        "Pythia-160M", "Pythia-2.8B", "Mamba-2.8B"]
    assert slides.row_for("gpt2-xl").figures == {"lambada_ppl": 10.6341, "lambada_acc": 0.5121, "winogrande": 0.5833,
                                                 "arc_easy": 0.5829, "arc_challenge": 0.25, "piqa": 0.7084}
    # The printed Avg is the mean of the six accuracies, to its rounding, except in two rows of the paper.
    assert {r.label for r in paper.rows if paper.avg_misprinted(r)} == {"Mamba-370M", "Mamba-790M"}
    assert round(paper.mean_accuracy(paper.row_for("mamba-370m")) * 100, 1) == 51.7


# --- (3, 4) tables from synthetic records ------------------------------------------------------------------

PAPER_METRICS = [(c.task, c.metric) for c in zero_shot_sources()[PAPER].columns] + [("arc_challenge", "acc")]


def _record(model: str, task: str, metric: str, value: float, stderr: float, weights: str = "pretrained",
            checkpoint: str | None = "published") -> Record:
    """A zero-shot record; `checkpoint` "published" stands for the zoo's hub id of `model` (what a real run of
    a zoo model records), None for a record that does not say what it loaded."""
    if checkpoint == "published":
        checkpoint = MODELS[model].hf_id if weights == "pretrained" else "random init"
    extra = {} if checkpoint is None else {"checkpoint": checkpoint, "weights_sha256": "0123456789abcdef",
                                           "architecture": "mamba" if "mamba" in model else "gpt2"}
    return Record(task="zero-shot", kind="zero_shot", job=f"zero-shot/{model}", point=f"lm_eval_task={task}",
                  model=model, family="ssm" if "mamba" in model else "transformer", metric=metric, value=value,
                  stderr=stderr, unit=unit_of(metric), weights=weights, dtype="float16",
                  kernel="hf-mamba_ssm-kernels" if "mamba" in model else "hf-sdpa",
                  slice={"lm_eval_task": task, "num_fewshot": 0, "limit": None, "batch_size": "auto (max 64)",
                         "lm_eval": "0.4.13", "n_samples": 1000}, extra=extra)


def _synthetic_records() -> list[Record]:
    """gpt2 at the slides' figures; mamba-130m at the paper's, but HellaSwag 4.7 points (~10 stderr) high."""
    paper, slides = zero_shot_sources()[PAPER], zero_shot_sources()[SLIDES]
    records = []
    for model in ("gpt2", "mamba-130m"):
        source = slides if model == "gpt2" else paper
        figures = {(c.task, c.metric): source.row_for(model).figures[c.key] for c in source.columns}
        for task, metric in PAPER_METRICS:
            value = figures.get((task, metric), 0.25)
            if (model, task) == ("mamba-130m", "hellaswag"):
                value = 0.40
            records.append(_record(model, task, metric, value, 0.5 if metric == "perplexity" else 0.0048))
    return records


def _table(tables: list, words: str):
    return next(t for t in tables if words in t.title)


def test_paper_table_layout_with_reference_and_flags() -> None:
    table = _table(build_tables(_synthetic_records(), all_kinds()), "Table 3 layout")
    frame = table.frame
    assert list(frame.columns) == ["model", "figures", "LAMBADA ppl", "LAMBADA acc", "HellaSwag", "PIQA", "ARC-E",
                                   "ARC-C", "WinoGrande", "Avg"]
    # gpt2 has no Table 3 row: measured only. mamba-130m: measured, the paper's row, and the difference.
    assert list(frame["model"]) == ["gpt2", "mamba-130m", "mamba-130m", "mamba-130m"]
    assert list(frame["figures"]) == ["measured", "measured", "paper: Mamba-130M", "Δ"]
    measured, reference, delta = (frame.iloc[i] for i in (1, 2, 3))
    assert measured["LAMBADA ppl"] == "16.07 ±0.50" and measured["LAMBADA acc"] == "44.3 ±0.5"
    assert measured["HellaSwag"] == "40.0 ±0.5" and reference["HellaSwag"] == "35.3"
    assert delta["HellaSwag"] == "+4.7 ⚠"  # 4.7 points against a stderr of 0.48: flagged
    assert delta["PIQA"] == "+0.0" and delta["LAMBADA ppl"] == "+0.00"  # equal figures: no flag
    assert measured["Avg"] == "45.5 ±0.2" and reference["Avg"] == "44.7"  # (268.3 + 4.7) / 6 = 45.5
    assert delta["Avg"].endswith("⚠")
    assert any("Gu & Dao 2023" in n and "full evaluation sets: ⚠ = |Δ| > 0.5 points" in n for n in table.notes)
    assert any("lm-eval 0.4.13" in n and "0-shot" in n and "full evaluation sets" in n for n in table.notes)
    assert any("mamba-130m: hf-mamba_ssm-kernels, float16, pretrained weights" in n for n in table.notes)


def test_slides_table_layout_models_as_columns() -> None:
    table = _table(build_tables(_synthetic_records(), all_kinds()), "slides layout")
    frame = table.frame
    assert list(frame.columns) == ["metric", "gpt2", "slides: small gpt2", "Δ gpt2", "mamba-130m",
                                   "slides: small mamba", "Δ mamba-130m"]
    assert list(frame["metric"]) == ["lambada perplexity", "lambada accuracy", "winogrande", "arc_easy",
                                     "arc_challenge", "piqa", "hellaswag (acc_norm)", "arc_challenge (acc_norm)"]
    rows = frame.set_index("metric")
    assert rows.loc["lambada perplexity", "gpt2"] == "40.0554 ±0.5000"
    assert rows.loc["lambada perplexity", "slides: small gpt2"] == "40.0554"
    assert rows.loc["arc_challenge", "gpt2"] == "0.1903 ±0.0048" and rows.loc["arc_challenge", "Δ gpt2"] == "+0.0000"
    # mamba-130m was given the paper's figures: within two stderr of the slides', but for ARC-C acc (0.25).
    assert rows.loc["lambada accuracy", "Δ mamba-130m"] == "+0.0005"
    assert rows.loc["arc_easy", "Δ mamba-130m"] == "+0.0002"
    assert rows.loc["arc_challenge", "slides: small mamba"] == "0.1971"
    assert rows.loc["arc_challenge", "Δ mamba-130m"] == "+0.0529 ⚠"  # 0.25 measured vs the slides' acc
    assert rows.loc["hellaswag (acc_norm)", "slides: small mamba"] == ""  # the slides lack HellaSwag


def test_misprinted_paper_avg_is_named_in_a_note() -> None:
    paper = zero_shot_sources()[PAPER]
    ref = paper.row_for("mamba-370m")
    records = [_record("mamba-370m", c.task, c.metric, ref.figures[c.key], 0.005) for c in paper.columns]
    table = _table(build_tables(records, all_kinds()), "Table 3 layout")
    assert table.frame.iloc[1]["Avg"] == "51.7"  # the mean of the printed six, not the printed 50.0
    assert table.frame.iloc[2]["Avg"] == "+0.0"
    assert any("prints Avg 50.0, but the mean of its six accuracies is 51.7" in n for n in table.notes)


def test_random_weights_and_other_tasks_and_failures() -> None:
    records = [_record("gpt2", "lambada_openai", "acc", 0.01, 0.001, weights="random"),
               _record("gpt2", "my_task", "f1", 0.5, 0.02, weights="random"),
               Record(task="zero-shot", kind="zero_shot", job="zero-shot/gpt2", point="lm_eval_task=piqa",
                      model="gpt2", weights="random", status="error", message="dataset not cached",
                      slice={"lm_eval_task": "piqa"})]
    tables = build_tables(records, all_kinds())
    paper = _table(tables, "Table 3 layout")
    assert list(paper.frame["figures"]) == ["measured (random weights)"]  # no reference rows for random weights
    # Columns of the tasks that ran (or failed), no Avg without all six.
    assert list(paper.frame.columns) == ["model", "figures", "LAMBADA ppl", "LAMBADA acc", "PIQA"]
    assert paper.frame.iloc[0][["LAMBADA ppl", "LAMBADA acc", "PIQA"]].tolist() == ["", "1.0 ±0.1", "ERR"]
    assert paper.notes[0].startswith("SMOKE TEST: random weights, numbers meaningless")
    assert any("dataset not cached" in n for n in paper.notes)
    other = _table(tables, "other lm-eval tasks")
    assert other.frame.to_dict("records") == [{"lm-eval task": "my_task", "metric": "f1", "gpt2": "0.5000 ±0.0200"}]


# --- (5, 6) a smoke run through the CLI, one task's dataset missing --------------------------------------

@pytest.fixture(scope="module")
def cli_run(task_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    from ssmbench.cli import app

    tmp = tmp_path_factory.mktemp("cli")
    suite = tmp / "zs.yaml"
    suite.write_text(yaml.safe_dump(suite_data(task_dir, ["tiny-gpt2", "tiny-mamba"], [*FIXTURE_TASKS, UNCACHED])))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp / "out")])
    (run_dir,) = (tmp / "out" / "zs-test").iterdir()
    return result, run_dir


def test_cli_smoke_run_records_and_table(cli_run: tuple[object, Path]) -> None:
    result, run_dir = cli_run
    records = read_records(run_dir / "records.jsonl")
    ok = [r for r in records if r.status == "ok"]
    assert {(r.model, r.slice["lm_eval_task"], r.metric) for r in ok} == {
        (m, t, metric) for m in ("tiny-gpt2", "tiny-mamba")
        for t, metric in [("fixture_lambada", "perplexity"), ("fixture_lambada", "acc"), ("fixture_arc", "acc"),
                          ("fixture_arc", "acc_norm")]}
    assert all(r.weights == "random" and r.stderr is not None and r.slice["n_samples"] == LIMIT for r in ok)
    perplexity = next(r for r in ok if r.metric == "perplexity")
    assert perplexity.unit == "ppl" and perplexity.higher_is_better is False and perplexity.extra["primary"]
    table = (run_dir / "table.md").read_text()
    assert "### zero-shot: other lm-eval tasks" in table
    assert "SMOKE TEST: random weights, numbers meaningless" in table
    assert f"limit {LIMIT} examples per task" in table and "tiny-mamba: hf-torch, float32, random weights" in table
    # The fixtures come from the suite's include_path: the suite's own tasks, marked so.
    assert json.loads((run_dir / "table.json").read_text())[-1]["rows"][0]["lm-eval task"] == "fixture_lambada (custom)"


def test_missing_dataset_fails_its_point_with_the_remedy(cli_run: tuple[object, Path]) -> None:
    result, run_dir = cli_run
    records = read_records(run_dir / "records.jsonl")
    failed = [r for r in records if r.status != "ok"]
    assert {(r.model, r.point, r.status) for r in failed} == {
        ("tiny-gpt2", f"lm_eval_task={UNCACHED}", "error"), ("tiny-mamba", f"lm_eval_task={UNCACHED}", "error")}
    message = failed[0].message
    assert "not available offline" in message and "ssmbench-tests/never-cached" in message
    assert "HF_DATASETS_OFFLINE=0" in message and f"load(['{UNCACHED}'])" in message
    assert "include_path=" in message
    assert result.exit_code == 1  # a failed point fails the run, after the others ran
    assert sum(r.status == "ok" for r in records) == 8


# --- (7) quality on random weights needs smoke_test ------------------------------------------------------

def test_random_weights_without_smoke_test_are_skipped(task_dir: Path, tmp_path: Path) -> None:
    from ssmbench.cli import app

    suite = tmp_path / "zs.yaml"
    suite.write_text(yaml.safe_dump(suite_data(task_dir, ["tiny-gpt2"], FIXTURE_TASKS, smoke_test=False)))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    (run_dir,) = (tmp_path / "out" / "zs-test").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert result.exit_code == 0
    assert [(r.status, r.point) for r in records] == [("skipped", f"lm_eval_task={t}") for t in FIXTURE_TASKS]
    assert "random weights measures nothing" in records[0].message and "smoke_test: true" in records[0].message
    assert "SMOKE TEST" not in (run_dir / "table.md").read_text()  # nothing was measured: no such note


def test_fused_backend_is_refused_with_the_reason(task_dir: Path) -> None:
    data = suite_data(task_dir, [{"name": "tiny-mamba", "backend": "mamba_ssm"}], FIXTURE_TASKS)
    job = build_plan(parse_suite(data), "cpu").jobs[0]
    with pytest.raises(JobError, match="zero_shot runs through transformers"):
        ZeroShotRunner(job, JobContext("test", "zs-test", task_dir / "artifacts")).setup()
