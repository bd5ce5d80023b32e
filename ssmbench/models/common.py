"""What every backend shares when it loads a model: dtype names, the zoo config as a transformers config,
and the one error for weights that cannot be loaded. Backends import this, never each other."""

from __future__ import annotations

from typing import Any

from ssmbench.errors import JobError
from ssmbench.zoo import ResolvedModel


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def build_config(ref: ResolvedModel) -> Any:
    """The zoo entry's config (overrides applied) as the transformers config class of its model type."""
    from transformers import AutoConfig

    kwargs = dict(ref.spec.config)
    model_type = kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **kwargs)


def offline_weights_error(ref: ResolvedModel, source: str, exc: Exception) -> JobError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return JobError(
        f"model {ref.name!r}: weights {source!r} could not be loaded ({first[:160]}). Remedies: download them "
        f"first (`hf download {source}`), give a local checkpoint (`path:` in the suite's model entry), or use "
        f"`weights: random` for speed and memory tasks")
