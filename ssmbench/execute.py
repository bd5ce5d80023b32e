"""Run a plan: one run directory, records appended point by point, failures recorded, resumable.

    results/<suite>/<run-id>/
        suite.resolved.yaml   the suite with every override applied (what --resume reads back)
        env.json              hardware and software (env.resume<N>.json for each resumption)
        records.jsonl         one record a line, flushed per point
        table.md/.csv/.json   rebuilt from records.jsonl at the end (and by `ssmbench report`)

An OOM is a result (status oom); any other exception fails its point (status error, with the message) and
the run goes on. Ctrl-C stops after writing what is done; `--resume` finishes the rest.
"""

from __future__ import annotations

import json
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ssmbench import console
from ssmbench.errors import JobError, UserError
from ssmbench.measure import free_memory, is_oom
from ssmbench.plan import Job, Plan, Point
from ssmbench.records import RecordWriter, point_attempts, read_records
from ssmbench.runners import runner_class
from ssmbench.runners.base import Runner, SkipPoint

RESOLVED_SUITE = "suite.resolved.yaml"
RECORDS = "records.jsonl"


@dataclass
class RunSummary:
    run_dir: Path
    statuses: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False

    @property
    def failed(self) -> bool:
        return self.statuses["error"] > 0


def new_run_dir(out: Path, suite_name: str) -> Path:
    """A fresh directory under out/<suite>/; never an existing one."""
    base = out / suite_name / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def write_run_header(run_dir: Path, plan: Plan) -> None:
    from ssmbench import env

    resolved = plan.suite.model_copy(update={"defaults": plan.suite.defaults.model_copy(update={"device": plan.device})})
    (run_dir / RESOLVED_SUITE).write_text(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    name = "env.json"
    n = 1
    while (run_dir / name).exists():
        n += 1
        name = f"env.resume{n - 1}.json"
    (run_dir / name).write_text(json.dumps(env.collect(), indent=2))


def load_resolved_suite(run_dir: Path) -> Any:
    from ssmbench.spec import load_suite

    path = run_dir / RESOLVED_SUITE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no {RESOLVED_SUITE})")
    suite, _ = load_suite(path)
    return suite


def execute(plan: Plan, run_dir: Path) -> RunSummary:
    """Run every pending point of the plan into run_dir; returns how the points ended."""
    write_run_header(run_dir, plan)
    summary = RunSummary(run_dir)
    attempts = point_attempts(read_records(run_dir / RECORDS))
    todo = [(job, [p for p in job.points if not attempts.get((job.id, p.key), (0, False))[1]])
            for job in plan.jobs]
    todo = [(job, pts) for job, pts in todo if pts]
    already = plan.n_points - sum(len(pts) for _, pts in todo)
    if already:
        console.note(f"resuming: {already} of {plan.n_points} points already done")
    with RecordWriter(run_dir / RECORDS) as writer, _progress() as progress:
        jobs_bar = progress.add_task("jobs", total=len(todo))
        try:
            for job, pending in todo:
                job_bar = JobBar(progress, job.id, len(pending))
                for pt, records in _run_job(job, pending, plan, run_dir.name, job_bar.within_point):
                    attempt = attempts.get((job.id, pt.key), (-1, False))[0] + 1
                    writer.write([r.model_copy(update={"attempt": attempt}) for r in records])
                    summary.statuses[records[0].status] += 1  # a point's records share its status
                    job_bar.point_done()
                job_bar.close()
                progress.advance(jobs_bar)
        except KeyboardInterrupt:
            summary.interrupted = True
    return summary


class JobBar:
    """The inner progress bar: one job's points, advanced in fractions inside long points."""

    def __init__(self, progress: Any, description: str, n_points: int):
        self.progress, self.done = progress, 0
        self.bar = progress.add_task(description, total=n_points)

    def within_point(self, fraction: float) -> None:
        self.progress.update(self.bar, completed=self.done + min(max(fraction, 0.0), 0.99))

    def point_done(self) -> None:
        self.done += 1
        self.progress.update(self.bar, completed=self.done)

    def close(self) -> None:
        self.progress.remove_task(self.bar)


def _run_job(job: Job, pending: list[Point], plan: Plan, run_id: str, on_progress: Any):
    """Yield (point, records) for each pending point of one job; never raises for a job's failure."""
    runner: Runner = runner_class(job.kind)(job, run_id, plan.suite.name, on_progress)
    if job.skip_reason:
        console.note(f"{job.id}: skipped: {job.skip_reason}")
        for pt in pending:
            yield pt, [runner.record(pt, status="skipped", message=job.skip_reason)]
        return
    if job.backend_note:
        console.note(job.backend_note)
    try:
        runner.setup()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        status, message = _classify(exc)
        console.failure(f"{job.id}: {message}")
        for pt in pending:
            yield pt, [runner.record(pt, status=status, message=message)]
        runner.teardown()
        return
    try:
        for pt in pending:
            started = time.perf_counter()
            try:
                records = runner.measure(pt)
                elapsed = round(time.perf_counter() - started, 3)
                records = [r.model_copy(update={"extra": r.extra | {"point_s": elapsed}}) for r in records]
            except KeyboardInterrupt:
                raise
            except SkipPoint as exc:
                records = [runner.record(pt, status="skipped", message=str(exc))]
            except Exception as exc:
                status, message = _classify(exc)
                free_memory(job.device)
                if status == "error":
                    console.failure(f"{job.id} [{pt.key}]: {message}")
                records = [runner.record(pt, status=status, message=message)]
            yield pt, records
    finally:
        runner.teardown()


def _classify(exc: BaseException) -> tuple[str, str]:
    if is_oom(exc):
        return "oom", f"out of memory: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    if isinstance(exc, (JobError, UserError)):
        return "error", str(exc)
    tb = traceback.format_exception(exc)
    where = next((line.strip() for line in reversed(tb) if 'File "' in line), "")
    return "error", f"{type(exc).__name__}: {exc} ({where.splitlines()[0] if where else 'no traceback'})"


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console.err, transient=False)
