"""The local launcher: every job in the driver's own process, one after another, as ssmbench always ran.

It is the only launcher that shows progress inside a point (a training run's step and loss), since its
runners share the driver's progress bars; it has no worker to lose, so `retries` and `resources` do not
apply. The jobs of a task with `pack: K` run together (worker.run_pack): up to K of their training points
side by side on the one device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssmbench.jobs import Point
from ssmbench.launch import Feedback, Work, packs
from ssmbench.launch.worker import run_pack, run_work
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.jobs import Plan


class LocalLauncher:
    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        return []  # nothing to submit

    def describe(self) -> dict[str, Any]:
        return {"name": "local"}

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        for group in packs(works):
            if len(group) > 1:
                yield from run_pack(group, group[0].job.task.pack_width(), feedback)
                continue
            (work,) = group
            job_id = work.job.id
            feedback.started(job_id, "")  # here, as the run directory's env.json says
            for pt, records in run_work(work, on_progress=lambda f, j=job_id: feedback.progress(j, f),
                                        on_status=lambda text, j=job_id: feedback.status(j, text)):
                yield job_id, pt, records
