"""The local launcher: every job in the driver's own process, one after another, as ssmbench always ran;
with `--gpus N`, one worker process per GPU instead (launch.pool).

In the driver's process it is the only launcher that shows progress inside a point (a training run's step
and loss) without a worker to hear it from; it has no worker to lose, so `retries` and `resources` do not
apply. The jobs of a task with `pack: K` run together (worker.run_pack): up to K of their training points
side by side on the one device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssmbench.jobs import Point
from ssmbench.launch import Feedback, Work, packs
from ssmbench.launch.worker import run_unit
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.jobs import Plan


class LocalLauncher:
    def __init__(self, gpus: str | None = None):
        """`gpus` (--gpus: a count or `all`): run on that many of this machine's GPUs, a worker process each;
        absent, everything runs in this process."""
        self.pool = None
        if gpus is not None:
            from ssmbench.launch.pool import GpuPool, device_slots

            self.pool = GpuPool(device_slots(gpus))

    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        return []  # nothing to submit

    def describe(self) -> dict[str, Any]:
        return {"name": "local"} | (self.pool.describe() if self.pool else {})

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        if self.pool is not None:
            yield from self.pool.run(works, feedback, retries, folder)
            return
        for group in packs(works):
            yield from run_unit(group, feedback)
