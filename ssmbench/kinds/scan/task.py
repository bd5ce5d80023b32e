"""The suite entry of kind `scan`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import TaskBase


class ScanTask(TaskBase):
    """The sequence-mixing kernels alone: selective scan vs causal attention vs a PyTorch scan (no models)."""

    uses_models: ClassVar[bool] = False

    kind: Literal["scan"]
    # the implementations timed: mamba_ssm's fused kernel, flash attention, the PyTorch scan
    impls: list[Literal["selective_scan_cuda", "attention_sdpa", "scan_reference"]] = [
        "selective_scan_cuda", "attention_sdpa", "scan_reference"]
    passes: list[Literal["forward", "forward_backward"]] = ["forward"]  # forward alone, or forward and backward
    seq_lengths: list[PositiveInt] = [2**k for k in range(9, 20)]  # sequence lengths L, one point each
    d_inner: list[PositiveInt] = [1024]  # channels D (Mamba's expanded width), one point each
    d_state: PositiveInt = 16  # the SSM state size N
    batch: PositiveInt = 1  # sequences at once
    head_dim: PositiveInt = 64  # attention heads = d_inner / head_dim
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # the inputs' dtype
    reference_max_len: PositiveInt = 2**16  # the PyTorch scan is slow: longer lengths are skipped
    warmup: Annotated[int, Field(ge=0)] = 3  # untimed calls before the timed ones
    repeats: Annotated[int, Field(ge=1)] = 20  # timed calls per point: the median and its spread are reported
