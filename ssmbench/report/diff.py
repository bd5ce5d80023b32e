"""Two runs compared figure by figure: what got worse, what got better, what is missing, and whether the
runs are comparable at all. The regression gate of the nightly GPU job.

Figures are paired by record identity (kind, task, model, slice, metric: records.Record.identity), each run
taken at its latest attempts. A change counts against a metric only in its bad direction
(`higher_is_better`), and only when it is larger than both

- the threshold: a relative change in percent, per metric (the suite's `regression:` mapping, the command
  line's --max-regression, else DEFAULT_MAX_REGRESSION_PCT), and
- the noise: NOISE_SIGMAS times the two runs' combined spread, from each figure's own measure of spread
  (half the interquartile range of its repeats for timings, the standard error for accuracies), so a
  throughput figure that wobbles by 8% from run to run does not fail a 5% gate.

Only what is stable is gated. A figure whose spread the runs cannot show is listed with its change, as
"not gated", and never fails the diff: one measured fewer than MIN_REPEATS times in either run (a single
measurement, such as a memory peak or a training time, says nothing of how much it wobbles), and a timing
measured on a CPU, whose run-to-run swing is far beyond what its repeats show (two back-to-back runs of
one commit on a 2-core machine: figures 20% to 2x apart while each run's repeats agree within a few
percent). A metric named in the thresholds (`regression:` or `--max-regression METRIC=PCT`) is gated
all the same: whoever named it said how much it may move. A figure that did not move is unchanged.

A figure that was measured in the base run and failed (ERR, OOM) in the new one is a regression, gated or
not; a figure in only one of the runs is listed as missing. Differences of GPU, driver or library versions between the
two env.json files are listed first: a change there explains many changes below it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ssmbench.records import CPU_SWING, Record, RecordKey, is_cpu_timing, latest_attempts
from ssmbench.rundir import RunDir

DEFAULT_MAX_REGRESSION_PCT = 5.0
NOISE_SIGMAS = 2.0
MIN_REPEATS = 3  # fewer repeats do not show a figure's spread: it is listed, not gated
ENV_KEYS = ("gpus", "driver", "cuda_runtime", "torch_version", "launcher")
PACKAGES = ("torch", "transformers", "mamba_ssm", "causal_conv1d", "lm_eval", "triton")

Verdict = Literal["regression", "improvement", "unchanged", "not gated", "missing in new", "missing in base",
                  "still failing"]


@dataclass(frozen=True)
class Change:
    key: RecordKey
    verdict: Verdict
    base: float | None
    new: float | None
    base_status: str
    new_status: str
    change_pct: float | None  # (new - base) / |base|, in percent
    threshold_pct: float | None
    noise_pct: float | None  # NOISE_SIGMAS x the combined spread, in percent of the base
    unit: str = ""
    why_not_gated: str | None = None  # for a figure listed, not gated: what its runs cannot show

    @property
    def kind(self) -> str:
        return self.key[0]

    @property
    def task(self) -> str:
        return self.key[1]

    @property
    def model(self) -> str | None:
        return self.key[2]

    @property
    def metric(self) -> str | None:
        """None for a failed point of a task that measured nothing."""
        return self.key[4]

    @property
    def slice(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.key[3]}

    @property
    def where(self) -> str:
        """The slice, as `batch=1, prompt_len=128`."""
        return ", ".join(f"{k}={v}" for k, v in self.slice.items())


@dataclass
class Diff:
    changes: list[Change]
    env_differences: list[str] = field(default_factory=list)

    def of(self, *verdicts: Verdict) -> list[Change]:
        return [c for c in self.changes if c.verdict in verdicts]

    @property
    def compared(self) -> int:
        """How many figures both runs have: none, and the runs measured different things."""
        return len(self.changes) - len(self.of("missing in new", "missing in base"))

    @property
    def failed(self) -> bool:
        return bool(self.of("regression"))


def thresholds(suite_regression: dict[str, float], cli: dict[str, float]) -> dict[str, float]:
    """metric -> max regression in percent: the command line over the suite over the default; the key
    `default` applies to every metric not named."""
    return {"default": DEFAULT_MAX_REGRESSION_PCT} | suite_regression | cli


def diff_runs(base: list[Record], new: list[Record], max_regression: dict[str, float],
              metrics: list[str] | None = None, base_env: dict[str, Any] | None = None,
              new_env: dict[str, Any] | None = None) -> Diff:
    base_by, new_by = _by_identity(base, metrics), _by_identity(new, metrics)
    changes = [compare(k, base_by.get(k), new_by.get(k), max_regression) for k in dict.fromkeys([*base_by, *new_by])]
    return Diff(changes, env_differences(base_env or {}, new_env or {}))


def no_overlap(base: list[Record], new: list[Record], base_name: str, new_name: str,
               metrics: list[str] | None) -> str:
    """Why a diff compared nothing, in one line: the runs measured different things (other suites, other
    tasks or models), or none of the metrics asked for."""
    suites = sorted({r.suite for r in (*base, *new) if r.suite})
    of = f" of --metric {', '.join(metrics)}" if metrics else ""
    return (f"{base_name} and {new_name} have no figure{of} in common (suites: {', '.join(suites) or '?'}): "
            "nothing to compare; diff two runs of one suite")


def _by_identity(records: list[Record], metrics: list[str] | None) -> dict[RecordKey, Record]:
    """Each measured figure (ok records with a metric), and each failed point under its metrics' names so a
    figure that turned into a failure can be paired with it. A point of a task that measured nothing in
    this run (every point failed) keeps its own identity, without a metric: a job that fails in both runs
    is listed as still failing rather than vanishing from the comparison."""
    out: dict[RecordKey, Record] = {}
    latest = latest_attempts(records)
    for r in latest:
        if r.metric is not None and (metrics is None or r.metric in metrics):
            out[r.identity] = r
    failed = [r for r in latest if r.metric is None and r.status in ("error", "oom")]
    measured_metrics: dict[tuple[str, str], set[str]] = {}
    for key in out:
        measured_metrics.setdefault((key[0], key[1]), set()).add(str(key[4]))
    for r in failed:
        names = sorted(measured_metrics.get((r.kind, r.task), set()))
        if not names and metrics is None:
            out.setdefault(r.identity, r)
        for metric in names:
            if metrics is None or metric in metrics:
                out.setdefault(r.model_copy(update={"metric": metric}).identity, r)
    return out


def compare(key: RecordKey, base: Record | None, new: Record | None, max_regression: dict[str, float]) -> Change:
    """The verdict on one figure; `base` or `new` may be a failed point's record, or absent."""
    record = base or new
    assert record is not None
    if base is None or new is None:
        return Change(key, "missing in base" if base is None else "missing in new",
                      base and base.value, new and new.value, base.status if base else "",
                      new.status if new else "", None, None, None, record.unit)
    metric = str(key[4])
    threshold = max_regression.get(metric, max_regression["default"]) if key[4] is not None else None
    if base.status != "ok" or new.status != "ok":
        verdict: Verdict = ("regression" if base.status == "ok" else
                            "improvement" if new.status == "ok" else "still failing")
        return Change(key, verdict, base.value, new.value, base.status, new.status, None, threshold, None,
                      base.unit)
    assert base.value is not None and new.value is not None
    change = 100 * (new.value - base.value) / abs(base.value) if base.value else math.inf * (new.value - base.value)
    noise = _noise_pct(base, new)
    worse = change < 0 if base.higher_is_better else change > 0
    beyond = abs(change) > threshold and (noise is None or abs(change) > noise)
    verdict = ("regression" if worse else "improvement") if beyond else "unchanged"
    why = None if metric in max_regression else _why_not_gated(base) or _why_not_gated(new)
    if base.higher_is_better is None or new.value == base.value:
        verdict, why = "unchanged", None  # a count, a setting (no direction to judge), or a figure that did not move
    elif why is not None:
        verdict = "not gated"
    return Change(key, verdict, base.value, new.value, base.status, new.status, change, threshold, noise, base.unit,
                  why)


def _why_not_gated(r: Record) -> str | None:
    """Why one run's figure cannot vouch for its stability, or None: an estimate with its standard error, or a
    timing repeated MIN_REPEATS times or more on a GPU."""
    if r.stderr is not None:
        return None
    if r.stats is None or r.stats.n == 1:
        return "one measurement"
    if r.stats.n < MIN_REPEATS:
        return f"{r.stats.n} repeats"
    if is_cpu_timing(r):
        return f"a CPU timing: {CPU_SWING}"
    return None


def figure_spread(r: Record) -> float | None:
    """One run's spread of a figure, in its unit: half the IQR of repeats, else the standard error (half
    the length of its error bar in the plots)."""
    bar = r.error_bar
    return (bar[0] + bar[1]) / 2 if bar is not None else None


def _noise_pct(base: Record, new: Record) -> float | None:
    spreads = [s for s in (figure_spread(base), figure_spread(new)) if s is not None]
    if not spreads or not base.value:
        return None
    return 100 * NOISE_SIGMAS * math.sqrt(sum(s * s for s in spreads)) / abs(base.value)


def env_differences(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the machines and software of two runs (from their env.json)."""
    out = []
    base, new = _launched_here_by_default(base), _launched_here_by_default(new)
    for key in ENV_KEYS:
        if base.get(key) != new.get(key):
            out.append(f"{key}: {_show(base.get(key))} -> {_show(new.get(key))}")
    base_pk, new_pk = base.get("packages", {}), new.get("packages", {})
    for name in PACKAGES:
        if base_pk.get(name) != new_pk.get(name):
            out.append(f"{name}: {base_pk.get(name) or '—'} -> {new_pk.get(name) or '—'}")
    return out


def _launched_here_by_default(env: dict[str, Any]) -> dict[str, Any]:
    """Runs from before env.json named the launcher ran their jobs in the driver's process."""
    return env if "launcher" in env else {**env, "launcher": {"name": "local"}}


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v.get("name", v)) if isinstance(v, dict) else str(v) for v in value) or "none"
    if isinstance(value, dict):
        from ssmbench.report import launcher_summary

        return launcher_summary(value)
    return "—" if value in (None, "") else str(value)


# --- output --------------------------------------------------------------------------------------------

SECTIONS: tuple[tuple[str, tuple[Verdict, ...]], ...] = (
    ("Regressions", ("regression",)), ("Improvements", ("improvement",)),
    ("Missing", ("missing in new", "missing in base")), ("Failing in both", ("still failing",)),
    ("Not gated", ("not gated",)))


def _cell(value: float | None, status: str) -> str:
    from ssmbench.report.tables import STATUS_CELL, format_value

    return format_value(value) if status == "ok" else STATUS_CELL.get(status, status or "—")


def fixed_slices(changes: list[Change]) -> dict[str, dict[str, Any]]:
    """task -> the slice values that every figure of the task shares in this diff: said once under each
    table instead of in every row's `where`."""
    values: dict[str, dict[str, set[str]]] = {}
    for c in changes:
        for k, v in c.key[3]:
            values.setdefault(c.task, {}).setdefault(k, set()).add(v)
    fixed = {}
    for task, keys in values.items():
        rows = [c for c in changes if c.task == task]
        fixed[task] = {k: json.loads(next(iter(vs))) for k, vs in keys.items()
                       if len(vs) == 1 and all(k in c.slice for c in rows)}
    return fixed


def _where(c: Change, fixed: dict[str, Any]) -> str:
    """The slice of a change without the values its task's figures all share."""
    return ", ".join(f"{k}={v}" for k, v in c.slice.items() if k not in fixed)


def _rows(changes: list[Change], fixed: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    return [{"task": c.task, "model": c.model or "",
             "metric": "— (the point failed)" if c.metric is None else
             f"{c.metric} ({c.unit})" if c.unit else c.metric,
             "where": _where(c, fixed.get(c.task, {})), "base": _cell(c.base, c.base_status),
             "new": _cell(c.new, c.new_status),
             "change": "" if c.change_pct is None else f"{c.change_pct:+.1f}%",
             "threshold": "" if c.threshold_pct is None else f"{c.threshold_pct:g}%",
             "noise": "" if c.noise_pct is None else f"{c.noise_pct:.1f}%",
             "verdict": f"{c.verdict}: {c.why_not_gated}" if c.why_not_gated else c.verdict}
            for c in changes]


def _table(changes: list[Change], fixed: dict[str, dict[str, Any]]) -> list[str]:
    """One section's table (without a `where` column when no row has one), and under it, once per task of
    its rows, the slice values that never vary."""
    import pandas as pd

    frame = pd.DataFrame(_rows(changes, fixed))
    if not frame["where"].astype(bool).any():
        frame = frame.drop(columns="where")
    tasks = dict.fromkeys(c.task for c in changes)
    notes = [f"> {task}, in every row: {', '.join(f'{k}={v}' for k, v in fixed[task].items())}"
             for task in tasks if fixed.get(task)]
    return [frame.to_markdown(index=False), *([""] + notes if notes else []), ""]


def render_markdown(diff: Diff, base_name: str, new_name: str) -> str:
    lines = [f"# ssmbench diff: base {base_name} → new {new_name}", ""]
    counts = {title: len(diff.of(*verdicts)) for title, verdicts in SECTIONS[:-1]}
    lines += [f"{'FAIL' if diff.failed else 'PASS'}: " + ", ".join(f"{n} {t.lower()}" for t, n in counts.items())
              + f", {len(diff.of('unchanged'))} unchanged, {len(diff.of('not gated'))} not gated", ""]
    if diff.env_differences:
        lines += ["**The runs differ in their machine or software** (changes below may come from it):", ""]
        lines += [f"- {d}" for d in diff.env_differences] + [""]
    fixed = fixed_slices(diff.changes)
    for title, verdicts in SECTIONS:
        changes = diff.of(*verdicts)
        if changes:
            lines += [f"## {title}", "", *_table(changes, fixed)]
    lines.append(f"A change is a regression when it is worse than both its threshold and {NOISE_SIGMAS:g}x the "
                 "runs' combined spread (noise: half the IQR of repeats, or the standard error), in percent "
                 f"of the base figure. Not gated (listed only): figures with fewer than {MIN_REPEATS} repeats in "
                 "a run, and timings on a CPU, unless a threshold names their metric.")
    return "\n".join(lines) + "\n"


def render_json(diff: Diff, base_name: str, new_name: str) -> dict[str, Any]:
    return {"base": base_name, "new": new_name, "failed": diff.failed, "env_differences": diff.env_differences,
            "changes": [{"kind": c.kind, "task": c.task, "model": c.model, "metric": c.metric,
                         "slice": c.slice, "base": c.base, "new": c.new, "base_status": c.base_status,
                         "new_status": c.new_status, "change_pct": c.change_pct, "threshold_pct": c.threshold_pct,
                         "noise_pct": c.noise_pct, "verdict": c.verdict, "why_not_gated": c.why_not_gated}
                        for c in diff.changes]}


def write_diff(run: RunDir, markdown: str, data: dict[str, Any]) -> str:
    """Write diff.md and diff.json into the judged run; the line that says where, and which earlier diff of
    the run they replaced (a run keeps the last diff asked of it)."""
    earlier = _earlier_diff(run)
    md, js = run.path / "diff.md", run.path / "diff.json"
    run.write_atomic(md, markdown)
    run.write_atomic(js, json.dumps(data, indent=2))
    return f"diff written to {md} and {js}" + (f", replacing {earlier}" if earlier else "")


def _earlier_diff(run: RunDir) -> str | None:
    """The diff a run already holds, as `the earlier diff (base X → new Y)`; None when it holds none."""
    md, js = run.path / "diff.md", run.path / "diff.json"
    if not md.exists() and not js.exists():
        return None
    try:
        old = json.loads(js.read_text())
        return f"the earlier diff (base {old['base']} → new {old['new']})"
    except (OSError, ValueError, KeyError, TypeError):  # only diff.md, or a diff.json of an unknown shape
        return "an earlier diff"
