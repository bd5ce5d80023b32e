"""The architecture grid of the Mamba paper's Table 1 (Gu & Dao 2023, §4.1.1): three blocks around three
inner sequence layers, for the selective-copying task.

Inner layers, each (batch, d_inner, L) -> (batch, d_inner, L), causal:
    S4     `S4D` (ssmbench.models.mixers.s4d): LTI diagonal SSM, FFT convolution
    Hyena  `HyenaFilter` (ssmbench.models.mixers.hyena): implicit long filter with decay window, FFT
    S6     `S6` below: the selective scan of Mamba (§3.2, Algorithm 2), dt, B and C computed from the input

Blocks, each (batch, L, d_model) -> (batch, L, d_model):
    no gate  `NoGate`: the inner layer alone between projections, u = W_in x, y = W_out GELU(inner(u)),
             d_inner = expand·d_model. The paper names the row only ("no gate"); this is the Mamba block
             with its gate branch and short convolution removed, and the GELU that S4's own layer puts
             after the SSM (state-spaces/s4, models/s4/s4d.py), so that the block is not linear in u.
    H3       `H3` (ssmbench.models.mixers.h3): q ⊙ inner(shift(k) ⊙ v), d_inner = d_model
    Mamba    `MambaBlock`: Mamba's block (§3.4, Figure 3) with any inner layer:
             x, z = W_in x; x = SiLU(conv1d(x)); y = W_out(inner(x) ⊙ SiLU(z)), d_inner = expand·d_model.
             With S6 inside it computes what `TorchMamba` computes (the `mamba` mixer, which is what the
             grid uses for that cell, with mamba_ssm's fused block on CUDA).

S6 runs mamba_ssm's `selective_scan_fn` on CUDA (kernel label `mamba_ssm-cuda`) and the repo's chunked
torch scan elsewhere (`torch-chunked-scan`), with the same rule as the `mamba` mixer: on CUDA without the
fused kernels it refuses unless `allow_torch_on_cuda`. S4 and Hyena run torch's FFT (`torch.fft`).

Parameters per layer (d_model D, d_inner E, N = d_state, R = dt_rank = ceil(D/16) as in Mamba):
    S4D     E·(2N + 2)                  S6  E·(R + 2N) + (R·E + E) + E·N + E
    Hyena   see ssmbench.models.mixers.hyena, C = E
    no gate D·E + E·D + inner           Mamba  2·D·E + (E·d_conv + E) + E·D + inner
    H3      4·(D² + D) + D·N + D + inner (E = D)
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmbench.errors import JobError
from ssmbench.models.mixers import Mixer
from ssmbench.models.mixers.h3 import H3
from ssmbench.models.mixers.hyena import HyenaFilter
from ssmbench.models.mixers.mamba import FUSED_KERNEL, TORCH_KERNEL
from ssmbench.models.mixers.s4d import FFT_KERNEL, S4D
from ssmbench.models.mixers.selective_scan import selective_scan_chunked

if TYPE_CHECKING:
    from ssmbench.models.architecture import SmallModelConfig


class S6(nn.Module):
    """The selective scan as an inner layer, with Mamba's parameters and initialisation (x_proj, dt_proj of
    rank `dt_rank`, ceil(d_model/16) as Mamba's "auto",
    A_log = log(1..N) per channel, D = 1; dt's bias the inverse softplus of a log-uniform draw in
    [1e-3, 1e-1]):

        dt, B, C = split(x_proj(u));  dt = softplus(dt_proj(dt))
        h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,  y_t = C_t h_t + D u_t,  A = -exp(A_log)
    """

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int = 4, fused: bool = False, device=None,
                 dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_state, self.dt_rank, self.fused = d_state, dt_rank, fused
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, **factory)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d_inner, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32, device=device))
                                  .repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner, device=device))

    def forward(self, u: Tensor) -> Tensor:
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        args = (u, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2).contiguous(),
                C.transpose(1, 2).contiguous(), self.D.float())
        kwargs = {"delta_bias": self.dt_proj.bias.float(), "delta_softplus": True}
        if self.fused:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            return selective_scan_fn(*args, **kwargs)
        return selective_scan_chunked(*args, **kwargs)


class NoGate(nn.Module):
    """u = in_proj(x); y = out_proj(GELU(inner(u))): Table 1's "no gate" row."""

    def __init__(self, d_model: int, d_inner: int, inner: nn.Module, device=None, dtype=None):
        super().__init__()
        self.in_proj = nn.Linear(d_model, d_inner, bias=False, device=device, dtype=dtype)
        self.inner = inner
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.inner(self.in_proj(x).transpose(1, 2)))
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    """Mamba's block around any inner layer: x, z = in_proj; inner(SiLU(conv1d(x))) ⊙ SiLU(z); out_proj."""

    def __init__(self, d_model: int, d_inner: int, inner: nn.Module, d_conv: int = 4, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False, **factory)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, **factory)
        self.inner = inner
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)

    def forward(self, hidden: Tensor) -> Tensor:
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., : hidden.shape[1]])
        return self.out_proj((self.inner(x) * F.silu(z)).transpose(1, 2))


def inner_layer(layer: str, d_inner: int, config: SmallModelConfig, device, dtype,
                allow_torch_on_cuda: bool) -> tuple[nn.Module, str]:
    """(inner layer, kernel label) for 's4d', 'hyena' or 's6' on `device`."""
    if layer == "s4d":
        return S4D(d_inner, config.d_state, config.ssm_init, device=device), FFT_KERNEL
    if layer == "hyena":
        return HyenaFilter(d_inner, config.filter_width, config.filter_emb_dim, config.filter_len,
                           device=device, dtype=dtype), FFT_KERNEL
    if layer == "s6":
        fused = _fused_scan(device, allow_torch_on_cuda)
        module = S6(d_inner, config.d_state, math.ceil(config.d_model / 16), fused, device=device, dtype=dtype)
        return module, FUSED_KERNEL if fused else TORCH_KERNEL
    raise ValueError(f"unknown inner layer {layer!r}: s4d, hyena or s6")


def _fused_scan(device, allow_torch_on_cuda: bool) -> bool:
    """Whether S6 runs mamba_ssm's CUDA scan: on CUDA when it imports; never a silent fallback."""
    if torch.device(device).type != "cuda":
        return False
    from ssmbench.models.kernels import fused_mamba_kernels

    kernels = fused_mamba_kernels()
    if kernels:
        return True
    if not allow_torch_on_cuda:
        raise JobError(f"S6 on {device}: mamba_ssm's fused kernels are unavailable ({kernels.reason}); install "
                       f"them, or allow the pure-torch scan on CUDA (allow_torch_on_cuda=True, recorded as kernel "
                       f"{TORCH_KERNEL!r})")
    return False


def grid_mixer(block: str, layer: str, config: SmallModelConfig, *, device="cpu", dtype=None,
               allow_torch_on_cuda: bool = False) -> Mixer:
    """One layer of Table 1's grid: `block` in ('no gate', 'h3', 'mamba') around `layer`."""
    d_inner = config.d_model if block == "h3" else config.expand * config.d_model
    inner, kernel = inner_layer(layer, d_inner, config, device, dtype, allow_torch_on_cuda)
    if block == "no gate":
        module = NoGate(config.d_model, d_inner, inner, device=device, dtype=dtype)
    elif block == "h3":
        module = H3(config.d_model, inner, config.d_state, device=device, dtype=dtype)
    elif block == "mamba":
        module = MambaBlock(config.d_model, d_inner, inner, config.d_conv, device=device, dtype=dtype)
    else:
        raise ValueError(f"unknown block {block!r}: 'no gate', 'h3' or 'mamba'")
    return Mixer(module, kernel)


# The registry's factories (ssmbench.models.mixers.MIXERS), one per cell of the grid; `mamba` is mamba.py's.
s4d_mixer = functools.partial(grid_mixer, "no gate", "s4d")
s6_mixer = functools.partial(grid_mixer, "no gate", "s6")
h3_mixer = functools.partial(grid_mixer, "h3", "s4d")
h3_hyena_mixer = functools.partial(grid_mixer, "h3", "hyena")
h3_s6_mixer = functools.partial(grid_mixer, "h3", "s6")
mamba_s4d_mixer = functools.partial(grid_mixer, "mamba", "s4d")
mamba_hyena_mixer = functools.partial(grid_mixer, "mamba", "hyena")
