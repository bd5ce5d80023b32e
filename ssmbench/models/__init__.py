"""Model backends: one entry point, `load_model`, that picks the backend and says which it picked."""

from __future__ import annotations

from ssmbench.errors import JobError
from ssmbench.models.base import Decoder, LoadedModel
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.zoo import ResolvedModel

__all__ = ["Decoder", "LoadedModel", "choose_backend", "load_model"]


def choose_backend(ref: ResolvedModel) -> tuple[str, str | None]:
    """(backend, note). Mamba goes to mamba_ssm's fused model when its kernels import on CUDA, else to
    transformers' implementation; the note says why whenever the fused path is not taken. Every other family
    (Transformers, RWKV's recurrence, hybrids) has transformers' implementation only; a hybrid's Mamba mixer
    calls the fused kernels from there when they import, and the note says when they do not."""
    if ref.spec.family != "ssm":
        if ref.backend == "mamba_ssm":
            raise JobError(f"model {ref.name!r}: backend mamba_ssm is for Mamba models only")
        if ref.spec.family == "hybrid":
            kernels = fused_mamba_kernels() if ref.device == "cuda" else None
            why = "on CPU" if ref.device != "cuda" else None if kernels else kernels.reason
            if why and ref.require_fused:
                raise JobError(f"model {ref.name!r}: fused Mamba kernels required but unavailable: {why}")
            return "hf", (f"{ref.name}: fused Mamba kernels unavailable ({why}); its Mamba mixer runs "
                          "transformers' PyTorch path" if why else None)
        return "hf", None
    kernels = fused_mamba_kernels() if ref.device == "cuda" else None
    # A checkpoint of the suite's own exists in one format only: it decides the backend.
    fmt = ref.checkpoint_format if ref.weights == "pretrained" else None
    if fmt == "hf" and ref.backend == "mamba_ssm":
        raise JobError(f"model {ref.name!r}: its checkpoint is in transformers' format, which mamba_ssm cannot "
                       "load; use `backend: hf` (it calls the fused kernels when they are installed)")
    if fmt == "mamba_ssm":
        if ref.backend == "hf":
            raise JobError(f"model {ref.name!r}: its checkpoint is in mamba_ssm's format, which transformers "
                           "cannot load; use `backend: mamba_ssm` (or `auto`) on a GPU")
        if ref.device != "cuda" or not kernels:
            why = "the device is the CPU" if ref.device != "cuda" else kernels.reason
            raise JobError(f"model {ref.name!r}: its checkpoint is in mamba_ssm's format, which loads with "
                           f"mamba_ssm's fused kernels only, and they are unavailable: {why}")
        return "mamba_ssm", None
    if fmt == "hf" and ref.backend == "auto":  # transformers' Mamba, which calls the fused kernels if it can
        why = "on CPU" if ref.device != "cuda" else None if kernels else kernels.reason
        if why and ref.require_fused:
            raise JobError(f"model {ref.name!r}: fused Mamba kernels required but unavailable: {why}")
        return "hf", (f"{ref.name}: fused Mamba kernels unavailable ({why}); running transformers' PyTorch path"
                      if why else None)
    if ref.backend == "mamba_ssm" or (ref.require_fused and ref.backend == "auto"):
        if ref.device != "cuda" or not kernels:
            why = "the device is the CPU" if ref.device != "cuda" else kernels.reason
            raise JobError(f"model {ref.name!r}: fused Mamba kernels required but unavailable: {why}")
        return "mamba_ssm", None
    if ref.backend == "hf":
        return "hf", None
    if kernels:
        return "mamba_ssm", None
    why = "on CPU" if ref.device != "cuda" else kernels.reason
    return "hf", f"{ref.name}: fused Mamba kernels unavailable ({why}); running transformers' PyTorch path"


def load_model(ref: ResolvedModel) -> LoadedModel:
    backend, _ = choose_backend(ref)
    if backend == "mamba_ssm":
        from ssmbench.models.mamba_ssm import load_mamba_ssm

        return load_mamba_ssm(ref)
    from ssmbench.models.hf import load_hf, runs_mamba_in_torch

    model = load_hf(ref)
    if ref.require_fused and ref.spec.family in ("ssm", "hybrid") and runs_mamba_in_torch(model.kernel):
        raise JobError(f"model {ref.name!r}: fused Mamba kernels required but transformers runs its PyTorch path")
    return model
