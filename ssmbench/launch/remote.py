"""What the cluster launchers share: submit each job, collect its points as they arrive, and turn a job
that was lost into a resubmission (while retries last) or error records for the points it did not finish.

A launcher (ray, slurm) says how to submit a job, how to hear from the jobs it submitted, and how to cancel
one; this loop does the rest, so both treat a dead worker, a lost node and a time limit the same way.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssmbench import console
from ssmbench.jobs import Point
from ssmbench.launch import Feedback, Work
from ssmbench.launch.worker import lost_records
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.jobs import Plan


@dataclass
class Update:
    """What one submitted job said since it was last asked."""

    started: str | None = None  # where it runs, once it has started
    points: list[tuple[str, list[Record]]] = field(default_factory=list)  # (point key, records), in order
    ended: bool = False  # it will say nothing more (check `failure`, and whether every point came)
    failure: str | None = None  # why it ended before its points were done


@dataclass
class Attempt:
    """One submission of a job: the points it still owes, when it started, and how many tries came before."""

    work: Work
    handle: Any
    tries: int = 0
    started_at: float | None = None
    remaining: dict[str, Point] = field(init=False)  # point key -> point, of those not yet recorded

    def __post_init__(self) -> None:
        self.remaining = {pt.key: pt for pt in self.work.points}

    def over_time(self) -> str | None:
        limit = self.work.job.resources.time_min
        if limit is None or self.started_at is None or time.monotonic() - self.started_at < limit * 60:
            return None
        return f"timed out after {limit} min (resources.time_min)"


class RemoteLauncher(ABC):
    def start(self, folder: Path) -> None:
        """Prepare to submit; `folder` is the run directory's place for the launcher's own files."""

    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        """Write what would be submitted under `folder`, submitting nothing; the files written."""
        return []

    @abstractmethod
    def submit(self, work: Work) -> Any:
        """Start running `work` somewhere; a handle to hear from it."""

    @abstractmethod
    def poll(self, handles: list[Any]) -> list[Update]:
        """One update per handle, in order; waits a little (about a second) when nothing is new."""

    @abstractmethod
    def cancel(self, handle: Any) -> None:
        """Stop a job (its time is up, or the run was interrupted)."""

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        self.start(folder)
        attempts, still = [Attempt(w, self.submit(w)) for w in works], []
        try:
            while attempts:
                updates = self.poll([a.handle for a in attempts])
                for attempt, update in zip(attempts, updates, strict=True):
                    yield from self._take(attempt, update, feedback)
                    follow_up = self._settle(attempt, update, retries)
                    if isinstance(follow_up, Attempt):
                        still.append(follow_up)
                    else:
                        yield from follow_up
                attempts, still = still, []
        finally:
            for attempt in attempts + still:  # interrupted: what still runs would measure for nobody
                self.cancel(attempt.handle)

    def _take(self, attempt: Attempt, update: Update, feedback: Feedback) -> Iterator[tuple[str, Point, list[Record]]]:
        job_id = attempt.work.job.id
        if update.started is not None and attempt.started_at is None:
            attempt.started_at = time.monotonic()
            feedback.started(job_id, update.started)
        for key, records in update.points:
            pt = attempt.remaining.pop(key, None)
            if pt is not None:
                yield job_id, pt, records

    def _settle(self, attempt: Attempt, update: Update, retries: int) -> Attempt | list[tuple[str, Point, list[Record]]]:
        """The attempt itself while it runs; a new attempt for a lost job with retries left; otherwise the
        records of the points it never finished (none when all came)."""
        failure = update.failure
        if failure is None and not update.ended:
            failure = attempt.over_time()
            if failure is None:
                return attempt if attempt.remaining else []
            self.cancel(attempt.handle)
        if not attempt.remaining:
            return []
        failure = failure or "the job ended without recording these points"
        job_id = attempt.work.job.id
        if attempt.tries < retries:
            console.note(f"{job_id}: {failure}; resubmitting its {len(attempt.remaining)} unfinished points "
                         f"(retry {attempt.tries + 1} of {retries})")
            work = replace(attempt.work, points=list(attempt.remaining.values()))
            return Attempt(work, self.submit(work), tries=attempt.tries + 1)
        console.failure(f"{job_id}: {failure}")
        tried = f" after {attempt.tries + 1} tries" if attempt.tries else ""
        return [(job_id, pt, records) for pt, records in
                lost_records(attempt.work, list(attempt.remaining.values()), f"job lost{tried}: {failure}")]
