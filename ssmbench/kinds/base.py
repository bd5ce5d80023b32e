"""What a task kind is: its task spec, its runner, and how its records are reported, in one entry.

The executor makes one runner per job and calls `setup()` once, `measure(point)` for each pending point,
and `teardown()` at the end; in a pack (a task's `pack`), a point that trains a small model is trained
beside other jobs' instead (`pack_trainer`, `training_records`). Runners only measure: the executor turns
exceptions into records (OOM as a result, anything else as the point's error), writes records and draws
progress. Reports find a kind's tables and plots through its entry, so nothing depends on what was
imported first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from ssmbench.jobs import Job, Point, TaskBase, TaskT
from ssmbench.measure import free_memory
from ssmbench.records import Record
from ssmbench.report.tables import Table, comparison_table

if TYPE_CHECKING:
    import pandas as pd

    from ssmbench.models import LoadedModel
    from ssmbench.train import Trainer, TrainResult
    from ssmbench.zoo import ResolvedModel

TablesFn = Callable[[str, "pd.DataFrame"], list[Table]]
PlotsFn = Callable[[str, "pd.DataFrame", Path], list[Path]]
SummaryFn = Callable[["pd.DataFrame"], list[Table]]


class SkipPoint(Exception):
    """This point cannot run here (e.g. a CUDA-only kernel on the CPU); recorded as skipped, with the reason."""


@dataclass(frozen=True)
class JobContext:
    """What the executor hands a runner besides its job: where records and files of the job belong."""

    run_id: str
    suite: str
    artifacts: Path  # the job's own folder in the run directory, created when first written to
    on_progress: Callable[[float], None] = field(default=lambda fraction: None)  # progress inside a point
    on_status: Callable[[str], None] = field(default=lambda text: None)  # a short live line (step, loss, ...)

    def artifact(self, name: str) -> Path:
        """A path for a file of this job (a checkpoint, sample prompts and answers, per-document logs)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return self.artifacts / name


class Runner(ABC, Generic[TaskT]):
    """Measures one job's points. `self.task` is the job's task, typed by the kind."""

    # Feeds the model text through its tokenizer: a model with none is refused when the plan is built.
    reads_text: ClassVar[bool] = False

    def __init__(self, job: Job[TaskT], context: JobContext):
        self.job, self.task, self.context = job, job.task, context
        self.on_progress, self.on_status = context.on_progress, context.on_status

    @classmethod
    @abstractmethod
    def points(cls, task: TaskT, model: ResolvedModel | None, device: str) -> list[Point]:
        """The sweep points of a job, known before anything is loaded (for --dry-run and resume)."""

    @classmethod
    def needs(cls, task: TaskT, model: ResolvedModel | None, device: str) -> list[str]:
        """What a job needs, shown by --dry-run (e.g. 'CUDA', 'pretrained weights')."""
        return []

    def setup(self) -> None:
        """Load what every point shares (the model)."""

    @abstractmethod
    def measure(self, point: Point) -> list[Record]:
        """Measure one point; raise SkipPoint when it cannot run here."""

    def teardown(self) -> None:
        free_memory(self.job.device)

    # --- packing: kinds that train small models let several jobs' training share one device ----------

    def packable(self, point: Point) -> bool:
        """Whether this point trains a model that can share the device with other jobs' (a pack)."""
        return False

    def pack_trainer(self, point: Point) -> Trainer:
        """The training run of a packable point, made to run beside others (ssmbench.train.train_pack)."""
        raise NotImplementedError(f"kind {self.job.kind} does not pack")

    def training_records(self, point: Point, trainer: Trainer, outcome: TrainResult | Exception) -> list[Record]:
        """The records of a point's training outcome (in a pack, or alone), as `measure` would return them; an
        outcome that is an exception is raised as `measure` would have raised it."""
        raise NotImplementedError(f"kind {self.job.kind} does not pack")

    def record(self, point: Point, **fields: Any) -> Record:
        """A record with the identity of this job and point filled in; `fields` add or override."""
        from ssmbench.env import device_label

        base: dict[str, Any] = {
            "run_id": self.context.run_id, "suite": self.context.suite, "task": self.job.task_name,
            "kind": self.job.kind, "job": self.job.id, "point": point.key, "slice": dict(point.params),
            "device": device_label(self.job.device), "seed": self.job.seed,
        }
        model = self.job.model
        if model is not None:
            base.update(model=model.name, family=model.spec.family, weights=model.weights, dtype=model.dtype)
        elif self.job.variant is not None:
            base["model"] = self.job.variant
        return Record(**(base | fields))


class ModelRunner(Runner[TaskT]):
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
        identity = loaded.record_fields()  # what was loaded (checkpoint, weights hash, ...) goes in extra
        extra = identity.pop("extra", {}) | {"params": loaded.n_params, "backend": loaded.backend} | fields.pop("extra", {})
        return super().record(point, **(identity | {"extra": extra} | fields))

    def teardown(self) -> None:
        self.__dict__.pop("model", None)
        super().teardown()


NA_CONTEXT = "n/a (context)"  # a skipped point's message prefix when its prompts do not fit the model's context


class TextRunner(ModelRunner[TaskT]):
    """A runner that feeds the model text and reads what it writes (phonebook, generate): the model's own
    tokenizer, loaded once, and prompts checked against the model's context before they are decoded. The
    task has `max_new_tokens` and `cuda_graphs`."""

    reads_text = True

    @classmethod
    def needs(cls, task: TaskT, model: ResolvedModel | None, device: str) -> list[str]:
        return ["CUDA"] if getattr(task, "cuda_graphs", None) is True else []

    def setup(self) -> None:
        super().setup()
        self.tokenizer = self.model.tokenizer()

    def graphs(self) -> bool:
        """Whether greedy decoding replays CUDA graphs: `auto` means on CUDA where the model can (a hybrid
        decodes eagerly, and its records say cuda_graphs false); `true` is asked of every model."""
        asked = self.task.cuda_graphs  # type: ignore[attr-defined]
        if asked == "auto":
            return self.job.device == "cuda" and self.model.graph_decoding
        return bool(asked)

    def check_context(self, prompt_tokens: int) -> None:
        """Skip (n/a) a point whose longest prompt and new tokens exceed the model's context."""
        assert self.job.model is not None
        context = self.job.model.spec.context_length
        new = self.task.max_new_tokens  # type: ignore[attr-defined]
        if context is not None and prompt_tokens + new > context:
            raise SkipPoint(f"{NA_CONTEXT}: prompts of up to {prompt_tokens:,} tokens + {new} new exceed "
                            f"{self.job.model.name}'s {context:,}-token context")


@dataclass(frozen=True)
class Kind:
    """Everything about one task kind, registered once in ssmbench.kinds.KINDS.

    `tables` and `plots` are pure functions of one task's records frame (report.tables.records_frame);
    a kind without its own tables gets the generic comparison (models as columns, rows in `metric_order`).
    """

    name: str
    task: type[TaskBase]  # the pydantic model of its suite entry, with `kind: Literal[name]`
    runner: type[Runner[Any]]
    description: str  # one line, for `ssmbench list tasks`
    quality: bool = False  # measures what weights have learned: refused on random weights outside smoke tests
    metric_order: tuple[str, ...] = ()  # rows of the generic table in this order; others follow
    # What each metric of the generic table is, one line each, printed under it for the metrics it shows:
    # a reader must not have to open the code to know what "work_rss_mib" counts.
    glossary: Mapping[str, str] = field(default_factory=dict)
    views: TablesFn | None = None
    plotter: PlotsFn | None = None
    summary: SummaryFn | None = None  # tables across all of the run's tasks of this kind, after their own

    def summaries(self, frame: pd.DataFrame) -> list[Table]:
        return self.summary(frame) if self.summary is not None else []

    def tables(self, task: str, frame: pd.DataFrame) -> list[Table]:
        if self.views is not None:
            return self.views(task, frame)
        return [comparison_table(task, frame, self.metric_order, self.glossary)]

    def plots(self, task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
        return self.plotter(task, frame, out) if self.plotter is not None else []
