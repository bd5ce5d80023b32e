"""What every backend shares when it loads a model: dtype names, the zoo config as a transformers config,
and the one error for weights that cannot be loaded. Backends import this, never each other."""

from __future__ import annotations

import logging
from typing import Any

from ssmbench.errors import JobError, first_line
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
    """Hub weights that could not be loaded: the remedies start with downloading them."""
    first = first_line(exc, 240)
    return JobError(
        f"model {ref.name!r}: weights {source!r} could not be loaded ({first}). Remedies: download them "
        f"first (`hf download {source}`) where the hub is reachable, give a local checkpoint (`path:` in the "
        "suite's model entry), or use `weights: random` for speed and memory tasks")


def local_checkpoint_error(ref: ResolvedModel, path: str, exc: Exception) -> JobError:
    """A local checkpoint (`path:`) that could not be loaded: nothing to download, the directory is wrong."""
    first = first_line(exc, 240)
    return JobError(f"model {ref.name!r}: the checkpoint at `path: {path}` could not be loaded ({first}); "
                    "point `path:` at a directory written by save_pretrained (config.json and the weights)")


def check_local_checkpoint(ref: ResolvedModel, path: str) -> None:
    """Fail the job at once, without suggesting a download, when `path:` is no checkpoint directory (it may
    have gone since the suite was validated)."""
    from ssmbench.models.checkpoints import CheckpointError, read_local_config

    try:
        read_local_config(path)
    except CheckpointError as exc:
        raise JobError(f"model {ref.name!r}: `path:` {exc}") from None


def checkpoint_identity(ref: ResolvedModel, backend: str, module_arch: str | None) -> dict[str, Any]:
    """LoadedModel's fields saying what was loaded: `checkpoint` (hub id, absolute local path, or "random
    init"), `weights_sha256` (a short hash of the weight files read; None for random init), `architecture`
    (the config's model_type) and `tokenizer_name` (which tokenizer the model's text goes through). Weights
    are hashed once per file version per process (checkpoints.weights_sha256)."""
    from ssmbench.models import hub
    from ssmbench.models.checkpoints import describe_path, weights_sha256
    from ssmbench.models.tokenizers import tokenizer_source

    tokenizer = tokenizer_source(ref)
    if tokenizer is not None and tokenizer == ref.path:
        tokenizer = describe_path(tokenizer)
    fields = {"architecture": module_arch or ref.spec.arch, "tokenizer_name": tokenizer}
    if ref.weights == "random":
        return {"checkpoint": "random init", "weights_sha256": None, **fields}
    fmt = "mamba_ssm" if backend == "mamba_ssm" else "hf"
    if ref.path:
        return {"checkpoint": describe_path(ref.path), "weights_sha256": weights_sha256(ref.path, fmt), **fields}
    source = ref.mamba_ssm_source if backend == "mamba_ssm" else ref.hf_source
    snapshot = hub.snapshot_dir(source, ref.revision) if source else None
    # A revision other than the default is part of the name: a paper row describes the default one only.
    checkpoint = f"{source}@{ref.revision}" if source and ref.revision else source
    return {"checkpoint": checkpoint, "weights_sha256": weights_sha256(snapshot, fmt) if snapshot else None,
            **fields}


# --- library notices that ssmbench says itself, once ------------------------------------------------------

# transformers' Mamba says, for each of four functions, that it falls back to PyTorch because mamba_ssm or
# causal_conv1d is missing: four lines per process (each memory point's own), where ssmbench says it once
# per model per run ("fused Mamba kernels unavailable ...; running transformers' PyTorch path") and every
# record says `kernel: hf-torch`. Dropped only where ssmbench has named that path (silence_mamba_fallback).
_MAMBA_FALLBACK = ("is falling back to its reference PyTorch implementation because `mamba_ssm`",
                   "is falling back to its reference PyTorch implementation because `causal_conv1d`")
# The `kernels` package, offline, says for each flash-attention kernel of the hub that it skips a trust check
# of a kernel ssmbench never asked for; the attention path that ran is each record's `kernel` (hf-sdpa, ...).
_TRUST_CHECK = ("Skipping publisher trust check for 'kernels-community/",)


class _Drop(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


def _drop(logger_name: str, fragments: tuple[str, ...]) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _Drop) and f.fragments == fragments for f in logger.filters):
        logger.addFilter(_Drop(fragments))


def silence_trust_checks() -> None:
    """Drop the `kernels` package's offline trust-check lines (before transformers loads or imports models)."""
    _drop("kernels._internals.hf_hub", _TRUST_CHECK)


def silence_mamba_fallback() -> None:
    """Drop transformers' Mamba fallback lines, once a model's kernel says the PyTorch path ran (hf-torch, or
    a hybrid's ...+torch): the path is stated by ssmbench, in the record and on screen, never hidden."""
    _drop("transformers.integrations.hub_kernels", _MAMBA_FALLBACK)
