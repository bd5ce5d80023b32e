"""Tables and plots of kind `synthetic`, in the layouts of the Mamba paper.

Per task:
- accuracy by test length (Table 11's layout): a row per model, a column per length, accuracy in % with
  one decimal, ✓ when every example was right, ✗ with the reason when the model cannot run the length
  (out of memory, or positions beyond a learned table), — when it was not run. For induction heads the
  paper's row follows each model it reports, then the difference (Δ, where the paper prints a number).
- training: steps, time, step rate, final loss and held-out accuracy at the training length.
- selective copying with several of Table 1's architectures (mixers in ssmbench.models.mixers.GRID): the
  paper's grid, a row per architecture (no gate, H3, Mamba), a column per inner layer (S4, Hyena, S6), the
  accuracy at the training length beside the paper's figure.
Across the synthetic tasks of a run (Table 1's layout): a row per model, a column per task, the accuracy at
each task's training length, with Table 1's figure for selective copying where the paper has the model.
Plots: accuracy vs test length (log2 axis) per task, and the training curves (loss, accuracy vs step).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ssmbench.kinds.synthetic.runner import CANNOT_RUN
from ssmbench.models.mixers import GRID
from ssmbench.reference import OOM, PERFECT, SyntheticReference, synthetic_references
from ssmbench.report.plots import line_plot, model_colours
from ssmbench.report.tables import Table, failure_notes, format_value, param_count

PASS, FAIL, NOT_RUN = "✓", "✗", "—"
GRID_ARCHS, GRID_LAYERS = ("no gate", "H3", "Mamba"), ("S4", "Hyena", "S6")  # Table 1's rows and columns, in order


def synthetic_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    tables = [length_table(task, frame)]
    grid = copying_grid(task, frame)
    if grid is not None:
        tables.append(grid)
    if (frame["slice.phase"] == "train").any():
        tables.append(training_table(task, frame))
    return tables


def _evals(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["slice.phase"] == "eval"]


def _cell(row: dict) -> str:
    """One test length of one model: its accuracy in %, ✓, ✗ (why), or —."""
    if row["status"] == "oom":
        return f"{FAIL} (OOM)"
    if row["status"] == "skipped":
        message = str(row["message"] or "")
        return f"{FAIL} (positions)" if message.startswith(CANNOT_RUN) else NOT_RUN
    if row["status"] != "ok":
        return "ERR"
    return PASS if row["value"] == 1.0 else f"{100 * row['value']:.1f}"


def length_table(task: str, frame: pd.DataFrame) -> Table:
    evals = _evals(frame)
    lengths = sorted(int(v) for v in evals["slice.seq_len"].dropna().unique())
    cells: dict[str, dict[int, str]] = {}
    values: dict[str, dict[int, float]] = {}
    for row in evals.to_dict("records"):
        if row["status"] == "ok" and row["metric"] != "accuracy":
            continue
        model, length = row["model"], int(row["slice.seq_len"])
        cells.setdefault(model, {})[length] = _cell(row)
        if row["status"] == "ok":
            values.setdefault(model, {})[length] = row["value"]
    synthetic, train_len = _task_of(frame), _train_len(frame)
    reference = synthetic_references().get(synthetic) if synthetic == "induction_heads" else None
    paper_note = ""
    if reference is not None and train_len != reference.train_len:
        paper_note = (f"paper rows left out: these models trained at L = {train_len}, the paper's ({reference.table}) "
                      f"at {reference.train_len}")
        reference = None
    rows = []
    for model, by_length in cells.items():
        params = frame.loc[frame["model"] == model, "params"].dropna()
        label = f"{model} ({param_count(params.iloc[0])})" if len(params) else model
        rows.append({"model": label, **{_len(n): by_length.get(n, "") for n in lengths}})
        rows += _reference_rows(reference, _mixer_of(frame, model), lengths, values.get(model, {}))
    notes = [f"Accuracy (%) on held-out examples at each test length; {PASS} = every example right, "
             f"{FAIL} = cannot run (OOM, or positions beyond a learned table), {NOT_RUN} = not run",
             _samples_note(evals), *_failure_notes(evals), paper_note]
    if reference is not None:
        notes.append(f"paper: {reference.citation}, {reference.table} ({reference.setting}); Δ = measured − paper")
        notes += [_size_note(reference, frame, model) for model in cells]
    return Table(f"{task}: accuracy by test length ({synthetic})", pd.DataFrame(rows), [n for n in notes if n], task)


def _samples_note(evals: pd.DataFrame) -> str:
    """How many held-out examples each test length was scored on (fewer at long lengths)."""
    ok = evals[(evals["status"] == "ok") & (evals["metric"] == "accuracy")]
    counts = {int(r["slice.seq_len"]): r["extra"]["n_examples"] for r in ok.to_dict("records")
              if "n_examples" in r["extra"]}
    if not counts:
        return ""
    by_count: dict[object, list[int]] = {}
    for length, n in sorted(counts.items()):
        by_count.setdefault(n, []).append(length)
    parts = [f"{n} at L = {', '.join(_len(x) for x in lengths)}" for n, lengths in by_count.items()]
    precision = ", ".join(sorted(set(ok["dtype"].dropna())))
    return f"Examples per model and length: {'; '.join(parts)}; evaluated in {precision}"


def _failure_notes(evals: pd.DataFrame) -> list[str]:
    """What each ✗, — and ERR cell stands for, labelled as the cells are."""
    failed = evals[evals["status"] != "ok"]
    notes = []
    for (model, message), group in failed.groupby(["model", "message"], dropna=False, sort=False):
        label = _cell(group.iloc[0].to_dict())
        lengths = ", ".join(_len(int(n)) for n in sorted(group["slice.seq_len"]))
        notes.append(f"{label} {model} at L = {lengths}: {message}")
    return notes


def _reference_rows(reference: SyntheticReference | None, mixer: str | None, lengths: list[int],
                    measured: dict[int, float]) -> list[dict[str, str]]:
    if reference is None or mixer not in reference.cells:
        return []
    paper = reference.cells[mixer]
    printed = {_len(n): _paper_cell(paper.get(n)) for n in lengths}
    delta = {_len(n): _delta(measured.get(n), paper.get(n)) for n in lengths}
    return [{"model": f"paper: {reference.labels[mixer]}", **printed}, {"model": "Δ", **delta}]


def _size_note(reference: SyntheticReference, frame: pd.DataFrame, model: str) -> str:
    """A note where the paper's model of a row is of another size altogether (over twice or under half as
    many parameters): the paper's Hyena row, for one, is a 69M-parameter model."""
    mixer = _mixer_of(frame, model)
    params = frame.loc[frame["model"] == model, "params"].dropna()
    printed = reference.params.get(mixer or "")
    if not printed or not len(params):
        return ""
    ratio = _parse_count(printed) / float(params.iloc[0])
    if 0.5 <= ratio <= 2:
        return ""
    return f"paper: its {reference.labels[mixer]} has {printed} parameters, {model} {param_count(params.iloc[0])}"


def _parse_count(printed: str) -> float:
    """'153K' -> 153000.0, '69M' -> 69e6, as the paper prints sizes."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(printed[-1:].upper(), 1.0)
    return float(printed.rstrip("KMBkmb")) * scale


def _paper_cell(value: float | str | None) -> str:
    if value is None:
        return ""
    return {PERFECT: PASS, OOM: f"{FAIL} (OOM)"}.get(value, value if isinstance(value, str) else f"{value:.1f}")


def _delta(measured: float | None, paper: float | str | None) -> str:
    figure = 100.0 if paper == PERFECT else paper
    if measured is None or not isinstance(figure, float | int):
        return ""
    diff = 100 * measured - figure
    return f"{'+' if diff >= 0 else ''}{diff:.1f}"


def training_table(task: str, frame: pd.DataFrame) -> Table:
    train = frame[(frame["slice.phase"] == "train") & frame["slice.step"].isna()] if "slice.step" in frame else \
        frame[frame["slice.phase"] == "train"]
    metrics = [("train_steps", "steps"), ("train_s", "time (s)"), ("steps_per_s", "steps/s"),
               ("train_tok_s", "tok/s"), ("final_loss", "final loss"), ("train_accuracy", "held-out acc (%)")]
    rows = []
    for model, group in train.groupby("model", sort=False):
        ok = group[group["status"] == "ok"].set_index("metric")
        if ok.empty:
            rows.append({"model": model, **dict.fromkeys([title for _, title in metrics], "ERR")})
            continue
        params = ok["params"].dropna()
        row = {"model": model, "kernel": ok["kernel"].iloc[0], "params": param_count(params.iloc[0]) if len(params) else "",
               "precision": ok["dtype"].iloc[0]}
        for metric, title in metrics:
            value = ok["value"].get(metric)
            row[title] = "" if value is None else (f"{100 * value:.1f}" if metric == "train_accuracy"
                                                   else format_value(value))
        rows.append(row)
    return Table(f"{task}: training", pd.DataFrame(rows), failure_notes(train), task)


def copying_grid(task: str, frame: pd.DataFrame) -> Table | None:
    """Table 1's grid for a selective-copying task that trained two or more of its architectures (with one,
    the capability summary already prints it beside the paper's figure): a row per architecture, for each
    inner layer the measured accuracy at the training length and the paper's."""
    if _task_of(frame) != "selective_copying":
        return None
    by_cell: dict[tuple[str, str], list[str]] = {}
    for model in dict.fromkeys(frame["model"].dropna()):
        cell = GRID.get(_mixer_of(frame, model) or "")
        if cell is not None:
            by_cell.setdefault(cell, []).append(model)
    if len(by_cell) < 2:
        return None
    reference = synthetic_references()["selective_copying"]
    paper = {GRID[m]: cells[reference.train_len] for m, cells in reference.cells.items() if m in GRID}
    rows = []
    for arch in GRID_ARCHS:
        row = {"architecture": arch}
        for layer in GRID_LAYERS:
            models = by_cell.get((arch, layer), [])
            row[layer] = _at_training_length(frame[frame["model"] == models[0]]) if models else ""
            row[f"{layer} (paper)"] = f"{paper[arch, layer]:.1f}" if (arch, layer) in paper else ""
        rows.append(row)
    return Table(f"{task}: Table 1 grid, architecture × inner layer (selective copying)", pd.DataFrame(rows),
                 _grid_notes(frame, by_cell, reference), task)


def _grid_notes(frame: pd.DataFrame, by_cell: dict[tuple[str, str], list[str]],
                reference: SyntheticReference) -> list[str]:
    steps = sorted({int(v) for v in frame[(frame["metric"] == "train_steps") & (frame["status"] == "ok")]["value"]})
    trained = f", after {'–'.join(f'{n:,}' for n in dict.fromkeys([steps[0], steps[-1]]))} training steps" if steps else ""
    memorised = _tokens_to_memorise(frame)
    setting = f"L = {_train_len(frame)}" + (f", {memorised} tokens to memorise" if memorised else "")
    notes = [f"Accuracy (%) on held-out examples at the training length ({setting}){trained}; "
             f"the paper's at L = {reference.train_len} after its own training ({reference.setting})",
             "Cells: " + "; ".join(f"{arch} / {layer} = {', '.join(models)}" for (arch, layer), models in by_cell.items()),
             f"paper: {reference.citation}, {reference.table}"]
    notes += [f"{arch} / {layer}: {len(models)} models, the first shown" for (arch, layer), models in by_cell.items()
              if len(models) > 1]
    return notes


def capability_summary(frame: pd.DataFrame) -> list[Table]:
    """Table 1's layout across the run's synthetic tasks: accuracy (%) at each task's training length."""
    tasks = list(dict.fromkeys(frame["task"]))
    if len(tasks) < 2 and _task_of(frame) != "selective_copying":
        return []
    copying = synthetic_references()["selective_copying"]
    paper_column = f"paper ({copying.table}, selective copying)"
    rows = []
    for model in dict.fromkeys(frame["model"].dropna()):
        row: dict[str, str] = {"model": model}
        for task in tasks:
            row[task] = _at_training_length(frame[(frame["task"] == task) & (frame["model"] == model)])
        paper = copying.cells.get(_mixer_of(frame, model) or "")
        row[paper_column] = f"{paper[4096]:.1f}" if paper else ""
        rows.append(row)
    notes = ["Accuracy (%) on held-out examples at each task's training length",
             f"paper: {copying.citation}, {copying.table} ({copying.setting})"]
    return [Table("Synthetic tasks: accuracy at the training length (Table 1 layout)", pd.DataFrame(rows), notes)]


def _at_training_length(group: pd.DataFrame) -> str:
    if group.empty:
        return ""
    train_len = group["slice.train_len"].dropna()
    evals = _evals(group)
    if len(train_len):
        at = evals[(evals["slice.seq_len"] == train_len.iloc[0])]
        accuracy = at[at["metric"].isin(["accuracy"]) | (at["status"] != "ok")]
        if len(accuracy):
            return _cell(accuracy.iloc[0].to_dict())
    return ""


# --- plots ---------------------------------------------------------------------------------------------


def plot_synthetic(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    colour = model_colours(frame)
    paths = []
    evals = _evals(frame)
    ok = evals[(evals["status"] == "ok") & (evals["metric"] == "accuracy")]
    if ok["slice.seq_len"].nunique() > 1:
        series = [(model, list(g.sort_values("slice.seq_len")["slice.seq_len"]),
                   list(100 * g.sort_values("slice.seq_len")["value"]), colour[model] + "-")
                  for model, g in ok.groupby("model", sort=False)]
        paths.append(_accuracy_plot(out / f"{task}_accuracy_by_length.png", f"{task}: accuracy by test length",
                                    series, _train_len(frame)))
    if "slice.step" in frame:
        curve = frame[frame["slice.step"].notna() & (frame["status"] == "ok")]
        for metric, label in (("loss", "training loss (nats)"), ("accuracy", "held-out accuracy (%)")):
            part = curve[curve["metric"] == metric]
            scale = 100 if metric == "accuracy" else 1
            series = [(model, list(g["slice.step"]), list(scale * g["value"]), colour[model] + "-")
                      for model, g in part.groupby("model", sort=False)]
            if series:
                paths.append(line_plot(out / f"{task}_training_{metric}.png", f"{task}: {label} during training",
                                       "step", label, series, log=False))
    return paths


def _accuracy_plot(path: Path, title: str, series: list, train_len: int | None) -> Path:
    marker = (train_len, f"training length {train_len}") if train_len else None
    plot = line_plot(path, title, "test length L (log2)", "accuracy (%)", series, log=False, marker_x=marker,
                     log2_x=True)
    return plot


# --- helpers -------------------------------------------------------------------------------------------


def _task_of(frame: pd.DataFrame) -> str:
    values = frame["slice.synthetic_task"].dropna() if "slice.synthetic_task" in frame else []
    return str(values.iloc[0]) if len(values) else ""


def _mixer_of(frame: pd.DataFrame, model: str) -> str | None:
    values = frame.loc[frame["model"] == model, "slice.mixer"].dropna() if "slice.mixer" in frame else []
    return str(values.iloc[0]) if len(values) else None


def _tokens_to_memorise(frame: pd.DataFrame) -> int | None:
    """Selective copying's answers per example, read off an evaluation record (one accuracy per answer)."""
    extras = frame.loc[(frame["metric"] == "accuracy") & (frame["status"] == "ok"), "extra"] if "extra" in frame else []
    counts = {len(e["by_answer_index"]) for e in extras if isinstance(e, dict) and e.get("by_answer_index")}
    return counts.pop() if len(counts) == 1 else None


def _train_len(frame: pd.DataFrame) -> int | None:
    values = frame["slice.train_len"].dropna() if "slice.train_len" in frame else []
    return int(values.iloc[0]) if len(values) else None


def _len(n: int) -> str:
    """A test length as a column header: 2^k for powers of two, the number otherwise."""
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else f"{n:,}"
