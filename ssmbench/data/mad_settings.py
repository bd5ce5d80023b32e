"""MAD's task settings and training protocol as plain data, without torch: what a suite is checked against
(ssmbench.kinds.synthetic.task) before anything is drawn. ssmbench.data.mad re-exports all of it beside the
generators; its docstring says where each figure comes from and where ssmbench's draw differs from MAD-lab's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAD_SEED = 12345  # MADConfig.seed: MAD's data, its memorization facts and its model initialisation
MAD_TEST_EXAMPLES = 1280  # MADConfig.num_test_examples
# MAD's training protocol (mad/configs.py: MADConfig, make_benchmark_mad_configs), for the suite that runs it.
MAD_TRAINING: dict[str, Any] = {
    "batch_size": 128, "epochs": 200, "optimizer": "adamw", "scheduler": "cosine", "min_lr": 1e-6,
    "precision": "bf16", "lrs": (1e-4, 5e-4, 1e-3), "weight_decays": (0.0, 0.1),
}


# --- MAD's task settings --------------------------------------------------------------------------------

# configs/tasks/<MAD name>.yml of MAD-lab at 0f49a45, verbatim: each task's baseline and the values each
# change takes, one change at a time. Variables a config does not set take MADConfig's defaults, which
# are the generators' defaults here (no noise; multi_query is the only recall variant provided).
MAD_TASKS: dict[str, dict[str, dict[str, Any]]] = {
    "in_context_recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "noisy_in_context_recall": {
        "baseline": {"vocab_size": 32, "noise_vocab_size": 16, "seq_len": 128, "num_train_examples": 12800,
                     "multi_query": True, "frac_noise": 0.2},
        "changes": {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800], "frac_noise": [0.4, 0.6, 0.8]},
    },
    "fuzzy_in_context_recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True,
                     "k_motif_size": 3, "v_motif_size": 3},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "memorization": {
        "baseline": {"vocab_size": 256, "seq_len": 32, "num_train_examples": 256},
        "changes": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
    },
    "compression": {
        "baseline": {"vocab_size": 16, "seq_len": 32, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    },
    "mad_selective_copying": {
        "baseline": {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [512, 1024],
                    "num_train_examples": [6400, 3200, 1600, 800], "num_tokens_to_copy": [32, 64, 96]},
    },
}


@dataclass(frozen=True)
class MadSetting:
    """One of MAD's task settings: what a training and its test are drawn with.

    task: the generator's name (make_batch's); change: (MAD's variable, its value) that this setting
    changes from the task's baseline, None for the baseline itself; seq_len and num_train_examples: MAD's;
    params: make_batch's **params (vocab_size and the task's own parameters)."""

    task: str
    change: tuple[str, int | float] | None
    seq_len: int
    num_train_examples: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """'baseline', or the change as `variable=value` (e.g. 'vocab_size=32')."""
        return "baseline" if self.change is None else f"{self.change[0]}={self.change[1]}"


def _setting(task: str, change: tuple[str, int | float] | None, values: dict[str, Any]) -> MadSetting:
    params = {name: value for name, value in values.items()
              if name not in ("seq_len", "num_train_examples", "multi_query")}
    return MadSetting(task, change, values["seq_len"], values["num_train_examples"], params)


def expand_settings(task: str, config: dict[str, dict[str, Any]]) -> list[MadSetting]:
    """A task config's settings in MAD's order (make_benchmark_mad_configs): the baseline, then each
    change's values in turn, each applied alone to the baseline."""
    baseline = config["baseline"]
    return [_setting(task, None, baseline)] + [
        _setting(task, (name, value), baseline | {name: value})
        for name, values in config["changes"].items() for value in values
    ]


MAD_SETTINGS: dict[str, list[MadSetting]] = {
    task: expand_settings(task, config) for task, config in MAD_TASKS.items()
}


def mad_setting(task: str, label: str) -> MadSetting:
    """A task's setting by its label ('baseline', 'vocab_size=32'); KeyError when it has none of that name."""
    for setting in MAD_SETTINGS[task]:
        if setting.label == label:
            return setting
    raise KeyError(label)


def training_steps(examples: int, epochs: int, batch_size: int) -> int:
    """Steps of `epochs` passes over a fixed set of `examples` in batches of `batch_size`, batches running on
    across an epoch's end (EpochWalk): ceil(epochs * examples / batch_size). MAD's 200 epochs of 12,800
    examples at 128: 20,000 steps, as MAD's; of 800: 1,250 where MAD takes 1,400 (7 batches an epoch, one
    of them 32 examples)."""
    return -(-epochs * examples // batch_size)
