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
    glossary={"step_ms": "one whole step (forward, loss, backward, AdamW) on the device's clock, after warm-up steps",
              "train_tok_s": "batch × seq_len / step time",
              "peak_alloc_mib": "the allocator's peak over the timed steps: weights, gradients, optimizer state, "
                                "activations (CUDA only)",
              "trainable_params": "parameters the optimizer updates: all of them (full) or the adapters' (LoRA)"},
)
