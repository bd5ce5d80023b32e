"""What ran where: the hardware and software behind a run, written to env.json beside its records.

A number without its GPU, driver, CUDA and library versions cannot be compared with anything; this is
collected once per run (and by `ssmbench env`).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ssmbench import __version__

PACKAGES = ("ssmbench", "torch", "transformers", "mamba_ssm", "causal_conv1d", "lm_eval", "triton",
            "accelerate", "datasets", "pydantic")
HF_SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


def package_version(name: str) -> str | None:
    for dist in (name, name.replace("_", "-")):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def git_revision() -> str | None:
    """The ssmbench source's commit, with '-dirty' when the tree has changes; None outside a checkout.

    A copy without .git (e.g. a tree shipped to a GPU machine) can name its commit in SSMBENCH_GIT_SHA.
    """
    root = Path(__file__).resolve().parent.parent
    named = os.environ.get("SSMBENCH_GIT_SHA")
    if named or not (root / ".git").exists():
        return named
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                     "compute_capability": f"{props.major}.{props.minor}",
                     "multiprocessors": props.multi_processor_count})
    return gpus


def driver_version() -> str | None:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def collect() -> dict[str, Any]:
    import torch

    from ssmbench.models.kernels import fused_mamba_kernels

    cuda = torch.cuda.is_available()
    kernels = fused_mamba_kernels()
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_info(),
        "driver": driver_version() if cuda else None,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "packages": {name: package_version(name) for name in PACKAGES} | {"ssmbench": __version__},
        "torch_version": torch.__version__,
        "fused_mamba_kernels": {"available": kernels.available, "detail": kernels.reason},
        "git": git_revision(),
        "hf_env": {k: os.environ[k] for k in HF_SWITCHES if k in os.environ},
    }


@functools.cache
def device_label(device: str) -> str:
    """What a record's `device` says: 'cpu' or the GPU's name (e.g. 'NVIDIA H100 80GB HBM3')."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"


def resolve_device(requested: str) -> str:
    """'auto' becomes 'cuda' when a GPU is present, else 'cpu'; asking for CUDA without one is an error."""
    import torch

    from ssmbench.errors import UserError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was requested but no CUDA device is available (use --device cpu)")
    return requested
