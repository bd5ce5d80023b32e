"""MAD's protocol on the synthetic kind (issue 33): MAD's settings as job axes, each trained on its fixed
training set walked in seeded epochs and tested on its fixed test set, resumed exactly; MAD's tables (the
optimizer grid, the best per setting, the MAD score, the summary) from hand-made records; suites/mad.yaml's
plan and its toy version end to end through the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.data.mad import fixed_training_set
from ssmbench.data.mad_settings import mad_setting, training_steps
from ssmbench.data.synthetic import EpochWalk, ExamplePool
from ssmbench.errors import UserError
from ssmbench.kinds import all_kinds
from ssmbench.kinds.base import JobContext
from ssmbench.kinds.synthetic.runner import NOT_TESTED, SyntheticRunner
from ssmbench.plan import build_plan
from ssmbench.records import Record, read_records
from ssmbench.report import build_tables
from ssmbench.spec import load_suite, parse_suite
from ssmbench.train import train_pack

TOY = {"name": "recall", "task": "in_context_recall", "settings": ["baseline", "num_train_examples=800"],
       "architectures": {"attention": {"preset": "mad-attention", "d_model": 16, "n_heads": 2}},
       # 32 examples at batch 12: 8 steps over 3 epochs, batches running across the epochs' ends
       "train": {"epochs": 3, "examples": 32, "batch_size": 12, "lr": [1e-3], "weight_decay": [0.0, 0.1],
                 "optimizer": "adamw", "schedule": "cosine", "min_lr": 1e-6, "grad_clip": None, "eval_every": 4,
                 "eval_samples": 8},
       "eval_samples": 8, "eval_seed": 12345}


def suite(**task) -> dict:
    return {"name": "mad", "defaults": {"device": "cpu", "seed": 7}, "tasks": [{"kind": "synthetic", **task}]}


def runner(tmp_path: Path, job: int = 0, **changes) -> SyntheticRunner:
    """A built runner of the toy task's `job`-th job, its artifacts under tmp_path."""
    plan = build_plan(parse_suite(suite(**TOY | changes)), "cpu")
    made = SyntheticRunner(plan.jobs[job], JobContext("run", "mad", tmp_path / plan.jobs[job].id))
    made.setup()
    return made


# --- the suite entry ------------------------------------------------------------------------------------


def test_settings_are_job_axes_with_the_whole_optimizer_point():
    plan = build_plan(parse_suite(suite(**TOY)), "cpu")
    assert [j.id for j in plan.jobs] == [
        "recall/attention/setting=baseline/lr=0.001/weight_decay=0",
        "recall/attention/setting=baseline/lr=0.001/weight_decay=0.1",
        "recall/attention/setting=num_train_examples=800/lr=0.001/weight_decay=0",
        "recall/attention/setting=num_train_examples=800/lr=0.001/weight_decay=0.1"]
    assert [p.key for p in plan.jobs[0].points] == ["phase=train", "phase=eval"]


@pytest.mark.parametrize(("task", "message"), [
    ({"task": "mqar", "task_params": {"num_kv_pairs": 2}, "settings": "all"},
     "tasks[0].settings: mqar is not one of MAD's tasks"),
    ({"task": "in_context_recall", "settings": ["vocab=32"], "train": {"epochs": 2}},
     "tasks[0].settings: in_context_recall has no setting 'vocab=32' (did you mean 'vocab_size=32'"),
    ({"task": "in_context_recall", "settings": "all", "vocab_size": 32, "train": {"epochs": 2}},
     "tasks[0].vocab_size: each MAD setting brings its own vocabulary"),
    ({"task": "in_context_recall", "settings": "all", "train": {"epochs": 2, "seq_len": 64}},
     "tasks[0].train.seq_len: each MAD setting brings its own vocabulary"),
    ({"task": "in_context_recall", "settings": "all"},
     "tasks[0].train.epochs: MAD's settings train in epochs over their fixed training set"),
    ({"task": "compression", "architectures": {"m": {"preset": "mad-mamba"}}},
     "tasks[0].architectures.m.head: compression needs head: compression (MAD's auto-encoder)"),
    ({"task": "induction_heads", "train": {"epochs": 2}},
     "tasks[0].train.epochs: epochs are passes over a fixed training set"),
    ({"task": "in_context_recall", "settings": "all", "train": {"epochs": 2, "weight_decay": [0.1, 0.1]}},
     "tasks[0].train.weight_decay: give distinct weight decays"),
])
def test_bad_mad_entries_name_the_field(task: dict, message: str):
    with pytest.raises(UserError) as err:
        parse_suite(suite(**task), source="s.yaml")
    assert str(err.value).startswith(f"s.yaml: {message}")


def test_the_mad_suite_plans_every_setting_at_every_optimizer_point_for_four_architectures():
    suite_, _ = load_suite("suites/mad.yaml")
    plan = build_plan(suite_, "cuda")
    assert len(plan.jobs) == 66 * 6 * 4
    by_arch = Counter(j.variant for j in plan.jobs)
    assert by_arch == {name: 396 for name in ("mad-mamba", "mad-attention", "mad-hyena", "mad-hybrid")}
    task = plan.jobs[0].task
    assert {(j.axes["lr"], j.axes["weight_decay"]) for j in plan.jobs} == \
           {(lr, wd) for lr in (1e-4, 5e-4, 1e-3) for wd in (0.0, 0.1)}
    assert (task.train.batch_size, task.train.epochs, task.train.optimizer, task.train.schedule, task.train.min_lr,
            task.train.grad_clip, task.train.autocast, task.eval_samples, task.eval_seed) == \
           (128, 200, "adamw", "cosine", 1e-6, None, "bfloat16", 1280, 12345)
    compression = [j for j in plan.jobs if j.task.task == "compression"]
    assert {j.task.architectures[j.variant].head for j in compression} == {"compression"}
    # 200 epochs of 12,800 at batch 128 is MAD's 20,000 steps; of 800, 1,250 (MAD: 1,400, one batch short)
    baseline = mad_setting("in_context_recall", "baseline")
    assert task.steps_of("mad-mamba", baseline) == 20_000
    assert training_steps(800, 200, 128) == 1_250
    note = next(n for n in plan.notes if n.startswith("mad-recall: MAD"))
    assert "11 settings x 3 learning rates x 2 weight decays x 4 architectures = 264 trainings" in note
    assert "3,810,000 steps at most (1,250 to 20,000 each, batch 128)" in note


def test_the_nightly_suite_trains_mads_recall_baseline():
    plan = build_plan(load_suite("suites/nightly.yaml")[0], "cuda")
    (job,) = [j for j in plan.jobs if j.axes.get("setting")]
    assert job.task.task == "in_context_recall" and job.axes["setting"] == "baseline"


def test_mad_is_listed_among_the_suites():
    result = CliRunner().invoke(app, ["list", "suites"])
    assert result.exit_code == 0 and "MAD, Mechanistic Architecture Design" in result.output


# --- the fixed training set ------------------------------------------------------------------------------


def rows_of(pool: ExamplePool) -> dict[tuple[int, ...], int]:
    return {tuple(row.tolist()): i for i, row in enumerate(pool.inputs)}


def test_an_epoch_walk_shows_every_example_once_an_epoch_in_a_new_seeded_order():
    pool = ExamplePool(torch.arange(10)[:, None].repeat(1, 3), torch.arange(10)[:, None].repeat(1, 3))
    walk = EpochWalk(pool, batch=4, steps=5, seed=3)  # 20 examples: two epochs, a batch across their end
    seen = torch.cat([walk(None).inputs[:, 0] for _ in range(5)]).tolist()
    assert sorted(seen[:10]) == sorted(seen[10:]) == list(range(10)) and seen[:10] != seen[10:]
    again = EpochWalk(pool, batch=4, steps=5, seed=3)
    again.seek(3)
    assert again(None).inputs[:, 0].tolist() == seen[12:16]  # step 3's batch, whatever came before
    other = EpochWalk(pool, batch=4, steps=5, seed=4)
    assert torch.cat([other(None).inputs[:, 0] for _ in range(5)]).tolist() != seen


def test_a_mad_job_walks_its_settings_fixed_training_set_in_seeded_epochs(tmp_path: Path):
    made = runner(tmp_path)
    trainer = made._trainer(packed=False)
    walk = trainer.draw
    assert isinstance(walk, EpochWalk) and trainer.settings.steps == 8 and trainer.settings.examples == 32
    setting = dataclasses.replace(mad_setting("in_context_recall", "baseline"), num_train_examples=32)
    expected = fixed_training_set(setting, seed=12345)  # MAD's training layout: the next token everywhere
    assert torch.equal(walk.pool.inputs, expected.inputs) and torch.equal(walk.pool.targets, expected.targets)
    index = rows_of(walk.pool)
    drawn = [index[tuple(row.tolist())] for _ in range(8) for row in walk(None).inputs]
    epochs = [drawn[i:i + 32] for i in range(0, 96, 32)]
    assert all(sorted(epoch) == list(range(32)) for epoch in epochs)  # the same examples every epoch
    assert len({tuple(epoch) for epoch in epochs}) == 3  # each in its own order
    other = runner(tmp_path, job=1)._trainer(packed=False).draw  # weight decay 0.1: the same set, the same order
    assert other.pool is walk.pool and torch.equal(other.order, walk.order)


def test_a_mad_job_interrupted_mid_epoch_resumes_to_the_same_weights(tmp_path: Path):
    straight = runner(tmp_path / "straight")
    ((_, done),) = train_pack([straight._trainer(packed=False)], width=1)
    assert done.steps == 8 and done.resumed_at == []
    first = runner(tmp_path / "resumed")
    stopping = first._trainer(packed=False)
    stopping.on_step = lambda step: os.kill(os.getpid(), signal.SIGINT) if step == 3 else None  # mid-epoch
    with pytest.raises(KeyboardInterrupt):
        list(train_pack([stopping], width=1))
    again = runner(tmp_path / "resumed")
    ((_, resumed),) = train_pack([again._trainer(packed=False)], width=1)
    assert resumed.resumed_at == [3] and resumed.steps == 8
    for (name, a), b in zip(straight.model.module.state_dict().items(), again.model.module.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert [(log.step, log.loss) for log in resumed.curve] == [(log.step, log.loss) for log in done.curve]


# --- the tables, from hand-made records -----------------------------------------------------------------


def accuracy_record(task: str, generator: str, model: str, setting: str, lr: float, wd: float,
                value: float | None) -> Record:
    """A test point's accuracy record, or (value None) the skipped test of a run that diverged."""
    base = {"task": task, "kind": "synthetic", "model": model, "point": "phase=eval",
            "job": f"{task}/{model}/setting={setting}/lr={lr:g}/weight_decay={wd:g}",
            "slice": {"phase": "eval", "seq_len": 128, "synthetic_task": generator, "train_len": 128,
                      "mixer": "mamba", "setting": setting, "lr": lr, "weight_decay": wd},
            "extra": {"n_examples": 1280}}
    if value is None:
        return Record(**base, status="skipped", message=f"{NOT_TESTED} training diverged at step 100 (loss nan)")
    return Record(**base, metric="accuracy", value=value, unit="fraction", higher_is_better=True)


def hand_made() -> list[Record]:
    return [accuracy_record("recall", "in_context_recall", "m", "baseline", 1e-4, 0.0, 0.5),
            accuracy_record("recall", "in_context_recall", "m", "baseline", 1e-3, 0.1, 0.9),
            accuracy_record("recall", "in_context_recall", "m", "vocab_size=32", 1e-4, 0.0, 0.7),
            accuracy_record("recall", "in_context_recall", "m", "vocab_size=32", 1e-3, 0.1, None),
            accuracy_record("memo", "memorization", "m", "baseline", 1e-4, 0.0, 1.0),
            accuracy_record("memo", "memorization", "m", "baseline", 1e-3, 0.1, 0.25)]


def test_the_grid_the_best_and_the_mad_score_from_hand_made_records():
    tables = {t.title: t.frame for t in build_tables(hand_made(), all_kinds())}
    grid = tables["recall: MAD test accuracy by setting and optimizer point"]
    assert list(grid.columns) == ["model", "setting", "lr 0.0001, wd 0", "lr 0.001, wd 0.1", "best", "best at"]
    assert grid.values.tolist() == [
        ["m", "baseline", "50.0", "90.0", "90.0", "lr 0.001, wd 0.1"],
        ["m", "vocab_size=32", "70.0", "✗ (diverged)", "70.0", "lr 0.0001, wd 0"]]
    score = tables["recall: MAD score"]
    assert score.values.tolist() == [["m", "80.0", "2 of 11"]]  # (0.9 + 0.7) / 2
    summary = tables["MAD scores by task (Poli et al. 2024's protocol)"]
    assert list(summary.columns) == ["model", "recall", "memo", "mean"]  # MAD's task order
    assert summary.values.tolist() == [["m", "80.0", "100.0", "90.0"]]


def test_a_plot_per_changed_variable_of_best_accuracy_against_its_value(tmp_path: Path):
    from ssmbench.kinds.synthetic.mad_views import difficulty_plots
    from ssmbench.report.tables import records_frame

    frame = records_frame([r for r in hand_made() if r.task == "recall"])
    (path,) = difficulty_plots("recall", frame, tmp_path)
    assert path.name == "recall_accuracy_by_vocab_size.png" and path.is_file()
    spec = json.loads(path.with_suffix(".plot.json").read_text())
    (line,) = spec["lines"]
    assert (line["x"], line["y"]) == ([16, 32], [90.0, 70.0])  # the baseline's vocabulary is 16


# --- the toy suite, end to end ---------------------------------------------------------------------------


def test_the_toy_mad_suite_runs_end_to_end_and_reports_mads_tables(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", "suites/mad.yaml", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "mad").iterdir()
    records = read_records(run_dir / "records.jsonl")
    steps = [r for r in records if r.metric == "train_steps"]
    assert len(steps) == 6 * 2 * 2 and {r.extra["epochs"] for r in steps} == {2}
    assert {r.extra["train_examples"] for r in steps} == {32}
    tables = {t.title: t.frame for t in build_tables(records, all_kinds())}
    names = ["mad-recall", "mad-noisy-recall", "mad-fuzzy-recall", "mad-memorization", "mad-compression",
             "mad-selective-copying"]
    for name in names:
        grid = tables[f"{name}: MAD test accuracy by setting and optimizer point"]
        assert list(grid.columns) == ["model", "setting", "lr 0.001, wd 0", "lr 0.001, wd 0.1", "best", "best at"]
        assert list(grid["model"]) == ["mamba", "attention"] and set(grid["setting"]) == {"baseline"}
        assert tables[f"{name}: MAD score"]["settings"].str.startswith("1 of ").all()
    summary = tables["MAD scores by task (Poli et al. 2024's protocol)"]
    assert list(summary.columns) == ["model", *names, "mean"] and len(summary) == 2
    assert "Synthetic tasks: accuracy at the training length (Table 1 layout)" not in tables
    assert (run_dir / "table.md").is_file()


def test_the_training_table_of_settings_at_several_lengths_names_no_single_length():
    def trained(setting: str, length: int, metric: str, value: float) -> Record:
        return Record(task="recall", kind="synthetic", model="m", point="phase=train", metric=metric, value=value,
                      job=f"recall/m/setting={setting}/lr=0.001/weight_decay=0", extra={"outcome": "trained every step"},
                      slice={"phase": "train", "synthetic_task": "in_context_recall", "train_len": length,
                             "mixer": "mamba", "setting": setting, "lr": 1e-3, "weight_decay": 0.0})

    records = [trained(s, n, metric, value) for s, n in (("baseline", 128), ("seq_len=256", 256))
               for metric, value in (("train_steps", 100), ("train_accuracy", 0.5))]
    (table,) = [t.frame for t in build_tables(records, all_kinds()) if t.title == "recall: training"]
    assert "validation acc at the training length (%)" in table.columns and len(table) == 2
