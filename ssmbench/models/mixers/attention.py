"""Causal multi-head self-attention, the paper's Transformer baselines for the synthetic tasks.

- `mha-abs`: positions are absolute embeddings added to the token embeddings before the first layer (the
  mixer says `positions="absolute"`, the builder adds `absolute_positions(config)`). Sinusoidal by
  default: no parameters and defined at any length, as the paper's MHA-Abs is evaluated up to 2^20 (where
  only memory stops it). `abs_positions="learned"` gives a GPT-2-style table of `max_positions` rows
  instead, which cannot go further: a longer input raises `PositionLimitError`.
- `mha-rope`: rotary embeddings on q and k in every layer (GPT-NeoX's rotate-half form, base 10000),
  computed for the input's length on every call, so any length runs.

The attention itself is `scaled_dot_product_attention(is_causal=True)`, whatever backend torch picks
(kernel label `torch.sdpa`). The projections have biases, as torch's nn.MultiheadAttention has.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmbench.models.mixers import Mixer

if TYPE_CHECKING:
    from ssmbench.models.architecture import SmallModelConfig

SDPA_KERNEL = "torch.sdpa"
ROPE_BASE = 10_000.0


class PositionLimitError(ValueError):
    """The input is longer than a learned position table: the model cannot run at that length (a result,
    like an out-of-memory, not a bug)."""


class CausalSelfAttention(nn.Module):
    """(batch, L, d_model) -> (batch, L, d_model) with n_heads heads of d_model / n_heads."""

    def __init__(self, d_model: int, n_heads: int, rotary: bool = False, dropout: float = 0.0, device=None,
                 dtype=None):
        super().__init__()
        self.dropout = dropout  # on the attention weights, in training only
        if d_model % n_heads:
            raise ValueError(f"attention: d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_dim, self.rotary = n_heads, d_model // n_heads, rotary
        if rotary and self.head_dim % 2:
            raise ValueError(f"attention: rotary positions need an even head_dim, got {self.head_dim}")
        self.qkv = nn.Linear(d_model, 3 * d_model, device=device, dtype=dtype)
        self.out_proj = nn.Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, d_model = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            cos, sin = rotary_tables(length, self.head_dim, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)  # (batch, heads, L, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d_model))


def rotary_tables(length: int, head_dim: int, device) -> tuple[Tensor, Tensor]:
    """cos and sin of position × frequency, (L, head_dim), in float32 (positions up to 2^24 are exact)."""
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i + head_dim/2}) by its position's angle; x (..., L, head_dim)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class SinusoidalPositions(nn.Module):
    """Vaswani et al.'s fixed sinusoids, computed for the length asked: no parameters, no limit.

    They are scaled to the token embeddings' initial size (per-dimension RMS 0.02, the N(0, 0.02) of the
    embedding init): unscaled, each dimension has RMS 0.71, 35 times the tokens', and after the block's
    RMSNorm the token identities are noise on top of the positions. Measured on induction heads (L=64,
    d_model 64, 4 heads, Adam 1e-3): unscaled, held-out accuracy stayed at chance for 3,000 steps; scaled,
    it passed 95% by step 800, as with a learned position table (GPT-2's, initialised at that scale)."""

    scale = 0.02 * math.sqrt(2.0)  # a sinusoid's RMS is 1/sqrt(2)

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def forward(self, length: int, device, dtype) -> Tensor:
        half = (self.d_model + 1) // 2
        freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=device, dtype=torch.float32) * 2
                         / self.d_model)
        angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freq)
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # sin, cos interleaved
        return (self.scale * table[:, : self.d_model]).to(dtype)


class LearnedPositions(nn.Module):
    """A learned table of `max_positions` rows (GPT-2's wpe)."""

    def __init__(self, max_positions: int, d_model: int, device=None, dtype=None):
        super().__init__()
        self.max_positions = max_positions
        self.table = nn.Embedding(max_positions, d_model, device=device, dtype=dtype)

    def forward(self, length: int, device, dtype) -> Tensor:
        if length > self.max_positions:
            raise PositionLimitError(
                f"sequence length {length} exceeds the learned position table ({self.max_positions} "
                "positions, abs_positions='learned'); use abs_positions='sinusoidal' or mha-rope to run at "
                "any length")
        return self.table.weight[:length].to(dtype)


def absolute_positions(config: SmallModelConfig, device=None, dtype=None) -> nn.Module:
    """The module the builder adds to the token embeddings when a mixer wants absolute positions:
    called with (length, device, dtype), it returns (length, d_model)."""
    if config.abs_positions == "learned":
        return LearnedPositions(config.max_positions, config.d_model, device=device, dtype=dtype)
    return SinusoidalPositions(config.d_model)


def mha_abs_mixer(config: SmallModelConfig, *, device="cpu", dtype=None,
                  allow_torch_on_cuda: bool = False) -> Mixer:
    """One attention layer without positions of its own; the builder adds absolute ones at the input."""
    module = CausalSelfAttention(config.d_model, config.n_heads, rotary=False, dropout=config.attn_dropout,
                                 device=device, dtype=dtype)
    return Mixer(module, SDPA_KERNEL, positions="absolute")


def mha_rope_mixer(config: SmallModelConfig, *, device="cpu", dtype=None,
                   allow_torch_on_cuda: bool = False) -> Mixer:
    """One attention layer that rotates its queries and keys by position."""
    module = CausalSelfAttention(config.d_model, config.n_heads, rotary=True, dropout=config.attn_dropout,
                                 device=device, dtype=dtype)
    return Mixer(module, SDPA_KERNEL)
