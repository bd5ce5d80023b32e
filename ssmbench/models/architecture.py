"""A small model's architecture (SmallModelConfig): what the builder builds and every mixer reads.

Its own module, below both: the mixers take it and the builder takes the mixers, so neither needs the
other to say what a config is (builder.py re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

from ssmbench.models.mixers import HYBRID, S4D_MIXERS, check_mixer_name
from ssmbench.models.mixers.s4d import INITS as SSM_INITS  # S4D-Lin, S4D-Inv

ABS_POSITIONS = ("sinusoidal", "learned")


@dataclass(frozen=True)
class SmallModelConfig:
    """A small model's architecture. Checked when made, so a suite with a bad one fails before any run."""

    mixer: str
    n_layers: int = 2
    d_model: int = 64
    vocab_size: int = 16
    d_state: int = 16  # mamba and the grid's SSMs (S6, S4D, H3's shift SSM); even for S4D
    d_conv: int = 4  # mamba, the grid's Mamba block
    expand: int = 2  # mamba, the grid's Mamba and no-gate blocks
    n_heads: int = 8  # attention
    abs_positions: str = "sinusoidal"  # mha-abs: "sinusoidal" (any length) or "learned" (max_positions)
    max_positions: int | None = None
    ssm_init: str = "lin"  # S4D's A: "lin" (S4D-Lin) or "inv" (S4D-Inv)
    hyena_order: int = 2  # hyena: gates, one long filter between each pair
    filter_width: int = 64  # Hyena's implicit filter: width of its FFN
    filter_emb_dim: int = 5  # ... its positional features: the position and (filter_emb_dim - 1)/2 sinusoid pairs
    filter_len: int = 256  # ... the length its positions are scaled by (safari's l_max; the training length)
    # Dropout in training (zoology's attention baseline: 0.1 on the embeddings and on the attention weights).
    embed_dropout: float = 0.0  # on the input of the first block (token embeddings + positions)
    attn_dropout: float = 0.0  # attention: on the attention weights
    # mixer "hybrid": each layer's mixer in order, n_layers of them (e.g. mamba, mamba, mha-rope, mamba)
    layers: tuple[str, ...] | None = None

    @property
    def layer_mixers(self) -> tuple[str, ...]:
        """The mixer of each layer, first to last."""
        return self.layers if self.layers is not None else (self.mixer,) * self.n_layers

    def __post_init__(self):
        check_mixer_name(self.mixer)
        self._check_layers()
        for name in ("n_layers", "d_model", "vocab_size", "d_state", "d_conv", "expand", "n_heads",
                     "filter_width", "filter_emb_dim", "filter_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SmallModelConfig.{name} must be a positive integer, got {value!r}")
        self._check_lti_fields()
        for name in ("embed_dropout", "attn_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"SmallModelConfig.{name} must be a probability in [0, 1), got {value!r}")
        if self.abs_positions not in ABS_POSITIONS:
            raise ValueError(f"SmallModelConfig.abs_positions must be one of {ABS_POSITIONS}, "
                             f"got {self.abs_positions!r}")
        limit = self.max_positions
        if self.abs_positions == "learned" and (not isinstance(limit, int) or limit < 1):
            raise ValueError("SmallModelConfig.max_positions must be a positive integer when "
                             f"abs_positions='learned', got {limit!r}")

    def _check_layers(self) -> None:
        if self.mixer != HYBRID:
            if self.layers is not None:
                raise ValueError(f"SmallModelConfig.layers is for mixer {HYBRID!r}; {self.mixer!r} has one mixer "
                                 "in every layer")
            return
        if not isinstance(self.layers, tuple) or len(self.layers) != self.n_layers:
            raise ValueError(f"SmallModelConfig.layers: a hybrid names the mixer of each of its n_layers="
                             f"{self.n_layers} layers, got {self.layers!r}")
        for name in self.layers:
            check_mixer_name(name, layer=True)
        if len(set(self.layers)) < 2:
            raise ValueError(f"SmallModelConfig.layers: a hybrid mixes two or more mixers, got only {self.layers[0]!r}; "
                             f"use mixer {self.layers[0]!r}")

    def _check_lti_fields(self) -> None:
        """The S4D and Hyena fields, refused here rather than when the first layer is made."""
        if self.ssm_init not in SSM_INITS:
            raise ValueError(f"SmallModelConfig.ssm_init must be one of {SSM_INITS}, got {self.ssm_init!r}")
        s4d = S4D_MIXERS.intersection(self.layer_mixers)
        if s4d and self.d_state % 2:
            raise ValueError(f"SmallModelConfig.d_state must be even for {sorted(s4d)[0]!r} (S4D keeps N/2 "
                             f"conjugate pairs of modes), got {self.d_state}")
        if not isinstance(self.hyena_order, int) or self.hyena_order < 2:
            raise ValueError(f"SmallModelConfig.hyena_order must be an integer of at least 2, got {self.hyena_order!r}")
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError("SmallModelConfig.filter_emb_dim must be odd and at least 3 (the position and sin/cos "
                             f"pairs), got {self.filter_emb_dim}")
