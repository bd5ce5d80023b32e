"""The suite entry of kind `scan`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import TaskBase


class ScanTask(TaskBase):
    """The sequence-mixing kernels alone: selective scan vs causal attention vs a PyTorch scan (no models)."""

    uses_models: ClassVar[bool] = False

    kind: Literal["scan"]
    impls: list[Literal["selective_scan_cuda", "attention_sdpa", "scan_reference"]] = [
        "selective_scan_cuda", "attention_sdpa", "scan_reference"]
    passes: list[Literal["forward", "forward_backward"]] = ["forward"]
    seq_lengths: list[PositiveInt] = [2**k for k in range(9, 20)]
    d_inner: list[PositiveInt] = [1024]
    d_state: PositiveInt = 16
    batch: PositiveInt = 1
    head_dim: PositiveInt = 64  # attention heads = d_inner / head_dim
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    reference_max_len: PositiveInt = 2**16  # the PyTorch scan is slow: longer lengths are skipped
    warmup: Annotated[int, Field(ge=0)] = 3
    repeats: Annotated[int, Field(ge=1)] = 20
