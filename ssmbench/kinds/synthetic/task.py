"""The suite entry of kind `synthetic`: a capability task, the small models trained on it, how, and where
they are tested.

    - kind: synthetic
      name: induction
      task: induction_heads            # selective_copying | induction_heads | mqar
      architectures:                   # small models built from scratch, one job each (not the model zoo)
        mamba:    {mixer: mamba, d_model: 64}
        mha-rope: {mixer: mha-rope, d_model: 128, n_heads: 8, eval_dtype: bfloat16}
      train: {steps: 4000, batch_size: 64, seq_len: 256, lr: 1.0e-3}
      eval_lengths: [64, 128, 256, 512, 1024]
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from ssmbench.errors import did_you_mean
from ssmbench.jobs import Strict, TaskBase
from ssmbench.models.mixers import MIXERS, S4D_MIXERS

SyntheticName = Literal["selective_copying", "induction_heads", "mqar"]

# The generators' own parameters (ssmbench.data.synthetic), named here so a suite is checked without
# importing torch; tests/test_synthetic_kind.py checks that the two lists agree.
TASK_PARAMS: dict[str, frozenset[str]] = {
    "selective_copying": frozenset({"n_memorize"}),
    "induction_heads": frozenset(),
    "mqar": frozenset({"num_kv_pairs", "power_a", "random_non_queries"}),
}
# How many answers one example has, for the accuracy of each answer in turn.
DEFAULT_ANSWERS = {"selective_copying": 16, "induction_heads": 1}


class Architecture(Strict):
    """One small model: the builder's config (ssmbench.models.builder.SmallModelConfig) plus how it is
    trained and evaluated where it differs from the task's defaults."""

    mixer: str
    n_layers: PositiveInt = 2
    d_model: PositiveInt = 64
    d_state: PositiveInt = 16
    d_conv: PositiveInt = 4
    expand: PositiveInt = 2
    n_heads: PositiveInt = 8
    abs_positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: PositiveInt | None = None  # the learned table's length (learned absolute positions)
    ssm_init: Literal["lin", "inv"] = "lin"  # S4D's A (s4d, h3, mamba-s4d): S4D-Lin or S4D-Inv
    hyena_order: Annotated[int, Field(ge=2)] = 2  # hyena
    filter_width: PositiveInt = 64  # Hyena's implicit filter (hyena, h3-hyena, mamba-hyena): its FFN's width
    filter_emb_dim: PositiveInt = 5  # ... its positional features (odd: the position and sin/cos pairs)
    filter_len: PositiveInt | None = None  # ... the length its positions are scaled by; the training length otherwise
    lr: PositiveFloat | None = None  # this model's learning rate; the task's train.lr otherwise
    steps: PositiveInt | None = None  # this model's training steps; the task's train.steps otherwise
    # Evaluation precision: float32 by default (long sequences are where low precision shows); attention
    # needs bfloat16 for the flash kernel, without which long lengths take minutes per sample.
    eval_dtype: Literal["float32", "bfloat16"] = "float32"
    max_eval_len: PositiveInt | None = None  # longer test lengths are not run (✗ with the reason)

    @model_validator(mode="after")
    def _known_mixer(self) -> Architecture:
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer: unknown mixer {self.mixer!r}{did_you_mean(self.mixer, MIXERS)}; "
                             f"mixers: {', '.join(MIXERS)}")
        if self.mixer in S4D_MIXERS and self.d_state % 2:
            raise ValueError(f"d_state: {self.mixer} keeps N/2 conjugate pairs of S4D modes: d_state must be even, "
                             f"got {self.d_state}")
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError("filter_emb_dim: the position and sin/cos pairs: an odd number of at least 3, got "
                             f"{self.filter_emb_dim}")
        return self


class Train(Strict):
    """ssmbench.train.TrainSettings as a suite writes it."""

    steps: PositiveInt = 2000
    batch_size: PositiveInt = 64
    seq_len: PositiveInt = 256
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    grad_clip: PositiveFloat | None = 1.0
    autocast: Literal["bfloat16", "float16"] | None = "bfloat16"  # on CUDA; the CPU trains in float32
    eval_every: PositiveInt = 250
    eval_samples: PositiveInt = 256
    early_stop_accuracy: Annotated[float, Field(gt=0, le=1)] | None = None
    # Replay the whole training step from a CUDA graph (auto: on CUDA, when the LR is constant).
    cuda_graphs: Literal["auto"] | bool = "auto"

    @model_validator(mode="after")
    def _graphs_need_a_constant_lr(self) -> Train:
        if self.cuda_graphs is True and (self.schedule != "constant" or self.warmup_steps):
            raise ValueError("cuda_graphs: a captured training step needs a constant learning rate "
                             "(schedule: constant, warmup_steps: 0)")
        return self

    def graphs_on(self, device: str) -> bool:
        """Whether the training step is captured on this device: never on the CPU, auto where it can be."""
        if device != "cuda":
            return False
        constant = self.schedule == "constant" and not self.warmup_steps
        return constant if self.cuda_graphs == "auto" else bool(self.cuda_graphs)


class SyntheticTask(TaskBase):
    """Small models trained from scratch on a synthetic task, then tested at each of `eval_lengths`."""

    uses_models: ClassVar[bool] = False  # the task brings its own (architectures), one job each

    kind: Literal["synthetic"]
    task: SyntheticName = "induction_heads"
    task_params: dict[str, int | float | bool] = Field(default_factory=dict)
    vocab_size: PositiveInt = 16
    architectures: dict[str, Architecture] = Field(
        default_factory=lambda: {"mamba": Architecture(mixer="mamba", d_model=64)})
    train: Train = Field(default_factory=Train)
    eval_lengths: list[PositiveInt] | None = None  # the training length when absent
    eval_samples: PositiveInt = 256  # examples per test length, up to the token budget below
    eval_tokens: PositiveInt = 2**22  # tokens per test length at most: long lengths get fewer examples
    eval_min_samples: PositiveInt = 8  # ... but never fewer than this
    eval_batch_tokens: PositiveInt = 2**20  # tokens per forward pass: long lengths run a few examples at a time

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticTask:
        unknown = set(self.task_params) - TASK_PARAMS[self.task]
        if unknown:
            name = sorted(unknown)[0]
            allowed = sorted(TASK_PARAMS[self.task])
            raise ValueError(f"task_params: {self.task} has no parameter {name!r}{did_you_mean(name, allowed)}"
                             f"; it takes {', '.join(allowed) or 'none'}")
        if self.task == "mqar" and "num_kv_pairs" not in self.task_params:
            raise ValueError("task_params: mqar needs num_kv_pairs")
        if not self.architectures:
            raise ValueError("architectures: name at least one model to train")
        return self

    def variants(self) -> list[str]:
        return list(self.architectures)

    @property
    def lengths(self) -> list[int]:
        return list(dict.fromkeys(self.eval_lengths or [self.train.seq_len]))

    @property
    def n_answers(self) -> int:
        """Answers per example (for the accuracy of each answer in turn)."""
        if self.task == "mqar":
            return int(self.task_params["num_kv_pairs"])
        return int(self.task_params.get("n_memorize", DEFAULT_ANSWERS[self.task]))

    def samples_at(self, length: int) -> int:
        """Examples evaluated at a test length: eval_samples within the token budget, at least the minimum."""
        return max(self.eval_min_samples, min(self.eval_samples, self.eval_tokens // length))

    def batch_at(self, length: int) -> int:
        return max(1, min(self.samples_at(length), self.eval_batch_tokens // length))
