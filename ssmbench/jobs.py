"""The low vocabulary that spec, plan, execute and the kinds' runners share: a task's common fields, a job
(one task on one model) and its sweep points.

It sits below all of them, so a runner can name a Job or build Points without importing the planner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from ssmbench.errors import did_you_mean, error_message, format_loc, settle_unions
from ssmbench.zoo import ResolvedModel


class Strict(BaseModel):
    """A suite mapping: unknown keys are errors, not silently ignored settings, and values are taken as
    written (pydantic's strict mode): `true` is no batch size (lax mode reads it as 1), "8" and 8.0 are
    no count, in every kind's task, including kinds added later."""

    model_config = ConfigDict(extra="forbid", strict=True)


class OnCPU(BaseModel):
    """Settings that replace a task's own when the run is on the CPU, and why (printed with the plan).

    A GPU-sized grid can take an hour on two cores; a suite that should also answer on a laptop says what
    it runs there instead, and the plan and the run say which settings they chose and why.
    """

    model_config = ConfigDict(extra="allow")
    because: str  # why these settings replace the task's own on a CPU (the plan prints it)

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Resources(Strict):
    """What one job asks of a cluster launcher (`--launcher ray | slurm`); the local launcher ignores it.

    The suite's `launch.resources` holds the defaults and a task's `resources` overrides some of them, so
    a zero-shot task can ask for a longer time than a throughput sweep. `time_min` is the job's wall-clock
    limit: SLURM's --time, and on Ray the time after which the job is cancelled and recorded as an error.
    """

    partition: str | None = None  # SLURM partition; the cluster's default when absent
    gpus: NonNegativeInt | None = None  # per job; absent: 1 on CUDA, none on the CPU
    cpus: PositiveInt | None = None  # per job; absent: 1 on Ray, the cluster's default on SLURM
    mem_gb: PositiveFloat | None = None  # memory per job, in GB; the cluster's default when absent
    time_min: PositiveInt | None = None  # absent: no limit on Ray, SLURM_DEFAULT_TIME_MIN on SLURM

    def over(self, base: Resources) -> Resources:
        """These settings where set, `base`'s elsewhere (None is "not set": a task's resources survive the
        model_dump and validate of `for_device` with every field present)."""
        return base.model_copy(update={k: v for k in type(self).model_fields if (v := getattr(self, k)) is not None})

    def gpus_for(self, device: str) -> int:
        return self.gpus if self.gpus is not None else int(device == "cuda")


class TaskBase(Strict):
    """Fields every task of a suite has; each kind's task model adds its own and a literal `kind`."""

    uses_models: ClassVar[bool] = True  # False for kinds that measure kernels alone

    kind: str  # which task kind this is: selects the task's fields and its runner (`ssmbench list tasks`)
    name: str | None = None  # defaults to the kind; unique within a suite
    models: list[str] | None = None  # a subset of the suite's models, by name; all when absent
    # settings that replace this task's own on a CPU, with `because:` saying why (the plan prints it)
    on_cpu: OnCPU | None = None
    resources: Resources | None = None  # what a cluster launcher gives its jobs, over the suite's launch.resources

    @model_validator(mode="after")
    def _cpu_settings_are_valid(self) -> TaskBase:
        if self.on_cpu is not None:
            unknown = [k for k in self.on_cpu.settings
                       if k not in type(self).model_fields or k in ("kind", "name", "on_cpu")]
            if unknown:
                raise ValueError(f"on_cpu: {unknown[0]!r} is not a setting of {self.kind}"
                                 f"{did_you_mean(unknown[0], type(self).model_fields)}")
            try:
                self.for_device("cpu")
            except ValidationError as exc:
                given = self.model_dump(exclude={"on_cpu"}) | self.on_cpu.settings
                first = settle_unions(exc.errors(), given)[0]  # a union's error from the branch written for
                raise ValueError(f"on_cpu.{format_loc(first['loc'])}: {error_message(first)}") from None
        return self

    def for_device(self, device: str) -> TaskBase:
        """The task as it runs on `device`: on the CPU, with `on_cpu`'s settings in place of its own."""
        if device != "cpu" or self.on_cpu is None:
            return self
        return type(self).model_validate(self.model_dump(exclude={"on_cpu"}) | self.on_cpu.settings)

    def plan_notes(self, device: str) -> list[str]:
        """What the plan should tell the user about this task as it runs on `device` (kinds override)."""
        return []

    def cpu_changes(self) -> str:
        """What `on_cpu` changes, field by field as the suite would write them, only what differs:
        'architectures.mamba.d_model 64 -> 16; train.steps 204800 -> 60; architectures.mha-rope dropped
        (because ...)'."""
        if self.on_cpu is None:
            return ""
        before = _leaves(self.model_dump(mode="json", exclude={"on_cpu"}))
        after = _leaves(self.for_device("cpu").model_dump(mode="json", exclude={"on_cpu"}))
        changes = []
        for path in dict.fromkeys([*before, *after]):
            if path not in after:
                gone = _gone_from(path, after)  # a whole architecture dropped is one change, not twenty
                if f"{gone} dropped" not in changes:
                    changes.append(f"{gone} dropped")
            elif path not in before:
                changes.append(f"{path} {_shown(after[path])} added")
            elif before[path] != after[path]:
                changes.append(f"{path} {_shown(before[path])} -> {_shown(after[path])}")
        return f"{'; '.join(changes) or 'nothing'} (because {self.on_cpu.because})"

    @property
    def task_name(self) -> str:
        return self.name or self.kind

    def variants(self) -> list[str]:
        """For a task that brings its own models instead of the suite's (uses_models False): their names,
        one job each (the small architectures a synthetic task trains). Empty: one job for the task."""
        return []

    def pack_width(self) -> int:
        """How many of the task's jobs train side by side on one device (kinds that train small models
        say; 1: one after another)."""
        return 1

    def job_axes(self, variant: str | None) -> list[dict[str, Any]]:
        """The task's own sweep axes that make separate jobs of one variant (a synthetic task's seeds and
        learning rates): one mapping per job, named in its id and in its records' slices. One job: [{}]."""
        return [{}]


TaskT = TypeVar("TaskT", bound=TaskBase)


@dataclass(frozen=True)
class Point:
    """One sweep point: `key` names it in records ("batch=1,prompt_len=128,cuda_graphs=off"); `params` feed
    the runner and become the record's slice."""

    key: str
    params: dict[str, Any]


def point(**params: Any) -> Point:
    def show(v: Any) -> str:
        return ("on" if v else "off") if isinstance(v, bool) else str(v)

    return Point(",".join(f"{k}={show(v)}" for k, v in params.items()), params)


@dataclass
class Job(Generic[TaskT]):
    """One task on one model (or a model-free task alone), with every choice made and its points listed."""

    id: str  # "<task>/<model>", "<task>/<variant>[/axis=value...]", or "<task>" for model-free tasks
    task: TaskT
    model: ResolvedModel | None
    device: str
    seed: int
    points: list[Point] = field(default_factory=list)
    variant: str | None = None  # which of the task's own models (TaskBase.variants) this job runs
    axes: dict[str, Any] = field(default_factory=dict)  # the job's values of the task's own axes (job_axes)
    skip_reason: str | None = None  # the whole job is refused (e.g. a quality task on random weights)
    backend_note: str | None = None  # e.g. fused kernels unavailable, running transformers' PyTorch path
    resources: Resources = field(default_factory=Resources)  # for a cluster launcher; the local one ignores them

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def task_name(self) -> str:
        return self.task.task_name

    @property
    def model_name(self) -> str | None:
        """What records name as the model: the suite model, or the task's own variant."""
        return self.model.name if self.model is not None else self.variant


@dataclass
class Plan:
    """A suite expanded into jobs, with everything the executor needs and nothing it must look up."""

    suite_name: str
    device: str  # resolved: cpu or cuda
    jobs: list[Job[Any]]
    resolved_suite: str  # the suite as YAML with every override applied: what --resume reads back
    notes: list[str] = field(default_factory=list)  # choices the plan made that the user should hear of
    retries: int = 0  # how often a cluster launcher resubmits a job whose worker, node or time limit was lost

    @property
    def n_points(self) -> int:
        return sum(len(j.points) for j in self.jobs)


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """A dumped suite entry as dotted paths to its values (`train.steps`); lists are values, as a suite
    writes them; a mapping that an architecture or the like drops entirely shows as its own path."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _leaves(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def _gone_from(path: str, after: dict[str, Any]) -> str:
    """The shortest prefix of a dropped path that nothing in `after` lives under."""
    parts = path.split(".")
    for n in range(1, len(parts) + 1):
        prefix = ".".join(parts[:n])
        if not any(p == prefix or p.startswith(prefix + ".") for p in after):
            return prefix
    return path


def _shown(value: Any) -> str:
    """A value as YAML's flow style would show it (null, true, [1, 2]), not as Python's repr."""
    return json.dumps(value, separators=(", ", ": "))
