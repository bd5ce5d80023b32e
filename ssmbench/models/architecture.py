"""A small model's architecture (SmallModelConfig): what the builder builds and every mixer reads, and the
named presets (MAD's baselines).

Its own module, below both: the mixers take it and the builder takes the mixers, so neither needs the
other to say what a config is (builder.py re-exports it). It imports no torch, so a suite's validation can
check a config and read the presets without loading it.

A model is one list of layers (`layers`), sequence mixers and channel mixers alike, each in its own pre-norm
residual block: MAD's `mamba, swiglu, mamba, swiglu`. `mixer` names the sequence mixer when the model has
one kind (`mixer: mamba, n_layers: 2` is the list `mamba, mamba`), or `hybrid` when it has several; given
`layers`, it may be left out and is worked out from them. A config is normalised when made: `layers` is
None exactly when the model is one sequence mixer repeated (what every config was before layer lists),
so such a model builds, names its modules and counts its parameters as it always did.

MAD's presets (Poli et al. 2024, arXiv 2403.17844; athms/mad-lab: benchmark.py, configs/layers/*.yml):
four layers at width 128, each sequence mixer followed by a SwiGLU, RMSNorm (eps 1e-5) before every layer
and before the head, no position embeddings, an untied head with a bias (MAD-lab's `unembed`), MAD-lab's
initialisation (`init: mad`):

    mad-attention     mha-rope, swiglu, mha-rope, swiglu; 16 heads, rotary on the whole head (dim 8), base
                      10^4, qkv and out biases (mh-attention.yml; MAD-lab's train.py and benchmark.py default)
    mad-attention-1h  the same with one head of 128 (attention.yml)
    mad-hyena         hyena, swiglu, hyena, swiglu; order 2, inner_factor 4, proj_groups 4, filter FFN width 4
                      on emb_dim 3 (hyena.yml; its deviations in ssmbench/models/mixers/hyena.py)
    mad-mamba         mamba, swiglu, mamba, swiglu; d_state 4, d_conv 4, expand 2, dt_rank 8 (mamba.yml)
    mad-hybrid        mamba, swiglu, mha-rope, swiglu; Mamba as mad-mamba, attention as mad-attention

Compression (MAD's auto-encoder backbone) is any of them with `head: compression` (builder.py).
Deviations from MAD-lab, besides Hyena's: MAD-lab's attention is flash_attn's MHA, here torch's SDPA with
the same projections, rotary form and scale; the filter of Hyena is sized by `filter_len` (the training
length), as MAD-lab's is by the task's sequence length; the presets' parameter counts are in builder.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ssmbench.errors import did_you_mean
from ssmbench.models.mixers import HYBRID, MIXERS, S4D_MIXERS, SSM_INITS, check_mixer_name, is_channel_mixer

ABS_POSITIONS = ("sinusoidal", "learned")
# What turns the last hidden states into logits: "tied" to the embedding, no bias (mamba_ssm's
# MambaLMHeadModel); "untied", a Linear with a bias (MAD-lab's LanguageModel); "compression", MAD-lab's
# AutoEncoder: the whole sequence read from its last position, decoded by an MLP (builder.py).
HEADS = ("tied", "untied", "compression")
# The weights' initialisation: mamba_ssm's model-level scheme (GPT-2's), MAD-lab's backbones', or zoology's
# LanguageModel's (builder.py).
INITS = ("mamba_ssm", "mad", "zoology")
# The residual block around each layer: ssmbench's pre-norm block with RMSNorm, or zoology's (HazyResearch/
# zoology, zoology/model.py, as its MQAR Figure 2 builds models: its TransformerBlock with the identity as
# state mixer around every non-Mamba layer, its MambaBlock around Mamba's, and a final LayerNorm; builder.py).
BLOCKS = ("prenorm", "zoology")
DEFAULT_N_LAYERS = 2

_MAD = {"d_model": 128, "head": "untied", "init": "mad"}
_MAD_MAMBA = {"d_state": 4, "d_conv": 4, "expand": 2}
PRESETS: dict[str, dict[str, Any]] = {
    "mad-attention": _MAD | {"layers": ["mha-rope", "swiglu", "mha-rope", "swiglu"], "n_heads": 16},
    "mad-attention-1h": _MAD | {"layers": ["mha-rope", "swiglu", "mha-rope", "swiglu"], "n_heads": 1},
    "mad-hyena": _MAD | {"layers": ["hyena", "swiglu", "hyena", "swiglu"], "hyena_order": 2, "hyena_inner_factor": 4,
                         "hyena_proj_groups": 4, "filter_width": 4, "filter_emb_dim": 3},
    "mad-mamba": _MAD | _MAD_MAMBA | {"layers": ["mamba", "swiglu", "mamba", "swiglu"]},
    "mad-hybrid": _MAD | _MAD_MAMBA | {"layers": ["mamba", "swiglu", "mha-rope", "swiglu"], "n_heads": 16},
}


def preset(name: str) -> dict[str, Any]:
    """A preset's fields (a copy), or the ValueError that names the known ones."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}


def resolve_layers(mixer: str | None, n_layers: int | None,
                   layers: tuple[str, ...] | list[str] | None) -> tuple[str, int, tuple[str, ...] | None]:
    """(mixer, n_layers, layers) in normal form: layers None when one sequence mixer fills every layer,
    mixer worked out from the layers when not given. Raises ValueError('field: ...')."""
    if mixer is not None:
        if is_channel_mixer(mixer):
            raise ValueError(f"mixer: {mixer} is a channel mixer, which mixes no positions; list it with a sequence "
                             f"mixer in layers (e.g. [mamba, {mixer}, mamba, {mixer}])")
        names = [*MIXERS, HYBRID]
        if mixer not in names:
            raise ValueError(f"mixer: unknown mixer {mixer!r}{did_you_mean(mixer, names)}; mixers: {', '.join(names)}")
    if layers is None:
        if mixer is None:
            raise ValueError("mixer: name the sequence mixer, or give the layers")
        if mixer == HYBRID:
            raise ValueError(f"mixer: {HYBRID} needs its layers (e.g. [mamba, mamba, mha-rope, mamba])")
        return mixer, DEFAULT_N_LAYERS if n_layers is None else n_layers, None
    layers = _checked_names(layers)
    if n_layers is not None and n_layers != len(layers):
        raise ValueError(f"layers: {len(layers)} mixers for n_layers={n_layers}")
    sequence = list(dict.fromkeys(name for name in layers if not is_channel_mixer(name)))
    if not sequence:
        raise ValueError(f"layers: {', '.join(layers)} has no sequence mixer: nothing would mix the positions")
    found = sequence[0] if len(sequence) == 1 else HYBRID
    if mixer == HYBRID and found != HYBRID:
        raise ValueError(f"layers: a hybrid mixes two or more sequence mixers; for {found} alone use mixer: {found}")
    if mixer is not None and mixer != found:
        raise ValueError(f"layers: their sequence mixers are {', '.join(sequence)}, not mixer {mixer}; "
                         "leave mixer out (it is worked out from the layers)")
    plain = all(name == found for name in layers)
    return found, len(layers), None if plain else layers


def _checked_names(layers: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"layers: a list of one or more layer names, got {layers!r}")
    for name in layers:
        try:
            check_mixer_name(name, layer=True)
        except ValueError as exc:
            raise ValueError(f"layers: {exc}") from None
    return tuple(layers)


@dataclass(frozen=True)
class SmallModelConfig:
    """A small model's architecture. Checked and normalised when made (see the module doc), so a suite with
    a bad one fails before any run."""

    mixer: str | None = None  # the sequence mixer, or "hybrid"; from `layers` when not given
    n_layers: int | None = None  # entries of the layer list; len(layers), else 2
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
    hyena_inner_factor: int = 1  # hyena: streams of inner_factor·d_model (MAD: 4)
    hyena_proj_groups: int = 1  # hyena: the input projection's features repeated this many times (MAD: 4)
    filter_width: int = 64  # Hyena's implicit filter: width of its FFN
    filter_emb_dim: int = 5  # ... its positional features: the position and (filter_emb_dim - 1)/2 sinusoid pairs
    filter_len: int = 256  # ... the length its positions are scaled by (safari's l_max; the training length)
    # Dropout in training (zoology's attention baseline: 0.1 on the embeddings and on the attention weights).
    embed_dropout: float = 0.0  # on the input of the first block (token embeddings + positions)
    attn_dropout: float = 0.0  # attention: on the attention weights
    # Each layer in order, sequence and channel mixers (e.g. mamba, swiglu, mamba, swiglu, or a hybrid's
    # mamba, mamba, mha-rope, mamba); None: `mixer` in each of n_layers layers
    layers: tuple[str, ...] | None = None
    ffn_width: int | None = None  # channel mixers' inner width; None: theirs (swiglu 8/3·d_model, mlp 4·d_model)
    head: str = "tied"  # one of HEADS
    init: str = "mamba_ssm"  # one of INITS
    block: str = "prenorm"  # one of BLOCKS

    @classmethod
    def preset(cls, name: str, **changes: Any) -> SmallModelConfig:
        """A named preset (PRESETS), with `changes` on top (vocab_size, filter_len, head, ...)."""
        fields_ = preset(name) | changes
        if isinstance(fields_.get("layers"), list):
            fields_["layers"] = tuple(fields_["layers"])
        return cls(**fields_)

    @property
    def layer_mixers(self) -> tuple[str, ...]:
        """The layer of each block, first to last."""
        return self.layers if self.layers is not None else (self.mixer,) * self.n_layers

    def __post_init__(self):
        value = self.n_layers
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"SmallModelConfig.n_layers must be a positive integer, got {value!r}")
        try:
            normal = resolve_layers(self.mixer, self.n_layers, self.layers)
        except ValueError as exc:
            raise ValueError(f"SmallModelConfig.{exc}") from None
        for name, value in zip(("mixer", "n_layers", "layers"), normal, strict=True):
            object.__setattr__(self, name, value)
        for name in ("d_model", "vocab_size", "d_state", "d_conv", "expand", "n_heads", "filter_width",
                     "filter_emb_dim", "filter_len", "hyena_inner_factor", "hyena_proj_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SmallModelConfig.{name} must be a positive integer, got {value!r}")
        if self.ffn_width is not None and (not isinstance(self.ffn_width, int) or self.ffn_width < 1):
            raise ValueError(f"SmallModelConfig.ffn_width must be a positive integer or None, got {self.ffn_width!r}")
        self._check_lti_fields()
        for name in ("embed_dropout", "attn_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"SmallModelConfig.{name} must be a probability in [0, 1), got {value!r}")
        for name, allowed in (("abs_positions", ABS_POSITIONS), ("head", HEADS), ("init", INITS), ("block", BLOCKS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SmallModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        channel = [name for name in self.layer_mixers if is_channel_mixer(name)]
        if self.block == "zoology" and channel:
            raise ValueError(f"SmallModelConfig.block: zoology's blocks hold the channel mixing themselves (its "
                             f"Figure 2 models: none); the layer list has {channel[0]!r}")
        limit = self.max_positions
        if self.abs_positions == "learned" and (not isinstance(limit, int) or limit < 1):
            raise ValueError("SmallModelConfig.max_positions must be a positive integer when "
                             f"abs_positions='learned', got {limit!r}")

    def _check_lti_fields(self) -> None:
        """The S4D and Hyena fields, refused here rather than when the first layer is made."""
        if self.ssm_init not in SSM_INITS:
            raise ValueError(f"SmallModelConfig.ssm_init must be one of {SSM_INITS}, got {self.ssm_init!r}")
        s4d = S4D_MIXERS.intersection(self.layer_mixers)
        if s4d and self.d_state % 2:
            raise ValueError(f"SmallModelConfig.d_state: {sorted(s4d)[0]} keeps N/2 conjugate pairs of S4D modes: "
                             f"d_state must be even, got {self.d_state}")
        if not isinstance(self.hyena_order, int) or self.hyena_order < 2:
            raise ValueError(f"SmallModelConfig.hyena_order must be an integer of at least 2, got {self.hyena_order!r}")
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError("SmallModelConfig.filter_emb_dim: the position and sin/cos pairs: an odd number of at "
                             f"least 3, got {self.filter_emb_dim}")
        streams = (self.hyena_order + 1) * self.hyena_inner_factor * self.d_model
        if "hyena" in self.layer_mixers and streams % self.hyena_proj_groups:
            raise ValueError(f"SmallModelConfig.hyena_proj_groups: {self.hyena_proj_groups} does not divide Hyena's "
                             f"{streams} streams ((hyena_order + 1)·hyena_inner_factor·d_model)")


CONFIG_FIELDS = frozenset(f.name for f in fields(SmallModelConfig))


def field_message(exc: ValueError) -> str:
    """A SmallModelConfig error as a suite's field says it: 'SmallModelConfig.d_state must be ...' -> 'd_state:
    must be ...', for a suite entry whose fields are the config's."""
    match = re.fullmatch(r"SmallModelConfig\.(\w+):? (.*)", str(exc), flags=re.DOTALL)
    return f"{match[1]}: {match[2]}" if match else str(exc)


__all__ = ["ABS_POSITIONS", "BLOCKS", "CONFIG_FIELDS", "HEADS", "INITS", "PRESETS", "SmallModelConfig", "field_message",
           "preset", "resolve_layers"]
