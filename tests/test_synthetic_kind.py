"""Kind `synthetic`: the suite entry, a short training run on the CPU that learns, resume without
retraining, and the paper-layout tables (✓, ✗ with the reason, the paper's rows and Δ)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import ssmbench.train
from ssmbench.cli import app
from ssmbench.data import synthetic as data
from ssmbench.errors import UserError
from ssmbench.kinds import all_kinds
from ssmbench.kinds.synthetic.runner import CANNOT_RUN, COLLAPSED
from ssmbench.kinds.synthetic.task import TASK_PARAMS
from ssmbench.records import Record, read_records
from ssmbench.report import build_tables
from ssmbench.spec import parse_suite

# --- the suite entry ------------------------------------------------------------------------------------


def test_task_params_match_the_generators():
    common = {"batch", "seq_len", "generator", "device", "vocab_size"}
    for task, params in TASK_PARAMS.items():
        assert set(inspect.signature(data.GENERATORS[task]).parameters) - common == params, task


def suite(**task) -> dict:
    return {"name": "syn", "defaults": {"device": "cpu"},
            "tasks": [{"kind": "synthetic", **task}]}


@pytest.mark.parametrize(("task", "message"), [
    ({"architectures": {"m": {"mixer": "mamab"}}},
     "tasks[0].architectures.m.mixer: unknown mixer 'mamab' (did you mean 'mamba' or 'mha-abs'?); mixers: "
     "mamba, mha-abs, mha-rope"),
    ({"task": "selective_copying", "task_params": {"n_memorise": 8}},
     "tasks[0].task_params: selective_copying has no parameter 'n_memorise' (did you mean 'n_memorize'?)"),
    ({"task": "mqar"}, "tasks[0].task_params: mqar needs num_kv_pairs"),
    ({"architectures": {}}, "tasks[0].architectures: name at least one model to train"),
    ({"train": {"stpes": 10}}, "tasks[0].train.stpes: unknown key 'stpes' (did you mean 'steps'?)"),
])
def test_bad_entries_name_the_field(task: dict, message: str):
    with pytest.raises(UserError) as err:
        parse_suite(suite(**task), source="s.yaml")
    assert str(err.value).startswith(f"s.yaml: {message}")


def test_one_job_per_architecture_with_train_then_test_points():
    from ssmbench.plan import build_plan

    parsed = parse_suite(suite(architectures={"mamba": {"mixer": "mamba"}, "rope": {"mixer": "mha-rope"}},
                               eval_lengths=[16, 64]))
    plan = build_plan(parsed, "cpu")
    assert [(j.id, j.variant, j.model) for j in plan.jobs] == [("synthetic/mamba", "mamba", None),
                                                                ("synthetic/rope", "rope", None)]
    assert [p.key for p in plan.jobs[0].points] == ["phase=train", "phase=eval,seq_len=16", "phase=eval,seq_len=64"]


def test_samples_shrink_with_length_within_the_token_budget():
    task = parse_suite(suite(eval_samples=64, eval_tokens=2**12, eval_min_samples=2, eval_batch_tokens=2**10)).tasks[0]
    assert [task.samples_at(n) for n in (16, 64, 256, 4096)] == [64, 64, 16, 2]
    assert [task.batch_at(n) for n in (16, 64, 256, 4096)] == [64, 16, 4, 1]


# --- a short CPU run ------------------------------------------------------------------------------------

CPU_TASK = {
    "name": "ih", "task": "induction_heads", "vocab_size": 8,
    "architectures": {"mamba": {"mixer": "mamba", "d_model": 32},
                      "abs-learned": {"mixer": "mha-abs", "d_model": 32, "n_heads": 2,
                                      "abs_positions": "learned"}},
    "train": {"steps": 150, "batch_size": 32, "seq_len": 16, "lr": 3e-3, "eval_every": 50, "eval_samples": 128},
    "eval_lengths": [16, 32], "eval_samples": 64,
}


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    (out / "s.yaml").write_text(yaml.safe_dump(suite(**CPU_TASK)))
    result = CliRunner().invoke(app, ["run", str(out / "s.yaml"), "--out", str(out / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs" / "syn").iterdir()
    return run_dir


def test_training_lowers_the_loss_and_beats_chance(cpu_run: Path):
    records = read_records(cpu_run / "records.jsonl")
    for model in ("mamba", "abs-learned"):
        curve = [r for r in records if r.model == model and r.metric == "loss" and "step" in r.slice]
        assert [r.slice["step"] for r in curve] == [50, 100, 150]
        assert curve[-1].value < curve[0].value
    (mamba_16,) = [r for r in records if r.model == "mamba" and r.metric == "accuracy" and r.slice.get("seq_len") == 16]
    assert mamba_16.value > 2 / 7  # chance is 1/7: seven ordinary tokens to recall from
    assert mamba_16.kernel == "torch-chunked-scan" and mamba_16.family == "ssm"
    p = mamba_16.value
    assert mamba_16.extra["n_examples"] == 64 and mamba_16.stderr == pytest.approx((p * (1 - p) / 64) ** 0.5)
    train = {r.metric: r for r in records if r.model == "mamba" and r.slice["phase"] == "train" and "step" not in r.slice}
    assert train["train_steps"].value == 150 and train["steps_per_s"].value > 0
    assert train["train_tok_s"].value == pytest.approx(train["steps_per_s"].value * 32 * 16)
    assert (cpu_run / "artifacts" / "ih" / "mamba" / "model.pt").is_file()


def test_a_learned_position_table_cannot_run_longer_inputs(cpu_run: Path):
    records = read_records(cpu_run / "records.jsonl")
    (too_long,) = [r for r in records if r.model == "abs-learned" and r.slice.get("seq_len") == 32]
    assert too_long.status == "skipped" and too_long.message.startswith(CANNOT_RUN)
    table = (cpu_run / "table.md").read_text()
    assert "✗ (positions)" in table and "### ih: accuracy by test length (induction_heads)" in table
    assert {p.name for p in cpu_run.glob("*.png")} >= {"ih_accuracy_by_length.png", "ih_training_loss.png"}


def test_resume_tests_without_retraining(cpu_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    run_dir = Path(shutil.copytree(cpu_run, tmp_path / "run"))
    records = read_records(run_dir / "records.jsonl")
    kept = [r for r in records if r.slice["phase"] == "train"]  # stopped after training, before any test
    (run_dir / "records.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in kept))

    def no_training(*args, **kwargs):
        raise AssertionError("retrained on resume")

    monkeypatch.setattr(ssmbench.train, "train", no_training)
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    again = read_records(run_dir / "records.jsonl")
    before = {(r.model, r.metric, r.slice.get("seq_len")): r.value for r in records if r.slice["phase"] == "eval"}
    after = {(r.model, r.metric, r.slice.get("seq_len")): r.value for r in again if r.slice["phase"] == "eval"}
    assert after == before  # the saved weights, tested on the same held-out examples


# --- tables ---------------------------------------------------------------------------------------------


def rec(model: str, length: int, value: float | None, status: str = "ok", message: str | None = None,
        mixer: str = "mamba") -> Record:
    return Record(task="ih", kind="synthetic", job=f"ih/{model}", point=f"phase=eval,seq_len={length}",
                  model=model, metric="accuracy" if status == "ok" else None, value=value, status=status,
                  message=message, slice={"phase": "eval", "seq_len": length, "synthetic_task": "induction_heads",
                                          "train_len": 256, "mixer": mixer})


def test_the_length_table_in_the_paper_layout():
    records = [rec("mamba", 256, 1.0), rec("mamba", 512, 0.996), rec("mamba", 2**20, None, "oom", "out of memory"),
               rec("abs", 256, 1.0, mixer="mha-abs"),
               rec("abs", 512, None, "skipped", f"{CANNOT_RUN} L=512 is beyond the learned table", mixer="mha-abs"),
               rec("abs", 2**20, None, "skipped", "not run: above max_eval_len", mixer="mha-abs")]
    (models, table) = build_tables(records, all_kinds())  # no training records, one task: no more tables
    rows = table.frame.set_index("model")
    assert list(rows.columns) == ["2^8", "2^9", "2^20"]
    assert list(rows.loc["mamba"]) == ["✓", "99.6", "✗ (OOM)"]
    assert list(rows.loc["paper: Mamba"])[:2] == ["100.0", "✓"] and rows.loc["paper: Mamba"].iloc[2] == "✓"
    assert list(table.frame["model"]) == ["mamba", "paper: Mamba", "Δ", "abs", "paper: MHA-Abs", "Δ"]
    deltas = table.frame[table.frame["model"] == "Δ"].to_dict("records")
    assert (deltas[0]["2^8"], deltas[0]["2^9"], deltas[0]["2^20"]) == ("+0.0", "-0.4", "")
    assert list(rows.loc["abs"]) == ["✓", "✗ (positions)", "—"]
    assert list(rows.loc["paper: MHA-Abs"]) == ["100.0", "58.6", "✗ (OOM)"]
    assert any("Table 11" in n for n in table.notes)


def test_the_summary_across_tasks_in_table_1_layout():
    copying = [r.model_copy(update={"task": "sc", "job": f"sc/{r.model}",
                                    "slice": r.slice | {"synthetic_task": "selective_copying", "train_len": 512}})
               for r in (rec("mamba", 512, 0.97), rec("abs", 512, 0.412, mixer="mha-abs"))]
    records = [rec("mamba", 256, 1.0), rec("abs", 256, 0.5, mixer="mha-abs"), *copying]
    summary = build_tables(records, all_kinds())[-1]
    assert summary.title == "Synthetic tasks: accuracy at the training length (Table 1 layout)"
    assert summary.frame.to_dict("records") == [
        {"model": "mamba", "ih": "✓", "sc": "97.0", "paper (Table 1, selective copying)": "99.8"},
        {"model": "abs", "ih": "50.0", "sc": "41.2", "paper (Table 1, selective copying)": ""}]
    # Without a selective-copying task, Table 1's figure has nothing to stand beside: no paper column.
    mqar = [r.model_copy(update={"task": "mq", "job": f"mq/{r.model}", "slice": r.slice | {"synthetic_task": "mqar"}})
            for r in (rec("mamba", 256, 0.5), rec("abs", 256, 0.9, mixer="mha-abs"))]
    summary = build_tables([rec("mamba", 256, 1.0), rec("abs", 256, 0.5, mixer="mha-abs"), *mqar], all_kinds())[-1]
    assert list(summary.frame.columns) == ["model", "ih", "mq"] and len(summary.notes) == 1


# --- seeds and learning-rate sweeps ---------------------------------------------------------------------


def test_seeds_and_learning_rates_are_sweep_axes_with_a_job_each():
    from ssmbench.plan import build_plan

    parsed = parse_suite(suite(name="ih", seeds=[0, 2], architectures={"mamba": {"mixer": "mamba", "lr": [1e-3, 3e-3]},
                                                                        "rope": {"mixer": "mha-rope"}}))
    jobs = build_plan(parsed, "cpu").jobs
    assert [(j.id, j.seed, j.axes) for j in jobs] == [
        ("ih/mamba/lr=0.001/seed=0", 0, {"lr": 1e-3, "seed": 0}), ("ih/mamba/lr=0.001/seed=2", 2, {"lr": 1e-3, "seed": 2}),
        ("ih/mamba/lr=0.003/seed=0", 0, {"lr": 3e-3, "seed": 0}), ("ih/mamba/lr=0.003/seed=2", 2, {"lr": 3e-3, "seed": 2}),
        ("ih/rope/seed=0", 0, {"seed": 0}), ("ih/rope/seed=2", 2, {"seed": 2})]


@pytest.mark.parametrize(("task", "message"), [
    ({"seeds": [1, 1]}, "tasks[0].seeds: give distinct seeds, at least one, got [1, 1]"),
    ({"seeds": []}, "tasks[0].seeds: give distinct seeds, at least one, got []"),
    ({"train": {"lr": []}}, "tasks[0].architectures.mamba.lr: give distinct learning rates, at least one, got []"),
])
def test_bad_sweeps_name_the_field(task: dict, message: str):
    with pytest.raises(UserError) as err:
        parse_suite(suite(**task), source="s.yaml")
    assert str(err.value).startswith(f"s.yaml: {message}")


def seeded(model: str, length: int, value: float, seed: int, lr: float | None = None) -> Record:
    axes = {"seed": seed} | ({"lr": lr} if lr is not None else {})
    base = rec(model, length, value)
    job = "/".join(["ih", model, *(f"{k}={v}" for k, v in axes.items())])
    return base.model_copy(update={"seed": seed, "job": job, "slice": base.slice | axes})


def validation(model: str, value: float, seed: int, lr: float) -> Record:
    return Record(task="ih", kind="synthetic", job=f"ih/{model}/lr={lr}/seed={seed}", point="phase=train",
                  model=model, metric="validation_accuracy", value=value, seed=seed,
                  slice={"phase": "train", "synthetic_task": "induction_heads", "train_len": 256, "mixer": "mamba",
                         "seed": seed, "lr": lr})


def trained(model: str, seed: int, outcome: str) -> Record:
    return Record(task="ih", kind="synthetic", job=f"ih/{model}/seed={seed}", point="phase=train", model=model,
                  metric="train_steps", value=1000, seed=seed, extra={"outcome": outcome},
                  slice={"phase": "train", "synthetic_task": "induction_heads", "train_len": 256, "mixer": "mamba",
                         "seed": seed})


def test_a_seed_sweep_reads_as_median_range_and_seeds_that_hold_and_each_seed_says_how_it_ended():
    by_seed = {0: (1.0, 1.0), 1: (1.0, 0.61), 2: (1.0, 0.995), 3: (0.07, 0.062), 4: (0.5, 0.06)}
    records = [seeded("mamba", n, values[i], s) for s, values in by_seed.items() for i, n in enumerate((256, 2**20))]
    records += [trained("mamba", 3, COLLAPSED), trained("mamba", 0, "trained every step")]
    tables = {t.title: t for t in build_tables(records, all_kinds())}
    length = tables["ih: accuracy by test length (induction_heads)"]
    assert length.frame.to_dict("records")[:3] == [
        {"model": "mamba", "seeds": "median", "2^8": "✓", "2^20": "61.0"},
        {"model": "", "seeds": "min–max", "2^8": "7.0–100.0", "2^20": "6.0–100.0"},
        {"model": "", "seeds": "≥ 99%", "2^8": "3/5", "2^20": "2/5"}]
    rows = length.frame.set_index("model")
    assert rows.loc["paper: Mamba", "2^20"] == "✓" and rows.loc["Δ", "2^20"] == "-39.0"  # Δ of the median
    assert any(note.startswith("Each cell: the median over 5 seeds") for note in length.notes)
    each = tables["ih: accuracy by test length, each seed"]
    assert each.frame.to_dict("records") == [
        {"model": "mamba", "seed": 0, "2^8": "✓", "2^20": "✓", "outcome": "≥ 99% at every test length"},
        {"model": "mamba", "seed": 1, "2^8": "✓", "2^20": "61.0",
         "outcome": "≥ 99% at the training length only (lowest 61.0% at 2^20)"},
        {"model": "mamba", "seed": 2, "2^8": "✓", "2^20": "99.5", "outcome": "≥ 99% at every test length"},
        {"model": "mamba", "seed": 3, "2^8": "7.0", "2^20": "6.2", "outcome": COLLAPSED},
        {"model": "mamba", "seed": 4, "2^8": "50.0", "2^20": "6.0", "outcome": "< 99% at the training length (50.0% at 2^8)"}]
    assert ("mamba: 2 of 5 seeds ≥ 99% at every test length; 1 ≥ 99% at the training length only, "
            "1 < 99% at the training length, 1 collapsed at chance") in each.notes
    assert any(note.startswith("outcome: a seed holds a length at 99% accuracy or more") for note in each.notes)


def test_a_seed_just_under_the_bar_says_which_bar_and_by_how_much():
    """The user's case: a seed at 98.4% was labelled "did not learn", the 99% bar nowhere in sight."""
    records = [seeded("mamba", n, value, 0) for n, value in ((256, 0.984), (2**20, 0.5))]
    records += [seeded("mamba", n, 1.0, 1) for n in (256, 2**20)]
    each = {t.title: t for t in build_tables(records, all_kinds())}["ih: accuracy by test length, each seed"]
    assert each.frame.set_index("seed").loc[0, "outcome"] == "< 99% at the training length (98.4% at 2^8)"


def test_the_length_plot_bars_the_median_with_the_seeds_quartiles(tmp_path: Path):
    """Each seed is a thin line of its own; the bold median's error bars reach its seeds' quartiles (seeds
    that agree: no two neighbours more than half the axis apart; tests/test_seed_plots.py has split ones)."""
    import json

    from ssmbench.kinds.synthetic.views import plot_synthetic
    from ssmbench.report.tables import records_frame

    by_seed = {0: (1.0, 1.0), 1: (1.0, 0.55), 2: (1.0, 0.995), 3: (0.07, 0.062), 4: (0.5, 0.06)}
    records = [seeded("mamba", n, values[i], s) for s, values in by_seed.items() for i, n in enumerate((256, 2**20))]
    (plot,) = [p for p in plot_synthetic("ih", records_frame(records), tmp_path) if p.name == "ih_accuracy_by_length.png"]
    lines = {line["label"]: line for line in json.loads((tmp_path / "ih_accuracy_by_length.plot.json").read_text())["lines"]}
    median = lines["mamba median"]
    # 2^8: 7, 50, 100, 100, 100 -> median 100, quartiles 50 and 100; 2^20: 6, 6.2, 55, 99.5, 100 -> 55, 6.2, 99.5
    assert median["x"] == [256, 2**20] and median["y"] == pytest.approx([100, 55])
    assert median["err_below"] == pytest.approx([50, 48.8]) and median["err_above"] == pytest.approx([0, 44.5])
    assert lines["mamba seed 3"]["y"] == pytest.approx([7, 6.2]) and lines["mamba seed 3"]["err_above"] is None


def test_one_seed_is_plotted_with_its_own_standard_error(tmp_path: Path):
    import json

    from ssmbench.kinds.synthetic.views import plot_synthetic
    from ssmbench.report.tables import records_frame

    records = [seeded("mamba", n, v, 0).model_copy(update={"stderr": se})
               for n, v, se in ((256, 0.9, 0.03), (2**20, 0.5, 0.05))]
    plot_synthetic("ih", records_frame(records), tmp_path)
    (line,) = json.loads((tmp_path / "ih_accuracy_by_length.plot.json").read_text())["lines"]
    assert line["label"] == "mamba" and line["y"] == pytest.approx([90, 50])
    assert line["err_below"] == line["err_above"] == pytest.approx([3, 5])


def test_a_learning_rate_sweep_reports_the_best_median_validation_accuracy():
    records = [validation("mamba", v, s, lr) for lr, vs in ((1e-3, (0.9, 0.7)), (1e-2, (0.95, 0.2))) for s, v in
               zip((0, 1), vs, strict=True)]
    records += [seeded("mamba", 256, 0.8, s, 1e-3) for s in (0, 1)] + [seeded("mamba", 256, 0.3, s, 1e-2) for s in (0, 1)]
    tables = {t.title: t for t in build_tables(records, all_kinds())}
    # lr 1e-3: median 0.8 beats 1e-2's 0.575, though 1e-2 has the single best seed
    assert tables["ih: accuracy by test length (induction_heads)"].frame.set_index("model").loc["mamba", "2^8"] == "80.0"
    sweep = tables["ih: learning-rate sweep"].frame
    assert sweep[["lr", "validation acc (%)", "test 2^8", "reported"]].to_dict("records") == [
        {"lr": "0.001", "validation acc (%)": "80.0 (70.0–90.0)", "test 2^8": "80.0", "reported": "best"},
        {"lr": "0.01", "validation acc (%)": "57.5 (20.0–95.0)", "test 2^8": "30.0", "reported": ""}]
    # the losing rate's test accuracy is in a table: the user found it in none


def test_the_training_table_says_what_each_column_is():
    """The loss is the last window's training loss (a late learner's is high beside a perfect accuracy);
    the accuracy at the training length is named so, and the mean over validation lengths gets a column
    only where a run validated beyond the training length (else the two columns were the same figure)."""
    def train_records(by_length: dict[int, float]) -> list[Record]:
        base = trained("mamba", 0, "trained every step")
        mean = sum(by_length.values()) / len(by_length)
        return [base, base.model_copy(update={"metric": "final_loss", "value": 1.85}),
                base.model_copy(update={"metric": "train_accuracy", "value": by_length[256]}),
                base.model_copy(update={"metric": "validation_accuracy", "value": mean,
                                        "extra": {"by_length": {str(k): v for k, v in by_length.items()}}})]

    one = {t.title: t for t in build_tables(train_records({256: 0.98}), all_kinds())}["ih: training"]
    assert list(one.frame.columns)[-4:] == ["tok/s", "train loss, last window", "validation acc at 2^8 (%)", "ended"]
    assert one.frame.loc[0, "validation acc at 2^8 (%)"] == "98.0"
    assert any(note.startswith("train loss, last window: the mean training loss over the steps since") for note in one.notes)
    two = {t.title: t for t in build_tables(train_records({256: 1.0, 4096: 0.5}), all_kinds())}["ih: training"]
    assert two.frame.loc[0, "validation acc, mean over lengths (%)"] == "75.0"


def test_every_seed_is_tested_on_the_same_examples(tmp_path: Path):
    task = {**CPU_TASK, "architectures": {"mamba": {"mixer": "mamba", "d_model": 16}}, "seeds": [0, 1],
            "train": {**CPU_TASK["train"], "steps": 20, "eval_every": 10}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite(**task)))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "syn").iterdir()
    records = [r for r in read_records(run_dir / "records.jsonl") if r.metric == "accuracy" and "seq_len" in r.slice]
    by_length = {}
    for r in records:
        by_length.setdefault(r.slice["seq_len"], set()).add(r.extra["eval_set"]["sha256"])
    assert sorted(by_length) == [16, 32] and all(len(d) == 1 for d in by_length.values())
    assert {r.slice["seed"] for r in records} == {0, 1} and {r.job for r in records} == {"ih/mamba/seed=0", "ih/mamba/seed=1"}
    table = (run_dir / "table.md").read_text()
    assert "Every model and seed was tested on the same fixed examples at each length (eval_seed 0)" in table
    assert "ih: accuracy by test length, each seed" in table


def test_the_paper_recipes_suite_plans_the_appendix_settings_as_packed_seed_sweeps():
    from ssmbench.plan import build_plan
    from ssmbench.spec import load_suite

    suite, _ = load_suite("suites/synthetic_paper.yaml")
    plan = build_plan(suite, "cuda")
    jobs = {j.id: j for j in plan.jobs}
    induction = jobs["induction-heads/mamba/seed=2"].task.train
    assert (induction.batch_size, induction.steps, induction.lr, induction.weight_decay, induction.autocast,
            induction.schedule, induction.eval_every, induction.collapse_evals) == \
           (8, 204_800, 1e-3, 0.0, None, "constant", 8192, 20)
    assert jobs["induction-heads/mamba/seed=0"].task.validate_lengths("mamba") == [256, 4096, 65536, 2**20]
    for task, layout, counts in (("induction-heads", "uniform", {"mamba": 8, "mha-abs": 3, "mha-rope": 3}),
                                 ("induction-heads-early", "first-16", {"mamba": 8})):
        mine = [j for j in plan.jobs if j.task_name == task]
        assert {j.task.layout for j in mine} == {layout} and mine[0].task.pack >= len(mine)
        assert {v: sum(j.variant == v for j in mine) for v in counts} == counts
    assert jobs["induction-heads-early/mamba/seed=7"].task.train == induction  # the same recipe
    copying = jobs["selective-copying/mamba/seed=1"].task
    assert (copying.train.seq_len, copying.train.batch_size, copying.train.lr, copying.task_params) == \
           (4096, 64, 1e-4, {"n_memorize": 16})
    mqar = [j for j in plan.jobs if j.id.startswith("mqar/mamba/")]
    assert len(mqar) == 4 * 3 and {j.axes["lr"] for j in mqar} == {1e-4, 4.6415888e-4, 2.1544347e-3, 1e-2}
    assert mqar[0].task.train.optimizer == "adamw" and mqar[0].task.train.weight_decay == 0.1
    assert mqar[0].task.train.schedule == "cosine" and mqar[0].task.train.early_stop_accuracy == 0.99
    assert len(build_plan(suite, "cpu").jobs) == 2 * 2 + 2 + 2 + 2  # the toy-size on_cpu version


def test_zoology_style_mqar_trains_on_a_fixed_set_with_dropout_and_reads_as_figure_2(tmp_path: Path):
    """A finite training set (`train.examples`), dropout on the attention baseline, two widths of each
    mixer and an LR sweep: every train record says what it trained on, and the report gains zoology's
    Figure 2 as a table (accuracy by d_model, at each width's best LR) and as a plot."""
    task = {"name": "mqar", "task": "mqar", "vocab_size": 64,
            "task_params": {"num_kv_pairs": 2, "power_a": 0.01, "random_non_queries": False},
            "architectures": {
                "mamba-8": {"mixer": "mamba", "d_model": 8}, "mamba-16": {"mixer": "mamba", "d_model": 16},
                "attn-8": {"mixer": "mha-abs", "d_model": 8, "n_heads": 1, "abs_positions": "learned",
                           "embed_dropout": 0.1, "attn_dropout": 0.1},
                "attn-16": {"mixer": "mha-abs", "d_model": 16, "n_heads": 1, "abs_positions": "learned",
                            "embed_dropout": 0.1, "attn_dropout": 0.1}},
            "train": {"steps": 20, "batch_size": 8, "seq_len": 16, "lr": [1e-3, 1e-2], "optimizer": "adamw",
                      "weight_decay": 0.1, "schedule": "cosine", "grad_clip": None, "examples": 64,
                      "eval_every": 10, "eval_samples": 16},
            "eval_samples": 16, "pack": 4}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite(**task)))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "syn").iterdir()
    records = read_records(run_dir / "records.jsonl")
    steps = [r for r in records if r.metric == "train_steps"]
    assert len(steps) == 8 and {r.extra["train_examples"] for r in steps} == {64}
    assert {r.extra["data_seed"] for r in steps} == {0}  # the job's seed: the suite gives no data_seed
    assert {r.extra["d_model"] for r in steps} == {8, 16}
    tables = {t.title: t for t in build_tables(records, all_kinds())}
    capacity = tables["mqar: accuracy by model width (zoology Figure 2 layout)"].frame
    assert list(capacity["mixer"]) == ["mamba", "mha-abs"]
    assert list(capacity.columns) == ["mixer", "d_model 8", "lr 8", "d_model 16", "lr 16"]
    assert set(capacity["lr 8"]) <= {"0.001", "0.01"} and all(capacity["d_model 16"] != "")
    report = CliRunner().invoke(app, ["report", str(run_dir)])
    assert report.exit_code == 0, report.output
    assert (run_dir / "mqar_accuracy_by_width.png").is_file()


def test_the_zoology_suite_plans_figure_2_as_read_from_its_configs():
    """zoology's iclr24_zoology_figure2/configs.py, setting by setting: (64, 4) and (128, 8) at batch 512,
    (256, 16) at batch 256; 64 epochs of 100K examples; 2 mixers x 4 widths x 4 learning rates, one pack each."""
    from ssmbench.plan import build_plan
    from ssmbench.spec import load_suite

    suite, _ = load_suite("suites/mqar_zoology.yaml")
    plan = build_plan(suite, "cuda")
    for name, length, pairs, batch in (("mqar-64", 64, 4, 512), ("mqar-128", 128, 8, 512), ("mqar-256", 256, 16, 256)):
        jobs = [j for j in plan.jobs if j.task_name == name]
        task = jobs[0].task
        epoch = -(-100_000 // batch)  # zoology's DataLoader keeps the last, short batch
        assert len(jobs) == 32 and task.pack == 32
        assert (task.train.seq_len, task.task_params["num_kv_pairs"], task.train.batch_size) == (length, pairs, batch)
        assert (task.train.steps, task.train.eval_every, task.train.examples) == (64 * epoch, epoch, 100_000)
        assert (task.train.optimizer, task.train.weight_decay, task.train.schedule, task.train.grad_clip,
                task.train.autocast, task.vocab_size, task.eval_samples) == ("adamw", 0.1, "cosine", None, None, 8192, 3000)
        assert sorted({j.axes["lr"] for j in jobs}) == pytest.approx([1e-4, 10 ** (-4 + 2 / 3), 10 ** (-4 + 4 / 3), 1e-2])
        widths = {(a.mixer, a.d_model) for a in task.architectures.values()}
        assert widths == {(m, d) for m in ("mamba", "mha-abs") for d in (64, 128, 256, 512)}
        attention = task.architectures["attention-d256"]
        assert (attention.n_heads, attention.abs_positions, attention.embed_dropout, attention.attn_dropout) == \
               (1, "learned", 0.1, 0.1)
        assert task.architectures["mamba-d256"].n_layers == attention.n_layers == 2
        assert {(a.block, a.init) for a in task.architectures.values()} == {("zoology", "zoology")}  # zoology's models
    seeds = [j for j in plan.jobs if j.task_name == "mqar-64-seeds"]  # the cell run beside zoology's trainer
    assert len(seeds) == 12 and {(j.axes["seed"], j.variant) for j in seeds} == {(s, "mamba-d128") for s in (0, 1, 2)}
    assert seeds[0].task.train == jobs[0].task.train.model_copy(update={"steps": 12_544, "seq_len": 64,
                                                                          "batch_size": 512, "eval_every": 196})
    four = [j for j in plan.jobs if j.task_name == "mqar-256-mamba-4-layers"]  # zoology's configs before fcc6af7
    assert len(four) == 16 and {(a.mixer, a.n_layers) for a in four[0].task.architectures.values()} == {("mamba", 4)}
    assert four[0].task.train == [j for j in plan.jobs if j.task_name == "mqar-256"][0].task.train
    assert len(build_plan(suite, "cpu").jobs) == 3 * 4 * 2 + 4 * 2 * 3 + 4 * 2  # the toy-size on_cpu version


@pytest.mark.parametrize(("arch", "pattern"), [
    ({"mixer": "hybrid", "n_layers": 4, "layers": ["mamba", "mamba", "mha-rope", "mamba"]},
     ["mamba", "mamba", "mha-rope", "mamba"]),
    ({"mixer": "hybrid", "n_layers": 4, "attention_every": 2}, ["mamba", "mha-rope", "mamba", "mha-rope"]),
    ({"mixer": "hybrid", "n_layers": 3, "attention_every": 3, "attention_mixer": "mha-abs"},
     ["mamba", "mamba", "mha-abs"]),
])
def test_a_hybrid_architecture_names_its_layers(arch: dict, pattern: list[str]):
    task = parse_suite(suite(architectures={"h": arch})).tasks[0]
    assert task.architectures["h"].layer_pattern() == pattern
    assert task.architectures["h"].config(16, 64).layer_mixers == tuple(pattern)


@pytest.mark.parametrize(("arch", "message"), [
    ({"mixer": "hybrid"}, "mixer hybrid: give its layers"),
    ({"mixer": "hybrid", "layers": ["mamba", "mha-rope"], "attention_every": 2}, "mixer hybrid: give its layers"),
    ({"mixer": "hybrid", "n_layers": 2, "layers": ["mamba", "mha-rope", "mamba"]}, "layers: 3 mixers for n_layers=2"),
    ({"mixer": "hybrid", "layers": ["mamba", "atention"]}, "layers: unknown mixer 'atention'"),
    ({"mixer": "hybrid", "attention_every": 3}, "attention_every: 3 is more than n_layers=2"),
    ({"mixer": "mamba", "attention_every": 2}, "layers: mamba has one mixer in every layer"),
])
def test_a_bad_hybrid_names_the_field(arch: dict, message: str):
    with pytest.raises(UserError, match=message):
        parse_suite(suite(architectures={"h": arch}), source="s.yaml")


def test_a_hybrid_trains_beside_the_pure_models_and_its_records_carry_its_layers(tmp_path: Path):
    task = {"name": "ih", "task": "induction_heads", "vocab_size": 8,
            "architectures": {"mamba": {"mixer": "mamba", "d_model": 16, "n_layers": 4},
                              "hybrid": {"mixer": "hybrid", "d_model": 16, "n_layers": 4, "n_heads": 2,
                                         "layers": ["mamba", "mamba", "mha-rope", "mamba"]}},
            "train": {"steps": 20, "batch_size": 8, "seq_len": 16, "lr": 3e-3, "eval_every": 10, "eval_samples": 16},
            "eval_lengths": [16, 32], "eval_samples": 16}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite(**task)))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "syn").iterdir()
    records = [r for r in read_records(run_dir / "records.jsonl") if r.model == "hybrid" and r.status == "ok"]
    assert records and all(r.family == "hybrid" and r.kernel == "torch-chunked-scan+torch.sdpa" for r in records)
    assert all(r.extra["layers"] == ["mamba", "mamba", "mha-rope", "mamba"] for r in records)
    assert "hybrid" in (run_dir / "table.md").read_text()


def test_the_hybrid_suite_sets_one_attention_layer_among_mamba_layers_beside_both_pure_models():
    from ssmbench.plan import build_plan
    from ssmbench.spec import load_suite

    suite, _ = load_suite("suites/hybrid_recall.yaml")
    plan = build_plan(suite, "cuda")
    mqar = {j.variant: j.task.architectures[j.variant] for j in plan.jobs if j.task_name == "mqar-hybrid"}
    assert mqar["hybrid-d128"].layer_pattern() == ["mamba", "mamba", "mha-rope", "mamba"]
    assert {a.n_layers for a in mqar.values()} == {4} and {a.d_model for a in mqar.values()} == {64, 128}
    induction = [j for j in plan.jobs if j.task_name == "induction-hybrid"]
    assert len(induction) == 9 and induction[0].task.pack >= 9


def test_a_data_seed_gives_every_model_seed_the_same_training_set(tmp_path):
    """zoology draws its MQAR examples from one seed whatever the model seed: with train.data_seed, jobs of
    different seeds train on the same fixed set; without it, each seed draws its own."""
    import torch

    from ssmbench.kinds.base import JobContext
    from ssmbench.kinds.synthetic.runner import SyntheticRunner
    from ssmbench.plan import build_plan

    def pools(data_seed):
        train = {"steps": 4, "batch_size": 4, "seq_len": 16, "examples": 32, "eval_every": 4, "eval_samples": 8}
        task = {"name": "mqar", "task": "mqar", "vocab_size": 32, "seeds": [0, 1],
                "task_params": {"num_kv_pairs": 2, "power_a": 0.01, "random_non_queries": False},
                "architectures": {"m": {"mixer": "mamba", "d_model": 8}},
                "train": train | ({"data_seed": data_seed} if data_seed is not None else {}), "eval_samples": 8}
        jobs = build_plan(parse_suite(suite(**task)), "cpu").jobs
        runners = [SyntheticRunner(job, JobContext("run", "s", tmp_path / job.id)) for job in jobs]
        draws = [r._training_draw(r.settings()) for r in runners]
        return [draw(torch.Generator().manual_seed(7)).inputs for draw in draws], [r.data_seed for r in runners]

    (a, b), seeds = pools(123)
    assert seeds == [123, 123] and torch.equal(a, b)
    (a, b), seeds = pools(None)
    assert seeds == [0, 1] and not torch.equal(a, b)


def test_a_data_seed_needs_a_fixed_training_set():
    task = {"name": "x", "task": "induction_heads", "architectures": {"m": {"mixer": "mamba"}}, "train": {"data_seed": 1}}
    with pytest.raises(Exception, match="train.data_seed: only a fixed training set"):
        parse_suite(suite(**task))
