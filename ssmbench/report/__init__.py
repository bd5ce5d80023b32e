"""Tables and plots of a run, rebuilt from records.jsonl (and env.json for the header) alone.

Which tables and plots a task gets is its kind's business: the caller passes the kinds (name -> anything
with `tables(task, frame)` and `plots(task, frame, out)`, as ssmbench.kinds.all_kinds() returns), and
report stays a pure function of records and kinds. A kind it is not given gets the generic comparison.

`write_report(run, kinds)` writes table.md, table.csv, table.json (and table.tex on request) atomically,
plus the PNG plots; `ssmbench report RUN_DIR` calls it, and so does every run at its end. A run directory
that cannot be written (read-only, a full disk) still gets its tables printed, with a warning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from ssmbench import console
from ssmbench.records import Record, latest_attempts
from ssmbench.report.tables import Table, comparison_table, models_table, records_frame, tidy_frame
from ssmbench.rundir import TABLE_FORMATS, RunDir


class KindReport(Protocol):
    """What report needs of a task kind (ssmbench.kinds.base.Kind provides it)."""

    def tables(self, task: str, frame: pd.DataFrame) -> list[Table]: ...

    def plots(self, task: str, frame: pd.DataFrame, out: Path) -> list[Path]: ...

    def summaries(self, frame: pd.DataFrame) -> list[Table]: ...


def build_tables(records: list[Record], kinds: Mapping[str, KindReport]) -> list[Table]:
    return tables_of(records_frame(latest_attempts(records)), kinds)


def tables_of(frame: pd.DataFrame, kinds: Mapping[str, KindReport]) -> list[Table]:
    """The models table, then each task's tables (its kind's, or the generic comparison), then each kind's
    tables across its tasks."""
    if frame.empty:
        return []
    tables = [models_table(frame)] if frame["model"].notna().any() else []
    for task, group in frame.groupby("task", sort=False):
        kind = kinds.get(str(group["kind"].iloc[0]))
        tables += kind.tables(str(task), group) if kind else [comparison_table(str(task), group)]
    for name, group in frame.groupby("kind", sort=False):
        kind = kinds.get(str(name))
        tables += kind.summaries(group) if kind else []
    return tables


def draw_plots(frame: pd.DataFrame, kinds: Mapping[str, KindReport], out: Path) -> list[Path]:
    paths: list[Path] = []
    for task, group in frame.groupby("task", sort=False):
        kind = kinds.get(str(group["kind"].iloc[0]))
        if kind is not None:
            paths += kind.plots(str(task), group, out)
    return paths


def header_lines(run: RunDir, records: list[Record]) -> list[str]:
    env = run.read_env()
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    pk = env.get("packages", {})
    versions = ", ".join(f"{n} {pk[n]}" for n in ("torch", "transformers", "mamba_ssm", "causal_conv1d", "lm_eval")
                         if pk.get(n))
    suite = records[0].suite if records else run.path.parent.name
    kernels = env.get("fused_mamba_kernels", {})
    return [f"# {suite} — run {run.name}", "",
            f"- GPU: {gpus}; driver {env.get('driver') or '—'}; CUDA {env.get('cuda_runtime') or '—'}; "
            f"CPU: {env.get('cpu', '?')}",
            f"- {versions}; ssmbench {pk.get('ssmbench', '?')} (git {env.get('git') or '—'})",
            f"- fused Mamba kernels: {'yes' if kernels.get('available') else 'no'} ({kernels.get('detail', '?')})",
            "- cells: median over repeats ± relative standard deviation (zero-shot tables: lm-eval's standard "
            "error); OOM = out of memory (the paper's ✗), ERR = failed (see notes), — = skipped", ""]


def render(tables: list[Table], fmt: str, header: list[str] | None = None,
           records: list[Record] | None = None) -> str:
    """One format of a report. CSV is the tidy form (a row per record), the others are the tables."""
    if fmt == "md":
        return "\n".join(header or []) + "\n" + "\n".join(t.to_markdown() for t in tables)
    if fmt == "csv":
        return tidy_frame(records_frame(latest_attempts(records or []))).to_csv(index=False) if records else ""
    if fmt == "json":
        return json.dumps([{"title": t.title, "task": t.task, "notes": t.notes,
                            "rows": t.frame.to_dict("records")} for t in tables], indent=2, default=str)
    if fmt == "latex":
        return "\n\n".join(f"% {t.title}\n" + t.frame.to_latex(index=False, escape=True) for t in tables)
    raise ValueError(f"unknown format {fmt!r}")


@dataclass
class Report:
    tables: list[Table]
    rendered: dict[str, str]  # format -> text, as written to table.<suffix>


def write_report(run: RunDir, kinds: Mapping[str, KindReport],
                 formats: tuple[str, ...] = ("md", "csv", "json")) -> Report:
    """Render every table of the run in `formats` and write them (and the plots) into the run directory.
    Failing to write is a warning: the rendered tables are returned all the same."""
    records = run.read_records()
    frame = records_frame(latest_attempts(records))
    tables = tables_of(frame, kinds)
    header = header_lines(run, records)
    rendered = {fmt: render(tables, fmt, header, records) for fmt in formats}
    try:
        for fmt, text in rendered.items():
            run.write_atomic(run.table_path(fmt), text)
        if records:
            draw_plots(frame, kinds, run.path)
    except OSError as exc:
        console.note(f"{run}: tables and plots not written ({exc.strerror or exc}); printing them only")
    return Report(tables, rendered)


__all__ = ["TABLE_FORMATS", "KindReport", "Report", "Table", "build_tables", "render", "tables_of", "write_report"]
