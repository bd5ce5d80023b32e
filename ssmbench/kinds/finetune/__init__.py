"""kind: finetune — the cost of fine-tuning a zoo model, full and LoRA (peft)."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.finetune.runner import FinetuneRunner
from ssmbench.kinds.finetune.task import FinetuneTask

KIND = Kind(
    name="finetune",
    task=FinetuneTask,
    runner=FinetuneRunner,
    description="cost of one fine-tuning step, full and LoRA (peft): step time, tokens/s, peak memory, trainable parameters",
    metric_order=("step_ms", "train_tok_s", "peak_alloc_mib", "trainable_params"),
)
