"""The documents on which two models disagree most, from the per-document samples lm-eval logged.

A zero-shot run with `log_samples: true` keeps, for every model and lm-eval task, lm-eval's own record of
each document (`artifacts/<task>/<model>/samples/<lm-eval task>.jsonl.gz`): the prompt, the target, the
log-likelihood of every choice, and the document's metrics. A cell of the tables is then auditable, and
two models can be set side by side document by document:

- they *disagree* on a document when the document's accuracy differs (one right, one wrong);
- they are ranked by how far apart their confidence in the target is: the probability each gives the
  gold choice (a softmax over the choices' log-likelihoods for multiple choice; exp of the continuation's
  log-likelihood for a single continuation, as in LAMBADA).

So the top of the list holds the documents where one model is right and sure and the other wrong and
sure: the first place to look when a figure is suspicious.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssmbench.errors import UserError
from ssmbench.records import Record
from ssmbench.report.tables import Table
from ssmbench.rundir import RunDir

ACCURACY_METRICS = ("acc_norm", "acc", "exact_match")  # the document's correctness, first one found
PROMPT_CHARS = 70


@dataclass(frozen=True)
class Answer:
    """One model on one document."""

    correct: float | None  # the document's accuracy (1.0 / 0.0), None when the task has none
    p_target: float | None  # the probability the model gives the gold answer
    prompt: str
    target: str


def samples_file(lm_task: str) -> str:
    """Where in its job's artifact folder the runner keeps one lm-eval task's samples."""
    return f"samples/{lm_task}.jsonl.gz"


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    """lm-eval's per-document records as gzip-compressed JSON lines (values it cannot encode as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for sample in samples:
            out.write(json.dumps(sample, default=str, ensure_ascii=False) + "\n")


def read_samples(path: Path) -> dict[str, dict[str, Any]]:
    """doc_id -> lm-eval's sample, from a file the zero_shot runner wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return {str(s["doc_id"]): s for s in map(json.loads, lines)}


def answer(sample: dict[str, Any]) -> Answer:
    metric = next((m for m in ACCURACY_METRICS if m in sample), None)
    correct = float(sample[metric]) if metric is not None else None
    arguments = sample.get("arguments") or [["", ""]]
    target_index = _int(sample.get("target"))
    multiple_choice = target_index is not None and len(arguments) > 1
    target = arguments[target_index][1] if multiple_choice and target_index < len(arguments) else arguments[0][1]
    return Answer(correct, p_target(sample.get("filtered_resps") or [], target_index, multiple_choice),
                  str(arguments[0][0]), str(target))


def p_target(responses: list[Any], target: int | None, multiple_choice: bool) -> float | None:
    """The gold answer's probability from lm-eval's filtered responses ((loglikelihood, is_greedy) pairs)."""
    lls = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in responses]
    if not lls:
        return None
    if multiple_choice and target is not None and target < len(lls):
        top = max(lls)
        weights = [math.exp(ll - top) for ll in lls]
        return weights[target] / sum(weights)
    return math.exp(lls[0])


def disagreements(run: RunDir, records: list[Record], lm_task: str, models: list[str] | None = None,
                  top: int = 10) -> Table:
    """The `top` documents of `lm_task` on which two models of the run disagree most (module docstring)."""
    logged = logged_models(run, records, lm_task)
    name_a, name_b = _pair(logged, models, lm_task, run)
    a, b = read_samples(logged[name_a]), read_samples(logged[name_b])
    docs = [(doc, answer(a[doc]), answer(b[doc])) for doc in a.keys() & b.keys()]
    docs.sort(key=lambda d: (d[1].correct != d[2].correct, abs((d[1].p_target or 0.0) - (d[2].p_target or 0.0))),
              reverse=True)
    n_disagree = sum(1 for _, x, y in docs if x.correct != y.correct)
    frame = pd.DataFrame([{"doc": doc, "prompt (end)": _tail(x.prompt), "target": x.target.strip(),
                           name_a: _show(x), name_b: _show(y)} for doc, x, y in docs[:top]])
    notes = [f"{lm_task}: {name_a} and {name_b} differ in accuracy on {n_disagree} of {len(docs)} documents both "
             "logged; ranked by that, then by the gap between the probabilities they give the target",
             "cells: ✓/✗ = the document's accuracy, p = the probability of the target (softmax over the choices' "
             "log-likelihoods; exp of the log-likelihood for a single continuation)"]
    return Table(f"{lm_task}: documents where {name_a} and {name_b} disagree most", frame, notes, "zero_shot")


def logged_models(run: RunDir, records: list[Record], lm_task: str) -> dict[str, Path]:
    """model -> its samples file for `lm_task`, for the zero_shot jobs of the run that logged them."""
    found: dict[str, Path] = {}
    for r in records:
        if r.kind == "zero_shot" and r.model and r.model not in found:
            path = run.artifacts(r.job) / samples_file(lm_task)
            if path.is_file():
                found[r.model] = path
    return found


def _pair(logged: dict[str, Path], models: list[str] | None, lm_task: str, run: RunDir) -> tuple[str, str]:
    if models is not None:
        if len(models) != 2:
            raise UserError(f"--models: give two models to compare, not {len(models)}")
        missing = [m for m in models if m not in logged]
        if missing:
            raise UserError(f"{run.path}: no logged samples of {lm_task!r} for {', '.join(missing)} (models with "
                            f"samples: {', '.join(logged) or 'none'}; run the task with `log_samples: true`)")
        return models[0], models[1]
    if len(logged) < 2:
        raise UserError(f"{run.path}: {len(logged)} model(s) logged samples of {lm_task!r}; two are needed (set "
                        "`log_samples: true` on the zero_shot task)")
    first, second, *_ = logged
    return first, second


def _show(x: Answer) -> str:
    mark = "" if x.correct is None else ("✓ " if x.correct >= 1 else "✗ ")
    return mark + ("p ?" if x.p_target is None else f"p {x.p_target:.3f}")


def _tail(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= PROMPT_CHARS else "…" + flat[-PROMPT_CHARS:]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
