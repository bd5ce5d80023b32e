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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from rich.markup import escape

from ssmbench import console
from ssmbench.errors import WriteError
from ssmbench.records import (
    Record,
    duplicate_identities,
    incomplete_points,
    latest_attempts,
    shared_identities,
)
from ssmbench.report.tables import (
    SPREAD_NOTE,
    Table,
    comparison_table,
    device_notes,
    models_table,
    records_frame,
    tidy_frame,
)
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
        own = kind.tables(str(task), group) if kind else [comparison_table(str(task), group)]
        notes = device_notes(group)
        tables += [with_notes(t, notes) for t in own]
    for name, group in frame.groupby("kind", sort=False):
        kind = kinds.get(str(name))
        if kind:
            notes = device_notes(group)
            tables += [with_notes(t, notes) for t in kind.summaries(group)]
    return tables


def with_notes(table: Table, notes: list[str]) -> Table:
    """The table with `notes` after its own (each once: a kind may have said the same already)."""
    return replace(table, notes=[*table.notes, *(n for n in notes if n not in table.notes)]) if notes else table


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
    suite = records[0].suite if records else run.suite_name()
    kernels = env.get("fused_mamba_kernels", {})
    return [f"# {suite} — run {run.name}", "",
            f"- GPU: {gpus}; driver {env.get('driver') or '—'}; CUDA {env.get('cuda_runtime') or '—'}; "
            f"CPU: {env.get('cpu', '?')}",
            f"- {versions}; ssmbench {pk.get('ssmbench', '?')} (git {env.get('git') or '—'})",
            f"- fused Mamba kernels: {'yes' if kernels.get('available') else 'no'} ({kernels.get('detail', '?')})",
            *_launcher_line(env.get("launcher")),
            f"- {SPREAD_NOTE} (zero-shot and phonebook tables: ± is the standard error); OOM = out of memory "
            "(the paper's ✗), ERR = failed (see notes), — = skipped", ""]


def launcher_summary(launcher: dict[str, Any]) -> str:
    """env.json's launcher in one phrase: `ray (ray 2.60.0, nodes 1, gpus 1)`."""
    details = ", ".join(f"{k} {v}" for k, v in launcher.items() if k != "name")
    return f"{launcher.get('name', '?')} ({details})" if details else str(launcher.get("name", "?"))


def _launcher_line(launcher: dict[str, Any] | None) -> list[str]:
    """A line when the jobs ran away from the driver, whose machine the lines above describe."""
    if not launcher or launcher.get("name") == "local":
        return []
    return [f"- launcher: {launcher_summary(launcher)}; each record names the host and GPU that measured it"]


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
        lines = [line.lstrip("#- ").replace("**", "") for line in header or [] if line.strip()]
        preamble = "".join(f"\\noindent{{\\small {latex_escape(line)}}}\\par\n" for line in lines)
        return preamble + "\n\n".join(_latex_table(t) for t in tables)
    raise ValueError(f"unknown format {fmt!r}")


@dataclass(frozen=True)
class Missing:
    """Points of one task that the run planned and that have no record (a run stopped early)."""

    task: str
    missing: int
    planned: int


def missing_points(plan: list[tuple[str, str, str]] | None, records: list[Record]) -> list[Missing]:
    """Per task of the plan (in its order): how many planned points have no record at all."""
    if plan is None:
        return []
    done = {r.point_id for r in records}
    counts: dict[str, list[int]] = {}
    for task, job, point in plan:
        tally = counts.setdefault(task, [0, 0])
        tally[0] += (job, point) not in done
        tally[1] += 1
    return [Missing(task, m, n) for task, (m, n) in counts.items() if m]


def with_missing(tables: list[Table], missing: list[Missing]) -> list[Table]:
    """Each task's tables say how many of its points are missing; a task with no record at all still gets
    a table, empty, that says so, instead of vanishing from the report."""
    by_task = {m.task: m for m in missing}
    out = []
    for table in tables:
        m = by_task.get(table.task)
        note = [f"{m.missing} of {m.planned} planned points of this task have no record: blank cells are "
                "points not measured"] if m else []
        out.append(with_notes(table, note))
    present = {t.task for t in tables}
    out += [Table(f"{m.task} (not run)", pd.DataFrame(), [f"none of its {m.planned} planned points has a record"],
                  m.task) for m in missing if m.task not in present]
    return out


def missing_header(missing: list[Missing], planned: int, run: RunDir) -> list[str]:
    """The report's first warning when the run stopped early: how much is missing, where, and the remedy."""
    if not missing:
        return []
    by_task = ", ".join(f"{m.task} {m.missing} of {m.planned}" for m in missing)
    return [f"**Incomplete: {sum(m.missing for m in missing)} of {planned} planned points have no record** "
            f"({by_task}); finish with `ssmbench run --resume {run}`", ""]


def integrity_warnings(records: list[Record], run: RunDir) -> list[str]:
    """What makes the records doubtful, for the top of the report and stderr: points a torn write left with
    part of their records, figures recorded twice in one attempt (two processes ran the same points), and
    figures that two points recorded under one identity (a kind that left a sweep axis out of the slice)."""
    def names(points: list[tuple[str, str]]) -> str:
        return ", ".join(f"{job} [{point}]" for job, point in points[:3]) + (" …" if len(points) > 3 else "")

    out = []
    torn = incomplete_points(records)
    if torn:
        out.append(f"Torn: {len(torn)} points have only part of their records (a write cut short: "
                   f"{names(list(torn))}); `ssmbench run --resume {run}` redoes them")
    repeats = duplicate_identities(records)
    if repeats:
        out.append(f"Duplicates: {sum(repeats.values())} records repeat a figure of the same attempt "
                   f"({names([(job, point) for job, point, _ in repeats])}): two processes ran these points at "
                   "once, and each such cell shows one of the figures")
    shared = shared_identities(records)
    if shared:
        points = list(dict.fromkeys(p for where in shared.values() for p in where))
        out.append(f"Ambiguous: {len(shared)} figure{'s' if len(shared) > 1 else ''} recorded by more than one point "
                   "with the same slice "
                   f"({names(points)}): the points differ only outside the slice (a seed?), and the tables and "
                   "`ssmbench diff` take each pair for one figure")
    return out


@dataclass
class Report:
    tables: list[Table]
    rendered: dict[str, str]  # format -> text, as written to table.<suffix>
    html: Path | None = None  # report.html, when asked for and written


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_table(table: Table) -> str:
    """A table environment: the title as caption, the tabular, and every note under it (a LaTeX report
    must say what the markdown one says: how the numbers were obtained, what the cells mean)."""
    body = table.frame.to_latex(index=False, escape=True) if len(table.frame) else "(no rows)\n"
    notes = "".join(f"\\par{{\\footnotesize {latex_escape(n)}}}\n" for n in table.notes)
    return (f"\\begin{{table}}[ht]\n\\centering\n\\caption{{{latex_escape(table.title)}}}\n{body}{notes}"
            "\\end{table}")


def write_report(run: RunDir, kinds: Mapping[str, KindReport],
                 formats: tuple[str, ...] = ("md", "csv", "json"), html: bool = False) -> Report:
    """Render every table of the run in `formats` and write them (and the plots, and with `html` the
    self-contained page, report/html.py) into the run directory. Failing to write is a warning: the
    rendered tables are returned all the same."""
    records = run.read_records()
    frame = records_frame(latest_attempts(records))
    plan = run.read_plan()
    missing = missing_points(plan, records)
    tables = with_missing(tables_of(frame, kinds), missing)
    warnings = integrity_warnings(records, run)
    for warning in warnings:
        console.warning(f"{run}: {escape(warning)}")
    header = [*header_lines(run, records), *(f"**{w}**" for w in warnings), *([""] if warnings else []),
              *missing_header(missing, len(plan or []), run)]
    rendered = {fmt: render(tables, fmt, header, records) for fmt in formats}
    html_path = None
    try:
        for fmt, text in rendered.items():
            run.write_atomic(run.table_path(fmt), text)
        if records:
            draw_plots(frame, kinds, run.path)
        if html:
            from ssmbench.report.html import write_html

            html_path = write_html(run.path, header, tables, frame)
    except OSError as exc:
        console.note(f"{run}: tables and plots not written ({exc.strerror or exc}); printing them only")
    except WriteError as exc:  # write_atomic's: it names the file and the reason
        console.note(f"{escape(str(exc.path))}: cannot write ({exc.reason}); tables printed only")
    return Report(tables, rendered, html_path)


__all__ = ["TABLE_FORMATS", "KindReport", "Report", "Table", "build_tables", "render", "tables_of", "write_report"]
