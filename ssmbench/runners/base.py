"""The runner contract: how a task kind turns one job's points into records.

The executor makes one runner per job and calls `setup()` once, `measure(point)` for each pending point,
and `teardown()` at the end. Runners only measure: the executor turns exceptions into records (OOM as a
result, anything else as the point's error), writes records and draws progress.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from ssmbench.measure import free_memory
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.models import LoadedModel
    from ssmbench.plan import Job, Point
    from ssmbench.registry import ResolvedModel


class SkipPoint(Exception):
    """This point cannot run here (e.g. a CUDA-only kernel on the CPU); recorded as skipped, with the reason."""


class Runner(ABC):
    kind: ClassVar[str]

    def __init__(self, job: Job, run_id: str, suite_name: str, on_progress: Any = None):
        self.job, self.run_id, self.suite_name = job, run_id, suite_name
        self.on_progress = on_progress or (lambda fraction: None)  # progress inside a long point

    @classmethod
    @abstractmethod
    def points(cls, task: Any, model: ResolvedModel | None, device: str) -> list[Point]:
        """The sweep points of a job, known before anything is loaded (for --dry-run and resume)."""

    @classmethod
    def needs(cls, task: Any, model: ResolvedModel | None, device: str) -> list[str]:
        """What a job needs, shown by --dry-run (e.g. 'CUDA', 'pretrained weights')."""
        return []

    def setup(self) -> None:
        """Load what every point shares (the model)."""

    @abstractmethod
    def measure(self, point: Point) -> list[Record]:
        """Measure one point; raise SkipPoint when it cannot run here."""

    def teardown(self) -> None:
        free_memory(self.job.device)

    def record(self, point: Point, **fields: Any) -> Record:
        """A record with the identity of this job and point filled in; `fields` add or override."""
        from ssmbench.env import device_label

        base: dict[str, Any] = {
            "run_id": self.run_id, "suite": self.suite_name, "task": self.job.task_name, "kind": self.job.kind,
            "job": self.job.id, "point": point.key, "slice": dict(point.params),
            "device": device_label(self.job.device), "seed": self.job.seed,
        }
        model = self.job.model
        if model is not None:
            base.update(model=model.name, family=model.spec.family, weights=model.weights, dtype=model.dtype)
        return Record(**(base | fields))


class ModelRunner(Runner):
    """A runner whose points share one loaded model."""

    model: LoadedModel

    def model_to_load(self) -> ResolvedModel:
        """The suite's model as this kind loads it; a kind may adjust it (the dtype, the backend)."""
        assert self.job.model is not None
        return self.job.model

    def setup(self) -> None:
        from ssmbench.models import load_model

        self.model = load_model(self.model_to_load())

    def check_length(self, length: int) -> None:
        """Skip a point whose sequence the architecture cannot hold (an index error on CUDA would poison
        the whole process, not just this point)."""
        assert self.job.model is not None
        limit = self.job.model.spec.max_positions
        if limit is not None and length > limit:
            raise SkipPoint(f"{length} tokens exceed {self.job.model.name}'s {limit} positions "
                            "(extend them with overrides: {n_positions: N} on random weights)")

    def record(self, point: Point, **fields: Any) -> Record:
        loaded: LoadedModel | None = getattr(self, "model", None)
        if loaded is None:
            return super().record(point, **fields)
        extra = {"params": loaded.n_params, "backend": loaded.backend} | fields.pop("extra", {})
        return super().record(point, **(loaded.record_fields() | {"extra": extra} | fields))

    def teardown(self) -> None:
        self.__dict__.pop("model", None)
        super().teardown()
