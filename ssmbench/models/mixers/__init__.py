"""The layers a small model is built from, by short name: sequence mixers and channel mixers.

A model is one list of layers (builder.py): each entry is wrapped in the same pre-norm residual block, so a
sequence mixer (mixes across positions) and a channel mixer (an MLP, within each position) are entries of
the same kind, as in MAD (`mamba, swiglu, mamba, swiglu`). A sequence mixer is the layer that differs
between the architectures compared. The sequence mixers:

    mamba                 Mamba's block with S6, the selective scan (mamba.py; mamba_ssm's module on CUDA)
    mha-abs, mha-rope     causal multi-head attention, absolute or rotary positions (attention.py)
    hyena                 the Hyena operator, order `hyena_order` (2 by default) (hyena.py)

and the Mamba paper's Table 1 grid (grid.py), named "<block>-<inner layer>", the block's own name alone
where the inner layer is the block's own, the inner layer's name alone where there is no block:

                 S4 (S4D, LTI)    Hyena filter     S6 (selective)
    no gate      s4d              -                s6
    H3           h3               h3-hyena         h3-s6
    Mamba        mamba-s4d        mamba-hyena      mamba

`GRID` gives each of them its (block, inner layer) as Table 1 prints them.

The channel mixers (channel.py), MAD-lab's (mad/model/layers/mlp.py), in `CHANNEL_MIXERS`:

    swiglu                w3(SiLU(w1 x) ⊙ w2 x), inner width 8/3·d_model rounded up to a multiple of 16
    mlp                   proj(GELU(fc x)), inner width 4·d_model

`hybrid` is no layer: it is the `mixer` of a model whose layers hold two or more different sequence mixers
(e.g. mamba, mamba, mha-rope, mamba); the builder makes each layer with its own factory, so a hybrid is the
registered layers and nothing else.

`MIXERS` and `CHANNEL_MIXERS` map each name to "module:factory", imported only when the layer is asked
for, so that reading the registry (the CLI's `list`, a suite's validation) imports no torch. A new layer
is one line in one of them (or `register_mixer(name, target, channel=...)`), and a suite can list it.

A factory is called once per layer as `factory(config, device=..., dtype=..., allow_torch_on_cuda=False)`
with the builder's `SmallModelConfig` and returns a `Mixer`: the module, mapping (batch, L, d_model) to
(batch, L, d_model) causally, and the kernel label of the code path it will run, recorded with every
result. `allow_torch_on_cuda` lets a mixer that has fused CUDA kernels run its pure-torch path on CUDA when
those kernels are missing (the label then says so); mixers without fused kernels ignore it. Channel
mixers are called the same way; their kernel label is not part of the model's (it names the sequence
mixers' code paths).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssmbench.errors import did_you_mean

MIXERS: dict[str, str] = {
    "mamba": "ssmbench.models.mixers.mamba:mamba_mixer",
    "mha-abs": "ssmbench.models.mixers.attention:mha_abs_mixer",
    "mha-rope": "ssmbench.models.mixers.attention:mha_rope_mixer",
    "hyena": "ssmbench.models.mixers.hyena:hyena_mixer",
    "s4d": "ssmbench.models.mixers.grid:s4d_mixer",
    "s6": "ssmbench.models.mixers.grid:s6_mixer",
    "h3": "ssmbench.models.mixers.grid:h3_mixer",
    "h3-hyena": "ssmbench.models.mixers.grid:h3_hyena_mixer",
    "h3-s6": "ssmbench.models.mixers.grid:h3_s6_mixer",
    "mamba-s4d": "ssmbench.models.mixers.grid:mamba_s4d_mixer",
    "mamba-hyena": "ssmbench.models.mixers.grid:mamba_hyena_mixer",
}

# Table 1's cell of each grid mixer: (architecture, inner layer), as the paper prints them.
GRID: dict[str, tuple[str, str]] = {
    "s4d": ("no gate", "S4"), "s6": ("no gate", "S6"),
    "h3": ("H3", "S4"), "h3-hyena": ("H3", "Hyena"), "h3-s6": ("H3", "S6"),
    "mamba-s4d": ("Mamba", "S4"), "mamba-hyena": ("Mamba", "Hyena"), "mamba": ("Mamba", "S6"),
}
# Channel mixers: mix within each position, between the sequence mixers of a layer list.
CHANNEL_MIXERS: dict[str, str] = {
    "swiglu": "ssmbench.models.mixers.channel:swiglu_mixer",
    "mlp": "ssmbench.models.mixers.channel:mlp_mixer",
}
HYBRID = "hybrid"  # layers of two or more sequence mixers (SmallModelConfig.layers), not a factory
SSM_INITS = ("lin", "inv")  # S4D's A: S4D-Lin, S4D-Inv (s4d.py)
# Mixers built on an S4D (conjugate pairs of modes): their d_state must be even.
S4D_MIXERS = frozenset({"s4d", "h3", "mamba-s4d"})


@dataclass(frozen=True)
class Mixer:
    """What a factory returns for one layer.

    positions: None when the mixer needs no position information from outside (Mamba: its scan is
    ordered; RoPE: rotates q and k itself), "absolute" when the builder must add absolute position
    embeddings to the token embeddings (MHA-Abs), as the paper's baseline does.
    """

    module: Any  # torch.nn.Module; typed loosely so that this registry imports no torch
    kernel: str
    positions: str | None = None


def register_mixer(name: str, target: str, *, channel: bool = False) -> None:
    """Add or replace a sequence mixer (a channel mixer with `channel`): `target` is
    "package.module:factory", imported on first use."""
    if ":" not in target:
        raise ValueError(f"mixer {name!r}: target {target!r} is not of the form 'package.module:factory'")
    mine, other = (CHANNEL_MIXERS, MIXERS) if channel else (MIXERS, CHANNEL_MIXERS)
    if name in other or name == HYBRID:
        raise ValueError(f"mixer {name!r}: the name is taken")
    mine[name] = target


def is_channel_mixer(name: str) -> bool:
    return name in CHANNEL_MIXERS


def check_mixer_name(name: str, *, layer: bool = False) -> None:
    """Raise the registry's ValueError for an unknown name, without importing anything. `layer`: the name of
    one entry of a layer list (a sequence or a channel mixer, not `hybrid`); otherwise a model's `mixer` (a
    sequence mixer or `hybrid`)."""
    names = [*MIXERS, *CHANNEL_MIXERS] if layer else [*MIXERS, HYBRID]
    if name not in names:
        known = ", ".join(sorted(names))
        raise ValueError(f"unknown mixer {name!r}{did_you_mean(name, names)}; known: {known}")


def get_mixer(name: str) -> Callable[..., Mixer]:
    """The factory registered under `name` (a sequence or a channel mixer), importing its module now."""
    check_mixer_name(name, layer=True)
    module_name, _, attr = (MIXERS.get(name) or CHANNEL_MIXERS[name]).partition(":")
    return getattr(importlib.import_module(module_name), attr)


# Which family each mixer's models belong to in reports (state-space or attention), beside the zoo's.
# Hyena is a long-convolution model, not an SSM; the H3/Hyena cell is an H3 block (an SSM architecture).
FAMILIES: dict[str, str] = {"mamba": "ssm", "mha-abs": "transformer", "mha-rope": "transformer",
                            "hyena": "long-conv", "s4d": "ssm", "s6": "ssm", "h3": "ssm", "h3-hyena": "ssm",
                            "h3-s6": "ssm", "mamba-s4d": "ssm", "mamba-hyena": "ssm", HYBRID: "hybrid"}


def mixer_family(name: str) -> str:
    """'ssm', 'transformer', 'long-conv' or 'hybrid' for a mixer ('' for one registered without a family)."""
    return FAMILIES.get(name, "")
