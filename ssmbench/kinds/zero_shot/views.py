"""Zero-shot tables in the layouts of their sources, measured beside the reference figures.

- The paper's wide table (Gu & Dao 2023, Table 3): models as rows, the six tasks as columns, accuracies in
  percent with one decimal, Avg = mean of the six accuracies. A model with a Table 3 row gets two more rows:
  the paper's figures and the difference. A row describes one checkpoint (the zoo's published one, with
  pretrained weights): it is attached only when the records say that checkpoint was loaded, and a model
  named like a zoo model that loaded another (a `path:`) gets a note saying why it has none.
- The source slides' comparison: models as columns, metrics as rows, accuracies as fractions with four
  decimals. A model the slides show gets a column of the slides' figures and one of the difference.
- Every other lm-eval task: each metric lm-eval returned, models as columns.

A difference is flagged ⚠ by one of two rules, and the table's notes say which applied:

- on the full evaluation set (no `limit`), when |Δ| exceeds the suite's `tolerance` (0.5 points by
  default; for perplexity, 0.5 % of the paper's figure). Re-runs of one checkpoint agree within 0.1-0.3
  points, while two standard errors of a full PIQA or WinoGrande (about 2.2 and 2.8 points) would let a
  configuration mistake through;
- on a subset (`limit`), when |Δ| exceeds two of lm-eval's standard errors: the subset's own sampling error
  is then the larger one, and a tight tolerance would flag chance.

Only built-in lm-eval tasks run zero-shot are set beside the paper. A task from the suite's `include_path`
(even one named `piqa`) and a task run with examples (num_fewshot > 0) go to the table of other tasks,
with a note. Notes state how the numbers were obtained, and say so loudly when they come from random
weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ssmbench.kinds.zero_shot.task import DEFAULT_TOLERANCE_PTS
from ssmbench.reference import (
    PAPER,
    SLIDES,
    Column,
    ReferenceRow,
    Source,
    reported_metrics,
    zero_shot_sources,
)
from ssmbench.report.tables import STATUS_CELL, Table, failure_notes
from ssmbench.zoo import MODELS

AVG = "avg"  # the Avg column's key beside the paper's column keys
FLAG = "⚠"
SMOKE_NOTE = "SMOKE TEST: random weights, numbers meaningless (the suite sets `smoke_test: true`)"


@dataclass(frozen=True)
class Measured:
    """One metric of one model, or why there is none (status), and the rule that flags its Δ."""

    value: float | None
    stderr: float | None
    status: str  # ok, error, oom, skipped; "" when the task was not run for this model
    subset: bool = False  # measured with `limit`: flagged beyond two standard errors
    tolerance: float = DEFAULT_TOLERANCE_PTS  # points, on the full set


class Results:
    """The records of one zero_shot task, looked up by (model, lm-eval task, metric)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.models = list(dict.fromkeys(frame["model"].dropna()))
        self.lm_tasks = set(frame["slice.lm_eval_task"].dropna())
        self._cells: dict[tuple[str, str, str], Measured] = {}
        self._failed: dict[tuple[str, str], str] = {}
        for row in frame.to_dict("records"):
            key = (row["model"], row["slice.lm_eval_task"])
            if row["status"] == "ok":
                self._cells[(*key, row["metric"])] = Measured(
                    row["value"], _number(row["stderr"]), "ok", subset=_number(row.get("slice.limit")) is not None,
                    tolerance=_extra(row).get("tolerance_pts", DEFAULT_TOLERANCE_PTS))
            else:
                self._failed[key] = row["status"]

    def get(self, model: str, task: str, metric: str) -> Measured:
        cell = self._cells.get((model, task, metric))
        return cell if cell is not None else Measured(None, None, self.status(model, task))

    def cells(self) -> list[Measured]:
        return list(self._cells.values())

    def status(self, model: str, task: str) -> str:
        """Why a task has no figures for a model: its point's status, or "" when it did not run."""
        return self._failed.get((model, task), "")

    def random_weights(self, model: str) -> bool:
        return bool((self.frame.loc[self.frame["model"] == model, "weights"] == "random").any())

    def checkpoints(self, model: str) -> list[str | None]:
        """The checkpoints the model's measured records say were loaded (None: a record that does not say)."""
        ok = self.frame[(self.frame["model"] == model) & (self.frame["status"] == "ok")]
        extras = ok["extra"] if "extra" in ok else [None] * len(ok)
        return list(dict.fromkeys(e.get("checkpoint") if isinstance(e, dict) else None for e in extras))

    def reference_row(self, source: Source, model: str) -> ReferenceRow | None:
        return self.reference(source, model)[0]

    def reference(self, source: Source, model: str) -> tuple[ReferenceRow | None, str | None]:
        """(the source's row for this model, why there is none where one might be expected).

        A row describes one checkpoint: the zoo's published one (hub id or mamba_ssm id) of the row's model,
        pretrained. It is attached only when the records say that checkpoint was loaded, whatever the suite
        named the model; never to random weights (the smoke-test note says so), to a `path:` checkpoint, or
        to records that do not say what they loaded."""
        if self.random_weights(model):
            return None, None
        checkpoints = self.checkpoints(model)
        named = source.row_for(model)
        if not checkpoints:  # nothing measured: no figures to set a reference beside
            return None, None
        if len(checkpoints) > 1:
            return None, f"its records name several checkpoints ({', '.join(map(str, checkpoints))})"
        checkpoint = checkpoints[0]
        row = next((r for r in source.rows if checkpoint is not None and checkpoint in published(r.model)), None)
        if row is not None:
            return row, None
        if named is None:
            return None, None
        if checkpoint is None:
            return None, "its records do not say which checkpoint was loaded (written before ssmbench recorded it)"
        return None, (f"it loaded {checkpoint}, not the published {' or '.join(sorted(published(named.model)))} "
                      f"that the row {named.label!r} describes")

    def reference_note(self, source: Source) -> list[str]:
        """One note naming each model that has no reference row where its name suggests one, and why."""
        reasons = [f"{model}: {why}" for model in self.models if (why := self.reference(source, model)[1])]
        if not reasons:
            return []
        return [f"No {source.label} row (a reference row describes the published checkpoint only) for "
                + "; ".join(reasons)]


def published(model: str | None) -> set[str]:
    """The zoo's published checkpoints of a model: its transformers and mamba_ssm hub ids."""
    spec = MODELS.get(model) if model else None
    return {c for c in (spec.hf_id, spec.mamba_ssm_id) if c} if spec is not None else set()


def zero_shot_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    comparable = frame[as_in_the_paper(frame)]
    results = Results(comparable)
    sources = zero_shot_sources()
    tables = []
    if results.lm_tasks & {c.task for c in sources[PAPER].columns}:
        tables.append(paper_table(task, results, sources[PAPER]))
    if results.lm_tasks & {c.task for c in sources[SLIDES].columns}:
        tables.append(slides_table(task, results, sources[SLIDES], sources[PAPER]))
    others = frame[~as_in_the_paper(frame) | ~frame["slice.lm_eval_task"].isin(reported_metrics())]
    if not others.empty:
        tables.append(other_tasks_table(task, others))
    return tables


def as_in_the_paper(frame: pd.DataFrame) -> pd.Series:
    """Rows measured as the paper measures: lm-eval's built-in task (not the suite's own, whatever its
    name), zero-shot. Older records, which have neither field, were."""
    custom = frame["slice.custom"].fillna(False).astype(bool) if "slice.custom" in frame else False
    shots = frame["slice.num_fewshot"] if "slice.num_fewshot" in frame else pd.Series(0, index=frame.index)
    return ~custom & shots.fillna(0).eq(0)


# --- the paper's wide table ------------------------------------------------------------------------------

def paper_table(task: str, results: Results, paper: Source) -> Table:
    columns = [c for c in paper.columns if c.task in results.lm_tasks]
    with_avg = len(columns) == len(paper.columns)
    titles = {c.key: c.title for c in columns} | ({AVG: "Avg"} if with_avg else {})
    # (scale, decimals) as the paper prints: accuracies in percent with one decimal, perplexity with two
    style = {c.key: (100.0, 1) if c.is_accuracy else (1.0, 2) for c in columns} | {AVG: (100.0, 1)}
    metric_list = ", ".join(f"{c.title} = {c.task} {c.metric}" for c in paper.columns)
    notes = [f"Columns as Table 3 of the Mamba paper reports them: {metric_list}; accuracies in %, "
             "Avg = mean of the six accuracies; ± = lm-eval's standard error"]
    if not with_avg:
        notes.append("Avg needs all six tasks; this run has " + ", ".join(dict.fromkeys(c.task for c in columns)))
    rows = []

    def add(model: str, figures: str, cells: dict[str, str]) -> None:
        rows.append({"model": model, "figures": figures, **{titles[k]: cells[k] for k in titles}})

    for model in results.models:
        measured = {c.key: results.get(model, c.task, c.metric) for c in columns}
        if with_avg:
            measured[AVG] = average([measured[c.key] for c in columns if c.is_accuracy])
        add(model, "measured (random weights)" if results.random_weights(model) else "measured",
            {k: _cell(cell, *style[k]) for k, cell in measured.items()})
        ref = results.reference_row(paper, model)
        if ref is None:
            continue
        figures = {**ref.figures, AVG: paper.mean_accuracy(ref)}
        add(model, f"{paper.label}: {ref.label}", {k: _fixed(figures[k] * style[k][0], style[k][1]) for k in measured})
        add(model, "Δ", {k: _delta(cell, figures[k], *style[k], accuracy=style[k][0] == 100.0)
                         for k, cell in measured.items()})
        if with_avg and paper.avg_misprinted(ref):
            notes.append(f"{ref.label}: the paper prints Avg {ref.printed_avg * 100:.1f}, but the mean of its six "
                         f"accuracies is {figures[AVG] * 100:.1f}; Avg here is that mean")
    return Table(f"{task}: Mamba paper Table 3 layout", pd.DataFrame(rows),
                 _notes(results, paper, notes), task)


def average(cells: list[Measured]) -> Measured:
    """The mean of accuracies, with the standard error of a mean of independent estimates."""
    if not cells or any(c.status != "ok" for c in cells):
        return Measured(None, None, "")
    errors = [c.stderr for c in cells]
    stderr = math.sqrt(sum(e * e for e in errors)) / len(cells) if None not in errors else None
    return Measured(sum(c.value for c in cells) / len(cells), stderr, "ok", subset=any(c.subset for c in cells),
                    tolerance=min(c.tolerance for c in cells))


# --- the slides' comparison ------------------------------------------------------------------------------

def slides_table(task: str, results: Results, slides: Source, paper: Source) -> Table:
    """The slides' rows, then the paper's metrics the slides lack, so all six tasks show side by side."""
    shown = {(c.task, c.metric) for c in slides.columns}
    extra = [Column(c.key, f"{c.task} ({c.metric})", c.task, c.metric) for c in paper.columns
             if (c.task, c.metric) not in shown]
    decimals = 4  # the slides print four decimals for every figure
    rows = []
    for column in [c for c in [*slides.columns, *extra] if c.task in results.lm_tasks]:
        row = {"metric": column.title}
        for model in results.models:
            cell = results.get(model, column.task, column.metric)
            row[model] = _cell(cell, 1.0, decimals)
            ref = results.reference_row(slides, model)
            if ref is not None:
                figures = {(c.task, c.metric): ref.figures[c.key] for c in slides.columns}
                figure = figures.get((column.task, column.metric))
                row[f"{slides.label}: {ref.label}"] = "" if figure is None else _fixed(figure, decimals)
                row[f"Δ {model}"] = _delta(cell, figure, 1.0, decimals, accuracy=column.is_accuracy)
        rows.append(row)
    notes = ["Rows as the source slides print them (accuracies as fractions); arc_challenge there is lm-eval's "
             "acc, the paper's ARC-C is acc_norm; ± = lm-eval's standard error"]
    return Table(f"{task}: source slides layout (models as columns)", pd.DataFrame(rows),
                 _notes(results, slides, notes), task)


# --- every other task ------------------------------------------------------------------------------------

def other_tasks_table(task: str, frame: pd.DataFrame) -> Table:
    """Every metric lm-eval returned for tasks the references do not cover, or that were not measured as the
    paper measures them (the suite's own tasks, few-shot), models as columns."""
    labels = [_task_label(row) for row in frame.to_dict("records")]
    notes = not_compared_notes(frame, labels)
    frame = frame.assign(**{"slice.lm_eval_task": labels})
    results = Results(frame)
    rows = []
    ok = frame[frame["status"] == "ok"]
    pairs = dict.fromkeys(zip(ok["slice.lm_eval_task"], ok["metric"], strict=True))
    for lm_task, metric in pairs:
        rows.append({"lm-eval task": lm_task, "metric": metric,
                     **{m: _cell(results.get(m, lm_task, metric), 1.0, 4) for m in results.models}})
    for lm_task in sorted(results.lm_tasks - {t for t, _ in pairs}):
        rows.append({"lm-eval task": lm_task, "metric": "",
                     **{m: STATUS_CELL.get(results.status(m, lm_task), "") for m in results.models}})
    return Table(f"{task}: other lm-eval tasks", pd.DataFrame(rows),
                 _notes(results, None, ["All metrics lm-eval returned, on its scale; ± = its standard error",
                                        *notes]),
                 task)


def _task_label(row: dict) -> str:
    """The task's name, marked when it is the suite's own or few-shot, so it never reads as the paper's."""
    marks = [m for m, on in (("custom", bool(_true(row.get("slice.custom")))),
                             (f"{_int(row.get('slice.num_fewshot'))}-shot",
                              _number(row.get("slice.num_fewshot")) not in (None, 0.0))) if on]
    name = row["slice.lm_eval_task"]
    return f"{name} ({', '.join(marks)})" if marks else name


def not_compared_notes(frame: pd.DataFrame, labels: list[str]) -> list[str]:
    """Why tasks named like the paper's are listed here and not beside its figures, one note per label."""
    why: dict[str, str] = {}
    for row, label in zip(frame.to_dict("records"), labels, strict=True):
        name = row["slice.lm_eval_task"]
        if _true(row.get("slice.custom")):
            shadow = f", named like lm-eval's built-in {name}" if _extra(row).get("shadows_builtin") else ""
            why[label] = f"{label}: the suite's own task (include_path){shadow}; not compared with the paper"
        elif label != name and name in reported_metrics():
            why[label] = f"{label}: the paper's figures are zero-shot; not compared"
    return [why[label] for label in sorted(why)]


# --- cells and notes -------------------------------------------------------------------------------------

def _fixed(value: float, decimals: int) -> str:
    """Fixed decimals like the sources print, or three significant digits for huge values (random weights)."""
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.{decimals}f}"


def _cell(cell: Measured, scale: float, decimals: int) -> str:
    if cell.status != "ok":
        return STATUS_CELL.get(cell.status, "")
    text = _fixed(cell.value * scale, decimals)
    return text if cell.stderr is None else f"{text} ±{_fixed(cell.stderr * scale, decimals)}"


def _delta(cell: Measured, reference: float | None, scale: float, decimals: int, accuracy: bool = True) -> str:
    """measured − reference, flagged by the cell's rule (see the module's docstring)."""
    if cell.status != "ok" or reference is None:
        return ""
    diff = cell.value - reference
    text = ("+" if diff >= 0 else "") + _fixed(diff * scale, decimals)
    return f"{text} {FLAG}" if flagged(cell, reference, accuracy) else text


def flagged(cell: Measured, reference: float, accuracy: bool) -> bool:
    """Whether measured − reference is beyond what the cell's rule allows: two standard errors on a subset;
    on the full set, `tolerance` points of accuracy (fractions here: 0.5 points = 0.005), or `tolerance`
    percent of a perplexity."""
    diff = cell.value - reference
    if cell.subset:
        return beyond_two_stderr(diff, cell.stderr)
    allowed = cell.tolerance / 100 * (1.0 if accuracy else abs(reference))
    return abs(diff) > allowed + 1e-12


def beyond_two_stderr(diff: float, stderr: float | None) -> bool:
    return stderr is not None and abs(diff) > 2 * stderr


def flag_rule(results: Results) -> str:
    """The rule(s) behind ⚠ in this table, read from the measured cells."""
    cells = [c for c in results.cells() if c.status == "ok"]
    tolerances = sorted({c.tolerance for c in cells if not c.subset})
    rules = []
    if tolerances:
        tol = " / ".join(f"{t:g}" for t in tolerances)
        rules.append(f"full evaluation sets: ⚠ = |Δ| > {tol} points of accuracy ({tol} % of a perplexity), the "
                     "suite's `tolerance`")
    if any(c.subset for c in cells):
        rules.append("subsets (`limit`): ⚠ = |Δ| beyond two standard errors of the measurement")
    return "; ".join(rules)


def _notes(results: Results, source: Source | None, specific: list[str]) -> list[str]:
    frame = results.frame
    # Only measured figures can be meaningless: skipped points (random weights refused) measured nothing.
    measured_random = (frame["status"] == "ok") & (frame["weights"] == "random")
    smoke = [SMOKE_NOTE] if measured_random.any() else []
    rule = flag_rule(results)
    reference = ([f"{source.label}: {source.citation}. Δ = measured − {source.label}" + (f"; {rule}" if rule else ""),
                  *results.reference_note(source)] if source is not None else [])
    return smoke + method_notes(frame) + specific + reference + failure_notes(frame)


def method_notes(frame: pd.DataFrame) -> list[str]:
    """How the figures were obtained, read from the records' slices and fields."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return []
    limits = [float(v) for v in _values(ok, "slice.limit")]
    subset = ("limit " + ", ".join(f"{v:.0%} of the examples" if v < 1 else f"{v:.0f} examples" for v in limits)
              + " per task (a subset: not comparable with full-set figures)" if limits else "full evaluation sets")
    samples = ", ".join(f"{t} {_int(n)}" for t, n in
                        ok.groupby("slice.lm_eval_task", sort=False)["slice.n_samples"].max().items()
                        ) if "slice.n_samples" in ok else "?"
    runs = "; ".join(f"{model}: {', '.join(_values(group, 'kernel'))}, {', '.join(_values(group, 'dtype'))}, "
                     f"{', '.join(_values(group, 'weights'))} weights{_loaded(group)}"
                     for model, group in ok.groupby("model", sort=False))
    return [f"Measured with lm-eval {', '.join(_values(ok, 'slice.lm_eval'))} (`lm_eval.simple_evaluate` on HFLM "
            f"around the transformers model), {', '.join(_values(ok, 'slice.num_fewshot'))}-shot, {subset}, "
            f"batch size {', '.join(_values(ok, 'slice.batch_size'))}; samples evaluated: {samples}",
            f"Runs: {runs}"]


def _loaded(group: pd.DataFrame) -> str:
    """', checkpoint X (weights sha256 …)' as the records say, for pretrained weights."""
    extras = [e for e in group["extra"] if isinstance(e, dict)] if "extra" in group else []
    loaded = dict.fromkeys((e.get("checkpoint"), e.get("weights_sha256")) for e in extras
                           if e.get("checkpoint") not in (None, "random init"))
    return "".join(f", checkpoint {c}" + (f" (weights sha256 {h})" if h else "") for c, h in loaded)


def _values(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame:
        return []
    return [str(_int(v)) for v in dict.fromkeys(frame[column].dropna())]


def _int(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _extra(row: dict) -> dict:
    extra = row.get("extra")
    return extra if isinstance(extra, dict) else {}


def _true(value: object) -> bool:
    return value is True or (isinstance(value, (int, float)) and not math.isnan(value) and bool(value))


def _number(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
