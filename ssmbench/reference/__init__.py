"""Figures from the papers and slides that reports compare measurements against, with their source named.

The figures live as package data (zero_shot.yaml, synthetic.yaml), copied exactly as printed, so a reader can check them
against the source line by line. This module turns them into ssmbench's scale (accuracies as fractions,
perplexity as is) and says which lm-eval task and metric each printed column reports: that mapping is
also what decides which metrics the zero-shot runner records for the paper's tasks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

import yaml

PAPER = "paper"  # Gu & Dao 2023, Table 3: its metrics are the primary ones of their tasks
SLIDES = "slides"  # the project's source slides, GPT-2 vs Mamba


@dataclass(frozen=True)
class Column:
    """A printed column: its key in zero_shot.yaml, its header as printed, and what lm-eval measures for it."""

    key: str
    title: str
    task: str
    metric: str

    @property
    def is_accuracy(self) -> bool:
        return self.metric != "perplexity"


@dataclass(frozen=True)
class ReferenceRow:
    label: str  # the row as the source prints it, e.g. "Mamba-130M" or "small mamba"
    model: str | None  # the ssmbench zoo name, None for models the zoo lacks
    figures: dict[str, float]  # column key -> value, accuracies as fractions
    printed_avg: float | None  # the source's Avg column as a fraction, where it has one


@dataclass(frozen=True)
class Source:
    key: str  # PAPER or SLIDES
    label: str  # short name for table headers
    citation: str
    columns: tuple[Column, ...]
    rows: tuple[ReferenceRow, ...]

    def row_for(self, model: str) -> ReferenceRow | None:
        return next((row for row in self.rows if row.model == model), None)

    def mean_accuracy(self, row: ReferenceRow) -> float:
        """The mean of a row's accuracy columns: what the paper's Avg column is defined as."""
        accuracies = [row.figures[c.key] for c in self.columns if c.is_accuracy]
        return sum(accuracies) / len(accuracies)

    def avg_misprinted(self, row: ReferenceRow) -> bool:
        """Whether the printed Avg differs from the mean of the printed accuracies by more than its rounding
        (half of the last printed digit, 0.05 points)."""
        return row.printed_avg is not None and abs(row.printed_avg - self.mean_accuracy(row)) > 0.0005 + 1e-9


@functools.cache
def zero_shot_sources() -> dict[str, Source]:
    """The zero-shot reference sources by key, as shipped in ssmbench/reference/zero_shot.yaml."""
    text = resources.files(__name__).joinpath("zero_shot.yaml").read_text(encoding="utf-8")
    return {key: _source(key, data) for key, data in yaml.safe_load(text)["sources"].items()}


def _source(key: str, data: dict) -> Source:
    columns = tuple(Column(k, c["title"], c["task"], c["metric"]) for k, c in data["columns"].items())
    scale = {"percent": 0.01, "fraction": 1.0}[data["accuracy_scale"]]

    def row(printed: dict) -> ReferenceRow:
        figures = {c.key: printed[c.key] * scale if c.is_accuracy else printed[c.key] for c in columns}
        avg = printed.get("avg")
        return ReferenceRow(printed["label"], printed["model"], figures, None if avg is None else avg * scale)

    rows = tuple(row(r) for r in data["rows"])
    return Source(key, data["label"], data["citation"], columns, rows)


@functools.cache
def reported_metrics() -> dict[str, dict[str, bool]]:
    """lm-eval task -> {metric: primary} for every metric a source reports; primary means the paper's.

    ARC-Challenge gets two: the paper's acc_norm (primary) and the slides' acc.
    """
    out: dict[str, dict[str, bool]] = {}
    for source in zero_shot_sources().values():
        for column in source.columns:
            metrics = out.setdefault(column.task, {})
            metrics[column.metric] = metrics.get(column.metric, False) or source.key == PAPER
    return out


# --- synthetic tasks ------------------------------------------------------------------------------------

PERFECT = "perfect"  # the paper's ✓: every test example right
OOM = "oom"  # the paper's ✗


@dataclass(frozen=True)
class SyntheticReference:
    """One table of the paper's synthetic results: a row per architecture, a cell per test length."""

    citation: str
    table: str  # "Table 1", "Table 11"
    setting: str  # the paper's training setting, printed beside its figures
    train_len: int  # the length the paper trained at: its figures describe models trained there
    cells: dict[str, dict[int, float | str]]  # mixer -> test length -> accuracy in % (or PERFECT, OOM, a range)
    labels: dict[str, str]  # mixer -> the row's label as printed
    params: dict[str, str] = field(default_factory=dict)  # mixer -> the model's size as printed (Table 11)


@functools.cache
def synthetic_references() -> dict[str, SyntheticReference]:
    """Synthetic task -> the paper's table for it, for the rows whose architecture ssmbench can build.

    Table 1 (selective copying) has one figure per architecture, at its training length; Table 11 (induction
    heads) one per test length."""
    data = yaml.safe_load(resources.files(__name__).joinpath("synthetic.yaml").read_text(encoding="utf-8"))
    copying, induction = data["selective_copying"], data["induction_heads"]
    out = {"selective_copying": SyntheticReference(
        data["citation"], copying["table"], copying["setting"], copying["train_len"],
        {r["mixer"]: {4096: r["accuracy"]} for r in copying["rows"] if r["mixer"]},
        {r["mixer"]: r["label"] for r in copying["rows"] if r["mixer"]})}
    cells = {}
    for row in (r for r in induction["rows"] if r["mixer"]):
        cells[row["mixer"]] = dict(zip(induction["lengths"], row["values"], strict=True))
        cells[row["mixer"]] |= dict.fromkeys(induction["beyond"], row["beyond"])
    out["induction_heads"] = SyntheticReference(
        data["citation"], induction["table"], induction["setting"], induction["train_len"], cells,
        {r["mixer"]: r["label"] for r in induction["rows"] if r["mixer"]},
        {r["mixer"]: r["params"] for r in induction["rows"] if r["mixer"]})
    return out
