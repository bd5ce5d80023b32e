"""lm-eval fixture tasks shared by the CPU tests and the GPU smoke test: small JSONL files in the shapes
of LAMBADA (a passage whose last word is the target) and of ARC (a question, choices, the gold label), and
a task whose hub dataset exists nowhere, standing for a dataset that was never cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parent / "fixtures" / "zero_shot"
LIMIT = 6  # of 12 examples per fixture: exercises `limit` and keeps the file fast
FIXTURE_TASKS = ["fixture_lambada", "fixture_arc"]
UNCACHED = "fixture_uncached"


def _task_yaml(name: str, dataset: dict, body: dict) -> dict:
    return {"task": name, **dataset, "test_split": "test", **body, "metadata": {"version": 1.0}}


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lm-eval task YAMLs for the fixtures. Written here because lm-eval reads `data_files` relative to the
    working directory, not to the YAML, so the paths must be absolute; the datasets cache goes to tmp too."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    cache = str(root / "datasets-cache")

    def local(file: str) -> dict:
        return {"dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(DATA / file)}, "cache_dir": cache}}

    tasks = {
        "fixture_lambada": _task_yaml("fixture_lambada", local("lambada_like.jsonl"), {
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}),
        "fixture_arc": _task_yaml("fixture_arc", local("arc_like.jsonl"), {
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{choices.label.index(answerKey)}}",
            "doc_to_choice": "{{choices.text}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}),
        UNCACHED: _task_yaml(UNCACHED, {"dataset_path": "ssmbench-tests/never-cached"}, {
            "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_target": 0,
            "doc_to_choice": ["a", "b"],
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}),
    }
    for name, config in tasks.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def suite_data(task_dir: Path, models: list[str | dict], tasks: list[str], smoke_test: bool = True) -> dict:
    return {"name": "zs-test", "smoke_test": smoke_test,
            "defaults": {"device": "cpu", "dtype": "float32", "weights": "random"},
            "models": models,
            "tasks": [{"kind": "zero_shot", "name": "zero-shot", "tasks": tasks, "include_path": str(task_dir),
                       "limit": LIMIT, "batch_size": 4}]}
