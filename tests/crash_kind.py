"""A task kind whose worker dies: the first time a point runs, its process is killed (SIGKILL), as by the
kernel's OOM killer or a node going away; once the marker file exists, the point measures like the toy
kind. Only for cluster launchers' tests: under the local launcher it would kill the test run itself.

Registered as "crash" by tests/test_launchers.py; workers import it from tests/ through PYTHONPATH."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Literal

from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, ModelRunner
from ssmbench.records import Record
from ssmbench.zoo import ResolvedModel


class CrashTask(TaskBase):
    kind: Literal["crash"]
    marker: str  # a file: absent, the point at `crash_at` kills its worker (and creates the file)
    points: int = 3
    crash_at: int = 1


class CrashRunner(ModelRunner[CrashTask]):
    @classmethod
    def points(cls, task: CrashTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(step=i) for i in range(task.points)]

    def setup(self) -> None:
        pass

    def measure(self, pt: Point) -> list[Record]:
        marker = Path(self.task.marker)
        if pt.params["step"] == self.task.crash_at and not marker.exists():
            marker.write_text(f"killed pid {os.getpid()}")
            # Mid-point, as a real death comes: Ray streams a yielded point to the driver asynchronously, and
            # a worker killed within microseconds of yielding can take that point with it (then it is lost,
            # recorded as an error and rerun on resume: correct, but not what this test pins down).
            time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)
        return [self.record(pt, metric="step", value=pt.params["step"], unit="", higher_is_better=True)]


KIND = Kind(name="crash", task=CrashTask, runner=CrashRunner, description="kills its worker once")
