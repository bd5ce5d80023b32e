"""The suite entry of kind `finetune`: what one fine-tuning step costs, full and LoRA, by batch and length.

    - kind: finetune
      methods: [full, lora]
      batch_sizes: [1, 8]
      seq_lens: [512, 2048]
      lora: {r: 8, alpha: 16, targets: {mamba: [in_proj, x_proj, out_proj]}}   # per architecture
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ssmbench.jobs import Strict, TaskBase

# LoRA's target modules per architecture (transformers' model_type), by the module names each family uses.
# Mamba: the input and state-input (x_proj) projections. The lectures add out_proj; peft refuses it (and
# conv1d) on Mamba models, because the fused kernel path reads its weight directly, and on CUDA that path
# (transformers' training forward calls mamba_inner_fn) reads x_proj's too: there only in_proj's adapter is
# called, and the runner's check says so (suites/finetune.yaml sets in_proj alone for that reason).
# Transformers: the attention projections (GPT-2's c_attn and c_proj, which also names its MLP's output;
# Pythia's query_key_value and attention dense). Falcon-H1, a hybrid: both, its attention's four projections
# and its Mamba-2 mixer's in_proj (its out_proj weight goes straight into the fused kernel on CUDA, as Mamba's).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "mamba": ["in_proj", "x_proj"],
    "mamba2": ["in_proj"],
    "gpt2": ["c_attn", "c_proj"],
    "gpt_neox": ["query_key_value", "dense"],
    "falcon_h1": ["q_proj", "k_proj", "v_proj", "o_proj", "in_proj"],
}


class Lora(Strict):
    r: PositiveInt = 8  # the adapters' rank
    alpha: PositiveFloat = 16.0  # LoRA's scaling numerator (the update is scaled by alpha / r)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # dropout on the adapters' input
    # architecture -> target module names; an architecture not named keeps DEFAULT_TARGETS'
    targets: dict[str, list[str]] = Field(default_factory=dict)

    def targets_for(self, arch: str) -> list[str] | None:
        return self.targets.get(arch) or DEFAULT_TARGETS.get(arch)


class FinetuneTask(TaskBase):
    """The cost of fine-tuning a zoo model: step time, tokens/s, peak memory and trainable parameters of one
    AdamW step, full (every weight) and LoRA (peft adapters on the family's targets). Cost does not depend
    on the weights' values, so random weights are allowed; pretrained ones load where cached."""

    kind: Literal["finetune"]
    # full: every weight trains; lora: peft adapters on the targets only
    methods: list[Literal["full", "lora"]] = ["full", "lora"]
    batch_sizes: list[PositiveInt] = [8]  # sequences per step, one point each
    seq_lens: list[PositiveInt] = [512]  # tokens per sequence, one point each
    lora: Lora = Field(default_factory=Lora)  # the adapters of the lora method
    lr: PositiveFloat = 1e-4  # AdamW's learning rate
    warmup_steps: Annotated[int, Field(ge=1)] = 3  # untimed: the optimizer's state, the allocator, autotuning
    steps: PositiveInt = 10  # timed steps per point
