"""kind: generate — the suite's prompts continued by every model, side by side, with the rate."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.generate.runner import GenerateRunner
from ssmbench.kinds.generate.task import GenerateTask
from ssmbench.kinds.generate.views import generate_tables

KIND = Kind(
    name="generate",
    task=GenerateTask,
    runner=GenerateRunner,
    description="each model's continuation of the suite's prompts, greedy and sampled, side by side, with tok/s",
    quality=True,
    metric_order=("generate_tok_s",),
    views=generate_tables,
)
