"""Task kind -> runner class, imported lazily so the CLI starts without torch."""

from __future__ import annotations

import importlib

from ssmbench.errors import UserError, did_you_mean
from ssmbench.runners.base import Runner

# kind -> "module:Class" under ssmbench.runners
RUNNERS: dict[str, str] = {
    "throughput": "throughput:ThroughputRunner",
    "memory": "memory:MemoryRunner",
    "scan": "scan:ScanRunner",
    "zero_shot": "zero_shot:ZeroShotRunner",
}

DESCRIPTIONS: dict[str, str] = {
    "throughput": "prefill latency and decode throughput of greedy generation, eager and with CUDA graphs",
    "memory": "peak memory of generation or of a training step, beside the analytic KV-cache/SSM-state size",
    "scan": "selective-scan kernel vs causal attention (SDPA) vs a PyTorch scan, by sequence length",
    "zero_shot": "lm-eval zero-shot accuracy on the Mamba paper's six tasks (LAMBADA, HellaSwag, PIQA, ARC, WinoGrande)",
}


def runner_class(kind: str) -> type[Runner]:
    try:
        module_name, class_name = RUNNERS[kind].split(":")
    except KeyError:
        raise UserError(f"unknown task kind {kind!r}{did_you_mean(kind, RUNNERS)}") from None
    module = importlib.import_module(f"ssmbench.runners.{module_name}")
    return getattr(module, class_name)
