"""Run a plan into a run directory: records appended point by point, failures recorded, resumable.

An OOM is a result (status oom); any other exception fails its point (status error, with the message) and
the run goes on. Ctrl-C stops after writing what is done; `--resume` finishes the rest.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ssmbench import console, env
from ssmbench.errors import JobError, Terminated, UserError
from ssmbench.jobs import Job, Plan, Point
from ssmbench.kinds import get_kind
from ssmbench.kinds.base import JobContext, SkipPoint
from ssmbench.measure import free_memory, is_oom
from ssmbench.records import Record, RecordWriter, point_attempts
from ssmbench.rundir import RunDir

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class RunSummary:
    run: RunDir
    statuses: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    terminated: bool = False  # the interruption was SIGTERM, not Ctrl-C

    @property
    def failed(self) -> bool:
        return self.statuses["error"] > 0


def execute(plan: Plan, run: RunDir) -> RunSummary:
    """Run every pending point of the plan into the run directory; returns how the points ended."""
    run.write_header(plan.resolved_suite, env.collect())
    run.write_plan([(job.task_name, job.id, p.key) for job in plan.jobs for p in job.points])
    summary = RunSummary(run)
    attempts = point_attempts(run.read_records())
    todo = [(job, [p for p in job.points if not attempts.get((job.id, p.key), (0, False))[1]])
            for job in plan.jobs]
    todo = [(job, pts) for job, pts in todo if pts]
    already = plan.n_points - sum(len(pts) for _, pts in todo)
    if already:
        console.note(f"resuming: {already} of {plan.n_points} points already done")
    with RecordWriter(run.records_path) as writer, _progress() as progress:
        jobs_bar = progress.add_task("jobs", total=len(todo))
        try:
            for job, pending in todo:
                job_bar = JobBar(progress, job.id, len(pending))
                context = JobContext(run.name, plan.suite_name, run.artifacts(job.id), job_bar.within_point,
                                     job_bar.status)
                for pt, records in _run_job(job, pending, context):
                    attempt = attempts.get((job.id, pt.key), (-1, False))[0] + 1
                    writer.write([r.model_copy(update={"attempt": attempt}) for r in records])
                    summary.statuses[records[0].status] += 1  # a point's records share its status
                    job_bar.point_done()
                job_bar.close()
                progress.advance(jobs_bar)
        except KeyboardInterrupt as stop:
            summary.interrupted, summary.terminated = True, isinstance(stop, Terminated)
    return summary


class JobBar:
    """The inner progress bar: one job's points, advanced in fractions inside long points."""

    def __init__(self, progress: Progress, description: str, n_points: int):
        self.progress, self.done, self.description = progress, 0, description
        self.bar = progress.add_task(description, total=n_points)

    def status(self, text: str) -> None:
        """Show a live line beside the job's name (a training run's step, loss and accuracy)."""
        self.progress.update(self.bar, description=f"{self.description} {text}")

    def within_point(self, fraction: float) -> None:
        self.progress.update(self.bar, completed=self.done + min(max(fraction, 0.0), 0.99))

    def point_done(self) -> None:
        self.done += 1
        self.progress.update(self.bar, completed=self.done)

    def close(self) -> None:
        self.progress.remove_task(self.bar)


def _run_job(job: Job[Any], pending: list[Point], context: JobContext) -> Iterator[tuple[Point, list[Record]]]:
    """Yield (point, records) for each pending point of one job; never raises for a job's failure."""
    runner = get_kind(job.kind).runner(job, context)
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


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console.err, transient=False)
