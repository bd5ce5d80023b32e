"""The sequence mixers a small model can be built from, by short name.

A mixer is the one layer that differs between the architectures compared (Mamba's selective SSM,
attention, later S4D, H3 and Hyena); builder.py wraps it in the same blocks, norms, embedding and head.
`MIXERS` maps each name to "module:factory", imported only when the mixer is asked for, so that reading
the registry (the CLI's `list`, a suite's validation) imports no torch.

A factory is called once per layer as `factory(config, device=..., dtype=..., allow_torch_on_cuda=False)`
with the builder's `SmallModelConfig` and returns a `Mixer`: the module, mapping (batch, L, d_model) to
(batch, L, d_model) causally, and the kernel label of the code path it will run, recorded with every
result. `allow_torch_on_cuda` lets a mixer that has fused CUDA kernels run its pure-torch path on CUDA when
those kernels are missing (the label then says so); mixers without fused kernels ignore it.
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
}


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


def register_mixer(name: str, target: str) -> None:
    """Add or replace a mixer: `target` is "package.module:factory", imported on first use."""
    if ":" not in target:
        raise ValueError(f"mixer {name!r}: target {target!r} is not of the form 'package.module:factory'")
    MIXERS[name] = target


def check_mixer_name(name: str) -> None:
    """Raise the registry's ValueError for an unknown name, without importing anything."""
    if name not in MIXERS:
        known = ", ".join(sorted(MIXERS))
        raise ValueError(f"unknown mixer {name!r}{did_you_mean(name, MIXERS)}; known: {known}")


def get_mixer(name: str) -> Callable[..., Mixer]:
    """The factory registered under `name`, importing its module now."""
    check_mixer_name(name)
    module_name, _, attr = MIXERS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


# Which family each mixer's models belong to in reports (state-space or attention), beside the zoo's.
FAMILIES: dict[str, str] = {"mamba": "ssm", "mha-abs": "transformer", "mha-rope": "transformer"}


def mixer_family(name: str) -> str:
    """'ssm' or 'transformer' for a registered mixer ('' for one registered without a family)."""
    return FAMILIES.get(name, "")
