"""Tables and plots of kind `phonebook`.

Per prompt format:
- accuracy by book size: a row per size, for each model its exact-match and digit accuracy (%) and mean
  edit distance, over the query positions run (each position the same number of queries);
- by query position: a row per (size, position), a cell per model, "exact / digit" in %.
`n/a (context)` where the book does not fit the model's context, ERR where the point failed.
Plot: exact (solid) and digit (dashed) accuracy against book size, a colour per model, per format.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ssmbench.kinds.base import NA_CONTEXT
from ssmbench.report.plots import Line, line_plot, model_colours
from ssmbench.report.tables import SMOKE_NOTE, STATUS_CELL, Table, failure_notes


def phonebook_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    tables = []
    for fmt, group in frame.groupby("slice.format", sort=False):
        tables += [size_table(task, str(fmt), group), position_table(task, str(fmt), group)]
    return tables


def _means(group: pd.DataFrame) -> pd.DataFrame:
    """(model, book_size) x metric: the mean over the positions that ran."""
    ok = group[group["status"] == "ok"]
    return ok.pivot_table(index=["model", "slice.book_size"], columns="metric", values="value", aggfunc="mean")


def _error_of_mean(errors: pd.Series) -> float:
    """The standard error of a mean over positions, from theirs: the positions are independent test sets."""
    return math.sqrt(errors.pow(2).sum(skipna=False)) / len(errors)


def _missing(group: pd.DataFrame, model: str, size: int) -> str:
    """Why a (model, size) has no figures: n/a (context), ERR, OOM, or '' when it was not run."""
    rows = group[(group["model"] == model) & (group["slice.book_size"] == size) & (group["status"] != "ok")]
    if rows.empty:
        return ""
    first = rows.iloc[0]
    if str(first["message"] or "").startswith(NA_CONTEXT):
        return NA_CONTEXT
    return STATUS_CELL.get(first["status"], first["status"])


def size_table(task: str, fmt: str, group: pd.DataFrame) -> Table:
    means = _means(group)
    models = list(dict.fromkeys(group["model"]))
    rows = []
    for size in sorted(int(s) for s in group["slice.book_size"].unique()):
        row: dict[str, str | int] = {"entries": size}
        for model in models:
            if (model, size) in means.index:
                m = means.loc[(model, size)]
                row[f"{model} exact %"] = _figure(m, "exact_match", 100, 1)
                row[f"{model} digit %"] = _figure(m, "digit_accuracy", 100, 1)
                row[f"{model} edit"] = _figure(m, "edit_distance", 1, 2)
            else:
                why = _missing(group, model, size)
                row |= {f"{model} {col}": why for col in ("exact %", "digit %", "edit")}
        rows.append(row)
    return Table(f"{task}: recall by book size ({fmt} format)", pd.DataFrame(rows), _notes(group), task)


def position_table(task: str, fmt: str, group: pd.DataFrame) -> Table:
    cells: dict[tuple[int, str], dict[str, str]] = {}
    for (model, size, position), rows in group.groupby(["model", "slice.book_size", "slice.position"], sort=False):
        ok = rows[rows["status"] == "ok"].set_index("metric")["value"]
        if len(ok):
            text = f"{_figure(ok, 'exact_match', 100, 0)} / {_figure(ok, 'digit_accuracy', 100, 0)}"
        else:
            text = _missing(group, str(model), int(size))
        cells.setdefault((int(size), str(position)), {})[str(model)] = text
    models = list(dict.fromkeys(group["model"]))
    order = {p: i for i, p in enumerate(("start", "middle", "end", "random"))}
    rows = [{"entries": size, "position": position, **{m: by_model.get(m, "") for m in models}}
            for (size, position), by_model in sorted(cells.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))]
    notes = ["Cells: exact-match % / digit accuracy % at each position of the queried entry in the book "
             "(start, middle, end: the first, middle and last tenth; random: anywhere)"]
    return Table(f"{task}: recall by query position ({fmt} format)", pd.DataFrame(rows), notes, task)


def _figure(values: pd.Series, metric: str, scale: float, decimals: int) -> str:
    value = values.get(metric)
    return "" if value is None or pd.isna(value) else f"{scale * value:.{decimals}f}"


def _notes(group: pd.DataFrame) -> list[str]:
    ok = group[group["status"] == "ok"]
    notes = [SMOKE_NOTE] if (ok["weights"] == "random").any() else []
    if len(ok):
        queries = sorted({int(e["n_queries"]) for e in ok["extra"] if "n_queries" in e})
        notes.append(f"Greedy decoding, the answer is the first generated line; {', '.join(map(str, queries))} "
                     "queries per (size, position), each on its own seeded book; digit accuracy = share of the "
                     "10 digits right and in place, edit = mean Levenshtein distance to the number")
        runs = "; ".join(f"{model}: {', '.join(sorted(set(g['kernel'].dropna())))}, "
                         f"{', '.join(sorted(set(g['dtype'].dropna())))}, {', '.join(sorted(set(g['weights'])))} weights"
                         for model, g in ok.groupby("model", sort=False))
        notes.append(f"Runs: {runs}")
    return notes + _context_notes(group) + failure_notes(group[~_context_skips(group)])


def _context_skips(group: pd.DataFrame) -> pd.Series:
    return (group["status"] == "skipped") & group["message"].fillna("").str.startswith(NA_CONTEXT)


def _context_notes(group: pd.DataFrame) -> list[str]:
    """One line per model: the book sizes its context could not hold."""
    skipped = group[_context_skips(group)]
    return [f"{NA_CONTEXT} {model}: {', '.join(str(s) for s in sorted(set(rows['slice.book_size'])))} entries do "
            f"not fit ({rows['message'].iloc[-1].removeprefix(NA_CONTEXT + ': ')})"
            for model, rows in skipped.groupby("model", sort=False)]


def plot_phonebook(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    colour = model_colours(frame)
    paths = []
    for fmt, group in frame.groupby("slice.format", sort=False):
        ok = group[group["status"] == "ok"]
        series = []
        for model, rows in ok.groupby("model", sort=False):
            for metric, name, dash in (("exact_match", "exact", "-"), ("digit_accuracy", "digits", "--")):
                per_size = rows[rows["metric"] == metric].groupby("slice.book_size")
                means, errors = 100 * per_size["value"].mean(), 100 * per_size["err_above"].agg(_error_of_mean)
                series.append(Line(f"{model} {name}", [int(s) for s in means.index], list(means),
                                   colour[model] + dash, yerr=(list(errors), list(errors))))
        if series and group["slice.book_size"].nunique() > 1:
            paths.append(line_plot(out / f"{task}_recall_{fmt}.png",
                                   f"{task}: phonebook recall ({fmt}; bars: ± 1 standard error)",
                                   "book size (entries)", "accuracy (%)", series, log=False, log2_x=True))
    return paths
