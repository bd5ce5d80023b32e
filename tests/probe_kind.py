"""A task kind that says where it ran: each point records its process id and the CUDA_VISIBLE_DEVICES its
process was given, and with `meet` a process's first point waits until `meeting` processes have arrived
(a file each in the `meet` folder), so that units which do not run at the same time fail instead of passing.
It needs no torch and packs (`pack: K`) without training: a pack's jobs measure their points one after
another in one process, as worker.run_pack measures a pack's tests.

Registered as "probe" by tests/test_multi_gpu.py; workers import it from tests/ through PYTHONPATH."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import PositiveInt

from ssmbench import console
from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, Runner
from ssmbench.records import Record
from ssmbench.zoo import ResolvedModel

MEET_TIMEOUT_S = 120.0


class ProbeTask(TaskBase):
    uses_models: ClassVar[bool] = False
    kind: Literal["probe"]
    jobs: PositiveInt = 4
    points: PositiveInt = 2
    pack: PositiveInt = 1
    meet: str | None = None  # a folder where processes meet
    meeting: PositiveInt = 2  # how many processes must be there at once

    def pack_width(self) -> int:
        return self.pack

    def job_axes(self, variant: str | None) -> list[dict[str, Any]]:
        return [{"copy": i} for i in range(self.jobs)]


class ProbeRunner(Runner[ProbeTask]):
    @classmethod
    def points(cls, task: ProbeTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(step=i) for i in range(task.points)]

    def measure(self, pt: Point) -> list[Record]:
        if self.task.meet is not None:
            meet(Path(self.task.meet), self.task.meeting)
        console.note(f"{self.job.id}, {pt.key}: measured in process {os.getpid()}")  # on the driver's screen
        return [self.record(pt, metric="pid", value=os.getpid(), unit="", higher_is_better=True,
                            extra={"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})]


def meet(folder: Path, meeting: int) -> None:
    """Leave this process's mark in `folder` and wait until `meeting` processes have left theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + MEET_TIMEOUT_S
    while len(list(folder.iterdir())) < meeting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(list(folder.iterdir()))} of {meeting} processes came to {folder}")
        time.sleep(0.05)


KIND = Kind(name="probe", task=ProbeTask, runner=ProbeRunner, description="where each point ran")
