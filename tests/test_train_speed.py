"""Kind `train_speed`: the synthetic trainer's step rate beside a plain mamba_ssm loop, timed in windows of
steady-state steps. On the CPU the eager loop runs; the graphed and mamba_ssm loops say why they do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.records import read_records

SUITE = {"name": "speed", "defaults": {"device": "cpu"},
         "tasks": [{"kind": "train_speed", "architecture": {"mixer": "mamba", "d_model": 16}, "vocab_size": 8,
                    "batch_sizes": [2, 4], "seq_len": 16, "warmup_steps": 2, "steps": 4, "repeats": 3}]}


def test_the_eager_trainer_is_timed_in_windows_and_the_cuda_loops_say_why_not(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SUITE))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "speed").iterdir()
    records = read_records(run_dir / "records.jsonl")
    rates = {r.slice["batch"]: r for r in records if r.metric == "steps_per_s"}
    assert sorted(rates) == [2, 4]
    for rate in rates.values():
        assert rate.slice["loop"] == "ssmbench-eager" and rate.stats.n == 3 and rate.value == rate.stats.median > 0
        assert rate.kernel == "torch-chunked-scan" and rate.cuda_graphs is False and rate.dtype == "float32"
    (ms,) = [r for r in records if r.metric == "ms_per_step" and r.slice["batch"] == 2]
    assert ms.value == pytest.approx(1e3 / rates[2].value)  # of three windows, the median window either way
    skipped = {r.slice["loop"]: r.message for r in records if r.status == "skipped"}
    assert skipped == {"ssmbench-graphs": "CUDA graphs need CUDA", "mamba_ssm-plain": "the plain mamba_ssm loop needs CUDA"}
    table = (run_dir / "table.md").read_text()
    assert "### train_speed: training steps per second" in table
    assert "— mamba_ssm-plain: the plain mamba_ssm loop needs CUDA" in table


def test_packing_is_timed_against_the_same_models_one_after_another(tmp_path: Path):
    task = SUITE["tasks"][0] | {"batch_sizes": [2], "packs": [1, 3]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SUITE | {"tasks": [task]}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "speed").iterdir()
    records = read_records(run_dir / "records.jsonl")
    rates = {(r.slice["order"], r.slice["pack"]): r for r in records if r.metric == "aggregate_steps_per_s"}
    assert sorted(rates) == [("one-after-another", 1), ("one-after-another", 3), ("packed", 1), ("packed", 3)]
    for (_order, k), rate in rates.items():
        assert rate.stats.n == 3 and rate.value > 0 and rate.cuda_graphs is False and rate.slice["batch"] == 2
        assert rate.extra["seeds"] == list(range(k)) and "graph" not in rate.extra  # eager on the CPU
    assert not any("loop" in r.slice for r in records)  # packing instead of the loops
    table = (run_dir / "table.md").read_text()
    assert "### train_speed: packed training, aggregate steps per second (batch 2)" in table
    assert "packed ÷ one after another" in table and "wall time ÷ one model's" in table


def test_repeated_pack_sizes_are_refused(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SUITE | {"tasks": [SUITE["tasks"][0] | {"packs": [4, 4]}]}))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2 and "packs: give distinct pack sizes, got [4, 4]" in result.output
