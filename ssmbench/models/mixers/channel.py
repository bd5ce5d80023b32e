"""Channel mixers: the MLPs that MAD puts between sequence mixers (`mamba, swiglu, mamba, swiglu`).

As MAD-lab defines them (athms/mad-lab, mad/model/layers/mlp.py, with configs/layers/swiglu.yml and
mlp.yml), each (batch, L, d_model) -> (batch, L, d_model), position by position:

    swiglu   y = w3(SiLU(w1 x) ⊙ w2 x)          MAD-lab's `SwiGLU` (its `GLU` with a SiLU gate)
             inner width int(8/3·D) rounded up to a multiple of 16 (D = 128: 341 -> 352); no biases
    mlp      y = proj(GELU_tanh(fc x))          MAD-lab's `Mlp` with mlp.yml's `bias: false`
             inner width 4·D

The module names are MAD-lab's (w1, w2, w3; fc, proj), so a MAD-lab layer's weights load into these. The
config's `ffn_width` sets the inner width of both (MAD-lab's SwiGLU ignores its yml's `dim_inner`: it
is always 8/3·D there); dropout is 0 in MAD's configs and is left out.

Parameters (no biases): swiglu 3·D·W (D = 128, W = 352: 135,168), mlp 2·D·W (D = 128, W = 512: 131,072).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from ssmbench.models.mixers import Mixer

if TYPE_CHECKING:
    from ssmbench.models.architecture import SmallModelConfig

CHANNEL_KERNEL = "torch"  # plain matmuls; the model's kernel label names its sequence mixers only
SWIGLU_MULTIPLE = 16  # MAD-lab's GLU `multiple_of`


def swiglu_width(d_model: int) -> int:
    """MAD-lab's GLU inner width: int(2·4/3·D), rounded up to a multiple of 16."""
    width = int(2 * d_model * 4 / 3)
    return SWIGLU_MULTIPLE * -(-width // SWIGLU_MULTIPLE)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_inner: int | None = None, device=None, dtype=None):
        super().__init__()
        d_inner = d_inner or swiglu_width(d_model)
        factory = {"bias": False, "device": device, "dtype": dtype}
        self.w1 = nn.Linear(d_model, d_inner, **factory)  # through the SiLU: the gate
        self.w2 = nn.Linear(d_model, d_inner, **factory)
        self.w3 = nn.Linear(d_inner, d_model, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_inner: int | None = None, device=None, dtype=None):
        super().__init__()
        d_inner = d_inner or 4 * d_model
        factory = {"bias": False, "device": device, "dtype": dtype}
        self.fc = nn.Linear(d_model, d_inner, **factory)
        self.proj = nn.Linear(d_inner, d_model, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


def swiglu_mixer(config: SmallModelConfig, *, device="cpu", dtype=None, allow_torch_on_cuda: bool = False) -> Mixer:
    """The registry's factory `swiglu`."""
    return Mixer(SwiGLU(config.d_model, config.ffn_width, device=device, dtype=dtype), CHANNEL_KERNEL)


def mlp_mixer(config: SmallModelConfig, *, device="cpu", dtype=None, allow_torch_on_cuda: bool = False) -> Mixer:
    """The registry's factory `mlp`."""
    return Mixer(MLP(config.d_model, config.ffn_width, device=device, dtype=dtype), CHANNEL_KERNEL)
