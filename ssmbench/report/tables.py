"""Records -> pandas -> comparison tables, the generic view every task kind gets.

The side-by-side layout users know from the source slides: models as columns, metrics as rows grouped by
task, one row per sweep point. A cell is the median (with its relative spread when there were repeats),
or what happened instead: OOM (the paper's ✗), ERR, or — for a skipped point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ssmbench.records import CPU_SWING, Record, is_cpu_timing

STATUS_CELL = {"oom": "OOM", "error": "ERR", "skipped": "—"}
@dataclass
class Table:
    """A titled table for people (markdown, terminal) and machines (CSV, JSON)."""

    title: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    task: str = ""

    def to_markdown(self) -> str:
        body = self.frame.to_markdown(index=False, disable_numparse=True) if len(self.frame) else "(no rows)"
        notes = "".join(f"\n> {n}" for n in self.notes)
        return f"### {self.title}\n\n{body}\n{notes}\n"


# Under every table of a quality kind run on random weights (a suite's `smoke_test: true`).
SMOKE_NOTE = "random weights: these numbers measure nothing but the pipeline (the suite sets `smoke_test: true`)"

# The slice's columns go after the first four; with them, seed and metric identify a record within a run
# (records.Record.identity), and job, point and attempt find its line in records.jsonl.
TIDY_COLUMNS = ["task", "kind", "model", "family", "seed", "metric", "value", "unit", "std", "stderr", "n", "p10", "p90",
                "iqr_rel", "status", "kernel", "cuda_graphs", "weights", "dtype", "device", "host", "params", "message",
                "job", "point", "attempt"]


def tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per record with its slice columns: the CSV for pandas and spreadsheets, every row carrying
    its record's identity. A slice key that is also a record field (seed, dtype, cuda_graphs: the slice
    has it where the job varies it, the field where it holds for the whole job) is one column, filled from
    whichever the record has; dropping either would merge a seed sweep's rows."""
    frame = frame.copy()
    shared = [c for c in frame.columns if c.startswith("slice.") and c.removeprefix("slice.") in frame.columns]
    for col in shared:
        frame[col.removeprefix("slice.")] = frame[col].combine_first(frame[col.removeprefix("slice.")])
    slices = [c for c in frame.columns if c.startswith("slice.") and c not in shared]
    cols = [c for c in TIDY_COLUMNS if c in frame.columns]
    for col in [*slices, *(c.removeprefix("slice.") for c in shared), *(["seed"] if "seed" in frame else [])]:
        frame[col] = _whole_numbers_as_integers(frame[col])
    return frame[cols[:4] + slices + cols[4:]].rename(columns={c: c.removeprefix("slice.") for c in slices})


def _whole_numbers_as_integers(column: pd.Series) -> pd.Series:
    """A coordinate column of whole numbers with gaps (a slice key some records lack, which pandas turns to
    floats) as integers: seq_len 32, not 32.0. Values stay as measured."""
    values = column.dropna()
    if column.dtype.kind != "f" or not len(values) or not values.map(float.is_integer).all():
        return column
    return column.astype("Int64")


def records_frame(records: list[Record]) -> pd.DataFrame:
    """One row per record; slice fields become columns prefixed `slice.`, `extra` stays a dict."""
    rows = []
    for r in records:
        row = r.model_dump(exclude={"slice", "stats", "extra"})
        row["cuda_graphs"] = r.graphs
        row.update({f"slice.{k}": v for k, v in r.slice.items()})
        if r.stats is not None:
            row.update(std=r.stats.std, n=r.stats.n, p10=r.stats.p10, p90=r.stats.p90,
                       iqr_rel=r.stats.relative_iqr if r.stats.n > 1 else None)
        row["err_below"], row["err_above"] = r.error_bar or (math.nan, math.nan)
        row["params"] = r.extra.get("params")
        row["cpu_timing"] = is_cpu_timing(r)  # its ± is this run's only: format_figure marks it
        row["extra"] = r.extra  # whole, for views that need more than the parameter count
        rows.append(row)
    return pd.DataFrame(rows)


# A median whose repeats spread more than this (interquartile range over the median) is flagged unstable.
UNSTABLE_IQR = 0.10
UNSTABLE = "⚠"
CPU_MARK = "†"  # after the ± of a CPU timing: the spread of this run's repeats, not of the figure
CPU_NOTE = (f"{CPU_MARK} a CPU timing: its ± is the spread of this run's repeats only, and {CPU_SWING} (two "
            "back-to-back runs of one commit on one CPU: figures 20% to 2x apart), so compare such figures within "
            "one run and do not quote the ± as their precision")
SPREAD_NOTE = (f"cells: median of n repeats ± half the interquartile range, relative to the median; {UNSTABLE} = "
               f"unstable, the repeats' interquartile range exceeds {UNSTABLE_IQR:.0%} of the median")


def format_value(value: float | None, iqr_rel: float | None = None, cpu_timing: bool = False) -> str:
    """A median as a table prints it: 3 significant digits or thousands separators, with its spread (half
    the interquartile range, relative) when there were repeats, flagged when that spread is large, and
    marked (CPU_MARK) when it is a CPU timing's, which a rerun exceeds by far."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    a = abs(value)
    text = (f"{value:,.0f}" if a >= 1000 else f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10
            else f"{value:.3g}")
    if iqr_rel is not None and not math.isnan(iqr_rel) and value:
        text += (f" ±{50 * iqr_rel:.1f}%" + (CPU_MARK if cpu_timing else "")
                 + (f" {UNSTABLE}" if iqr_rel > UNSTABLE_IQR else ""))
    return text


def format_figure(row: Mapping[str, Any]) -> str:
    """A record's cell, from its row of records_frame: the value with its spread and marks."""
    return format_value(row["value"], row.get("iqr_rel"), bool(row.get("cpu_timing")))


def cpu_notes(frame: pd.DataFrame) -> list[str]:
    """CPU_NOTE, for a table that shows the spread of a CPU timing (a cell that format_figure marked)."""
    if "cpu_timing" not in frame or "iqr_rel" not in frame:
        return []
    return [CPU_NOTE] if (frame["cpu_timing"].astype(bool) & frame["iqr_rel"].notna()).any() else []


def spread_notes(frame: pd.DataFrame) -> list[str]:
    """What ± and the flag mean, with the repeat counts, and which points are unstable."""
    if "iqr_rel" not in frame or frame["iqr_rel"].isna().all():
        return []
    counts = ", ".join(str(int(n)) for n in sorted(frame.loc[frame["iqr_rel"].notna(), "n"].unique()))
    notes = [f"± = half the interquartile range of n = {counts} repeats, relative to the median"]
    unstable = frame[frame["iqr_rel"] > UNSTABLE_IQR]
    if len(unstable):
        notes.append(f"{UNSTABLE} unstable ({len(unstable)} of {frame['iqr_rel'].notna().sum()} figures): the repeats' "
                     f"interquartile range exceeds {UNSTABLE_IQR:.0%} of the median; rerun with more repeats")
    return notes + cpu_notes(frame)


def slice_columns(frame: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    """Slice columns that vary across the frame (become row keys) and those that are constant (a note).
    A record's seed that varies where the slice does not say it is a row key too: without it, two seeds'
    figures would claim one cell."""
    varying, constant = [], {}
    for col in [c for c in frame.columns if c.startswith("slice.")]:
        values = frame[col].dropna().astype(str).unique()
        if len(values) > 1:
            varying.append(col)
        elif len(values) == 1:
            constant[col.removeprefix("slice.")] = _slice_value({col: frame[col].dropna().iloc[0]}, col)
    if "seed" in frame and "slice.seed" not in frame and frame["seed"].dropna().nunique() > 1:
        varying.append("seed")
    return varying, constant


def ordered_metrics(frame: pd.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """The metrics of the frame, those named in `order` first (in that order), the rest as they appear."""
    seen = list(dict.fromkeys(frame["metric"].dropna()))
    preferred = [m for m in order if m in seen]
    return preferred + [m for m in seen if m not in preferred]


def comparison_table(task: str, frame: pd.DataFrame, metric_order: Sequence[str] = (),
                     glossary: Mapping[str, str] | None = None) -> Table:
    """Models as columns, (metric, varying slice) as rows; failures fill every metric of their point. The
    glossary's line for each metric shown goes under the table, in the rows' order."""
    kind = str(frame["kind"].iloc[0])
    varying, constant = slice_columns(frame)
    metrics = ordered_metrics(frame, metric_order)
    units = frame.dropna(subset=["metric"]).groupby("metric")["unit"].first().to_dict()
    models = list(dict.fromkeys(frame["model"].fillna("-")))
    cells: dict[tuple, dict[str, str]] = {}
    for row in frame.to_dict("records"):
        point = tuple(_slice_value(row, c) for c in varying)
        for metric in ([row["metric"]] if isinstance(row["metric"], str) else metrics or ["status"]):
            cell = STATUS_CELL[row["status"]] if row["status"] != "ok" else format_figure(row)
            cells.setdefault((metric, *point), {})[row["model"] or "-"] = cell
    order = {m: i for i, m in enumerate(metrics)}
    keys = sorted(cells, key=lambda k: (order.get(k[0], len(order)), *[_sort_key(v) for v in k[1:]]))
    names = [c.removeprefix("slice.") for c in varying]
    table_rows = []
    for key in keys:
        metric = key[0]
        label = f"{metric} ({units[metric]})" if units.get(metric) else metric
        table_rows.append({"metric": label, **dict(zip(names, key[1:], strict=True)),
                           **{m: cells[key].get(m, "") for m in models}})
    notes = [", ".join(f"{k}={v}" for k, v in constant.items())] if constant else []
    notes += [f"{m}: {glossary[m]}" for m in metrics if m in (glossary or {})]
    notes += spread_notes(frame) + failure_notes(frame)
    return Table(title=f"{task} ({kind})", frame=pd.DataFrame(table_rows), notes=notes, task=task)


def models_table(frame: pd.DataFrame) -> Table:
    """Per model: family, parameters, weights, dtype, kernels and graph settings, device: how it ran."""
    rows = []
    ok = frame[frame["model"].notna()]
    for model, group in ok.groupby("model", sort=False):
        params = group["params"].dropna()
        kernels = sorted(set(group["kernel"].dropna()))
        graphs = sorted({"on" if g else "off" for g in group["cuda_graphs"].dropna()})
        rows.append({"model": model, "family": group["family"].dropna().iloc[0] if group["family"].notna().any() else "",
                     "params": param_count(params.iloc[0]) if len(params) else "",
                     "weights": ", ".join(sorted(set(group["weights"].dropna()))),
                     "dtype": ", ".join(sorted(set(group["dtype"].dropna()))),
                     "kernel": ", ".join(kernels), "cuda graphs": ", ".join(graphs),
                     "device": ", ".join(sorted(set(group["device"].dropna())))})
    return Table(title="Models", frame=pd.DataFrame(rows))


def device_notes(frame: pd.DataFrame) -> list[str]:
    """What a task's tables must say when its figures come from more than one device (a run spread over a
    cluster of unlike GPUs, or resumed on another machine): which model ran where, and a warning for every
    model whose own figures mix devices, since a column of those is no comparison at all."""
    measured = frame[frame["status"].isin(["ok", "oom"]) & frame["device"].notna()]
    if measured["device"].nunique() < 2:
        return []
    per_model = measured.groupby(measured["model"].fillna("-"), sort=False)["device"]
    notes = []
    for model, devices in per_model:
        counts = devices.value_counts()
        if len(counts) > 1:
            shares = ", ".join(f"{device} ({n} figures)" for device, n in counts.items())
            notes.append(f"⚠ mixed GPUs: the figures of {model} come from {len(counts)} devices: {shares}")
    where = "; ".join(f"{model} on {', '.join(devices.unique())}" for model, devices in per_model)
    return [*notes, f"devices differ between models: {where}"]


def param_count(params: float) -> str:
    """Parameters as papers print them: 66K, 129.1M."""
    return f"{params / 1e3:,.0f}K" if params < 1e6 else f"{params / 1e6:,.1f}M"


def how_obtained(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Per model of a task's measured records: kernel path, CUDA graphs (on, off or both), weights, dtype
    and device, as the first of its records says (a job's records share them)."""
    ok = frame[frame["status"] == "ok"]
    out = {}
    for model, rows in ok.groupby("model", sort=False):
        first = rows.iloc[0]
        graphs = "/".join(sorted({"on" if g else "off" for g in rows["cuda_graphs"].dropna()})) or "—"
        out[str(model)] = {"kernel": str(first["kernel"] or "—"), "graphs": graphs,
                           "weights": str(first["weights"] or "—"), "dtype": str(first["dtype"] or "—"),
                           "device": str(first["device"] or "—")}
    return out


def failure_notes(frame: pd.DataFrame) -> list[str]:
    """One note per (model, status, message): what the OOM/ERR/— cells of a table stand for."""
    failed = frame[frame["status"].isin(["error", "oom", "skipped"])]
    notes = []
    for (model, status, message), group in failed.groupby(["model", "status", "message"], dropna=False, sort=False):
        label = STATUS_CELL[status]
        notes.append(f"{label} {model if isinstance(model, str) else ''} ({len(group)} point"
                     f"{'s' if len(group) > 1 else ''}): {message}")
    return notes


def _slice_value(row: dict[str, Any], col: str) -> Any:
    value = row.get(col)
    if isinstance(value, bool | np.bool_):
        return "on" if value else "off"
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))
