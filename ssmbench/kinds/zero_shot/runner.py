"""kind: zero_shot — lm-eval tasks on the loaded model, recorded with the metrics the Mamba paper reports.

Evaluation is lm-eval's own (`lm_eval.simple_evaluate` on an `HFLM` wrapping the transformers model that
ssmbench loaded), never a re-implementation, so the figures are the ones `lm_eval` prints for the same
model. Each lm-eval task is one point: a task whose dataset is missing fails alone, and a resumed run
redoes only the tasks that failed.

Metrics per point:

- the tasks of the paper's Table 3 record the metrics it (and the source slides) print: LAMBADA perplexity
  and acc, HellaSwag acc_norm, PIQA acc, ARC-E acc, ARC-C acc_norm (and acc, the slides' figure),
  WinoGrande acc (see ssmbench/reference/zero_shot.yaml);
- any other task records every metric lm-eval returns, the first one marked `primary` in `extra`.

Accuracies are fractions (unit "fraction"), perplexities unit "ppl"; `stderr` is lm-eval's standard error.
The settings that define a figure (few-shot count actually used, limit, samples evaluated, batch size,
lm-eval version) go into the record's slice, where reports read them to state the method. A task read
from the suite's `include_path` carries `custom: true` in its slice: it is the user's task, even when it
is named like one of lm-eval's (a `piqa` of one's own is not the paper's PIQA), and is never compared
with the paper.

Audit trail: with `log_samples`, lm-eval's per-document outputs go to the job's artifact folder as
`samples/<task>.jsonl.gz`; with `use_cache` (the default), lm-eval's request cache lives there too
(`lm_eval_cache-<fingerprint of the weights and settings>_rank0.db`), so a resumed run answers the
requests it already computed from the cache.

Mamba runs through transformers' MambaForCausalLM (the state-spaces/mamba-*-hf checkpoints), which calls
mamba_ssm's fused kernels when they are installed on CUDA; the record's `kernel` says which path ran.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ssmbench.errors import JobError, did_you_mean, first_line
from ssmbench.jobs import Point, point
from ssmbench.kinds.base import ModelRunner
from ssmbench.kinds.zero_shot.samples import samples_file, write_samples
from ssmbench.kinds.zero_shot.task import ZeroShotTask
from ssmbench.records import Record
from ssmbench.reference import reported_metrics
from ssmbench.zoo import ResolvedModel


@dataclass(frozen=True)
class Score:
    """One metric of one lm-eval task (or group) as lm-eval reported it."""

    task: str
    metric: str  # lm-eval's name, with its filter appended when that is not "none" (exact_match,strict-match)
    value: float
    stderr: float | None
    higher_is_better: bool | None
    primary: bool
    n_samples: int | None  # documents evaluated (after `limit`)
    n_total: int | None  # documents in the task's evaluation split


def unit_of(metric: str) -> str:
    name = metric.split(",")[0]
    if "perplexity" in name:
        return "ppl"
    if name.startswith(("acc", "exact_match")):
        return "fraction"
    if name == "bits_per_byte":
        return "bits/byte"
    return ""  # lm-eval's own scale for the metric


def scores(results: dict[str, Any], requested: str, custom: bool = False) -> list[Score]:
    """The figures to record from `simple_evaluate`'s results for the lm-eval task (or group) `requested`.

    A task the reference sources print keeps the metrics they print and must have them all; any other
    task (and every subtask of a group), and any `custom` task whatever its name, keeps every metric
    lm-eval returns.
    """
    out: list[Score] = []
    for task, row in results["results"].items():
        values = _metric_values(row)
        wanted = None if custom else reported_metrics().get(task)
        if wanted is not None:
            missing = [m for m in wanted if m not in values]
            if missing:
                raise JobError(f"lm-eval task {task!r} returned no {', '.join(missing)} (it returned "
                               f"{', '.join(values) or 'nothing'}); the paper's figures need them")
            chosen = dict(wanted)
        else:
            chosen = {m: task == requested and i == 0 for i, m in enumerate(values)}
        n = results["n-samples"].get(task, {})  # groups have none
        better = results["higher_is_better"].get(task, {})
        for metric, primary in chosen.items():
            value, stderr = values[metric]
            out.append(Score(task, metric, value, stderr, better.get(metric.split(",")[0]), primary,
                             n.get("effective"), n.get("original")))
    return out


def _metric_values(row: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """metric -> (value, stderr) from one task's results row ({"acc,none": .., "acc_stderr,none": ..})."""
    out: dict[str, tuple[float, float | None]] = {}
    for key, value in row.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        stderr = row.get(f"{metric}_stderr,{filt}")
        name = metric if filt == "none" else f"{metric},{filt}"
        out[name] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
    return out


def lm_eval_limit(task: ZeroShotTask) -> int | float | None:
    """The suite's `limit` as lm-eval reads it: a count of examples from 1 up, a fraction of the set below."""
    return task.limit if task.limit is None or task.limit < 1 else math.floor(task.limit)


def is_custom(name: str, include_path: str | None) -> bool:
    """Whether lm-eval reads task `name` from the suite's own directory (which wins over a built-in task of
    the same name) rather than from lm-eval's."""
    if not include_path:
        return False
    entry = task_manager(include_path).task_index.get(name)
    where = getattr(entry, "yaml_path", None)
    return where is not None and Path(where).resolve().is_relative_to(Path(include_path).resolve())


def shadows_builtin(name: str) -> bool:
    """Whether lm-eval ships a task of this name (asked only about custom tasks: indexing takes seconds)."""
    return name in task_manager(None).task_index


@functools.cache
def task_manager(include_path: str | None) -> Any:
    """lm-eval's task index (built-in tasks plus the user's YAML directory), built once per process: indexing
    the built-in tasks takes seconds."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def missing_dataset_error(task: str, include_path: str | None, exc: Exception) -> JobError:
    """What to do when a task's dataset is neither cached nor downloadable (offline)."""
    first = first_line(exc, 200)
    include = f"include_path={include_path!r}" if include_path else ""
    fetch = (f"HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python -c \"from lm_eval.tasks import TaskManager; "
             f"TaskManager({include}).load(['{task}'])\"")
    return JobError(f"lm-eval task {task!r}: its dataset is not available offline ({first}). Cache it "
                    f"once with network access: `{fetch}` (or run the suite once with HF_HUB_OFFLINE=0 "
                    "HF_DATASETS_OFFLINE=0); later runs read it from the Hugging Face datasets cache")


class ZeroShotRunner(ModelRunner[ZeroShotTask]):
    reads_text = True

    @classmethod
    def points(cls, task: ZeroShotTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(lm_eval_task=name) for name in dict.fromkeys(task.tasks)]

    @classmethod
    def needs(cls, task: ZeroShotTask, model: ResolvedModel | None, device: str) -> list[str]:
        return ["lm-eval datasets (in the Hugging Face cache when offline)"]

    def model_to_load(self) -> ResolvedModel:
        args = self.task.model_args
        return dataclasses.replace(super().model_to_load(), backend="hf", revision=args.revision,
                                   trust_remote_code=args.trust_remote_code)

    def setup(self) -> None:
        """Load the model through transformers whatever the device, and wrap it for lm-eval.

        mamba_ssm's MambaLMHeadModel is not a transformers model, which HFLM needs; transformers' Mamba
        calls the same fused kernels when they are installed, and `kernel` records whether it did.
        """
        ref = self.job.model
        assert ref is not None
        if ref.backend == "mamba_ssm":
            raise JobError(f"model {ref.name!r}: zero_shot runs through transformers (HFLM), which uses "
                           "mamba_ssm's fused kernels when they are installed; set `backend: auto` or `hf`")
        if ref.weights == "pretrained" and ref.hf_source is None:
            why = ("its checkpoint is in mamba_ssm's format" if ref.path or ref.hf_id
                   else "no transformers checkpoint of this model is published")
            raise JobError(f"model {ref.name!r}: zero_shot runs through transformers and {why}; give a "
                           "transformers checkpoint with `path:` or `hf_id:`")
        task = self.task
        if task.include_path and not Path(task.include_path).is_dir():
            raise JobError(f"include_path {task.include_path!r} is not a directory (relative paths start from "
                           "the working directory)")
        super().setup()  # the model first: a model that cannot load fails the job before lm-eval is imported
        tokenizer = self.model.tokenizer()
        # lm-eval loads its datasets through `datasets`, which retries an unreachable hub: ask once, and go
        # offline (read the datasets cache only) when it does not answer.
        from ssmbench.models.hub import hub_reachable

        hub_reachable()
        from lm_eval.models.huggingface import HFLM

        hflm_args = task.model_args.model_dump(include={"max_length", "add_bos_token"}, exclude_none=True)
        self.lm = HFLM(pretrained=self.model.module, tokenizer=tokenizer,
                       batch_size=task.batch_size, max_batch_size=task.max_batch_size, **hflm_args)
        self.manager = task_manager(task.include_path)

    def record(self, point: Point, **fields: Any) -> Record:
        """A record that says what was loaded (checkpoint, weights hash, architecture, tokenizer) in `extra`,
        beside the runner's own extra fields: the views attach a reference row only to the checkpoint that
        row describes."""
        loaded = getattr(self, "model", None)
        if loaded is not None:
            fields["extra"] = loaded.identity() | fields.get("extra", {})
        return super().record(point, **fields)

    def measure(self, pt: Point) -> list[Record]:
        task = self.task
        name = pt.params["lm_eval_task"]
        custom = is_custom(name, task.include_path)
        results = self._evaluate(name)
        if task.log_samples:
            for sampled, samples in results.get("samples", {}).items():
                write_samples(self.context.artifact(samples_file(sampled)), samples)
        settings = {"limit": lm_eval_limit(task),
                    "batch_size": task.batch_size if task.batch_size != "auto"
                    else f"auto (max {task.max_batch_size})",
                    "lm_eval": version("lm_eval")} | ({"custom": True} if custom else {})
        extra = {"batch_sizes": results["config"].get("batch_sizes"), "tolerance_pts": task.tolerance,
                 "num_fewshot_asked": task.num_fewshot, "seed": self.job.seed,
                 "model_args": task.model_args.model_dump(exclude_defaults=True)}
        if custom and shadows_builtin(name):
            extra["shadows_builtin"] = True
        return [self.record(pt, metric=s.metric, value=s.value, stderr=s.stderr, unit=unit_of(s.metric),
                            higher_is_better=s.higher_is_better,
                            slice={"lm_eval_task": s.task, "num_fewshot": results["n-shot"].get(s.task, task.num_fewshot),
                                   **settings, "n_samples": s.n_samples},
                            extra={"primary": s.primary, **extra, "n_samples_total": s.n_total,
                                   "task_version": results["versions"].get(s.task)})
                for s in scores(results, name, custom)]

    def _evaluate(self, name: str) -> dict[str, Any]:
        """lm-eval's own evaluation of one task, seeded by the suite, its requests cached per job."""
        from lm_eval import simple_evaluate

        task = self.task
        if name not in self.manager.task_index:
            raise JobError(f"unknown lm-eval task {name!r}{did_you_mean(name, self.manager.all_tasks)}; for your "
                           "own task YAML, set `include_path:` to its directory")
        seed = self.job.seed
        cache = str(self.context.artifact(f"lm_eval_cache-{self._fingerprint()}")) if task.use_cache else None
        try:
            return simple_evaluate(model=self.lm, tasks=[name], num_fewshot=task.num_fewshot,
                                   limit=lm_eval_limit(task), task_manager=self.manager,
                                   log_samples=task.log_samples, use_cache=cache,
                                   random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                   fewshot_random_seed=seed)
        except ConnectionError as exc:  # datasets' answer to an uncached dataset in offline mode
            raise missing_dataset_error(name, task.include_path, exc) from None

    def _fingerprint(self) -> str:
        """What the cached answers depend on besides the request (lm-eval's cache keys are the requests
        alone): the weights loaded, their dtype and device, and HFLM's settings."""
        import hashlib

        ref = self.model.ref
        facts = [self.model.identity(), ref.weights, ref.seed, ref.dtype, ref.device,
                 self.task.model_args.model_dump()]
        return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def teardown(self) -> None:
        self.__dict__.pop("lm", None)
        super().teardown()
