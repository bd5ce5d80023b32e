"""Every export of a run keeps each record apart: a seed x learning-rate sweep, trained on the CPU, through the
tidy CSV (one row per record, its identity in its columns) and the tables in JSON, markdown and LaTeX (the
same cells in each, and no two rows of a table claiming the same point)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.records import Record, latest_attempts, read_records

SWEEP = {"name": "sweep", "defaults": {"device": "cpu"},
         "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads", "vocab_size": 8, "seeds": [0, 1],
                    "architectures": {"mamba": {"mixer": "mamba", "d_model": 16}},
                    "train": {"steps": 10, "batch_size": 8, "seq_len": 16, "lr": [1e-3, 3e-3], "eval_every": 5,
                              "eval_samples": 16},
                    "eval_lengths": [16, 32], "eval_samples": 16}]}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run, with table.tex written beside table.md, table.csv and table.json."""
    out = tmp_path_factory.mktemp("sweep")
    (out / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    result = CliRunner().invoke(app, ["run", str(out / "s.yaml"), "--out", str(out / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs" / "sweep").iterdir()
    result = CliRunner().invoke(app, ["report", str(run_dir), "--format", "latex"])
    assert result.exit_code == 0, result.output
    return run_dir


def shown(value: object) -> str:
    """A record's field as the CSV writes it (blank for none)."""
    return "" if value is None else str(value)


def test_the_csv_has_one_row_per_record_with_its_whole_identity(sweep_run: Path):
    records = latest_attempts(read_records(sweep_run / "records.jsonl"))
    assert {r.seed for r in records} == {0, 1} and {r.slice.get("lr") for r in records} == {1e-3, 3e-3}
    rows = list(csv.DictReader((sweep_run / "table.csv").open()))
    assert len(rows) == len(records)
    slice_keys = sorted({k for r in records for k in r.slice})
    identity = ["task", "kind", "model", "seed", *slice_keys, "metric"]

    def of_record(r: Record) -> tuple[str, ...]:
        fields = {"task": r.task, "kind": r.kind, "model": r.model, "seed": r.seed, "metric": r.metric} | r.slice
        return tuple(shown(fields.get(k)) for k in identity)

    in_csv = [tuple(row[k] for k in identity) for row in rows]
    assert len(set(in_csv)) == len(rows), "two rows of table.csv share their identity"
    assert sorted(in_csv) == sorted(of_record(r) for r in records)  # each row is its record, seed and all
    # and names the record's line: its job, point and attempt
    assert sorted((row["job"], row["point"], row["attempt"], row["metric"]) for row in rows) == sorted(
        (r.job, r.point, str(r.attempt), shown(r.metric)) for r in records)


# --- the tables, as each format shows them ------------------------------------------------------------------

def markdown_tables(text: str) -> list[dict]:
    """table.md's tables: title, header and rows of cells."""
    tables = []
    for section in text.split("\n### ")[1:]:
        title, _, body = section.partition("\n")
        lines = [line for line in body.splitlines() if line.startswith("|")]
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        tables.append({"title": title, "header": cells[0] if cells else [], "rows": cells[2:]})
    return tables


LATEX = {r"\textasciicircum{}": "^", r"\textasciicircum ": "^", r"\textasciitilde{}": "~", r"\textbackslash{}": "\\",
         r"\_": "_", r"\%": "%", r"\&": "&", r"\#": "#", r"\$": "$", r"\{": "{", r"\}": "}"}


def latex_unescape(text: str) -> str:
    return re.sub("|".join(re.escape(k) for k in LATEX), lambda m: LATEX[m[0]], text.strip())


def latex_tables(text: str) -> list[dict]:
    """table.tex's tables: caption, header and rows of cells."""
    tables = []
    for block in text.split(r"\begin{table}")[1:]:
        title = latex_unescape(re.search(r"\\caption\{(.*)\}\n", block)[1])
        lines = block[block.index(r"\toprule") + len(r"\toprule"):block.index(r"\bottomrule")].splitlines()
        cells = [[latex_unescape(c) for c in line.removesuffix(r"\\").split(" & ")]
                 for line in lines if line.strip() and line.strip() != r"\midrule"]
        tables.append({"title": title, "header": cells[0], "rows": cells[1:]})
    return tables


def json_tables(text: str) -> list[dict]:
    return [{"title": t["title"], "header": list(t["rows"][0]) if t["rows"] else [],
             "rows": [["" if v is None else str(v) for v in row.values()] for row in t["rows"]]}
            for t in json.loads(text)]


def is_figure_column(header: str, models: set[str]) -> bool:
    """A column of figures: one per model (the comparison layout), per test length (2^k), or one that names
    its unit in brackets. The columns left of the first such column name the row."""
    return header in models or re.fullmatch(r"2\^\d+", header) is not None or re.search(r"\(.+\)", header) is not None


def row_labels(table: dict, models: set[str]) -> list[tuple[str, ...]]:
    """Each row's label: its leading non-figure cells, a blank first cell read as the one above (a model's
    rows under its name)."""
    header = table["header"]
    width = next((i for i, h in enumerate(header) if is_figure_column(h, models)), len(header))
    labels, above = [], ""
    for row in table["rows"]:
        above = row[0] or above
        labels.append((above, *row[1:width]))
    return labels


def test_every_format_shows_the_same_cells_and_no_two_rows_claim_one_point(sweep_run: Path):
    models = {r.model for r in read_records(sweep_run / "records.jsonl") if r.model}
    by_format = {"json": json_tables((sweep_run / "table.json").read_text()),
                 "md": markdown_tables((sweep_run / "table.md").read_text()),
                 "latex": latex_tables((sweep_run / "table.tex").read_text())}
    assert by_format["md"] == by_format["json"]
    assert by_format["latex"] == by_format["json"]
    tables = by_format["json"]
    titles = [t["title"] for t in tables]
    assert "ih: accuracy by test length, each seed" in titles and "ih: learning-rate sweep" in titles
    for table in tables:
        labels = row_labels(table, models)
        repeated = {label for label in labels if labels.count(label) > 1}
        assert not repeated, f"{table['title']}: rows {sorted(repeated)} claim the same point"
    each_seed = next(t for t in tables if t["title"] == "ih: accuracy by test length, each seed")
    assert {label[1] for label in row_labels(each_seed, models)} == {"0", "1"}
    sweep = next(t for t in tables if t["title"] == "ih: learning-rate sweep")
    assert {label[1] for label in row_labels(sweep, models)} == {"0.001", "0.003"}
