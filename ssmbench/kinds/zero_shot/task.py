"""The suite entry of kind `zero_shot`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import TaskBase

# The six tasks of the Mamba paper's Table 3 (Gu & Dao 2023, arXiv 2312.00752).
PAPER_TASKS = ["lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande"]


class ZeroShotTask(TaskBase):
    """lm-eval tasks, zero-shot by default, reported with the metric the Mamba paper uses for each."""

    kind: Literal["zero_shot"]
    tasks: list[str] = Field(default_factory=lambda: list(PAPER_TASKS))
    num_fewshot: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[float, Field(gt=0)] | None = None  # examples per task (>= 1) or a fraction (< 1)
    batch_size: PositiveInt | Literal["auto"] = "auto"
    max_batch_size: PositiveInt = 64
    include_path: str | None = None  # a directory of the user's own lm-eval task YAML
