"""Suite -> jobs. Every choice a run depends on is made here, before anything runs.

A job is one task on one model (or one model-free task, like the scan kernels) and holds its sweep points.
Points are the unit of recording and resuming: a point whose records exist is not run again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ssmbench.errors import JobError, UserError, did_you_mean
from ssmbench.registry import MODELS, ResolvedModel, is_tiny
from ssmbench.spec import QUALITY_KINDS, ModelRef, Suite


@dataclass(frozen=True)
class Point:
    """One sweep point: `key` names it in records ("batch=1,prompt=128,graphs=off"); `params` feed the
    runner and become the record's slice."""

    key: str
    params: dict[str, Any]


def point(**params: Any) -> Point:
    def show(v: Any) -> str:
        return ("on" if v else "off") if isinstance(v, bool) else str(v)

    return Point(",".join(f"{k}={show(v)}" for k, v in params.items()), params)


@dataclass
class Job:
    id: str  # "<task>/<model>" or "<task>" for model-free tasks
    task_name: str
    task: Any  # the task's pydantic model
    model: ResolvedModel | None
    device: str
    seed: int
    points: list[Point] = field(default_factory=list)
    skip_reason: str | None = None  # the whole job is refused (e.g. a quality task on random weights)
    backend_note: str | None = None  # e.g. fused kernels unavailable, running transformers' PyTorch path

    @property
    def kind(self) -> str:
        return self.task.kind


@dataclass
class Plan:
    suite: Suite
    device: str
    jobs: list[Job]

    @property
    def n_points(self) -> int:
        return sum(len(j.points) for j in self.jobs)


def apply_overrides(suite: Suite, models: Sequence[str] | None = None, device: str | None = None,
                    weights: str | None = None, tasks: Sequence[str] | None = None) -> Suite:
    """The suite as the command line adjusts it: another model list, a subset of tasks, the device, or
    the weights of every model."""
    update: dict[str, Any] = {}
    if tasks:
        names = [suite.task_name(t) for t in suite.tasks]
        for name in tasks:
            if name not in names:
                raise UserError(f"--tasks: the suite has no task {name!r}{did_you_mean(name, names)}")
        suite = suite.model_copy(update={"tasks": [t for t in suite.tasks if suite.task_name(t) in tasks]})
    if models:
        known = {m.name: m for m in suite.models}
        for name in models:
            if name not in known and name not in MODELS:
                raise UserError(f"--models: unknown model {name!r}"
                                f"{did_you_mean(name, dict.fromkeys([*known, *MODELS]))}")
        update["models"] = [known.get(n) or ModelRef(name=n) for n in models]
        # A task the suite restricted to other models is dropped, not widened to these.
        tasks = [t if not t.models else t.model_copy(update={"models": [m for m in t.models if m in models]})
                 for t in suite.tasks]
        update["tasks"] = [t for t in tasks if t.models is None or t.models]
        if not update["tasks"]:
            raise UserError(f"--models: no task of suite {suite.name!r} runs on {', '.join(models)}")
    if weights:
        update["models"] = [m.model_copy(update={"weights": weights}) for m in update.get("models", suite.models)]
    if device:
        update["defaults"] = suite.defaults.model_copy(update={"device": device})
    return suite.model_copy(update=update)


def resolve_model(ref: ModelRef, suite: Suite, device: str) -> ResolvedModel:
    spec = MODELS[ref.zoo_name]
    if ref.overrides or ref.base or ref.tokenizer:
        spec = dataclasses.replace(spec, name=ref.name, config={**spec.config, **ref.overrides},
                                   tokenizer=ref.tokenizer or spec.tokenizer)
    weights = ref.weights or suite.defaults.weights
    if is_tiny(spec) and not (ref.path or ref.hf_id):
        weights = "random"  # tiny models exist only as random initialisations
    if ref.overrides and weights == "pretrained":
        raise UserError(f"models: {ref.name!r} sets overrides, which change the architecture of random "
                        "weights only (a checkpoint brings its own config); add `weights: random`")
    dtype = ref.dtype or suite.defaults.dtype
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    return ResolvedModel(name=ref.name, spec=spec, weights=weights, dtype=dtype, device=device,
                         backend=ref.backend, path=ref.path, hf_id=ref.hf_id, seed=suite.defaults.seed,
                         require_fused=suite.require_fused_kernels)


def build_plan(suite: Suite, device: str) -> Plan:
    """Expand the suite into jobs (task x model) with their points; `device` is already resolved."""
    from ssmbench.models import choose_backend
    from ssmbench.runners import runner_class

    models = {ref.name: resolve_model(ref, suite, device) for ref in suite.models}
    jobs: list[Job] = []
    for task in suite.tasks:
        name = suite.task_name(task)
        runner = runner_class(task.kind)
        if not task.uses_models:
            job = Job(name, name, task, None, device, suite.defaults.seed)
            job.points = runner.points(task, None, device)
            jobs.append(job)
            continue
        for model_name in task.models or list(models):
            model = models[model_name]
            job = Job(f"{name}/{model_name}", name, task, model, device, suite.defaults.seed)
            try:
                job.backend_note = choose_backend(model)[1]
            except JobError as exc:  # e.g. fused kernels required: recorded as the job's failure later
                job.backend_note = str(exc)
            job.points = runner.points(task, model, device)
            if task.kind in QUALITY_KINDS and model.weights == "random" and not suite.smoke_test:
                job.skip_reason = (f"{task.kind} on random weights measures nothing; use pretrained weights, "
                                   "or set `smoke_test: true` in the suite to exercise the pipeline anyway")
            jobs.append(job)
    return Plan(suite, device, jobs)
