"""The embedded default suite (suites/smoke.yaml): what it plans on the CPU, and its dry run through the CLI.
The suite itself takes minutes; it is not run here."""

from __future__ import annotations

import pytest
from conftest import REPO
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.plan import Plan, build_plan
from ssmbench.spec import load_suite

SMOKE = REPO / "suites" / "smoke.yaml"
TINY = ["tiny-gpt2", "tiny-pythia", "tiny-mamba", "tiny-falcon-h1"]


@pytest.fixture(scope="module")
def plan() -> Plan:
    suite, _ = load_suite(SMOKE)
    return build_plan(suite, "cpu")


def test_smoke_jobs(plan: Plan):
    assert plan.device == "cpu" and plan.suite_name == "smoke"
    assert [j.id for j in plan.jobs] == [
        *(f"throughput-tiny/{m}" for m in TINY),
        "throughput-full-size/gpt2", "throughput-full-size/mamba-130m",
        *(f"memory-tiny/{m}" for m in TINY),
        "induction-tiny/mamba", "induction-tiny/mha-rope",
        "phonebook-tiny/tiny-gpt2", "phonebook-tiny/tiny-mamba",
    ]
    assert [j.kind for j in plan.jobs] == ["throughput"] * 6 + ["memory"] * 4 + ["synthetic"] * 2 + ["phonebook"] * 2
    assert plan.n_points == 4 * 4 + 2 * 1 + 4 * 4 + 2 * (1 + 3) + 2 * (2 * 2 * 2) == 58


def test_smoke_runs_offline_on_random_weights_in_float32(plan: Plan):
    for job in plan.jobs:
        if job.kind == "synthetic":  # small models trained from scratch in the run: no zoo model, no weights
            assert job.model is None and job.variant in ("mamba", "mha-rope") and job.device == "cpu"
            continue
        assert job.model is not None and job.device == "cpu" and job.seed == 0
        assert (job.model.weights, job.model.dtype, job.model.device) == ("random", "float32", "cpu")
        assert job.skip_reason is None
        if job.model.spec.family in ("ssm", "hybrid"):
            assert job.backend_note and "fused Mamba kernels unavailable (on CPU)" in job.backend_note
        else:
            assert job.backend_note is None


def test_smoke_points(plan: Plan):
    jobs = {j.id: j for j in plan.jobs}
    for model in TINY:
        assert [p.key for p in jobs[f"throughput-tiny/{model}"].points] == [
            f"batch={b},prompt_len={p},cuda_graphs=off,impl=ssmbench" for b in (1, 4) for p in (32, 128)]
        assert [p.key for p in jobs[f"memory-tiny/{model}"].points] == [
            f"mode=inference,batch={b},prompt_len={p}" for b in (1, 4) for p in (64, 256)]
    for model in ("gpt2", "mamba-130m"):
        (only,) = jobs[f"throughput-full-size/{model}"].points
        assert only.params == {"batch": 1, "prompt_len": 64, "cuda_graphs": False, "impl": "ssmbench"}
    # The full-size models are the real architectures, not tiny stand-ins.
    assert jobs["throughput-full-size/gpt2"].model.spec.config["n_layer"] == 12
    assert jobs["throughput-full-size/mamba-130m"].model.spec.config["num_hidden_layers"] == 24
    # Every length fits GPT-2's position table: nothing will be skipped.
    for job in (j for j in plan.jobs if j.kind in ("throughput", "memory")):
        limit = job.model.spec.max_positions
        for p in job.points:
            new = job.task.new_tokens
            assert limit is None or p.params["prompt_len"] + new <= limit


def test_smoke_dry_run_through_the_cli(tmp_path):
    result = CliRunner().invoke(app, ["run", str(SMOKE), "--tasks", "throughput-tiny", "--dry-run",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "smoke: 4 jobs, 16 points on cpu" in out
    for model in TINY:
        assert f"throughput-tiny/{model}" in out
    assert "throughput-full-size" not in out and "memory-tiny" not in out
    assert "batch=1,prompt_len=32,cuda_graphs=off,impl=ssmbench" in out
    assert "tiny-mamba: fused Mamba kernels unavailable" in out
    assert "random" in out and "…" in out  # 4 points: the sweep shows three and an ellipsis
    assert not (tmp_path / "out").exists()


def test_smoke_by_name_is_the_packaged_suite(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "smoke", "--dry-run", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "smoke: 14 jobs, 58 points on cpu" in result.stdout
    assert not (tmp_path / "out").exists()
