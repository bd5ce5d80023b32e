"""Tables and plots of a run, rebuilt from records.jsonl (and env.json for the header) alone.

`write_report(run_dir)` writes table.md, table.csv, table.json (and table.tex on request) atomically, plus
the PNG plots; `ssmbench report RUN_DIR` calls it, and so does every run at its end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ssmbench.records import Record, latest_attempts, read_records
from ssmbench.report.tables import Table, comparison_table, models_table, records_frame, tidy_frame

FORMATS = ("md", "csv", "json", "latex")
# kind -> function(task name, that task's records frame) -> tables; a kind without one gets the generic
# side-by-side comparison.
KindView = Callable[[str, pd.DataFrame], list[Table]]
KIND_VIEWS: dict[str, KindView] = {}


def register_view(kind: str) -> Callable[[KindView], KindView]:
    def decorate(fn: KindView) -> KindView:
        KIND_VIEWS[kind] = fn
        return fn

    return decorate


def _load_views() -> None:
    """Import the kind-specific report modules (they register themselves)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("view_"):
            importlib.import_module(f"ssmbench.report.{info.name}")


def build_tables(records: list[Record]) -> list[Table]:
    return tables_of(records_frame(latest_attempts(records)))


def tables_of(frame: pd.DataFrame) -> list[Table]:
    """The models table, then each task's tables: its kind's view, or the generic comparison."""
    _load_views()
    if frame.empty:
        return []
    tables = [models_table(frame)] if frame["model"].notna().any() else []
    for task, group in frame.groupby("task", sort=False):
        view = KIND_VIEWS.get(str(group["kind"].iloc[0]))
        tables += view(str(task), group) if view else [comparison_table(str(task), group)]
    return tables


def header_lines(run_dir: Path, records: list[Record]) -> list[str]:
    env = _read_json(run_dir / "env.json")
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    pk = env.get("packages", {})
    versions = ", ".join(f"{n} {pk[n]}" for n in ("torch", "transformers", "mamba_ssm", "causal_conv1d", "lm_eval")
                         if pk.get(n))
    suite = records[0].suite if records else run_dir.parent.name
    kernels = env.get("fused_mamba_kernels", {})
    return [f"# {suite} — run {run_dir.name}", "",
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


def write_report(run_dir: Path, formats: tuple[str, ...] = ("md", "csv", "json")) -> list[Table]:
    from ssmbench.report.plots import draw_plots

    records = read_records(run_dir / "records.jsonl")
    frame = records_frame(latest_attempts(records))
    tables = tables_of(frame)
    header = header_lines(run_dir, records)
    suffix = {"md": "md", "csv": "csv", "json": "json", "latex": "tex"}
    for fmt in formats:
        _write_atomic(run_dir / f"table.{suffix[fmt]}", render(tables, fmt, header, records))
    if records:
        draw_plots(frame, run_dir)
    return tables


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
