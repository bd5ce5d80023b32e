"""Run a plan into a run directory: records appended point by point, failures recorded, resumable.

The driver half of a run. It decides what is pending, hands the jobs to a launcher (ssmbench.launch: here,
on a Ray cluster, through SLURM), and alone appends the records that come back to records.jsonl, point by
point and fsynced, numbering retried points' attempts. Running a point and turning its exceptions into
records (an OOM is a result, anything else an error) is the worker's half: ssmbench.launch.worker.
Ctrl-C stops after writing what is done; `--resume` finishes the rest, under any launcher.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ssmbench import console, env
from ssmbench.errors import Terminated
from ssmbench.jobs import Plan
from ssmbench.kinds import KINDS
from ssmbench.launch import Launcher, Work, forwarded_env
from ssmbench.launch.local import LocalLauncher
from ssmbench.records import RecordWriter, incomplete_points, point_attempts
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


def execute(plan: Plan, run: RunDir, launcher: Launcher | None = None) -> RunSummary:
    """Run every pending point of the plan into the run directory (in this process unless a launcher says
    otherwise); returns how the points ended."""
    launcher = launcher or LocalLauncher()
    run.write_header(plan.resolved_suite, env.collect() | {"launcher": launcher.describe()})
    run.write_plan([(job.task_name, job.id, p.key) for job in plan.jobs for p in job.points])
    summary = RunSummary(run)
    records = run.read_records()
    attempts = point_attempts(records)
    works = pending_work(plan, run, attempts)
    _say_what_is_redone(works, incomplete_points(records), run.torn_points)
    _say_backend_notes(works)
    already = plan.n_points - sum(len(w.points) for w in works)
    if already:
        console.note(f"resuming: {already} of {plan.n_points} points already done")
    with RecordWriter(run.records_path) as writer, _progress() as progress:
        bars = Bars(progress, works)
        outcomes = launcher.run(works, bars, plan.retries, run.launch_files)
        try:
            with contextlib.closing(outcomes):  # an interrupted launcher cancels what it still runs
                for job_id, pt, records in outcomes:
                    attempt = attempts.get((job_id, pt.key), (-1, False))[0] + 1
                    writer.write([r.model_copy(update={"attempt": attempt, "point_records": len(records)})
                                  for r in records])
                    summary.statuses[records[0].status] += 1  # a point's records share its status
                    bars.point_done(job_id)
        except KeyboardInterrupt as stop:
            summary.interrupted, summary.terminated = True, isinstance(stop, Terminated)
    return summary


def _say_backend_notes(works: list[Work]) -> None:
    """Each model's kernel note ("fused Mamba kernels unavailable ...; running transformers' PyTorch path")
    once, before its jobs run: it is the model's, the same for every task, and every record says the path
    that ran (`kernel`). Said here by the driver, not by each job's worker, so that a suite of five tasks
    does not repeat it five times."""
    for note in dict.fromkeys(w.job.backend_note for w in works if w.job.backend_note and not w.job.skip_reason):
        console.note(note)


def _say_what_is_redone(works: list[Work], incomplete: dict[tuple[str, str], tuple[int, int]],
                        torn: set[tuple[str, str]]) -> None:
    """On resume, each pending point that a torn write left unfinished, by name: the lines before say a torn
    line was skipped, these say what it costs."""
    for work in works:
        for pt in work.points:
            if (work.job.id, pt.key) in incomplete:
                found, written = incomplete[(work.job.id, pt.key)]
                console.note(f"resuming: {console.point_name(work.job.id, pt.key)} has {found} of its {written} records (a write cut "
                             "short): redone")
            elif (work.job.id, pt.key) in torn:
                console.note(f"resuming: {console.point_name(work.job.id, pt.key)} lost its records to a torn write: redone")


def pending_work(plan: Plan, run: RunDir, attempts: dict[tuple[str, str], tuple[int, bool]]) -> list[Work]:
    """Each job's points that are not done yet (none on a fresh run), as work for a launcher."""
    works = []
    for job in plan.jobs:
        pending = [p for p in job.points if not attempts.get((job.id, p.key), (0, False))[1]]
        if pending:
            works.append(Work(job, pending, run.name, plan.suite_name, run.artifacts(job.id), KINDS[job.kind],
                              forwarded_env()))
    return works


class Bars:
    """The progress bars of a run: one for the jobs, and one for each job that runs now (several at once
    on a cluster), made when its launcher says it started and removed when its last point is in."""

    def __init__(self, progress: Progress, works: list[Work]):
        self.rich = progress
        self.jobs_bar = progress.add_task("jobs", total=len(works))
        self.sizes = {w.job.id: len(w.points) for w in works}
        self.running: dict[str, JobBar] = {}

    def started(self, job_id: str, where: str) -> None:
        if job_id not in self.running:
            self.running[job_id] = JobBar(self.rich, f"{job_id} on {where}" if where else job_id,
                                          self.sizes[job_id])

    def progress(self, job_id: str, fraction: float) -> None:
        self._bar(job_id).within_point(fraction)

    def status(self, job_id: str, text: str) -> None:
        self._bar(job_id).status(text)

    def point_done(self, job_id: str) -> None:
        bar = self._bar(job_id)
        bar.point_done()
        if bar.done == self.sizes[job_id]:
            bar.close()
            del self.running[job_id]
            self.rich.advance(self.jobs_bar)

    def _bar(self, job_id: str) -> JobBar:
        """A job's bar; one that was lost before it said it started still gets one for its error records."""
        self.started(job_id, "")
        return self.running[job_id]


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


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console.err, transient=False)
