"""The suite entry of kind `zero_shot`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import Strict, TaskBase

# The six tasks of the Mamba paper's Table 3 (Gu & Dao 2023, arXiv 2312.00752).
PAPER_TASKS = ["lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande"]

# Published re-runs of one checkpoint on the full test sets agree within 0.1-0.3 points; a configuration
# mistake (a wrong metric, a prompt format, a few-shot count) moves a figure by 2 points or more.
DEFAULT_TOLERANCE_PTS = 0.5


class LmEvalModelArgs(Strict):
    """lm-eval's `model_args` that ssmbench passes on, checked: an unknown key is an error, not ignored.

    max_length and add_bos_token go to lm-eval's HFLM. revision and trust_remote_code concern loading, which
    ssmbench does itself, so they go to transformers' from_pretrained of the model and its tokenizer."""

    max_length: PositiveInt | None = None  # the context HFLM truncates to (default: the model's own)
    add_bos_token: bool | None = None  # prepend BOS to every request (default: HFLM's choice for the model)
    revision: str | None = None  # a branch, tag or commit of the hub repository
    trust_remote_code: bool = False  # run the repository's own modelling code


class ZeroShotTask(TaskBase):
    """lm-eval tasks, zero-shot by default, reported with the metric the Mamba paper uses for each.

    num_fewshot: 0 by default, as in the paper; null means each task's own default (a custom task's YAML
    may set one), and records keep the count that was used. tolerance: how far (in points) a full-set
    figure may be from the paper's before its Δ is flagged; with `limit` set, the flag is two standard
    errors instead, since a subset's own sampling error dominates. log_samples: lm-eval's per-document
    outputs, compressed, in the job's artifact folder (`ssmbench report --disagreements` reads them).
    use_cache: lm-eval's request cache in the job's artifact folder, so a resumed run does not recompute
    the requests of a task that was interrupted.
    """

    kind: Literal["zero_shot"]
    # lm-eval task names (default: the Mamba paper's six)
    tasks: list[str] = Field(default_factory=lambda: list(PAPER_TASKS))
    num_fewshot: Annotated[int, Field(ge=0)] | None = 0  # 0 as in the paper; null: each task's own default
    limit: Annotated[float, Field(gt=0)] | None = None  # examples per task (>= 1) or a fraction (< 1)
    batch_size: PositiveInt | Literal["auto"] = "auto"  # lm-eval's batch size, a number or auto
    max_batch_size: PositiveInt = 64  # the cap on an `auto` batch size
    include_path: str | None = None  # a directory of the user's own lm-eval task YAML
    # points a full-set figure may be off the paper's before its Δ is flagged (with `limit`: two standard errors)
    tolerance: Annotated[float, Field(gt=0)] = DEFAULT_TOLERANCE_PTS
    # keep lm-eval's per-document outputs in the job's artifacts (`ssmbench report --disagreements` reads them)
    log_samples: bool = False
    use_cache: bool = True  # lm-eval's request cache: a resumed run does not recompute finished requests
    model_args: LmEvalModelArgs = Field(default_factory=LmEvalModelArgs)  # lm-eval model_args passed on, checked

    def plan_notes(self, device: str) -> list[str]:
        if self.limit is not None:
            amount = f"{self.limit:.0%} of the documents" if self.limit < 1 else f"{self.limit:g} documents"
            return [f"{amount} per lm-eval task: a subset, flagged against the paper by standard error, not by "
                    "the full-set tolerance"]
        if device != "cpu":
            return []
        return ["full evaluation sets (HellaSwag alone has 10,042 documents): hours on a CPU; `--limit N` "
                "evaluates N documents per lm-eval task"]
