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
- a mixer trained at two or more widths (zoology's Figure 2): a row per mixer, a column per d_model, the
  accuracy at the training length of each width's best learning rate, and a plot of it against d_model.
Plots: accuracy vs test length (log2 axis) per task, and the training curves (loss, accuracy vs step).

Seeds and learning-rate sweeps (the task's `seeds`, a list as `lr`): with several seeds, the length table
gives each model three rows, as a seed sweep is read: the median over seeds (✓ when it is 100%), the seeds'
min–max, and k/n, how many of the n seeds hold 99% at that length; a table of each seed follows, with how
the seed ended (holds 99% at every length, did not extrapolate, did not learn, or collapsed at chance, as its
training recorded), counted per model in its notes. Induction heads' training layout (`layout`) is printed
under the table. Where a model swept learning rates, every table shows the learning rate whose median
validation accuracy (at the end of training, over the validation lengths) is best, as zoology reports the
best of its sweep, and a sweep table lists them all. Plots draw each seed as its own line, in shades of its
model's colour, with the median bold while the seeds agree; where they split (some at 100%, some at chance)
no median is drawn, but k/n above each length (see _spread_line).
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import pandas as pd

from ssmbench.kinds.synthetic.runner import CANNOT_RUN, COLLAPSED, DIVERGED, NOT_TESTED, OUT_OF_TIME
from ssmbench.models.mixers import GRID
from ssmbench.reference import OOM, PERFECT, SyntheticReference, synthetic_references
from ssmbench.report.plots import Line, line_plot, median_line, model_colours, seed_shades, seeds_split
from ssmbench.report.tables import Table, failure_notes, format_value, param_count

PASS, FAIL, NOT_RUN = "✓", "✗", "—"
HOLDS = 0.99  # a seed "holds" a length at this accuracy (the per-seed table's last column)
GRID_ARCHS, GRID_LAYERS = ("no gate", "H3", "Mamba"), ("S4", "Hyena", "S6")  # Table 1's rows and columns, in order


def synthetic_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    """The task's tables: the training table lists every run (each learning rate of a sweep, diverged ones
    too); the others show each model at its best learning rate."""
    sweep = lr_sweep_table(task, frame)
    every_run, frame = frame, best_of_sweep(frame)
    tested = "slice.seq_len" in frame and _evals(frame)["slice.seq_len"].notna().any()  # none yet: stopped after training
    tables = [length_table(task, frame)] if tested else []
    if tested and _seeds(frame).nunique() > 1:
        tables.append(seeds_table(task, frame))
    if sweep is not None:
        tables.append(sweep)
    grid = copying_grid(task, frame)
    if grid is not None:
        tables.append(grid)
    capacity = capacity_table(task, frame)
    if capacity is not None:
        tables.append(capacity)
    if (every_run["slice.phase"] == "train").any():
        tables.append(training_table(task, every_run))
    return tables


def _evals(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["slice.phase"] == "eval"]


def cell(row: dict) -> str:
    """One test length of one model: its accuracy in %, ✓, ✗ (why), or —."""
    if row["status"] == "oom":
        return f"{FAIL} (OOM)"
    if row["status"] == "skipped":
        message = str(row["message"] or "")
        if message.startswith(NOT_TESTED):
            return f"{FAIL} ({DIVERGED})"
        return f"{FAIL} (positions)" if message.startswith(CANNOT_RUN) else NOT_RUN
    if row["status"] != "ok":
        return "ERR"
    return _percent(row["value"])


def _percent(value: float) -> str:
    return PASS if value == 1.0 else f"{100 * value:.1f}"


def _across_seeds(rows: list[dict]) -> tuple[str, float | None]:
    """One model's cell at one length over its seeds' records: the median, with the seeds' range when they
    differ and how many seeds ran when some could not; the median value (None when none ran)."""
    values = [row["value"] for row in rows if row["status"] == "ok"]
    if not values:
        return cell(rows[0]), None
    median = statistics.median(values)
    text = _percent(median)
    if min(values) != max(values):
        text += f" ({100 * min(values):.1f}–{100 * max(values):.1f})"
    if len(values) < len(rows):
        text += f" [{len(values)} of {len(rows)} seeds]"
    return text, median


def _accuracy_rows(evals: pd.DataFrame) -> pd.DataFrame:
    """The rows a length table reads: each job's accuracy, or its failure, at each length."""
    return evals[(evals["status"] != "ok") | (evals["metric"] == "accuracy")]


def length_table(task: str, frame: pd.DataFrame) -> Table:
    """Table 11's layout: a row per model (three with several seeds: the median, the seeds' min..max, and
    how many seeds hold 99%), a column per test length, the paper's row and Δ after each model it has."""
    evals = _evals(frame)
    lengths = sorted(int(v) for v in evals["slice.seq_len"].dropna().unique())
    by_model: dict[str, dict[int, list[dict]]] = {}
    for (model, length), group in _accuracy_rows(evals).groupby(["model", "slice.seq_len"], sort=False):
        by_model.setdefault(model, {})[int(length)] = group.to_dict("records")
    several = any(len(rows) > 1 for cells in by_model.values() for rows in cells.values())
    synthetic, train_len = _task_of(frame), _train_len(frame)
    reference = synthetic_references().get(synthetic) if synthetic == "induction_heads" else None
    paper_note = ""
    if reference is not None and train_len != reference.train_len:
        paper_note = (f"paper rows left out: these models trained at L = {train_len}, the paper's ({reference.table}) "
                      f"at {reference.train_len}")
        reference = None
    rows = []
    for model, cells in by_model.items():
        params = frame.loc[frame["model"] == model, "params"].dropna()
        label = f"{model} ({param_count(params.iloc[0])})" if len(params) else model
        medians = {n: _across_seeds(cells[n])[1] for n in cells}
        stats = _seed_rows(cells, lengths) if several else [{n: _across_seeds(cells[n])[0] for n in cells}]
        for i, (name, stat) in enumerate(zip(SEED_STATS, stats, strict=False)):
            row = {"model": label if i == 0 else ""} | ({"seeds": name} if several else {})
            rows.append(row | {_len(n): stat.get(n, "") for n in lengths})
        rows += [row | ({"seeds": ""} if several else {})
                 for row in _reference_rows(reference, _mixer_of(frame, model), lengths,
                                            {n: m for n, m in medians.items() if m is not None})]
    notes = [f"Accuracy (%) on held-out examples at each test length; {PASS} = every example right, "
             f"{FAIL} = cannot run (OOM, or positions beyond a learned table), {NOT_RUN} = not run",
             _seeds_note(frame), _layout_note(frame), _samples_note(evals), _eval_set_note(evals),
             *_failure_notes(evals), paper_note]
    if reference is not None:
        notes.append(f"paper: {reference.citation}, {reference.table} ({reference.setting}); Δ = measured − paper"
                     + (" (median)" if several else ""))
        notes += [_size_note(reference, frame, model) for model in by_model]
    return Table(f"{task}: accuracy by test length ({synthetic})", pd.DataFrame(rows), [n for n in notes if n], task)


SEED_STATS = ("median", "min–max", f"≥ {HOLDS:.0%}")  # the rows of a model trained with several seeds


def _seed_rows(cells: dict[int, list[dict]], lengths: list[int]) -> list[dict[int, str]]:
    """A model's three rows over its seeds, by length: the median (✓ when it is 100%), the seeds' range,
    and k/n: how many of the n seeds that ran the length hold HOLDS there (a failed seed counts, as not)."""
    median, spread, held = {}, {}, {}
    for n in lengths:
        rows = cells.get(n, [])
        values = [row["value"] for row in rows if row["status"] == "ok"]
        if not values:
            median[n] = cell(rows[0]) if rows else ""
            continue
        median[n] = _percent(statistics.median(values)) + (f" [{len(values)} of {len(rows)}]" if len(values) < len(rows) else "")
        spread[n] = f"{100 * min(values):.1f}–{100 * max(values):.1f}"
        held[n] = f"{sum(v >= HOLDS for v in values)}/{len(rows)}"
    return [median, spread, held]


def _layout_note(frame: pd.DataFrame) -> str:
    """Where the training data put induction heads' first special token (tests always draw it uniformly)."""
    layouts = sorted(set(frame["slice.layout"].dropna())) if "slice.layout" in frame else []
    if not layouts:
        return ""
    said = [LAYOUTS.get(layout) or f"the first special token within the first {layout.removeprefix('first-')} "
            "positions (the recalled token far back, as in state-spaces/mamba issue #62)" for layout in layouts]
    return (f"Training layout: {'; '.join(f'{layout}: {text}' for layout, text in zip(layouts, said, strict=True))}. "
            "Validation and test sets: uniform for every model")


LAYOUTS = {"uniform": "the first special token anywhere in the sequence (the safari generator's draw)"}


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
        label = cell(group.iloc[0].to_dict())
        lengths = ", ".join(_len(int(n)) for n in sorted(set(group["slice.seq_len"])))
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


def _seeds_note(frame: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in _seeds(frame).dropna().unique())
    if len(seeds) < 2:
        return ""
    return (f"Each cell: the median over {len(seeds)} seeds ({', '.join(map(str, seeds))}), beneath it the seeds' "
            f"min–max and how many of them hold {HOLDS:.0%} (k/n); each seed trains its own initialisation on its "
            "own data stream")


def _eval_set_note(evals: pd.DataFrame) -> str:
    """Whether every job of the table scored the same examples at each length (the fixed test sets'
    fingerprints), which is what makes two seeds' or two runs' figures comparable example for example."""
    ok = evals[(evals["status"] == "ok") & (evals["metric"] == "accuracy")]
    sets = [(int(r["slice.seq_len"]), r["extra"].get("eval_set", {}).get("sha256")) for r in ok.to_dict("records")]
    if not sets or any(digest is None for _, digest in sets):
        return ""
    differ = sorted({length for length, _ in sets if len({d for n, d in sets if n == length}) > 1})
    seed = ok["extra"].iloc[0]["eval_set"]["seed"]
    if differ:
        return f"⚠ the models were tested on different examples at L = {', '.join(_len(n) for n in differ)}"
    return f"Every model and seed was tested on the same fixed examples at each length (eval_seed {seed})"


def _seeds(frame: pd.DataFrame) -> pd.Series:
    """Each record's training seed: the slice's where the task swept seeds, else the record's own."""
    if "slice.seed" in frame:
        return frame["slice.seed"].fillna(frame["seed"])
    return frame["seed"]


def seeds_table(task: str, frame: pd.DataFrame) -> Table:
    """A row per model and seed, a column per test length, and how the seed ended (see _seed_outcome),
    with the figure that decided it. The notes state the bar and count each kind of seed per model."""
    evals = _evals(frame).assign(_seed=_seeds(frame))
    lengths = sorted(int(v) for v in evals["slice.seq_len"].dropna().unique())
    outcomes = _training_outcomes(frame)
    train_len = _train_len(frame)
    rows = []
    for (model, seed), group in _accuracy_rows(evals).groupby(["model", "_seed"], sort=False):
        by_length = {int(r["slice.seq_len"]): r for r in group.to_dict("records")}
        kind, figure = _seed_outcome(by_length, train_len, outcomes.get((model, int(seed))))
        rows.append({"model": model, "seed": int(seed),
                     **{_len(n): cell(by_length[n]) if n in by_length else "" for n in lengths},
                     "outcome": f"{kind} ({figure})" if figure else kind})
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        counts = Counter(_outcome_kind(r["outcome"]) for r in rows if r["model"] == model)
        total = sum(counts.values())
        parts = [f"{counts[o]} {o}" for o in SEED_OUTCOMES if counts[o] and o != HOLDS_ALL]
        summary.append(f"{model}: {counts[HOLDS_ALL]} of {total} seeds {HOLDS_ALL}"
                       + (f"; {', '.join(parts)}" if parts else ""))
    bar = (f"outcome: a seed holds a length at {HOLDS:.0%} accuracy or more; the figure in brackets is the one "
           "that decided it (the seed's lowest length, or its accuracy at the training length)")
    return Table(f"{task}: accuracy by test length, each seed", pd.DataFrame(rows),
                 ["Accuracy (%) of each seed's model on the same fixed examples", bar, *summary], task)


HOLDS_ALL = f"≥ {HOLDS:.0%} at every test length"
TRAIN_LENGTH_ONLY = f"≥ {HOLDS:.0%} at the training length only"
BELOW_AT_TRAIN = f"< {HOLDS:.0%} at the training length"
SEED_OUTCOMES = (HOLDS_ALL, TRAIN_LENGTH_ONLY, BELOW_AT_TRAIN, OUT_OF_TIME, COLLAPSED, DIVERGED)


def _seed_outcome(by_length: dict[int, dict], train_len: int | None, trained: str | None) -> tuple[str, str]:
    """One seed's verdict and the figure that decided it. Where its training says it diverged or collapsed
    at chance, that; else whether it holds HOLDS at every test length, at the training length only (the
    figure: its lowest length), or not even there (the figure: its accuracy there), counted as stopped at
    its time budget when that is how its training ended. A seed at 98.4% is not "did not learn": the
    verdict names the bar it missed and by how much."""
    if trained is not None and trained.startswith(DIVERGED):
        return trained, ""  # "diverged at step N (loss nan)": counted as DIVERGED
    if trained == COLLAPSED:
        return COLLAPSED, ""
    ran = {n: r for n, r in by_length.items() if r["status"] == "ok"}
    if ran and len(ran) == len(by_length) and all(r["value"] >= HOLDS for r in ran.values()):
        return HOLDS_ALL, ""
    at_train = ran.get(train_len) if train_len is not None else None
    if at_train is not None and at_train["value"] >= HOLDS:
        lowest = min(ran, key=lambda n: ran[n]["value"]) if ran else None
        figure = f"lowest {_percent(ran[lowest]['value'])}% at {_len(lowest)}" if lowest is not None and \
            ran[lowest]["value"] < HOLDS else "a length it could not run"
        return TRAIN_LENGTH_ONLY, figure
    figure = f"{_percent(at_train['value'])}% at {_len(train_len)}" if at_train is not None else ""
    return (OUT_OF_TIME if trained == OUT_OF_TIME else BELOW_AT_TRAIN), figure


def _outcome_kind(outcome: str) -> str:
    """The kind an outcome is counted as: a diverged run's outcome names its step and loss, a seed's its
    deciding figure in brackets."""
    return next((kind for kind in SEED_OUTCOMES if outcome.startswith(kind)), outcome)


def _training_outcomes(frame: pd.DataFrame) -> dict[tuple[str, int], str]:
    """(model, seed) -> how its training ended (the train records' extra.outcome), where recorded."""
    train = frame[(frame["metric"] == "train_steps") & (frame["status"] == "ok")]
    seeds = _seeds(train)
    return {(r["model"], int(seed)): r["extra"]["outcome"] for r, seed in zip(train.to_dict("records"), seeds, strict=True)
            if isinstance(r["extra"], dict) and "outcome" in r["extra"]}


def _validation_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """model, lr, seed, score: each job's validation accuracy at the end of training (the mean over its
    validation lengths; the held-out accuracy at the training length in records written before it)."""
    train = frame[(frame["status"] == "ok") & (frame["slice.phase"] == "train")]
    if "slice.step" in train:
        train = train[train["slice.step"].isna()]
    metric = "validation_accuracy" if (train["metric"] == "validation_accuracy").any() else "train_accuracy"
    scores = train[train["metric"] == metric]
    lrs = scores["slice.lr"] if "slice.lr" in scores else pd.Series(index=scores.index, dtype=float)
    return pd.DataFrame({"task": scores["task"], "model": scores["model"], "lr": lrs, "seed": _seeds(scores),
                         "score": scores["value"]})


def _diverged_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """task, model, lr, seed, outcome of each training run that diverged (its train records say so)."""
    train = frame[(frame["metric"] == "train_steps") & (frame["status"] == "ok")]
    outcomes = train["extra"].map(lambda e: e.get("outcome", "") if isinstance(e, dict) else "")
    runs = train[outcomes.str.startswith(DIVERGED)]
    lrs = runs["slice.lr"] if "slice.lr" in runs else pd.Series(index=runs.index, dtype=float)
    return pd.DataFrame({"task": runs["task"], "model": runs["model"], "lr": lrs, "seed": _seeds(runs),
                         "outcome": outcomes[runs.index]})


def best_learning_rates(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(task, model) -> the learning rate of its sweep with the best median validation accuracy over seeds
    (the smaller learning rate on a tie); models that did not sweep are absent. A learning rate at which
    any seed diverged is never the best: a rate that sometimes blows up is not one to report or reuse
    (with every rate diverged, the model has no best and the tables show all of its rates)."""
    scores, diverged = _validation_scores(frame), _diverged_runs(frame)
    best = {}
    for task, model in swept_models(frame):
        unsafe = set(diverged[(diverged["task"] == task) & (diverged["model"] == model)]["lr"])
        mine = scores[(scores["task"] == task) & (scores["model"] == model) & ~scores["lr"].isin(unsafe)]
        medians = mine.groupby("lr")["score"].median()
        if len(medians):
            best[task, model] = float(max(sorted(medians.index), key=lambda lr: medians[lr]))
    return best


def swept_models(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """(task, model) of every model that trained at two or more learning rates, diverged runs included."""
    runs = pd.concat([_validation_scores(frame)[["task", "model", "lr"]],
                      _diverged_runs(frame)[["task", "model", "lr"]]]).dropna(subset=["lr"])
    counts = runs.groupby(["task", "model"])["lr"].nunique()
    return {key for key, n in counts.items() if n > 1}


def best_of_sweep(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each sweeping model's records at its best learning rate only."""
    best = best_learning_rates(frame)
    if not best:
        return frame
    chosen = pd.Series([best.get(key) for key in zip(frame["task"], frame["model"], strict=True)],
                       index=frame.index, dtype=float)
    return frame[chosen.isna() | (frame["slice.lr"] == chosen)]


def lr_sweep_table(task: str, frame: pd.DataFrame) -> Table | None:
    """A row per model and learning rate of a sweep: the validation accuracy at the end of training
    (median and range over seeds), the steps trained, and which learning rate the other tables show. A
    run that diverged has no accuracy: its cell says "diverged" (with k of n seeds where only some did)."""
    swept = swept_models(frame)
    if not swept:
        return None
    best = best_learning_rates(frame)
    scores, diverged = _validation_scores(frame), _diverged_runs(frame)
    steps = frame[(frame["metric"] == "train_steps") & (frame["status"] == "ok")]
    runs = pd.concat([scores[["task", "model", "lr"]], diverged[["task", "model", "lr"]]]).drop_duplicates()
    tests = _accuracy_rows(_evals(frame))
    lengths = sorted(int(n) for n in tests["slice.seq_len"].dropna().unique()) if "slice.seq_len" in tests else []
    rows = []
    for task_name, model, lr in runs.itertuples(index=False):
        if (task_name, model) not in swept:
            continue
        ok = scores[(scores["task"] == task_name) & (scores["model"] == model) & (scores["lr"] == lr)]["score"]
        lost = diverged[(diverged["task"] == task_name) & (diverged["model"] == model) & (diverged["lr"] == lr)]
        trained = steps[(steps["model"] == model) & (steps["slice.lr"] == lr)]["value"]
        at_lr = tests[(tests["model"] == model) & (tests["slice.lr"] == lr)]
        rows.append({"model": model, "lr": f"{lr:g}", "validation acc (%)": _sweep_cell(list(ok), len(lost)),
                     **{f"test {_len(n)}": _test_cell(at_lr[at_lr["slice.seq_len"] == n]) for n in lengths},
                     "steps": f"{statistics.median(trained):,.0f}" if len(trained) else "",
                     "reported": "best" if best.get((task_name, model)) == lr else ""})
    notes = ["Validation accuracy (%) at the end of training, the mean over the validation lengths; median over "
             "seeds, range in brackets. The other tables show each model at its best learning rate (zoology "
             "reports the best of its sweep the same way)",
             "test 2^k: accuracy (%) on the fixed test examples of that length, median over seeds (range), for "
             "every learning rate: the rates not reported are shown here",
             "diverged: the training loss went non-finite (or past train.max_loss) and the run stopped; a "
             "learning rate at which any seed diverged is never reported as the best"]
    return Table(f"{task}: learning-rate sweep", pd.DataFrame(rows), notes, task)


def _test_cell(rows: pd.DataFrame) -> str:
    """One learning rate's test accuracy at one length over its seeds, as the length table writes it."""
    return _across_seeds(rows.to_dict("records"))[0] if len(rows) else ""


def _sweep_cell(scores: list[float], diverged: int) -> str:
    """One learning rate's cell: the seeds' median accuracy and range, and how many of them diverged."""
    if not scores:
        return DIVERGED
    cell, _ = _across_seeds([{"status": "ok", "value": v} for v in scores])
    return cell + (f"; {diverged} of {diverged + len(scores)} seeds {DIVERGED}" if diverged else "")


def training_table(task: str, frame: pd.DataFrame) -> Table:
    """A row per training run: how long it took, how it ended, and where it stood at its last evaluation.
    The columns say what they are: the loss is the training loss of the last window of steps (not a
    held-out loss, and not at the moment of the last accuracy), the accuracies are on the fixed validation
    sets, at the training length and (where a run validates at several lengths) their mean."""
    train = frame[(frame["slice.phase"] == "train") & frame["slice.step"].isna()] if "slice.step" in frame else \
        frame[frame["slice.phase"] == "train"]
    lengths = frame["slice.train_len"].dropna().unique() if "slice.train_len" in frame else []
    at = _len(int(lengths[0])) if len(lengths) == 1 else "the training length"  # MAD's settings: several
    metrics = [("train_steps", "steps"), ("train_s", "time (s)"), ("steps_per_s", "steps/s"),
               ("train_tok_s", "tok/s"), ("final_loss", LAST_LOSS), ("train_accuracy", f"validation acc at {at} (%)")]
    if _validates_beyond_training_length(train):
        metrics.append(("validation_accuracy", "validation acc, mean over lengths (%)"))
    rows = []
    several_jobs = train.groupby("model")["job"].nunique().max() > 1 if len(train) else False
    for (model, job), group in train.groupby(["model", "job"], sort=False):
        label = {"model": model, "job": job} if several_jobs else {"model": model}
        ok = group[group["status"] == "ok"].set_index("metric")
        if ok.empty:
            rows.append({**label, **dict.fromkeys([title for _, title in metrics], "ERR")})
            continue
        params = ok["params"].dropna()
        row = {**label, "kernel": ok["kernel"].iloc[0], "params": param_count(params.iloc[0]) if len(params) else "",
               "precision": ok["dtype"].iloc[0]}
        for metric, title in metrics:
            value = ok["value"].get(metric)
            row[title] = "" if value is None else (f"{100 * value:.1f}" if metric.endswith("accuracy")
                                                   else format_value(value))
        extra = ok["extra"].get("train_steps")
        if isinstance(extra, dict) and "outcome" in extra:
            row["ended"] = extra["outcome"]  # trained every step, stopped early, at its time budget, collapsed, diverged
        rows.append(row)
    notes = [f"{LAST_LOSS}: the mean training loss over the steps since the evaluation before the last (every "
             "train.eval_every steps); a model that learned late in that window shows a loss above what its "
             "accuracy suggests",
             "validation acc: on the fixed validation sets at the run's last evaluation (the test tables use "
             "other fixed examples)"]
    return Table(f"{task}: training", pd.DataFrame(rows), notes + _ended_notes(rows) + failure_notes(train), task)


LAST_LOSS = "train loss, last window"


def _validates_beyond_training_length(train: pd.DataFrame) -> bool:
    """Whether any run validated at more than its training length (then the mean over lengths differs
    from the accuracy at the training length, and gets a column of its own)."""
    extras = train[train["metric"] == "validation_accuracy"]["extra"]
    return any(isinstance(e, dict) and len(e.get("by_length", {})) > 1 for e in extras)


def _ended_notes(rows: list[dict]) -> list[str]:
    """A note per model that trained several runs: how many ended each way (diverged, collapsed, ...)."""
    notes = []
    for model in dict.fromkeys(r["model"] for r in rows):
        counts = Counter(_outcome_kind(r["ended"]) for r in rows if r["model"] == model and r.get("ended"))
        if sum(counts.values()) > 1:
            ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            notes.append(f"{model}, how its {sum(counts.values())} runs ended: "
                         + ", ".join(f"{n} {kind}" for kind, n in ordered))
    return notes


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


def _sizes(frame: pd.DataFrame) -> dict[str, dict[int, list[str]]]:
    """mixer -> d_model -> the task's models of that mixer and width (records name their d_model in extra)."""
    sizes: dict[str, dict[int, list[str]]] = {}
    for model in dict.fromkeys(frame["model"].dropna()):
        rows = frame[frame["model"] == model]
        widths = {e.get("d_model") for e in rows["extra"] if isinstance(e, dict)} - {None}
        mixer = _mixer_of(frame, model)
        if mixer is not None and len(widths) == 1:
            sizes.setdefault(mixer, {}).setdefault(int(widths.pop()), []).append(model)
    return dict(sorted(sizes.items()))  # records come in the order jobs finished: mixers by name instead


def capacity_table(task: str, frame: pd.DataFrame) -> Table | None:
    """zoology's Figure 2 as a table, for a task that trains one mixer at two or more widths: a row per mixer,
    a column per d_model, the accuracy at the training length of each width's best learning rate (median
    over seeds, range in brackets) and that learning rate. `frame` is already each model's best of sweep."""
    sizes = _sizes(frame)
    if not any(len(widths) > 1 for widths in sizes.values()):
        return None
    columns = sorted({width for widths in sizes.values() for width in widths})
    rows, shared = [], []
    for mixer, widths in sizes.items():
        row = {"mixer": mixer}
        for width in columns:
            models = widths.get(width, [])
            group = frame[frame["model"] == models[0]] if models else frame.iloc[0:0]
            row[f"d_model {width}"] = _at_training_length(group)
            lrs = group["slice.lr"].dropna().unique() if "slice.lr" in group else []
            row[f"lr {width}"] = f"{lrs[0]:.2g}" if len(lrs) == 1 else ""
            if len(models) > 1:
                shared.append(f"{mixer} at d_model {width}: {', '.join(models)} (the first shown)")
        rows.append(row)
    notes = [f"Accuracy (%) on held-out examples at the training length (L = {_train_len(frame)}), by model width, "
             "each width at its best learning rate (lr columns), as zoology's Figure 2 plots the best of four",
             *shared]
    return Table(f"{task}: accuracy by model width (zoology Figure 2 layout)", pd.DataFrame(rows), notes, task)


def capability_summary(frame: pd.DataFrame) -> list[Table]:
    """Table 1's layout across the run's synthetic tasks: accuracy (%) at each task's training length."""
    frame = best_of_sweep(frame)
    tasks = list(dict.fromkeys(frame["task"]))
    if len(tasks) < 2 and _task_of(frame) != "selective_copying":
        return []
    copying = synthetic_references()["selective_copying"]
    paper_column = f"paper ({copying.table}, selective copying)"
    with_copying = (frame["slice.synthetic_task"] == "selective_copying").any()  # Table 1's column is copying's
    rows = []
    for model in dict.fromkeys(frame["model"].dropna()):
        row: dict[str, str] = {"model": model}
        for task in tasks:
            row[task] = _at_training_length(frame[(frame["task"] == task) & (frame["model"] == model)])
        paper = copying.cells.get(_mixer_of(frame, model) or "")
        if with_copying:
            row[paper_column] = f"{paper[4096]:.1f}" if paper else ""
        rows.append(row)
    notes = ["Accuracy (%) on held-out examples at each task's training length"]
    if with_copying:
        notes.append(f"paper: {copying.citation}, {copying.table} ({copying.setting})")
    return [Table("Synthetic tasks: accuracy at the training length (Table 1 layout)", pd.DataFrame(rows), notes)]


def _at_training_length(group: pd.DataFrame) -> str:
    if group.empty:
        return ""
    train_len = group["slice.train_len"].dropna()
    evals = _evals(group)
    if len(train_len):
        at = _accuracy_rows(evals[evals["slice.seq_len"] == train_len.iloc[0]])
        if len(at):
            return _across_seeds(at.to_dict("records"))[0]
    return ""


# --- plots ---------------------------------------------------------------------------------------------


def plot_synthetic(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Accuracy by test length, by model width, and the training curves. With several seeds, every seed is
    a line of its own, in its model's family of shades, labelled with its seed; over them each model's
    seeds are summed up as _spread_line says: the median, bold with bars to the quartiles, while the seeds
    agree, and where they split, no median but k/n (how many hold 99%) above each length."""
    frame = best_of_sweep(frame).assign(_seed=_seeds(frame))
    evals = _evals(frame)
    ok = evals[(evals["status"] == "ok") & (evals["metric"] == "accuracy")]
    shades = seed_shades({model: sorted(int(x) for x in g["_seed"].dropna().unique())
                          for model, g in frame.groupby("model", sort=False)})
    paths = [_length_plot(task, frame, ok, shades, out), _width_plot(task, frame, ok, out)]
    return [p for p in paths if p is not None] + _curve_plots(task, frame, shades, out)


def _length_plot(task: str, frame: pd.DataFrame, ok: pd.DataFrame, shades: dict, out: Path) -> Path | None:
    """Accuracy against test length (log2 axis): each seed's line, and each model's seeds summed up."""
    if ok["slice.seq_len"].nunique() < 2:
        return None
    several = ok.groupby("model")["_seed"].nunique().max() > 1
    colour = model_colours(frame)
    series, summaries = [], []
    for model, g in ok.groupby("model", sort=False):
        if several:
            for seed, per_seed in g.groupby("_seed", sort=False):
                points = (100 * per_seed.set_index("slice.seq_len")["value"]).sort_index()
                series.append((f"{model} seed {int(seed)}", list(points.index), list(points), "-",
                               {"color": shades[model, int(seed)], "linewidth": 0.9, "markersize": 3}))
        summaries.append(_spread_line(model, g, "slice.seq_len", colour[model], several))
    agree = "bold: the median, bars: quartiles over seeds" if several else "bars: ± 1 standard error"
    title = f"{task}: accuracy by test length ({'each seed; ' if several else ''}{_caption(summaries, agree)})"
    series += summaries
    marker = (_train_len(frame), f"training length {_train_len(frame)}") if _train_len(frame) else None
    return line_plot(out / f"{task}_accuracy_by_length.png", title, "test length L (log2)", "accuracy (%)", series,
                     log=False, marker_x=marker, log2_x=True)


def _width_plot(task: str, frame: pd.DataFrame, ok: pd.DataFrame, out: Path) -> Path | None:
    """zoology's Figure 2: accuracy at the training length against d_model, a line per mixer."""
    sizes, train_len = _sizes(frame), _train_len(frame)
    if train_len is None or not any(len(widths) > 1 for widths in sizes.values()):
        return None
    at_train = ok[ok["slice.seq_len"] == train_len]
    series = []
    for i, (mixer, widths) in enumerate(sizes.items()):
        rows = [at_train[at_train["model"] == models[0]].assign(_width=w) for w, models in widths.items()]
        rows = pd.concat(rows) if rows else at_train.iloc[:0]  # widths with no result yet add no rows
        if len(rows):
            series.append(_spread_line(mixer, rows, "_width", f"C{i % 10}", several=False))
    if not series:
        return None
    agree = "bars: quartiles over seeds; one seed: ± 1 standard error"
    return line_plot(out / f"{task}_accuracy_by_width.png",
                     f"{task}: accuracy at L = {train_len} by model width (best LR) ({_caption(series, agree)})",
                     "model dimension d_model (log2)", "accuracy (%)", series, log=False, log2_x=True)


def _spread_line(label: str, rows: pd.DataFrame, x: str, colour: str, several: bool) -> Line:
    """One model's accuracy records (its seeds at each `x`) as one Line. While the seeds agree: the median,
    with bars to the seeds' quartiles (one seed: its standard error), bold beside seed lines (`several`).
    Where the seeds split at any x (report.plots.seeds_split: neighbours more than half the axis apart, such
    as 3 seeds at 100% and 5 at chance): no median and no bar, which would describe neither group and span
    the gap between them, but a row of notes above the top seed at each x: k/n, how many of the n seeds
    hold HOLDS there (the length table's ≥ 99% row). The seeds' own lines show the two groups."""
    by_x = {at: list(100 * g["value"].astype(float)) for at, g in rows.sort_values(x).groupby(x, sort=False)}
    if not any(seeds_split(values, span=100) for values in by_x.values()):
        xs, ys, bars = median_line(rows, x, scale=100)
        return Line(f"{label} median" if several else label, xs, ys, colour + "-",
                    {"linewidth": 2.4} if several else {}, yerr=bars)
    held = [f"{sum(v >= 100 * HOLDS for v in values)}/{len(values)}" for values in by_x.values()]
    return Line(f"{label}: k/n seeds ≥ {HOLDS:.0%}", list(by_x),
                [max(values) for values in by_x.values()], colour + "-", {"color": colour}, texts=held)


def _caption(summaries: list[Line], agree: str) -> str:
    """What a plot's _spread_lines show: `agree`'s median and bars, the split seeds' k/n, or both."""
    kinds = {line.texts is not None for line in summaries}
    split = f"seeds split, so no median: k/n seeds hold ≥ {HOLDS:.0%}"
    return "; ".join(text for flag, text in ((False, agree), (True, split)) if flag in kinds)


def _curve_plots(task: str, frame: pd.DataFrame, shades: dict, out: Path) -> list[Path]:
    """Training loss and held-out accuracy against step, a line per model (per seed with several jobs)."""
    if "slice.step" not in frame:
        return []
    colour = model_colours(frame)
    curve = frame[frame["slice.step"].notna() & (frame["status"] == "ok")]
    several_jobs = curve.groupby("model")["job"].nunique().max() > 1 if len(curve) else False
    paths = []
    for metric, label in (("loss", "training loss (nats)"), ("accuracy", "held-out accuracy (%)")):
        part = curve[curve["metric"] == metric]
        scale = 100 if metric == "accuracy" else 1
        series = []
        for (model, seed), g in part.groupby(["model", "_seed"], sort=False):
            style = ("-", {"color": shades[model, int(seed)], "markersize": 2}) if several_jobs else (colour[model] + "-", {})
            series.append((f"{model} seed {int(seed)}" if several_jobs else model, list(g["slice.step"]),
                           list(scale * g["value"]), *style))
        if series:
            paths.append(line_plot(out / f"{task}_training_{metric}.png", f"{task}: {label} during training",
                                   "step", label, series, log=False))
    return paths


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
