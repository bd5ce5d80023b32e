"""What the launchers that run work elsewhere share: submit each unit (a pack, or a job: launch.packs),
collect its points as they arrive, and turn a unit that was lost into a resubmission (while retries last) or
error records for the points it did not finish.

A launcher (ray, slurm, the local pool of GPUs) says how to submit a unit, how to hear from the units it
submitted, and how to cancel one; this loop does the rest, so all treat a dead worker, a lost node and a
time limit the same way. Interrupted (Ctrl-C, SIGTERM), it asks the launcher to stop what runs and hands on
the points that still come in while the workers stop (the local pool's save their training states first).
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
from ssmbench.launch import Feedback, Work, packs, unit_name
from ssmbench.launch.worker import lost_records
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.jobs import Plan


@dataclass
class Update:
    """What one submitted unit said since it was last asked."""

    started: str | None = None  # where it runs, once it has started
    points: list[tuple[str, str, list[Record]]] = field(default_factory=list)  # (job id, point key, records)
    progress: dict[str, float] = field(default_factory=dict)  # job id -> how far into its point (if told)
    status: dict[str, str] = field(default_factory=dict)  # job id -> its live line (a training's step, loss)
    ended: bool = False  # it will say nothing more (check `failure`, and whether every point came)
    failure: str | None = None  # why it ended before its points were done


@dataclass
class Attempt:
    """One submission of a unit: the points it still owes, when it started, and how many tries came before."""

    unit: list[Work]
    handle: Any
    tries: int = 0
    started_at: float | None = None
    remaining: dict[tuple[str, str], tuple[Work, Point]] = field(init=False)  # (job id, key): not yet recorded

    def __post_init__(self) -> None:
        self.remaining = {(w.job.id, pt.key): (w, pt) for w in self.unit for pt in w.points}

    def left(self) -> list[Work]:
        """Each job of the unit with the points it still owes (jobs that owe none left out)."""
        return [replace(w, points=pts) for w in self.unit
                if (pts := [pt for (job_id, _), (_, pt) in self.remaining.items() if job_id == w.job.id])]

    def over_time(self) -> str | None:
        limit = self.unit[0].job.resources.time_min
        if limit is None or self.started_at is None or time.monotonic() - self.started_at < limit * 60:
            return None
        return f"timed out after {limit} min (resources.time_min)"


class RemoteLauncher(ABC):
    time_limits = True  # whether a unit is cancelled after its resources' time_min

    def start(self, folder: Path) -> None:
        """Prepare to submit; `folder` is the run directory's place for the launcher's own files."""

    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        """Write what would be submitted under `folder`, submitting nothing; the files written."""
        return []

    def units(self, works: list[Work]) -> list[list[Work]]:
        """What is submitted: each pack whole (one process, one GPU), every other job alone."""
        return packs(works, places=self.places())

    def places(self) -> int:
        """How many units can run at once (GPUs, say): packs are cut to keep every one of them busy."""
        return 1

    @abstractmethod
    def submit(self, unit: list[Work]) -> Any:
        """Start running `unit` somewhere; a handle to hear from it."""

    @abstractmethod
    def poll(self, handles: list[Any]) -> list[Update]:
        """One update per handle, in order; waits a little (about a second) when nothing is new."""

    @abstractmethod
    def cancel(self, handle: Any) -> None:
        """Stop a unit (its time is up, or the run was interrupted)."""

    def stop(self, handles: list[Any]) -> list[Update]:
        """The run was interrupted: stop every unit; what each said while it stopped. Cancelling, by default:
        a cluster's worker has nothing to add once told to go."""
        for handle in handles:
            self.cancel(handle)
        return [Update() for _ in handles]

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        self.start(folder)
        live = [Attempt(unit, self.submit(unit)) for unit in self.units(works)]
        try:
            while live:
                yield from self._round(live, feedback, retries)
        except KeyboardInterrupt:
            stopping, live = live, []
            for attempt, update in zip(stopping, self.stop([a.handle for a in stopping]), strict=True):
                yield from self._take(attempt, update, feedback)
            raise
        finally:
            for attempt in live:  # closed early: what still runs would measure for nobody
                self.cancel(attempt.handle)

    def _round(self, live: list[Attempt], feedback: Feedback, retries: int) -> Iterator[tuple[str, Point, list[Record]]]:
        """Hear from every live unit once; `live` is updated in place (ended units out, resubmissions in),
        so that an interruption at any moment knows what still runs."""
        for attempt, update in zip(list(live), self.poll([a.handle for a in live]), strict=True):
            yield from self._take(attempt, update, feedback)
            follow_up = self._settle(attempt, update, retries)
            if follow_up is attempt:
                continue
            live.remove(attempt)
            if isinstance(follow_up, Attempt):
                live.append(follow_up)
            else:
                yield from follow_up

    def _take(self, attempt: Attempt, update: Update, feedback: Feedback) -> Iterator[tuple[str, Point, list[Record]]]:
        if update.started is not None and attempt.started_at is None:
            attempt.started_at = time.monotonic()
            for work in attempt.unit:
                feedback.started(work.job.id, update.started)
        for job_id, fraction in update.progress.items():  # before the points: a finished job's bar is gone
            if any(j == job_id for j, _ in attempt.remaining):
                feedback.progress(job_id, fraction)
        for job_id, text in update.status.items():
            if any(j == job_id for j, _ in attempt.remaining):
                feedback.status(job_id, text)
        for job_id, key, records in update.points:
            found = attempt.remaining.pop((job_id, key), None)
            if found is not None:
                yield job_id, found[1], records

    def _settle(self, attempt: Attempt, update: Update, retries: int) -> Attempt | list[tuple[str, Point, list[Record]]]:
        """The attempt itself while it runs; a new attempt for a lost unit with retries left; otherwise the
        records of the points it never finished (none when all came)."""
        failure = update.failure
        if failure is None and not update.ended:
            failure = attempt.over_time() if self.time_limits else None
            if failure is None:
                return attempt if attempt.remaining else []
            self.cancel(attempt.handle)
        if not attempt.remaining:
            return []
        failure = failure or "the job ended without recording these points"
        name = unit_name(attempt.unit)
        if attempt.tries < retries:
            console.note(f"{name}: {failure}; resubmitting its {len(attempt.remaining)} unfinished points "
                         f"(retry {attempt.tries + 1} of {retries})")
            unit = attempt.left()
            return Attempt(unit, self.submit(unit), tries=attempt.tries + 1)
        console.failure(f"{name}: {failure}")
        tried = f" after {attempt.tries + 1} tries" if attempt.tries else ""
        return [(work.job.id, pt, records) for work in attempt.left()
                for pt, records in lost_records(work, work.points, f"job lost{tried}: {failure}")]
