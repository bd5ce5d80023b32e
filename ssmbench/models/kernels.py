"""Which fused kernels can run here, and why not when they can't.

Mamba has two implementations of its sequence mixer: mamba_ssm's fused CUDA kernels (selective scan,
causal-conv1d, the Triton state update) and transformers' pure-PyTorch reference path. The choice is made
once, up front, from this probe, and every record states the outcome; nothing falls back silently.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    reason: str  # why not, or the versions found

    def __bool__(self) -> bool:
        return self.available


@functools.cache
def fused_mamba_kernels() -> KernelStatus:
    """Whether mamba_ssm's and causal-conv1d's CUDA extensions import and a CUDA device is present."""
    import torch

    if not torch.cuda.is_available():
        return KernelStatus(False, "no CUDA device")
    versions = []
    for module, ext in (("mamba_ssm", "selective_scan_cuda"), ("causal_conv1d", "causal_conv1d_cuda")):
        try:
            mod = importlib.import_module(module)
            importlib.import_module(ext)
        except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return KernelStatus(False, f"{module} does not import ({first_line}); `pip install .[gpu]`")
        versions.append(f"{module} {getattr(mod, '__version__', '?')}")
    return KernelStatus(True, ", ".join(versions))
