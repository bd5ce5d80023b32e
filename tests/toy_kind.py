"""A complete task kind in one module, as a user would add one: what tests/test_kinds.py registers with one
line and runs end to end. It "measures" the length of a model's name, so it needs no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt

from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, ModelRunner
from ssmbench.records import Record
from ssmbench.zoo import ResolvedModel


class ToyTask(TaskBase):
    kind: Literal["toy"]
    repeats: PositiveInt = 2


class ToyRunner(ModelRunner[ToyTask]):
    @classmethod
    def points(cls, task: ToyTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(copy=i) for i in range(task.repeats)]

    def setup(self) -> None:  # nothing to load
        pass

    def measure(self, pt: Point) -> list[Record]:
        assert self.job.model is not None
        self.context.artifact(f"copy{pt.params['copy']}.txt").write_text(self.job.model.name)
        return [self.record(pt, metric="name_chars", value=len(self.job.model.name), unit="chars",
                            higher_is_better=True)]


KIND = Kind(name="toy", task=ToyTask, runner=ToyRunner, description="the length of each model's name")
