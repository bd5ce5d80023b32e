"""H3: a shift SSM and a diagonal SSM between multiplicative gates.

Fu, Dao, Saab, Thomas, Rudra & Ré 2023, "Hungry Hungry Hippos: Towards Language Modeling with State Space
Models" (arXiv 2212.14052), §3.1, with one head of dimension 1 (the H3 paper's default, HazyResearch/H3's
`head_dim=1`). In the Mamba paper (Gu & Dao 2023) it is Table 1's "H3" architecture and Table 11's H3 row.

On x (batch, L, D), every product elementwise:

    q = W_Q x,  k = W_K x,  v = W_V x                        (Linear D -> D, with bias)
    k' = SSM_shift(k)                                        (remembers the last N tokens of k)
    y  = W_O ( q ⊙ inner(k' ⊙ v) )                           (inner: SSM_diag, an S4D, in H3 itself)

The shift SSM is an SSM with A the N×N shift matrix (ones below the diagonal) and B = e_1: its state is
the last N inputs, x_t = (u_t, u_{t-1}, ..., u_{t-N+1}), and y_t = C x_t + D u_t, so its convolution kernel
is C itself (N taps) and nothing beyond. C and D are learned per channel (standard normal at the start).
`ShiftSSM.recurrent` runs that shift register step by step; the tests check the FFT path against it.

The Mamba paper's Table 1 swaps the inner layer: SSM_diag (S4), Hyena's implicit long filter, or S6 (the
selective scan); ssmbench.models.mixers.grid builds each.
Parameters: W_Q, W_K, W_V, W_O 4·(D² + D); shift SSM D·N + D; plus the inner layer's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmbench.models.mixers.s4d import fft_conv_skip


class ShiftSSM(nn.Module):
    """(batch, D, L) -> (batch, D, L): y_t = sum_{j < N} C_j u_{t-j} + D u_t, per channel."""

    def __init__(self, channels: int, d_state: int = 16, device=None):
        super().__init__()
        self.C = nn.Parameter(torch.randn(channels, d_state, device=device))
        self.D = nn.Parameter(torch.randn(channels, device=device))

    def kernel(self, length: int) -> Tensor:
        """C as a length-L kernel: zero past its N taps (cut when L < N)."""
        taps = self.C.shape[1]
        return F.pad(self.C, (0, max(0, length - taps)))[:, :length]

    def forward(self, u: Tensor) -> Tensor:
        return fft_conv_skip(u, self.kernel(u.shape[-1]), self.D)

    def recurrent(self, u: Tensor) -> Tensor:
        """The state-space form: x_t = S x_{t-1} + e_1 u_t (S shifts down by one), y_t = C x_t + D u_t."""
        x = u.new_zeros(*u.shape[:2], self.C.shape[1], dtype=torch.float32)
        ys = []
        for u_t in u.float().unbind(-1):
            x = torch.cat([u_t[..., None], x[..., :-1]], dim=-1)
            ys.append((self.C * x).sum(-1) + self.D * u_t)
        return torch.stack(ys, dim=-1).to(u.dtype)


class H3(nn.Module):
    """The H3 block as a mixer: (batch, L, d_model) -> (batch, L, d_model), causal. `inner` maps
    (batch, d_model, L) to the same shape (an S4D in H3 itself)."""

    def __init__(self, d_model: int, inner: nn.Module, d_state: int = 16, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(d_model, d_model, **factory)
        self.k_proj = nn.Linear(d_model, d_model, **factory)
        self.v_proj = nn.Linear(d_model, d_model, **factory)
        self.shift = ShiftSSM(d_model, d_state, device=device)
        self.inner = inner
        self.out_proj = nn.Linear(d_model, d_model, **factory)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (proj(x).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = q * self.inner(self.shift(k) * v)
        return self.out_proj(y.transpose(1, 2))
