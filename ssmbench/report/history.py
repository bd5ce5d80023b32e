"""Figures over many runs: the nightly history, with steps found as airspeed velocity (asv) finds them.

`ssmbench history RUN... --out DIR` reads each run's records and env.json, orders the runs by the time they
started (then by git commit), and follows every figure the runs share: a figure is one record identity
(task, model, metric and slice), its value in each run with the spread of its repeats (half their
interquartile range, or the standard error where a record has one: what `ssmbench diff` calls noise).

Steps come from asv's own code (asv.step_detect): the series is fitted as a piecewise-constant function
(`detect_steps`, a Potts-model segmentation weighted by each run's spread), and a change is flagged where
that fit jumps by more than the noise and the new level persists for at least two runs (`detect_regressions`
with min_size 2), as asv flags regressions between commits. asv's series are times, where up is worse; a
figure where higher is better is negated first, so "worse" means what the metric says. Improvements are
found the same way on the opposite sign. A single bad night comes back down and is not a step; a slow drift
is often fitted by asv as one noisy level: where no step is found, a least-squares trend that moves the
value by more than 5% over the runs, at least four standard errors from flat, is flagged as a drift.

Written into DIR: history.md (a table: each figure, its runs, first and last value, and the change found
with the commit range it appeared in), history.json, and history.html (self-contained like the run report).
The page reads top down: a table of every figure (its last value, its change over the runs, the steps
found), the changed ones first, each linked to its plot; then one interactive plot per figure (error bars,
the steps marked) in an even grid, grouped under a heading per task; and a filter box that hides the rows
and plots whose figure does not hold every word typed, so the one regression among 88 figures is the first
row, and a task or a model is a few letters away.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ssmbench.errors import UserError
from ssmbench.records import Record, RecordKey, latest_attempts
from ssmbench.report.diff import figure_spread
from ssmbench.report.tables import format_value
from ssmbench.rundir import RunDir

MIN_RUNS = 3  # fewer points cannot hold a step that persists
THRESHOLD = 0.05  # asv's default: steps smaller than 5% of the value are not flagged unless needed
DRIFT_T = 4.0  # a trend's slope, in standard errors, before it is called a drift


@dataclass(frozen=True)
class RunInfo:
    path: Path
    time: str  # when the run started (env.json), ISO 8601
    git: str  # the commit it ran (env.json), short

    @property
    def label(self) -> str:
        return f"{self.time[:16].replace('T', ' ')} {self.git[:10]}"


@dataclass
class Change:
    kind: str  # "worse" or "better" (a step), "drift worse" or "drift better" (a trend over the runs)
    before: int  # index of the last run at the old level
    after: int  # index of the first run at the new level
    old: float
    new: float

    @property
    def relative(self) -> float:
        return (self.new - self.old) / abs(self.old) if self.old else math.inf


@dataclass
class Figure:
    key: str  # task · model · metric [slice]
    task: str
    unit: str
    higher_is_better: bool
    values: list[float | None] = field(default_factory=list)  # per run, None where the run lacks it
    spreads: list[float | None] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def find_runs(paths: list[Path]) -> list[RunDir]:
    """Run directories named, or found below the folders named (a folder of nightly runs)."""
    runs = []
    for path in paths:
        if (path / RunDir.RECORDS).is_file():
            runs.append(RunDir.existing(path, need=RunDir.RECORDS))
            continue
        if not path.is_dir():
            raise UserError(f"{path}: not a run directory or a folder of runs")
        found = sorted(p.parent for p in path.glob(f"**/{RunDir.RECORDS}"))
        if not found:
            raise UserError(f"{path}: no run directory (with {RunDir.RECORDS}) below it")
        runs += [RunDir.existing(p, need=RunDir.RECORDS) for p in found]
    if len(runs) < 2:
        raise UserError(f"history needs two runs or more, got {len(runs)}")
    return runs


def run_info(run: RunDir) -> RunInfo:
    env = run.read_env()
    return RunInfo(run.path, str(env.get("time") or run.name), str(env.get("git") or "unknown"))


def collect(runs: list[RunDir]) -> tuple[list[RunInfo], list[Figure]]:
    """Every figure of the runs (a record identity, as `ssmbench diff` pairs them), as a series over the
    runs in the order they ran."""
    ordered = sorted(((run_info(r), r) for r in runs), key=lambda pair: (pair[0].time, pair[0].git))
    figures: dict[RecordKey, Figure] = {}
    for index, (_, run) in enumerate(ordered):
        for record in latest_attempts(run.read_records()):
            if record.status != "ok" or record.value is None or record.higher_is_better is None:
                continue
            figure = figures.setdefault(record.identity, Figure(
                _label(record), record.task, record.unit or "", record.higher_is_better,
                values=[None] * len(ordered), spreads=[None] * len(ordered)))
            figure.values[index], figure.spreads[index] = record.value, figure_spread(record)
    for figure in figures.values():
        figure.changes = find_changes(figure.values, figure.spreads, figure.higher_is_better)
    return [info for info, _ in ordered], sorted(figures.values(), key=lambda f: f.key)


def _label(record: Record) -> str:
    sliced = ", ".join(f"{k}={v}" for k, v in sorted(record.slice.items()))
    return f"{record.task} · {record.model or '—'} · {record.metric} [{sliced}]"


def find_changes(values: list[float | None], spreads: list[float | None], higher_is_better: bool) -> list[Change]:
    """The persistent steps of a series, worse and better, by asv's step detection (see the module's
    docstring); runs without a value are gaps."""
    from asv.step_detect import detect_regressions, detect_steps

    present = [v for v in values if v is not None]
    if len(present) < MIN_RUNS:
        return []
    weights = [1 / s ** 2 if s else None for s in spreads] if any(spreads) else None
    low, high = min(present), max(present)
    lift = 0.0 if low > 0 else (high - low) + abs(low) + 1.0  # asv's relative threshold expects values > 0
    changes = []
    for kind in ("worse", "better"):
        # asv reads a series as times, where a step up is a regression: mirror the series within its own
        # range (every difference kept) when up should mean the other way.
        up_is_kind = (kind == "worse") != higher_is_better
        y = [(v if up_is_kind else high + low - v) + lift if v is not None else None for v in values]
        _, _, positions = detect_regressions(detect_steps(y, weights), threshold=THRESHOLD, min_size=2)
        for before, after, _, _ in positions or []:
            old, new = values[before], values[after]
            if old is not None and new is not None:
                changes.append(Change(kind, before, after, old, new))
    if not changes:
        changes += _drift(values, higher_is_better)
    return sorted(changes, key=lambda c: c.after)


def _drift(values: list[float | None], higher_is_better: bool) -> list[Change]:
    """A slow trend that asv's segmentation fits as one noisy level: the least-squares line through the
    series, flagged when it moves the value by more than THRESHOLD over the runs and its slope is at least
    DRIFT_T standard errors from zero (a trend, not noise)."""
    import statistics

    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2 * MIN_RUNS:
        return []
    xs, ys = [float(i) for i, _ in points], [v for _, v in points]
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys, strict=True)]
    spread = math.sqrt(sum(r * r for r in residuals) / (len(xs) - 2))
    sxx = sum((x - statistics.fmean(xs)) ** 2 for x in xs)
    start, end = slope * xs[0] + intercept, slope * xs[-1] + intercept
    moved = abs(end - start) / abs(start) if start else math.inf
    significant = spread == 0 or abs(slope) / (spread / math.sqrt(sxx)) >= DRIFT_T
    if moved < THRESHOLD or not significant:
        return []
    kind = "drift worse" if (slope > 0) != higher_is_better else "drift better"
    return [Change(kind, points[0][0], points[-1][0], start, end)]


def table_rows(runs: list[RunInfo], figures: list[Figure]) -> list[dict[str, str]]:
    rows = []
    for figure in figures:
        ends = _ends(figure)
        if ends is None:
            continue
        rows.append({"figure": figure.key, "unit": figure.unit, "runs": str(ends[0]), "first": format_value(ends[1]),
                     "last": format_value(ends[2]), "steps": _steps_found(runs, figure)})
    return rows


def _ends(figure: Figure) -> tuple[int, float, float] | None:
    """How many runs hold the figure, its first and its last value; None where fewer than two hold it."""
    present = [v for v in figure.values if v is not None]
    return (len(present), present[0], present[-1]) if len(present) >= 2 else None


def _steps_found(runs: list[RunInfo], figure: Figure) -> str:
    return "; ".join(f"{c.kind} by {abs(c.relative):.1%} ({format_value(c.old)} -> {format_value(c.new)}) between "
                     f"{runs[c.before].git[:10]} and {runs[c.after].git[:10]}" for c in figure.changes) or "—"


def write_history(runs: list[RunInfo], figures: list[Figure], out: Path) -> dict[str, Path]:
    """history.md, history.json and history.html in `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(runs, figures)
    runs_md = "\n".join(f"{i + 1}. {r.label} ({r.path})" for i, r in enumerate(runs))
    flagged = sum(1 for f in figures if f.changes)
    summary = (f"{flagged} of {len(rows)} figures changed (asv's step detection: a persistent step beyond the "
               f"noise, at least two runs long, {THRESHOLD:.0%} threshold)")
    body = pd.DataFrame(rows).to_markdown(index=False) if rows else "(no figure in two runs or more)"
    md = f"# History of {len(runs)} runs\n\n{runs_md}\n\n{summary}\n\n{body}\n"
    data = {"runs": [{"path": str(r.path), "time": r.time, "git": r.git} for r in runs],
            "figures": [{"figure": f.key, "unit": f.unit, "higher_is_better": f.higher_is_better, "values": f.values,
                         "spreads": f.spreads, "changes": [c.__dict__ | {"relative": c.relative} for c in f.changes]}
                        for f in figures]}
    paths = {"md": out / "history.md", "json": out / "history.json", "html": out / "history.html"}
    paths["md"].write_text(md)
    paths["json"].write_text(json.dumps(data, indent=1))
    paths["html"].write_text(_html(runs, figures, summary), encoding="utf-8")
    return paths


# The page's filter: a row or plot stays while its figure (data-key) holds every word typed; a task's
# section goes with its last plot. Plain JavaScript, nothing fetched.
FILTER = """
function filterFigures(text) {
  var words = text.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
  document.querySelectorAll('[data-key]').forEach(function (el) {
    var key = el.dataset.key.toLowerCase();
    el.hidden = !words.every(function (word) { return key.indexOf(word) !== -1; });
    if (!el.hidden && el.tagName === 'TR') shown += 1;
  });
  document.querySelectorAll('section.task').forEach(function (section) {
    section.hidden = !section.querySelector('.plot:not([hidden])');
  });
  document.getElementById('shown').textContent = shown + ' shown';
}
"""


def _html(runs: list[RunInfo], figures: list[Figure], summary: str) -> str:
    """The page: the figure table (changed first, each row linked to its plot), the filter, and the plots
    in a grid per task."""
    from plotly.offline import get_plotlyjs

    from ssmbench.report.html import REPORT, STYLE, WATCH

    shown = sorted((f for f in figures if _ends(f) is not None), key=_reading_order)
    named = [(f, f"{i}-" + "".join(ch if ch.isalnum() else "-" for ch in f.key)[:60]) for i, f in enumerate(shown)]
    labels = [r.label for r in runs]
    sections = []
    for task in dict.fromkeys(f.task for f in shown):
        cells = "".join(_figure_html(f, labels, name) for f, name in named if f.task == task)
        sections.append(f"<section class='task'><h2>{html.escape(task)}</h2><div class='plots'>{cells}</div></section>")
    filter_box = ("<p><input id='filter' type='search' size='50' oninput='filterFigures(this.value)' "
                  "placeholder='filter: words of a task, model, metric or slice'> <span id='shown'></span></p>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ssmbench history</title>"
            f"<style>{STYLE}</style><script>{WATCH}</script><script>{get_plotlyjs()}</script>"
            f"<script>{FILTER}</script></head><body><pre id='page-errors'></pre><h1>History of {len(runs)} runs</h1>"
            f"<p>{html.escape(summary)}</p>{filter_box}{_figure_table(runs, named)}{''.join(sections)}"
            f"<script>{REPORT}</script></body></html>")


def _reading_order(figure: Figure) -> tuple[bool, float, str]:
    """Figures with a step or drift found first, then by how far the last value moved from the first."""
    _, first, last = _ends(figure) or (0, 0.0, 0.0)
    return not figure.changes, -abs(_relative(first, last)), figure.key


def _relative(first: float, last: float) -> float:
    return (last - first) / abs(first) if first else (0.0 if last == first else math.inf)


def _figure_table(runs: list[RunInfo], named: list[tuple[Figure, str]]) -> str:
    """A row per figure: a link to its plot (fig-NAME), its last value, its change from the first run, and
    the steps found."""
    rows = []
    for figure, name in named:
        _, first, last = _ends(figure) or (0, 0.0, 0.0)
        key = html.escape(figure.key, quote=True)
        rows.append(f"<tr data-key='{key}'><td><a href='#fig-{name}'>{html.escape(figure.key)}</a></td>"
                    f"<td>{html.escape(format_value(last))} {html.escape(figure.unit)}</td>"
                    f"<td>{_change(figure, first, last)}</td><td>{html.escape(_steps_found(runs, figure))}</td></tr>")
    head = "<tr><th>figure</th><th>last value</th><th>change (first to last run)</th><th>steps found</th></tr>"
    return f"<table class='data' id='figures'>{head}{''.join(rows)}</table>"


def _change(figure: Figure, first: float, last: float) -> str:
    """The move from the first run to the last, signed, named worse or better (as the metric reads) where it
    exceeds THRESHOLD: a hint for the reader, not a finding (the steps column holds those)."""
    relative = _relative(first, last)
    if abs(relative) < THRESHOLD:
        return f"{relative:+.1%}"
    return f"{relative:+.1%} ({'better' if (relative > 0) == figure.higher_is_better else 'worse'})"


def _figure_html(figure: Figure, labels: list[str], name: str) -> str:
    """One figure's plot over the runs, in its grid cell (`name`: its anchor, fig-NAME, which the table links)."""
    import plotly.graph_objects as go

    from ssmbench.report.html import plot_cell

    xs = [label for label, v in zip(labels, figure.values, strict=True) if v is not None]
    ys = [v for v in figure.values if v is not None]
    errors = [s or 0.0 for s, v in zip(figure.spreads, figure.values, strict=True) if v is not None]
    chart = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name=figure.key,
                                 error_y={"type": "data", "array": errors, "visible": True}))
    for change in figure.changes:
        colour = "#c00" if change.kind == "worse" else "#080"
        chart.add_vline(x=change.after - 0.5, line_dash="dash", line_color=colour,
                        annotation_text=f"{change.kind} {abs(change.relative):.0%}")
    better = "higher is better" if figure.higher_is_better else "lower is better"
    chart.update_layout(yaxis_title=f"{figure.unit} ({better})", xaxis={"type": "category"}, showlegend=False,
                        margin={"l": 60, "r": 10, "b": 60})
    return plot_cell(chart, figure.key.removeprefix(f"{figure.task} · "), name, figure.key, title_size=11)


def history(paths: list[Path], out: Path) -> tuple[list[RunInfo], list[dict[str, str]], dict[str, Path]]:
    """The runs in order, a table row per figure, and the files written into `out`."""
    infos, figures = collect(find_runs(paths))
    return infos, table_rows(infos, figures), write_history(infos, figures, out)
