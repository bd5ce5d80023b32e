"""Suite -> jobs. Every choice a run depends on is made here, before anything runs.

A job is one task on one model (or one model-free task, like the scan kernels) and holds its sweep points.
Points are the unit of recording and resuming: a point whose records exist is not run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from ssmbench.errors import JobError, UserError, did_you_mean
from ssmbench.jobs import Job, Plan, TaskBase
from ssmbench.kinds import get_kind
from ssmbench.models import choose_backend
from ssmbench.models.tokenizers import tokenizer_problem
from ssmbench.spec import ModelRef, Suite
from ssmbench.zoo import MODELS, ResolvedModel, is_tiny


def apply_overrides(suite: Suite, models: Sequence[str] | None = None, device: str | None = None,
                    weights: str | None = None, tasks: Sequence[str] | None = None,
                    limit: float | None = None, models_from: str = "--models") -> Suite:
    """The suite as the command line adjusts it: another model list, a subset of tasks, the device, the
    weights of every model, or the documents per zero-shot task (`limit`). `models_from` is what the user
    typed the models as (`run --models`, or `compare`'s arguments), for errors about them."""
    if limit is not None:
        suite = with_zero_shot_limit(suite, limit)
    update: dict[str, Any] = {}
    if tasks:
        names = [t.task_name for t in suite.tasks]
        for name in tasks:
            if name not in names:
                raise UserError(f"--tasks: the suite has no task {name!r}{did_you_mean(name, names)}")
        suite = suite.model_copy(update={"tasks": [t for t in suite.tasks if t.task_name in tasks]})
    if models:
        known = {m.name: m for m in suite.models}
        for name in models:
            if name not in known and name not in MODELS:
                raise UserError(f"{models_from}: unknown model {name!r}"
                                f"{did_you_mean(name, dict.fromkeys([*known, *MODELS]))}")
        update["models"] = [known.get(n) or ModelRef(name=n) for n in models]
        # A task the suite restricted to other models is dropped, not widened to these; so is a task that
        # runs none of the suite's models (scan, synthetic): the command line asked about these models.
        narrowed = [t if not t.models else t.model_copy(update={"models": [m for m in t.models if m in models]})
                    for t in suite.tasks if t.uses_models]
        update["tasks"] = [t for t in narrowed if t.models is None or t.models]
        if not update["tasks"]:
            raise UserError(f"{models_from}: no task of suite {suite.name!r} runs on {', '.join(models)}")
    if weights:
        update["models"] = [m.model_copy(update={"weights": weights}) for m in update.get("models", suite.models)]
    if device:
        update["defaults"] = suite.defaults.model_copy(update={"device": device})
    return suite.model_copy(update=update)


def with_zero_shot_limit(suite: Suite, limit: float) -> Suite:
    """Every zero_shot task evaluating `limit` documents per lm-eval task (a fraction below 1), on any
    device: the command line wins over the suite's `limit` and over its `on_cpu` one."""
    if limit <= 0:
        raise UserError(f"--limit: {limit:g} is not a positive number of documents (or a fraction below 1)")
    if not any(t.kind == "zero_shot" for t in suite.tasks):
        raise UserError(f"--limit: suite {suite.name!r} has no zero_shot task to limit")

    def limited(task: Any) -> Any:
        if task.kind != "zero_shot":
            return task
        on_cpu = task.on_cpu
        if on_cpu is not None and "limit" in on_cpu.settings:
            settings = {k: v for k, v in on_cpu.settings.items() if k != "limit"}
            on_cpu = type(on_cpu)(because=on_cpu.because, **settings) if settings else None
        return task.model_copy(update={"limit": limit, "on_cpu": on_cpu})

    return suite.model_copy(update={"tasks": [limited(t) for t in suite.tasks]})


def resolve_model(ref: ModelRef, suite: Suite, device: str) -> ResolvedModel:
    """The suite's model with every choice made. A `path:` or `hf_id:` checkpoint is what its config.json says
    (models.checkpoints.model_spec); a zoo model is its zoo entry, with the suite's overrides and tokenizer."""
    from ssmbench.models.checkpoints import CheckpointError, check_overrides, model_spec

    try:
        spec, checkpoint_format = model_spec(ref.name, ref.zoo_name, ref.path, ref.hf_id, ref.tokenizer,
                                             ref.overrides, ref.lender)
        check_overrides(spec.arch, ref.overrides)  # again: an hf_id's architecture may be known only now
    except CheckpointError as exc:
        raise UserError(f"{_model_field(suite, ref.name)}{exc}") from None
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
                         require_fused=suite.require_fused_kernels, tokenizer=ref.tokenizer,
                         checkpoint_format=checkpoint_format)


def _model_field(suite: Suite, name: str) -> str:
    """Where a model's fields are in the suite, to lead an error about one: 'models[1].'."""
    index = next((i for i, m in enumerate(suite.models) if m.name == name), None)
    return f"models[{index}]." if index is not None else f"models: {name!r}: "


def build_plan(suite: Suite, device: str) -> Plan:
    """Expand the suite into jobs (task x model) with their points; `device` is already resolved."""
    models = {ref.name: resolve_model(ref, suite, device) for ref in suite.models}
    jobs: list[Job[Any]] = []
    notes = []
    for given in suite.tasks:
        task = given.for_device(device)
        if task is not given:
            notes.append(f"{given.task_name}: on the CPU, {given.cpu_changes()}")
        if task.uses_models:
            added = [_job(task, models[name], suite, device) for name in task.models or list(models)]
        else:
            added = [_job(task, None, suite, device, variant, axes)
                     for variant in task.variants() or [None] for axes in task.job_axes(variant)]
        if any(job.skip_reason is None for job in added):  # nothing to say about a task that will not run
            notes += [f"{given.task_name}: {note}" for note in task.plan_notes(device)]
        jobs += added
    return Plan(suite.name, device, jobs, resolved_suite_yaml(suite, device), notes, suite.launch.retries)


def _job(task: TaskBase, model: ResolvedModel | None, suite: Suite, device: str,
         variant: str | None = None, axes: dict[str, Any] | None = None) -> Job[Any]:
    kind = get_kind(task.kind)
    axes = axes or {}
    subject = model.name if model is not None else variant
    job_id = job_identifier(task.task_name, subject, axes)
    resources = task.resources.over(suite.launch.resources) if task.resources else suite.launch.resources
    job = Job(job_id, task, model, device, axes.get("seed", suite.defaults.seed),
              points=kind.runner.points(task, model, device), variant=variant, resources=resources, axes=axes)
    if model is None:
        return job
    try:
        job.backend_note = choose_backend(model)[1]
    except JobError as exc:  # e.g. fused kernels required: recorded as the job's failure later
        job.backend_note = str(exc)
    if kind.quality and model.weights == "random" and not suite.smoke_test:
        job.skip_reason = (f"{task.kind} on random weights measures nothing; use pretrained weights, "
                           "or set `smoke_test: true` in the suite to exercise the pipeline anyway")
    elif kind.runner.reads_text and (problem := tokenizer_problem(
            model, f", and task {task.task_name!r} feeds the model text")):  # said now, not when the job runs
        raise UserError(f"{_model_field(suite, model.name)}{problem}")
    return job


def job_identifier(task_name: str, subject: str | None, axes: dict[str, Any]) -> str:
    """'<task>', '<task>/<model or variant>', then one '/axis=value' per axis of the task's own sweep:
    'induction/mamba/lr=0.001/seed=2'. It names the job's artifact folder too."""
    parts = [task_name, *([subject] if subject else [])]
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in axes.items()]
    return "/".join(parts)


def resolved_suite_yaml(suite: Suite, device: str) -> str:
    """The suite with the device resolved, as --resume will read it back."""
    resolved = suite.model_copy(update={"defaults": suite.defaults.model_copy(update={"device": device})})
    return yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False)
