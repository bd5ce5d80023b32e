"""Tables and plots of MAD's protocol (a synthetic task with `settings:`; suites/mad.yaml), in MAD's terms.

Per task (a suite entry, one MAD task):
- test accuracy by setting: a row per model and setting (MAD's order: the baseline, then each change from
  it), a column per optimizer point (learning rate x weight decay), then the best of them and where it was.
  Accuracy is on the setting's fixed test set at the end of training, in % with one decimal, ✓ for 100%;
  a run that diverged says so, one not run yet is blank.
- MAD score: a row per model, the mean over the task's settings of each setting's best test accuracy, as
  MAD-lab's analysis computes it (compute_model_mad_scores: the best run of each setting's sweep by test
  accuracy, then the mean by task), with how many of MAD's settings it counts.
- training: every run (ssmbench.kinds.synthetic.views.training_table).
Across the run's MAD tasks: a row per model, a column per task with its MAD score, and their mean.
Plots, per task and per variable MAD changes (vocabulary, length, training set size, noise, tokens to copy):
the best test accuracy against the variable's value, the baseline's value among them, a line per model.

The MAD paper's (Poli et al. 2024, arXiv 2403.17844) own per-task scores of its baselines are not printed
beside ours: they have not been transcribed from the paper and checked, and no number goes in unchecked.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from ssmbench.data.mad_settings import MAD_SETTINGS, MAD_TASKS
from ssmbench.kinds.synthetic.views import (
    capability_summary,
    cell,
    plot_synthetic,
    synthetic_tables,
    training_table,
)
from ssmbench.report.plots import line_plot, model_colours
from ssmbench.report.tables import Table

PAPER_NOTE = ("no published figure beside these: the MAD paper's (Poli et al. 2024, arXiv 2403.17844) per-task "
              "scores of its baselines are not transcribed here yet, and none is printed that was not checked "
              "against the paper (docs/mad.md)")
BEST_NOTE = ("best: the highest test accuracy over the optimizer grid, picked on the test set itself as MAD-lab's "
             "analysis picks it (subset_model_results_to_best_sweep_runs), so a little above what a held-out "
             "choice would give")


def is_mad(frame: pd.DataFrame) -> pd.Series:
    """Which records are of MAD settings (a job with a `setting` axis)."""
    if "slice.setting" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["slice.setting"].notna()


def tables(task: str, frame: pd.DataFrame) -> list[Table]:
    """The kind's tables of one task: MAD's for a task with settings, the synthetic ones otherwise."""
    if not is_mad(frame).any():
        return synthetic_tables(task, frame)
    out = [t for t in (grid_table(task, frame), score_table(task, frame)) if t is not None]
    if (frame["slice.phase"] == "train").any():
        out.append(training_table(task, frame))
    return out


def summary(frame: pd.DataFrame) -> list[Table]:
    """Across the run's synthetic tasks: MAD's scores for its MAD tasks, Table 1's layout for the others."""
    mad = is_mad(frame)
    out = [] if mad.all() else capability_summary(frame[~mad])
    scores = summary_table(frame[mad]) if mad.any() else None
    return out + ([scores] if scores is not None else [])


def plots(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    if not is_mad(frame).any():
        return plot_synthetic(task, frame, out)
    return difficulty_plots(task, frame, out)


# --- what the tables read --------------------------------------------------------------------------------


def test_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each run's test result: its accuracy, or why it has none (a diverged run's skipped test, a failure)."""
    evals = frame[(frame["slice.phase"] == "eval") & is_mad(frame)]
    return evals[(evals["status"] != "ok") | (evals["metric"] == "accuracy")]


def mad_task(frame: pd.DataFrame) -> str:
    """The MAD task (generator name) of a suite entry's records."""
    return str(frame["slice.synthetic_task"].dropna().iloc[0])


def settings_order(frame: pd.DataFrame) -> list[str]:
    """The settings present, in MAD's order."""
    present = set(frame["slice.setting"].dropna())
    return [s.label for s in MAD_SETTINGS[mad_task(frame)] if s.label in present]


def best_by_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """A row per (task, model, setting) with a test accuracy: the best over its optimizer grid (`best`), and
    the learning rate and weight decay of that run (the first in grid order on a tie)."""
    ok = test_rows(frame)
    ok = ok[ok["status"] == "ok"].sort_values(["slice.lr", "slice.weight_decay"], kind="stable")
    if ok.empty:
        return pd.DataFrame(columns=["task", "model", "setting", "best", "lr", "weight_decay"])
    top = ok.loc[ok.groupby(["task", "model", "slice.setting"], sort=False)["value"].idxmax()]
    return pd.DataFrame({"task": top["task"], "model": top["model"], "setting": top["slice.setting"],
                         "best": top["value"], "lr": top["slice.lr"], "weight_decay": top["slice.weight_decay"]})


def mad_scores(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[float, int]]:
    """(task, model) -> (MAD score, settings counted): the mean over the settings of the best test accuracy."""
    best = best_by_setting(frame)
    return {(task, model): (float(g["best"].mean()), len(g))
            for (task, model), g in best.groupby(["task", "model"], sort=False)}


# --- tables ----------------------------------------------------------------------------------------------


def _optimizer_label(lr: float, wd: float) -> str:
    return f"lr {lr:g}, wd {wd:g}"


def grid_table(task: str, frame: pd.DataFrame) -> Table | None:
    """A row per model and setting: the test accuracy (%) at each learning rate x weight decay, the best."""
    tests = test_rows(frame)
    if tests.empty:
        return None
    points = sorted({(float(lr), float(wd)) for lr, wd in zip(tests["slice.lr"], tests["slice.weight_decay"],
                                                               strict=True)})
    best = best_by_setting(frame).set_index(["model", "setting"])
    rows = []
    for model in dict.fromkeys(tests["model"]):
        for setting in settings_order(tests):
            runs = tests[(tests["model"] == model) & (tests["slice.setting"] == setting)]
            if runs.empty:
                continue
            row = {"model": model, "setting": setting}
            for lr, wd in points:
                at = runs[(runs["slice.lr"] == lr) & (runs["slice.weight_decay"] == wd)]
                row[_optimizer_label(lr, wd)] = cell(at.iloc[0].to_dict()) if len(at) else ""
            top = best.loc[(model, setting)] if (model, setting) in best.index else None
            row["best"] = cell({"status": "ok", "value": top["best"]}) if top is not None else ""
            row["best at"] = _optimizer_label(top["lr"], top["weight_decay"]) if top is not None else ""
            rows.append(row)
    notes = [f"Test accuracy (%) on each setting's fixed test set ({_examples(tests)}) at the end of training, "
             "a column per learning rate (lr) and weight decay (wd); ✓ = every answer right, ✗ (diverged) = the "
             "training loss went non-finite and the run stopped untested, blank = not run", BEST_NOTE,
             "setting: MAD's baseline, or the one variable it changes from it (MAD-lab's configs/tasks/*.yml)"]
    return Table(f"{task}: MAD test accuracy by setting and optimizer point", pd.DataFrame(rows), notes, task)


def _examples(tests: pd.DataFrame) -> str:
    counts = {e.get("n_examples") for e in tests["extra"] if isinstance(e, dict) and e.get("n_examples")}
    return f"{counts.pop():,} examples" if len(counts) == 1 else "its examples"


def score_table(task: str, frame: pd.DataFrame) -> Table | None:
    """A row per model: the task's MAD score and how many of MAD's settings it averages."""
    scores = mad_scores(frame)
    if not scores:
        return None
    name, total = mad_task(frame), len(MAD_SETTINGS[mad_task(frame)])
    rows = [{"model": model, "MAD score (%)": f"{100 * score:.1f}", "settings": f"{n} of {total}"}
            for (_, model), (score, n) in scores.items()]
    notes = [f"MAD score: the mean over the settings of {name} of each setting's best test accuracy (MAD-lab's "
             f"compute_model_mad_scores); MAD's protocol has {total} settings for this task"]
    if any(n < total for _, n in scores.values()):
        notes.append("a score over fewer settings than MAD's is not MAD's score: it averages the settings run")
    return Table(f"{task}: MAD score", pd.DataFrame(rows), notes, task)


def summary_table(frame: pd.DataFrame) -> Table | None:
    """MAD's summary: a row per model, each task's MAD score (%) in MAD's task order, and their mean."""
    scores = mad_scores(frame)
    if not scores:
        return None
    by_task = {mad_task(g): t for t, g in frame.groupby("task", sort=False) if is_mad(g).any()}
    tasks = [by_task[name] for name in MAD_TASKS if name in by_task]
    rows = []
    for model in dict.fromkeys(frame["model"].dropna()):
        row: dict[str, str] = {"model": model}
        mine = [scores[t, model][0] for t in tasks if (t, model) in scores]
        for t in tasks:
            row[t] = f"{100 * scores[t, model][0]:.1f}" if (t, model) in scores else ""
        row["mean"] = f"{100 * statistics.mean(mine):.1f}" if len(mine) == len(tasks) else ""
        rows.append(row)
    notes = ["MAD score (%) of each task: the mean over its settings of the best test accuracy over the optimizer "
             "grid; mean: over the tasks (blank where a model lacks one)"]
    if len(tasks) < len(MAD_TASKS):
        notes.append(f"{len(tasks)} of MAD's {len(MAD_TASKS)} tasks in this run: the mean is over these only")
    partial = [t for t in tasks if any(n < len(MAD_SETTINGS[mad_task(frame[frame["task"] == t])])
                                       for (task, _), (_, n) in scores.items() if task == t)]
    if partial:
        notes.append(f"over fewer settings than MAD's (a partial score, not MAD's): {', '.join(partial)}")
    notes.append(PAPER_NOTE)
    return Table("MAD scores by task (Poli et al. 2024's protocol)", pd.DataFrame(rows), notes)


# --- plots -----------------------------------------------------------------------------------------------


def difficulty_plots(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Per variable the task changes: the best test accuracy (%) against its value, a line per model; the
    baseline is the point at the baseline's value on every such plot."""
    best = best_by_setting(frame)
    if best.empty:
        return []
    settings = {s.label: s for s in MAD_SETTINGS[mad_task(frame)]}
    baseline = settings["baseline"]
    colours, paths = model_colours(frame), []
    for variable in dict.fromkeys(s.change[0] for s in settings.values() if s.change is not None):
        series = []
        for model, g in best.groupby("model", sort=False):
            points = {_value(settings[label], baseline, variable): 100 * value
                      for label, value in zip(g["setting"], g["best"], strict=True)
                      if settings[label].change is None or settings[label].change[0] == variable}
            if len(points) > 1:
                xs = sorted(points)
                series.append((model, xs, [points[x] for x in xs], colours[model] + "-"))
        if series:
            scale = variable not in ("frac_noise", "num_tokens_to_copy")
            paths.append(line_plot(out / f"{task}_accuracy_by_{variable}.png",
                                   f"{task}: best test accuracy by {variable} (MAD's settings)",
                                   f"{variable}{' (log2)' if scale else ''}", "best test accuracy (%)", series,
                                   log=False, log2_x=scale,
                                   marker_x=(_value(baseline, baseline, variable), "baseline")))
    return paths


def _value(setting, baseline, variable: str) -> float:
    """A setting's value of `variable` (the baseline's where it changes another)."""
    if setting.change is not None and setting.change[0] == variable:
        return setting.change[1]
    fields = {"seq_len": baseline.seq_len, "num_train_examples": baseline.num_train_examples} | baseline.params
    return fields[variable]
