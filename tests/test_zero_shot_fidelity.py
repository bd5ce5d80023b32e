"""Zero-shot fidelity: the flag's tolerance, the few-shot count used, per-document samples and the
disagreement view, lm-eval's request cache, seeds and model arguments, custom tasks named like built-ins,
and `--limit` on the command line. Offline, on the CPU, with tiny random models and fixture tasks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml
from lm_eval_fixtures import DATA, suite_data  # noqa: E402 (fixture `task_dir` too)
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.errors import UserError
from ssmbench.kinds import all_kinds
from ssmbench.kinds.base import JobContext
from ssmbench.kinds.zero_shot.runner import ZeroShotRunner
from ssmbench.kinds.zero_shot.samples import answer, p_target
from ssmbench.plan import apply_overrides, build_plan
from ssmbench.records import Record
from ssmbench.reference import PAPER, zero_shot_sources
from ssmbench.report import build_tables
from ssmbench.spec import parse_suite
from ssmbench.zoo import MODELS

ARC = {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
       "doc_to_target": "{{choices.label.index(answerKey)}}", "doc_to_choice": "{{choices.text}}",
       "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
       "metadata": {"version": 1.0}}


@pytest.fixture(scope="module")
def own_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A task whose YAML asks for 2 examples, and one named `piqa` (lm-eval ships a `piqa`): both ARC-shaped."""
    root = tmp_path_factory.mktemp("own_tasks")
    data = {"dataset_path": "json", "test_split": "test", "fewshot_split": "test",
            "dataset_kwargs": {"data_files": {"test": str(DATA / "arc_like.jsonl")},
                               "cache_dir": str(root / "datasets-cache")}}
    for name, extra in (("two_shot_arc", {"num_fewshot": 2}), ("piqa", {})):
        (root / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **data, **ARC, **extra}))
    return root


def runner_for(task_dir: Path, artifacts: Path, model: str = "tiny-gpt2", seed: int = 0,
               **settings) -> ZeroShotRunner:
    data = suite_data(task_dir, [model], settings.pop("tasks"))
    data["defaults"]["seed"] = seed
    data["tasks"][0] |= {"limit": 4} | settings
    suite = parse_suite(data)
    job = build_plan(suite, "cpu").jobs[0]
    return ZeroShotRunner(job, JobContext("test", suite.name, artifacts))


def measure_all(runner: ZeroShotRunner) -> list[Record]:
    runner.setup()
    try:
        return [r for pt in runner.job.points for r in runner.measure(pt)]
    finally:
        runner.teardown()


# --- num_fewshot: null is the task's own default, and the count used is recorded -------------------------

def test_num_fewshot_null_takes_the_tasks_default_and_records_it(own_tasks: Path, tmp_path: Path) -> None:
    default = measure_all(runner_for(own_tasks, tmp_path / "a", tasks=["two_shot_arc"], num_fewshot=None))
    forced = measure_all(runner_for(own_tasks, tmp_path / "b", tasks=["two_shot_arc"]))
    assert {r.slice["num_fewshot"] for r in default} == {2}
    assert {r.extra["num_fewshot_asked"] for r in default} == {None}
    assert {r.slice["num_fewshot"] for r in forced} == {0}  # the paper's setting, the default, overrides it


# --- custom tasks named like built-ins -------------------------------------------------------------------

def test_a_custom_piqa_is_marked_and_kept_out_of_the_paper_table(own_tasks: Path, tmp_path: Path) -> None:
    records = measure_all(runner_for(own_tasks, tmp_path, tasks=["piqa"]))
    assert all(r.slice["custom"] is True and r.extra["shadows_builtin"] is True for r in records)
    assert {r.metric for r in records} == {"acc"}  # every metric the task returns, not the paper's choice
    tables = build_tables(records, all_kinds())
    assert not any("Table 3" in t.title or "slides" in t.title for t in tables)
    other = next(t for t in tables if "other lm-eval tasks" in t.title)
    assert list(other.frame["lm-eval task"]) == ["piqa (custom)"]
    assert any("piqa (custom): the suite's own task (include_path), named like lm-eval's built-in piqa; not "
               "compared with the paper" in n for n in other.notes)


def test_a_few_shot_paper_task_is_not_set_beside_the_paper() -> None:
    records = [zs_record("mamba-130m", "hellaswag", "acc_norm", 0.353, num_fewshot=5),
               zs_record("mamba-130m", "piqa", "acc", 0.645)]
    tables = build_tables(records, all_kinds())
    paper = next(t for t in tables if "Table 3" in t.title)
    assert "HellaSwag" not in paper.frame.columns and "PIQA" in paper.frame.columns
    other = next(t for t in tables if "other" in t.title)
    assert list(other.frame["lm-eval task"]) == ["hellaswag (5-shot)"]
    assert any("hellaswag (5-shot): the paper's figures are zero-shot; not compared" in n for n in other.notes)


# --- the tolerance -----------------------------------------------------------------------------------------

def zs_record(model: str, task: str, metric: str, value: float, stderr: float = 0.011, limit: float | None = None,
              tolerance: float | None = None, num_fewshot: int = 0) -> Record:
    extra = {"checkpoint": MODELS[model].hf_id, "weights_sha256": "00"}
    if tolerance is not None:
        extra["tolerance_pts"] = tolerance
    return Record(task="zero-shot", kind="zero_shot", job=f"zero-shot/{model}", point=f"lm_eval_task={task}",
                  model=model, family="ssm", metric=metric, value=value, stderr=stderr, unit="fraction",
                  weights="pretrained", dtype="float16", kernel="hf-mamba_ssm-kernels",
                  slice={"lm_eval_task": task, "num_fewshot": num_fewshot, "limit": limit,
                         "batch_size": "auto (max 64)", "lm_eval": "0.4.13", "n_samples": 1838}, extra=extra)


def paper_delta(records: list[Record]) -> tuple[dict, list[str]]:
    table = next(t for t in build_tables(records, all_kinds()) if "Table 3" in t.title)
    return table.frame.iloc[2].to_dict(), table.notes


@pytest.mark.parametrize(("piqa", "tolerance", "limit", "shown"), [
    (0.645 + 0.004, None, None, "+0.4"),  # full set, within 0.5 points
    (0.645 + 0.006, None, None, "+0.6 ⚠"),  # beyond 0.5 points, though well within two stderr (2.2 points)
    (0.645 + 0.021, None, 100, "+2.1"),  # a subset: within two stderr (2 x 1.1 points)
    (0.645 + 0.023, None, 100, "+2.3 ⚠"),
    (0.645 + 0.006, 1.0, None, "+0.6"),  # the suite's own tolerance
])
def test_full_sets_are_flagged_on_the_tolerance_subsets_on_stderr(piqa: float, tolerance: float | None,
                                                                    limit: float | None, shown: str) -> None:
    delta, notes = paper_delta([zs_record("mamba-130m", "piqa", "acc", piqa, limit=limit, tolerance=tolerance)])
    assert delta["figures"] == "Δ" and delta["PIQA"] == shown
    rule = (f"full evaluation sets: ⚠ = |Δ| > {tolerance or 0.5:g} points" if limit is None
            else "subsets (`limit`): ⚠ = |Δ| beyond two standard errors")
    assert any(rule in n for n in notes)


def test_a_perplexity_is_held_to_the_tolerance_in_percent() -> None:
    ppl = zero_shot_sources()[PAPER].row_for("mamba-130m").figures["lambada_ppl"]  # 16.07
    close = zs_record("mamba-130m", "lambada_openai", "perplexity", ppl * 1.004, stderr=0.5)
    far = zs_record("mamba-370m", "lambada_openai", "perplexity", 8.14 * 1.006, stderr=0.5)
    far.extra["checkpoint"] = MODELS["mamba-370m"].hf_id
    table = next(t for t in build_tables([close, far], all_kinds()) if "Table 3" in t.title)
    deltas = table.frame[table.frame["figures"] == "Δ"]["LAMBADA ppl"].tolist()
    assert not deltas[0].endswith("⚠") and deltas[1].endswith("⚠")


# --- per-document samples and the disagreement view --------------------------------------------------------

@pytest.fixture(scope="module")
def logged_run(task_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("logged")
    data = suite_data(task_dir, ["tiny-gpt2", "tiny-mamba"], ["fixture_arc"])
    data["tasks"][0] |= {"log_samples": True, "limit": 6}
    (tmp / "zs.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(tmp / "zs.yaml"), "--out", str(tmp / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "out" / "zs-test").iterdir()
    return run_dir


def test_samples_are_lm_evals_per_document_records_compressed(logged_run: Path) -> None:
    path = logged_run / "artifacts" / "zero-shot" / "tiny-gpt2" / "samples" / "fixture_arc.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    assert len(samples) == 6 and {s["doc_id"] for s in samples} == set(range(6))
    assert all({"doc", "target", "arguments", "filtered_resps", "acc"} <= s.keys() for s in samples)
    # The document's accuracy is lm-eval's: right when the gold choice has the highest log-likelihood.
    for s in samples:
        lls = [r[0] for r in s["filtered_resps"]]
        assert s["acc"] == float(lls.index(max(lls)) == int(s["target"]))


def test_the_disagreement_view_ranks_documents_by_what_differs(logged_run: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(logged_run), "--disagreements", "fixture_arc", "--top", "3"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fixture_arc: documents where tiny-gpt2 and tiny-mamba disagree most" in out
    assert "differ in accuracy on" in out and "of 6 documents both logged" in out
    rows = [line for line in out.splitlines() if line.startswith("|") and ("✓" in line or "✗" in line)]
    assert len(rows) == 3


def test_the_disagreement_view_says_what_is_missing(logged_run: Path, cli_run_without_samples: Path) -> None:
    wrong = CliRunner().invoke(app, ["report", str(logged_run), "--disagreements", "fixture_arc",
                                     "--models", "tiny-gpt2,gpt2"])
    assert wrong.exit_code == 2 and "no logged samples of 'fixture_arc' for gpt2" in wrong.output
    none = CliRunner().invoke(app, ["report", str(cli_run_without_samples), "--disagreements", "fixture_arc"])
    assert none.exit_code == 2 and "set `log_samples: true`" in none.output


@pytest.fixture(scope="module")
def cli_run_without_samples(task_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plain")
    data = suite_data(task_dir, ["tiny-gpt2"], ["fixture_arc"])
    (tmp / "zs.yaml").write_text(yaml.safe_dump(data))
    assert CliRunner().invoke(app, ["run", str(tmp / "zs.yaml"), "--out", str(tmp / "out")]).exit_code == 0
    (run_dir,) = (tmp / "out" / "zs-test").iterdir()
    return run_dir


def test_target_probability_of_both_request_shapes() -> None:
    assert p_target([[-1.0, False], [-1.0, False]], 1, multiple_choice=True) == pytest.approx(0.5)
    assert p_target([[-2.0, True]], None, multiple_choice=False) == pytest.approx(0.1353, abs=1e-4)
    lambada = {"doc_id": 0, "target": " dog", "arguments": [["The cat chased the", " dog"]],
               "filtered_resps": [[-0.5, True]], "acc": 1.0}
    got = answer(lambada)
    assert (got.correct, got.target, got.prompt) == (1.0, " dog", "The cat chased the")


# --- lm-eval's request cache: a repeated run does no forward pass ----------------------------------------

def test_the_request_cache_answers_a_repeated_run_without_the_model(task_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_setup = ZeroShotRunner.setup

    def counting_setup(self: ZeroShotRunner) -> None:
        real_setup(self)
        forward = self.model.module.forward

        def counted(*args, **kwargs):
            calls["n"] += 1
            return forward(*args, **kwargs)

        self.model.module.forward = counted

    monkeypatch.setattr(ZeroShotRunner, "setup", counting_setup)
    first = measure_all(runner_for(task_dir, tmp_path, tasks=["fixture_arc"]))
    assert calls["n"] > 0
    calls["n"] = 0
    again = measure_all(runner_for(task_dir, tmp_path, tasks=["fixture_arc"]))
    assert calls["n"] == 0
    assert [(r.metric, r.value) for r in again] == [(r.metric, r.value) for r in first]
    assert len(list(tmp_path.glob("lm_eval_cache-*_rank0.db"))) == 1
    # Other weights (another seed's random init) do not read that cache: its answers are not theirs.
    measure_all(runner_for(task_dir, tmp_path, seed=7, tasks=["fixture_arc"]))
    assert calls["n"] > 0 and len(list(tmp_path.glob("lm_eval_cache-*_rank0.db"))) == 2


# --- seeds and model arguments -----------------------------------------------------------------------------

def test_seeds_and_model_args_reach_lm_eval(task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval

    seen: dict = {}
    real = lm_eval.simple_evaluate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    runner = runner_for(task_dir, tmp_path, seed=11, tasks=["fixture_arc"], model_args={"max_length": 48})
    runner.setup()
    try:
        assert runner.lm.max_length == 48
        records = runner.measure(runner.job.points[0])
    finally:
        runner.teardown()
    seeds = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")
    assert {k: seen[k] for k in seeds} == dict.fromkeys(seeds, 11)
    assert all(r.extra["model_args"] == {"max_length": 48} and r.extra["seed"] == 11 for r in records)


@pytest.mark.parametrize(("model_args", "message"), [
    ({"max_lenght": 10}, "max_lenght"),
    ({"max_length": 0}, "max_length"),
    ({"trust_remote_code": "sometimes"}, "trust_remote_code"),
])
def test_model_args_are_validated(task_dir: Path, model_args: dict, message: str) -> None:
    data = suite_data(task_dir, ["tiny-gpt2"], ["fixture_arc"])
    data["tasks"][0]["model_args"] = model_args
    with pytest.raises(UserError, match=message):
        parse_suite(data)


# --- --limit on the command line ---------------------------------------------------------------------------

def test_limit_overrides_the_suite_and_its_cpu_setting(task_dir: Path) -> None:
    data = suite_data(task_dir, ["tiny-gpt2"], ["fixture_arc"])
    data["tasks"][0] |= {"limit": None, "on_cpu": {"limit": 100, "because": "slow"}}
    suite = apply_overrides(parse_suite(data), limit=3)
    (job,) = build_plan(suite, "cpu").jobs
    assert job.task.limit == 3


def test_the_plan_warns_of_full_sets_on_a_cpu(task_dir: Path) -> None:
    data = suite_data(task_dir, ["tiny-gpt2"], ["fixture_arc"])
    data["tasks"][0]["limit"] = None
    notes = build_plan(parse_suite(data), "cpu").notes
    assert any("full evaluation sets" in n and "hours on a CPU" in n and "--limit N" in n for n in notes)
    limited = build_plan(apply_overrides(parse_suite(data), limit=5), "cpu").notes
    assert limited == ["zero-shot: 5 documents per lm-eval task: a subset, flagged against the paper by "
                       "standard error, not by the full-set tolerance"]


def test_compare_and_run_take_limit(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "gpt2", "mamba-130m", "--device", "cpu",
                                      "--limit", "7", "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "zero-shot: 7 documents per lm-eval task: a subset" in " ".join(result.output.split())
    no_zero_shot = CliRunner().invoke(app, ["run", "smoke", "--tasks", "throughput-tiny", "--limit", "5",
                                            "--dry-run", "--out", str(tmp_path)])
    assert no_zero_shot.exit_code == 2 and "--limit: suite 'smoke' has no zero_shot task" in no_zero_shot.output
