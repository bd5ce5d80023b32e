"""S4D: a diagonal linear time-invariant SSM, computed as one long convolution through the FFT.

Gu, Gupta, Goel & Ré 2022, "On the Parameterization and Initialization of Diagonal State Space Models"
(arXiv 2206.11893), the "S4" inner layer of the Mamba paper's Table 1 (Gu & Dao 2023, §3.1 and §4.1.1:
LTI SSMs such as S4 cannot select, so they fail selective copying) and the diagonal SSM inside H3.

Per channel h (d_inner of them), with N/2 complex modes n standing for N real state dimensions (each mode
and its conjugate):

    continuous      x'(t) = A x(t) + B u(t),  y(t) = 2 Re(C x(t)) + D u(t),  A = diag(A_n), Re A_n < 0
    ZOH, step dt    Abar_n = exp(dt A_n),  Bbar_n = (exp(dt A_n) - 1) / A_n · B_n             (§2 of S4D)
    recurrence      x_t = Abar x_{t-1} + Bbar u_t,  y_t = 2 Re(C x_t) + D u_t
    convolution     y = K * u + D u,  K_l = 2 Re( sum_n C_n Bbar_n Abar_n^l ),  l = 0 .. L-1

B is folded into C (B_n = 1), as S4D's own layer does. Initialisation (per channel, n = 0 .. N/2-1):
    S4D-Lin  A_n = -1/2 + i π n
    S4D-Inv  A_n = -1/2 + i (N/π) (N / (2n + 1) - 1)
    dt log-uniform in [1e-3, 1e-1]; C complex normal; D standard normal.
Parameters: log_dt (d_inner), log_A_real, A_imag (d_inner, N/2), C (d_inner, N/2, 2) as real pairs, D
(d_inner): d_inner · (2N + 2) in all.

The convolution runs as `fft_causal_conv`: zero-padded to 2L, so the FFT's circular convolution is the
causal linear one, in float32 whatever the autocast. `S4D.recurrent` is the step-by-step form, the oracle
the tests check the FFT path against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssmbench.models.mixers import SSM_INITS as INITS

FFT_KERNEL = "torch.fft"
VANDERMONDE_CHUNK = 8192  # positions per block when building K: bounds the (d_inner, N/2, block) temporary


def fft_causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """y_t = sum_{s <= t} k_{t-s} u_s for every channel. u (batch, H, L), k (H, L) -> (batch, H, L),
    computed in float32 and returned in u's dtype."""
    length = u.shape[-1]
    with torch.autocast(u.device.type, enabled=False):
        n = 2 * length
        spectrum = torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n)
        return torch.fft.irfft(spectrum, n=n)[..., :length].to(u.dtype)


def fft_conv_skip(u: Tensor, k: Tensor, d: Tensor) -> Tensor:
    """y = k * u + d ⊙ u, in float32, returned in u's dtype: the causal convolution `fft_causal_conv` plus
    a skip connection weighted per channel by d (H,)."""
    with torch.autocast(u.device.type, enabled=False):
        y = fft_causal_conv(u.float(), k) + d[:, None] * u.float()
    return y.to(u.dtype)


def direct_causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """The same sum written out as a sum of shifted copies, O(L²): the reference for `fft_causal_conv`."""
    length = u.shape[-1]
    y = torch.zeros_like(u, dtype=torch.float32)
    for lag in range(length):
        y[..., lag:] += k[:, lag, None] * u[..., : length - lag].float()
    return y.to(u.dtype)


def s4d_init_imag(init: str, d_inner: int, n_modes: int) -> Tensor:
    """Im A_n for every channel (d_inner, N/2): S4D-Lin or S4D-Inv."""
    n = torch.arange(n_modes, dtype=torch.float32)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        n_state = 2 * n_modes
        imag = n_state / math.pi * (n_state / (2 * n + 1) - 1)
    else:
        raise ValueError(f"S4D init must be one of {INITS}, got {init!r}")
    return imag.expand(d_inner, n_modes).clone()


class S4D(nn.Module):
    """The inner layer: (batch, d_inner, L) -> (batch, d_inner, L), y = K * u + D u, see the module doc."""

    def __init__(self, d_inner: int, d_state: int = 16, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, device=None, dtype=None):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"S4D: d_state must be even (N/2 conjugate pairs of modes), got {d_state}")
        n_modes = d_state // 2
        log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(d_inner, n_modes, dtype=torch.cfloat)
        # Float32 always (complex arithmetic on them), as mamba_ssm keeps A_log and D in float32.
        self.log_dt = nn.Parameter(log_dt.to(device))
        self.log_A_real = nn.Parameter(torch.full((d_inner, n_modes), math.log(0.5), device=device))
        self.A_imag = nn.Parameter(s4d_init_imag(init, d_inner, n_modes).to(device))
        self.C = nn.Parameter(torch.view_as_real(c).to(device))
        self.D = nn.Parameter(torch.randn(d_inner).to(device))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True

    def discretised(self) -> tuple[Tensor, Tensor, Tensor]:
        """(dt·A, Abar, Bbar), each (d_inner, N/2) complex: the ZOH of the module doc, B = 1."""
        a = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dt_a = a * torch.exp(self.log_dt)[:, None]
        return dt_a, torch.exp(dt_a), torch.expm1(dt_a) / a

    def kernel(self, length: int) -> Tensor:
        """K_l = 2 Re(sum_n C_n Bbar_n exp(l dt A_n)), (d_inner, L) float32, built in blocks of positions."""
        with torch.autocast(self.D.device.type, enabled=False):
            dt_a, _, b_bar = self.discretised()
            c_bbar = torch.view_as_complex(self.C) * b_bar
            blocks = []
            for start in range(0, length, VANDERMONDE_CHUNK):
                pos = torch.arange(start, min(length, start + VANDERMONDE_CHUNK), device=dt_a.device)
                powers = torch.exp(dt_a[..., None] * pos)  # (d_inner, N/2, block)
                blocks.append(2 * torch.einsum("hn,hnl->hl", c_bbar, powers).real)
            return torch.cat(blocks, dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        return fft_conv_skip(u, self.kernel(u.shape[-1]), self.D)

    def recurrent(self, u: Tensor) -> Tensor:
        """The same map, one step per token: x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re(C x_t) + D u_t."""
        _, a_bar, b_bar = self.discretised()
        c = torch.view_as_complex(self.C)
        x = torch.zeros(u.shape[0], *a_bar.shape, dtype=a_bar.dtype, device=u.device)  # (batch, d_inner, N/2)
        ys = []
        for u_t in u.float().unbind(-1):
            x = a_bar * x + b_bar * u_t[..., None]
            ys.append(2 * (c * x).sum(-1).real + self.D * u_t)
        return torch.stack(ys, dim=-1).to(u.dtype)
