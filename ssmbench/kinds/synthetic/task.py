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
      seeds: [0, 1, 2]                 # one job per architecture and seed (an architecture may list its own)

MAD's tasks (in_context_recall, noisy_in_context_recall, fuzzy_in_context_recall, memorization,
compression, mad_selective_copying) take `settings: all` or a list of MAD's settings by label (`baseline`,
`vocab_size=32`): each setting brings its vocabulary, length, parameters and fixed training set, trained
for `train.epochs` epochs, and every setting x learning rate x weight decay (`weight_decay: [0, 0.1]`) is a
job. suites/mad.yaml runs MAD's whole protocol; docs/mad.md explains it.

Sweep axes besides the architectures: `seeds` (each seed draws its own initialisation and training
stream) and a list of learning rates (`lr: [1.0e-4, 1.0e-3]`, in `train` or per architecture), one job
each; the tables report the learning rate whose validation accuracy is best, as zoology reports the best of
its sweep. Every job is tested on the same fixed examples at each length (`eval_seed`), drawn on the CPU,
so seeds and runs differ only in what they trained. `pack: K` trains up to K of the jobs at once on one
device; `train.collapse_evals` names a run that never left chance, and every run that diverges (a NaN or
inf loss, or one above `train.max_loss`) is stopped at the next evaluation and named so.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ssmbench.data.mad_settings import MAD_SETTINGS, MAD_TASKS, MadSetting, mad_setting, training_steps
from ssmbench.errors import did_you_mean
from ssmbench.jobs import Strict, TaskBase
from ssmbench.models.architecture import (
    CONFIG_FIELDS,
    DEFAULT_N_LAYERS,
    SmallModelConfig,
    field_message,
    preset,
)
from ssmbench.models.mixers import HYBRID, mixer_family

# The Mamba paper's two, zoology's MQAR, and MAD's six (ssmbench.data.mad, MAD_TASKS' order)
SyntheticName = Literal["selective_copying", "induction_heads", "mqar", "in_context_recall", "noisy_in_context_recall",
                        "fuzzy_in_context_recall", "memorization", "compression", "mad_selective_copying"]

# The generators' own parameters (ssmbench.data.synthetic), named here so a suite is checked without
# importing torch; tests/test_synthetic_kind.py checks that the two lists agree.
TASK_PARAMS: dict[str, frozenset[str]] = {
    "selective_copying": frozenset({"n_memorize"}),
    "induction_heads": frozenset({"special_within"}),
    "mqar": frozenset({"num_kv_pairs", "power_a", "random_non_queries"}),
    # MAD's six (ssmbench.data.mad); `settings:` gives them MAD's own values
    "in_context_recall": frozenset({"noise_vocab_size", "frac_noise", "is_training"}),
    "noisy_in_context_recall": frozenset({"noise_vocab_size", "frac_noise", "is_training"}),
    "fuzzy_in_context_recall": frozenset({"k_motif_size", "v_motif_size", "noise_vocab_size", "frac_noise",
                                          "is_training"}),
    "memorization": frozenset({"kv_map_seed"}),
    "compression": frozenset(),
    "mad_selective_copying": frozenset({"num_tokens_to_copy"}),
}
# How many answers one example has, for the accuracy of each answer in turn.
DEFAULT_ANSWERS = {"selective_copying": 16, "induction_heads": 1}
# Parameters that shape the training data only: the fixed validation and test sets are drawn without them,
# so that models trained on different layouts are scored on the same examples.
TRAINING_ONLY_PARAMS = frozenset({"special_within"})


def check_task_params(task: str, params: dict[str, Any]) -> None:
    """A generator's own parameters: known names only, the required ones present (ValueError otherwise)."""
    unknown = set(params) - TASK_PARAMS[task]
    if unknown:
        name = sorted(unknown)[0]
        allowed = sorted(TASK_PARAMS[task])
        raise ValueError(f"task_params: {task} has no parameter {name!r}{did_you_mean(name, allowed)}"
                         f"; it takes {', '.join(allowed) or 'none'}")
    if task == "mqar" and "num_kv_pairs" not in params:
        raise ValueError("task_params: mqar needs num_kv_pairs")
    within = params.get("special_within")
    if within is not None and (isinstance(within, bool) or not isinstance(within, int) or within < 1):
        raise ValueError(f"task_params.special_within: the first special token's positions, a count of at "
                         f"least 1, got {within!r}")


class Architecture(Strict):
    """One small model: the builder's config (ssmbench.models.architecture.SmallModelConfig) plus how it is
    trained and evaluated where it differs from the task's defaults. `preset: mad-mamba` starts from a named
    configuration (ssmbench.models.architecture.PRESETS: MAD's baselines); fields written beside it win."""

    preset: str | None = None  # a named configuration to start from (MAD's: mad-mamba, mad-attention, ...)
    mixer: str | None = None  # the sequence mixer, or hybrid; worked out from `layers` when they are given
    n_layers: PositiveInt | None = None  # len(layers), else 2
    d_model: PositiveInt = 64  # the model's width
    d_state: PositiveInt = 16  # Mamba: the state size per channel
    d_conv: PositiveInt = 4  # Mamba: the short convolution's width
    expand: PositiveInt = 2  # Mamba: the inner width as a multiple of d_model
    n_heads: PositiveInt = 8  # attention: the number of heads
    abs_positions: Literal["sinusoidal", "learned"] = "sinusoidal"  # mha-abs: its absolute position embeddings
    max_positions: PositiveInt | None = None  # the learned table's length (learned absolute positions)
    ssm_init: Literal["lin", "inv"] = "lin"  # S4D's A (s4d, h3, mamba-s4d): S4D-Lin or S4D-Inv
    hyena_order: Annotated[int, Field(ge=2)] = 2  # hyena
    filter_width: PositiveInt = 64  # Hyena's implicit filter (hyena, h3-hyena, mamba-hyena): its FFN's width
    filter_emb_dim: PositiveInt = 5  # ... its positional features (odd: the position and sin/cos pairs)
    filter_len: PositiveInt | None = None  # ... the length its positions are scaled by; the training length otherwise
    # Each layer in order, sequence and channel mixers alike: MAD's [mamba, swiglu, mamba, swiglu], a hybrid's
    # [mamba, mamba, mha-rope, mamba]; or, for mixer hybrid, attention as every k-th layer (attention_every: k,
    # attention_mixer) with Mamba between
    layers: list[str] | None = None
    attention_every: PositiveInt | None = None  # mixer hybrid: attention as every k-th layer, Mamba between
    attention_mixer: Literal["mha-rope", "mha-abs"] = "mha-rope"  # mixer hybrid: the attention of attention_every
    ffn_width: PositiveInt | None = None  # channel mixers' inner width; theirs otherwise (swiglu 8/3·d, mlp 4·d)
    hyena_inner_factor: PositiveInt = 1  # hyena: streams of inner_factor·d_model (MAD: 4)
    hyena_proj_groups: PositiveInt = 1  # hyena: input projection shared by this many groups of streams (MAD: 4)
    head: Literal["tied", "untied", "compression"] = "tied"  # compression: MAD's auto-encoder (models/builder.py)
    init: Literal["mamba_ssm", "mad", "zoology"] = "mamba_ssm"  # the model-level initialisation (models/builder.py)
    block: Literal["prenorm", "zoology"] = "prenorm"  # zoology: zoology's blocks and final LayerNorm (models/builder.py)
    embed_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # dropout on the first block's input, in training
    attn_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # attention: dropout on the attention weights
    lr: PositiveFloat | list[PositiveFloat] | None = None  # this model's learning rate(s); train.lr otherwise
    seeds: list[int] | None = None  # this model's seeds (one job each); the task's otherwise
    steps: PositiveInt | None = None  # this model's training steps; the task's train.steps otherwise
    validate_lengths: list[PositiveInt] | None = None  # this model's validation lengths; train's otherwise
    # Evaluation precision: float32 by default (long sequences are where low precision shows); attention
    # needs bfloat16 for the flash kernel, without which long lengths take minutes per sample.
    eval_dtype: Literal["float32", "bfloat16"] = "float32"
    max_eval_len: PositiveInt | None = None  # longer test lengths are not run (✗ with the reason)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset's fields under the ones written beside it."""
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            return preset(data["preset"]) | data
        return data

    @model_validator(mode="after")
    def _known_mixer(self) -> Architecture:
        """The builder's own checks (ssmbench.models.architecture), each naming its field; the mixer worked
        out from the layers when not given."""
        if self.n_layers is None:
            self.n_layers = len(self.layers) if self.layers is not None else DEFAULT_N_LAYERS
        self._check_layers()
        try:
            self.mixer = self.config(vocab_size=2, train_len=1).mixer
        except ValueError as exc:
            raise ValueError(field_message(exc)) from None
        attention = any(mixer_family(m) == "transformer" for m in self.layer_pattern())
        if self.attn_dropout and not attention:
            raise ValueError(f"attn_dropout: {self.mixer} has no attention weights to drop (attention mixers: "
                             "mha-abs, mha-rope)")
        return self

    def _check_layers(self) -> None:
        """attention_every: a hybrid's only, and not with layers."""
        if self.mixer != HYBRID:
            if self.attention_every is not None:
                raise ValueError(f"layers: {self.mixer or 'a model without mixer: hybrid'} has one mixer in every "
                                 f"layer; attention_every is for mixer {HYBRID}")
            return
        if (self.layers is None) == (self.attention_every is None):
            raise ValueError(f"mixer {HYBRID}: give its layers ([mamba, mamba, mha-rope, mamba]) or attention_every: k")
        if self.attention_every is not None and self.attention_every > self.n_layers:
            raise ValueError(f"attention_every: {self.attention_every} is more than n_layers={self.n_layers}: "
                             "no layer would be attention")
        if self.attention_every == 1:
            raise ValueError(f"attention_every: 1 makes every layer attention; use mixer: {self.attention_mixer}")

    def layer_pattern(self) -> list[str]:
        """Each layer, first to last: `layers`; or attention (attention_mixer) as every `attention_every`-th
        layer with Mamba between (k = 2, 4 layers: mamba, attention, mamba, attention); or the mixer in each."""
        if self.layers is not None:
            return list(self.layers)
        if self.attention_every is not None:
            k = self.attention_every
            return [self.attention_mixer if (i + 1) % k == 0 else "mamba" for i in range(self.n_layers)]
        return [self.mixer] * self.n_layers

    def config(self, vocab_size: int, train_len: int) -> SmallModelConfig:
        """The builder's config of this model for a task's vocabulary and training length (a learned position
        table and Hyena's filter are sized by it unless set here)."""
        given = {name: value for name, value in self.model_dump().items() if name in CONFIG_FIELDS}
        listed = self.layers is not None or self.attention_every is not None
        return SmallModelConfig(**given | {
            "vocab_size": vocab_size, "layers": tuple(self.layer_pattern()) if listed else None,
            "max_positions": self.max_positions or (train_len if self.abs_positions == "learned" else None),
            "filter_len": self.filter_len or train_len})


class Train(Strict):
    """ssmbench.train.TrainSettings as a suite writes it."""

    steps: PositiveInt = 2000  # training steps (an architecture's own `steps` wins; `epochs` replaces them)
    batch_size: PositiveInt = 64  # examples per training step
    seq_len: PositiveInt = 256  # the training length (a MAD setting brings its own)
    lr: PositiveFloat | list[PositiveFloat] = 1e-3  # a list: one job per learning rate, the best one reported
    # A fixed training set of this many examples, drawn once per seed and sampled with replacement (zoology's
    # MQAR: 100K examples, 64 epochs), or walked in `epochs`; none: fresh examples every step. With MAD's
    # settings: at most this many of each setting's set (a toy's cap; MAD's own sizes otherwise).
    examples: PositiveInt | None = None
    # Passes over the fixed training set (train.examples, or a MAD setting's): every example once an epoch, each
    # epoch in its own seeded order (MAD: 200); steps = ceil(epochs x examples / batch_size) instead of `steps`.
    epochs: PositiveInt | None = None
    # The seed train.examples are drawn from; none: each job's own seed. zoology draws its MQAR training set
    # from one seed (123) whatever the model seed, so its seeds differ in initialisation alone.
    data_seed: NonNegativeInt | None = None
    # Stop a run when its training time reaches this many seconds (a last evaluation included): "learned
    # within 10 minutes". Wall-clock: a packed run shares the device, so budgets compare runs trained alone.
    budget_s: PositiveFloat | None = None
    optimizer: Literal["adam", "adamw"] = "adam"  # torch's Adam or AdamW
    # A list: one job per weight decay, as for lr (MAD sweeps [0, 0.1] with its three learning rates)
    weight_decay: Annotated[float, Field(ge=0)] | list[Annotated[float, Field(ge=0)]] = 0.0
    schedule: Literal["constant", "cosine"] = "constant"  # the learning rate after warm-up: constant, or cosine to min_lr
    min_lr: PositiveFloat | None = None  # the cosine schedule's floor (MAD: 1e-6); none: down to 0
    warmup_steps: Annotated[int, Field(ge=0)] = 0  # steps of linear warm-up from 0 to the learning rate
    grad_clip: PositiveFloat | None = 1.0  # the gradients' global norm is clipped to this; none: not clipped
    autocast: Literal["bfloat16", "float16"] | None = "bfloat16"  # on CUDA; the CPU trains in float32
    eval_every: PositiveInt = 250  # steps between evaluations on the validation sets (the curve, early stop)
    eval_samples: PositiveInt = 256  # validation examples per validation length, up to validate_tokens
    # Lengths of the fixed validation sets evaluated every eval_every steps (the training length always among
    # them): early stopping waits until every one holds, so a model is not stopped before it generalises.
    validate_lengths: list[PositiveInt] | None = None
    validate_tokens: PositiveInt = 2**22  # validation tokens per length at most (never under 8 examples)
    # Stop once the validation accuracy reaches this at every validation length (MAD: 0.999); none: never
    early_stop_accuracy: Annotated[float, Field(gt=0, le=1)] | None = None
    patience: PositiveInt = 1  # evaluations in a row at early_stop_accuracy before training stops
    checkpoint_every_s: PositiveFloat = 60.0  # the training state is saved this often (and on SIGINT/SIGTERM)
    # A run whose training loss sits at chance (within 1% of ln(answer values) or above) at this many
    # evaluations in a row has collapsed: it stops, and its records say "collapsed at chance". None: never.
    collapse_evals: PositiveInt | None = None
    # A run whose mean training loss between two evaluations is not finite, or above this bound, has diverged:
    # it stops at that evaluation, its records say "diverged at step N (loss ...)", and its tests are skipped.
    # A NaN or inf loss always counts; None: no bound besides.
    max_loss: PositiveFloat | None = None
    # Replay the whole training step from a CUDA graph (auto: on CUDA; a scheduled LR is a device tensor).
    cuda_graphs: Literal["auto"] | bool = "auto"

    def graphs_on(self, device: str) -> bool:
        """Whether the training step is captured on this device: never on the CPU, on CUDA unless refused."""
        if device != "cuda":
            return False
        return True if self.cuda_graphs == "auto" else bool(self.cuda_graphs)


class SyntheticTask(TaskBase):
    """Small models trained from scratch on a synthetic task, then tested at each of `eval_lengths`."""

    uses_models: ClassVar[bool] = False  # the task brings its own (architectures), one job each

    kind: Literal["synthetic"]
    task: SyntheticName = "induction_heads"  # the generator (ssmbench.data.synthetic, ssmbench.data.mad)
    task_params: dict[str, int | float | bool] = Field(default_factory=dict)  # the generator's own parameters
    vocab_size: PositiveInt = 16  # token ids 0 .. vocab_size-1 (a MAD setting brings its own)
    # The small models to train, by name, one job each (times the seeds, learning rates and settings)
    architectures: dict[str, Architecture] = Field(
        default_factory=lambda: {"mamba": Architecture(mixer="mamba", d_model=64)})
    train: Train = Field(default_factory=Train)  # how every model of the task trains
    eval_lengths: list[PositiveInt] | None = None  # the training length when absent
    eval_samples: PositiveInt = 256  # examples per test length, up to the token budget below
    eval_tokens: PositiveInt = 2**22  # tokens per test length at most: long lengths get fewer examples
    eval_min_samples: PositiveInt = 8  # ... but never fewer than this
    eval_batch_tokens: PositiveInt = 2**20  # tokens per forward pass: long lengths run a few examples at a time
    eval_seed: int = 0  # the fixed test and validation sets are drawn from it, the same for every job and run
    seeds: list[int] | None = None  # one job per seed (initialisation and training stream); the suite's otherwise
    # Train up to this many of the task's models side by side on one device (each on its own CUDA stream,
    # its whole step one graph replay): seeds x learning rates x architectures share the GPU that one small
    # model leaves almost idle. 1: one after another. Each model's numbers are its own either way.
    pack: PositiveInt = 1
    # A MAD task's settings (ssmbench.data.mad: MAD's baseline and each change from it), `all` or their labels
    # ([baseline, vocab_size=32]): one job axis. Each setting brings MAD's vocabulary, length, parameters and
    # fixed training set (walked for train.epochs), and is tested on MAD's fixed test set drawn from eval_seed.
    settings: Literal["all"] | list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticTask:
        check_task_params(self.task, self.task_params)
        self._check_settings()
        self._check_heads()
        if self.train.data_seed is not None and self.train.examples is None:
            raise ValueError("train.data_seed: only a fixed training set (train.examples) is drawn from a data seed")
        if self.train.epochs is not None and self.train.examples is None and self.settings is None:
            raise ValueError("train.epochs: epochs are passes over a fixed training set; give train.examples "
                             "(or a MAD task's settings)")
        if not self.architectures:
            raise ValueError("architectures: name at least one model to train")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds: give distinct seeds, at least one, got {self.seeds}")
        for name, arch in self.architectures.items():
            if arch.seeds is not None and (not arch.seeds or len(set(arch.seeds)) != len(arch.seeds)):
                raise ValueError(f"architectures.{name}.seeds: give distinct seeds, at least one, got {arch.seeds}")
            lrs = self.lrs(name)
            if not lrs or len(set(lrs)) != len(lrs):
                raise ValueError(f"architectures.{name}.lr: give distinct learning rates, at least one, got {lrs}")
        decays = self.weight_decays()
        if not decays or len(set(decays)) != len(decays):
            raise ValueError(f"train.weight_decay: give distinct weight decays, at least one, got {decays}")
        return self

    def _check_settings(self) -> None:
        """`settings` only on MAD's tasks, by known labels, and without the fields each setting brings."""
        if self.settings is None:
            return
        if self.task not in MAD_TASKS:
            raise ValueError(f"settings: {self.task} is not one of MAD's tasks ({', '.join(MAD_TASKS)})")
        labels = [s.label for s in MAD_SETTINGS[self.task]]
        given = labels if self.settings == "all" else self.settings
        unknown = [label for label in given if label not in labels]
        if unknown:
            raise ValueError(f"settings: {self.task} has no setting {unknown[0]!r}{did_you_mean(unknown[0], labels)}; "
                             f"its settings: {', '.join(labels)}")
        if not given or len(set(given)) != len(given):
            raise ValueError(f"settings: give distinct settings, at least one, got {self.settings}")
        # (set apart from their defaults: a resumed run reads back a suite with every field written out)
        brought = [name for name in ("vocab_size", "task_params", "eval_lengths") if _changed(self, name)] + \
            [f"train.{name}" for name in ("seq_len", "validate_lengths", "steps") if _changed(self.train, name)]
        if brought:
            raise ValueError(f"{brought[0]}: each MAD setting brings its own vocabulary, length, parameters, "
                             "training set and steps (train.epochs over its set); leave it out with settings")
        if self.train.epochs is None:
            raise ValueError("train.epochs: MAD's settings train in epochs over their fixed training set (MAD: 200)")
        stepped = [name for name, arch in self.architectures.items() if arch.steps is not None]
        if stepped:
            raise ValueError(f"architectures.{stepped[0]}.steps: with settings, train.epochs decides the steps")

    def _check_heads(self) -> None:
        """Compression is MAD's auto-encoder task: a language model's head would read the very token it must
        return (MAD-lab's benchmark picks the auto-encoder for it, never the language model)."""
        if self.task != "compression":
            return
        for name, arch in self.architectures.items():
            if arch.head != "compression":
                raise ValueError(f"architectures.{name}.head: compression needs head: compression (MAD's auto-encoder)")

    @property
    def mad_settings(self) -> list[MadSetting]:
        """The MAD settings this task trains, in MAD's order (none without `settings`)."""
        if self.settings is None:
            return []
        if self.settings == "all":
            return list(MAD_SETTINGS[self.task])
        return [mad_setting(self.task, label) for label in self.settings]

    def setting_of(self, axes: dict[str, Any]) -> MadSetting | None:
        """A job's MAD setting (its `setting` axis), or None."""
        return mad_setting(self.task, axes["setting"]) if "setting" in axes else None

    def weight_decays(self) -> list[float]:
        given = self.train.weight_decay
        return list(given) if isinstance(given, list) else [given]

    def examples_of(self, setting: MadSetting | None) -> int | None:
        """A job's fixed training set size: a MAD setting's (at most train.examples, a toy's cap), or
        train.examples (None: fresh examples every step)."""
        if setting is None:
            return self.train.examples
        return min(setting.num_train_examples, self.train.examples or setting.num_train_examples)

    def steps_of(self, variant: str, setting: MadSetting | None) -> int:
        """A job's training steps: epochs over its fixed set (a MAD setting's or train.examples), else the
        architecture's steps or the task's."""
        train, examples = self.train, self.examples_of(setting)
        if train.epochs is not None and examples is not None:
            return training_steps(examples, train.epochs, train.batch_size)
        return self.architectures[variant].steps or train.steps

    def variants(self) -> list[str]:
        return list(self.architectures)

    def pack_width(self) -> int:
        return self.pack

    def plan_notes(self, device: str) -> list[str]:
        jobs = sum(len(self.job_axes(v)) for v in self.variants())
        mad = self._settings_note(jobs) if self.settings is not None else []
        if self.pack < 2:
            return mad
        budget = []
        if self.train.budget_s is not None:
            budget = [f"train.budget_s {self.train.budget_s:g} s is wall-clock: the packed models share the device, "
                      "so each trains fewer steps in it than alone would"]
        if device != "cuda":
            return [*mad, f"pack {self.pack}: on the CPU the {jobs} models take turns in one thread, no faster than "
                    "one after another (each model's numbers are the same either way)", *budget]
        return [*mad, f"pack {self.pack}: up to {min(self.pack, jobs)} of its {jobs} models train side by side on the "
                "GPU, each on a CUDA stream of its own; then each is tested in turn", *budget]

    def _settings_note(self, jobs: int) -> list[str]:
        """What a MAD grid amounts to: its trainings and their steps (each at most, early stop aside)."""
        steps = [self.steps_of(v, self.setting_of(axes)) for v in self.variants() for axes in self.job_axes(v)]
        grid = (f"{len(self.mad_settings)} settings x {len(self.lrs(self.variants()[0]))} learning rates x "
                f"{len(self.weight_decays())} weight decays x {len(self.architectures)} architectures")
        return [f"MAD {self.task}: {grid} = {jobs} trainings, {sum(steps):,} steps at most "
                f"({min(steps):,} to {max(steps):,} each, batch {self.train.batch_size})"]

    @property
    def layout(self) -> str | None:
        """Where induction heads' first special token is drawn in training: 'uniform' over the sequence, or
        'first-K' (task_params.special_within); None for the other tasks. Tests always use the uniform one."""
        if self.task != "induction_heads":
            return None
        within = self.task_params.get("special_within")
        return "uniform" if within is None else f"first-{within}"

    @property
    def test_params(self) -> dict[str, int | float | bool]:
        """The generator's parameters for the fixed validation and test sets: the training-only ones left out."""
        return {k: v for k, v in self.task_params.items() if k not in TRAINING_ONLY_PARAMS}

    def lrs(self, variant: str) -> list[float]:
        """The learning rates an architecture trains at: its own, or the task's; a sweep when several."""
        given = self.architectures[variant].lr or self.train.lr
        return list(given) if isinstance(given, list) else [given]

    def job_axes(self, variant: str | None) -> list[dict[str, Any]]:
        """One entry per job of an architecture: its learning rate and weight decay when the task sweeps
        several, its seed when the task lists seeds; with MAD's settings, always the setting, learning rate
        and weight decay. These become part of the job's id and of every record's slice."""
        assert variant is not None
        lrs, decays, mad = self.lrs(variant), self.weight_decays(), self.settings is not None
        by_lr: list[dict[str, Any]] = [{"lr": lr} for lr in lrs] if len(lrs) > 1 or mad else [{}]
        if len(decays) > 1 or mad:  # a MAD job names its whole optimizer point, as MAD's runs do
            by_lr = [axes | {"weight_decay": wd} for axes in by_lr for wd in decays]
        if mad:
            by_lr = [{"setting": s.label} | axes for s in self.mad_settings for axes in by_lr]
        seeds = self.architectures[variant].seeds or self.seeds
        if seeds is None:
            return by_lr
        return [axes | {"seed": seed} for axes in by_lr for seed in seeds]

    def validate_lengths(self, variant: str) -> list[int]:
        """The lengths an architecture is validated at during training, the training length first."""
        given = self.architectures[variant].validate_lengths or self.train.validate_lengths or []
        return list(dict.fromkeys([self.train.seq_len, *given]))

    def validation_samples_at(self, length: int) -> int:
        return max(self.eval_min_samples, min(self.train.eval_samples, self.train.validate_tokens // length))

    @property
    def lengths(self) -> list[int]:
        return list(dict.fromkeys(self.eval_lengths or [self.train.seq_len]))

    @property
    def n_answers(self) -> int | None:
        """Answers per example (for the accuracy of each answer in turn); None for MAD's tasks, whose count
        varies by example and setting."""
        if self.task in MAD_TASKS:
            return None
        if self.task == "mqar":
            return int(self.task_params["num_kv_pairs"])
        return int(self.task_params.get("n_memorize", DEFAULT_ANSWERS[self.task]))

    def samples_at(self, length: int) -> int:
        """Examples evaluated at a test length: eval_samples within the token budget, at least the minimum."""
        return max(self.eval_min_samples, min(self.eval_samples, self.eval_tokens // length))

    def batch_at(self, length: int) -> int:
        return max(1, min(self.samples_at(length), self.eval_batch_tokens // length))


def _changed(model: Strict, name: str) -> bool:
    """Whether a field holds other than its default."""
    return getattr(model, name) != type(model).model_fields[name].get_default(call_default_factory=True)
