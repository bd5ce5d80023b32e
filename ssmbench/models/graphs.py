"""CUDA-graph capture of one decode step, the same helper for every backend.

A decode step at small batch is dominated by kernel-launch overhead; replaying a captured graph removes it.
mamba_ssm's own generate() does this for Mamba only (`update_graph_cache`); ssmbench captures the step of
every model with this one function, so Transformers get the same advantage (with a static KV cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def capture(step: Callable[[], None], warmups: int = 3) -> Any:
    """Warm `step` up on a side stream (lazy allocations, autotuning), then capture it; returns the graph.

    The warm-up and capture run real steps: the caller must reset its state afterwards.
    """
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize()
    return graph
