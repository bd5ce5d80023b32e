"""The Mamba mixer: mamba_ssm's fused module on CUDA, a pure-torch twin everywhere else.

`TorchMamba` has mamba_ssm's `Mamba` (mamba_ssm/modules/mamba_simple.py, 2.3.2) parameters, names, shapes
and initialisation, drawn in the same order, and computes what `Mamba.forward` computes on its non-fused
path (in_proj; causal depthwise conv1d + SiLU; x_proj into dt, B, C; dt_proj; selective scan with the z
gate and the D skip; out_proj), with `selective_scan_chunked` as the scan. So one state_dict serves both,
and a model trained on the CPU runs on the fused kernels unchanged (tests/gpu/test_builder_gpu.py checks
the outputs agree).

Which one runs is decided by the device alone and recorded as the kernel label; nothing falls back
silently: on CUDA without mamba_ssm's kernels, `make_mamba` refuses unless the caller allows the torch path
there, and then the label says `torch-chunked-scan`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmbench.errors import JobError
from ssmbench.models.mixers import Mixer
from ssmbench.models.mixers.selective_scan import selective_scan_chunked

if TYPE_CHECKING:
    from ssmbench.models.architecture import SmallModelConfig

FUSED_KERNEL = "mamba_ssm-cuda"
TORCH_KERNEL = "torch-chunked-scan"


class TorchMamba(nn.Module):
    """mamba_ssm's `Mamba` block (selective SSM mixer) in plain torch; same constructor arguments, plus
    `chunk_size` for the scan (None: `default_chunk_size(L)`). No decoding cache: full sequences only."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, chunk_size: int | None = None,
                 device=None, dtype=None):
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.chunk_size = chunk_size
        # The modules and random draws below come in mamba_ssm's order, so the same seed on the same
        # device gives the same weights.
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self._init_dt(dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory)
        # S4D-real initialisation, A = -(1..d_state) in every channel; A_log and D stay float32 whatever
        # the dtype, as in mamba_ssm.
        a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def _init_dt(self, dt_min: float, dt_max: float, dt_init: str, dt_scale: float, floor: float,
                 factory: dict) -> None:
        """dt_proj's weight uniform in ±dt_rank^-0.5 (variance preserving), and its bias the inverse
        softplus of a dt drawn log-uniformly in [dt_min, dt_max], so softplus(bias) starts there."""
        std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'constant' or 'random', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # a model-level init that zeroes Linear biases must skip it

    def forward(self, hidden_states: Tensor) -> Tensor:
        """(batch, L, d_model) -> (batch, L, d_model), causal."""
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (batch, 2·d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])  # left padding d_conv-1, right end cut: causal
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2·d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # the bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        y = selective_scan_chunked(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z,
                                   delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                   chunk_size=self.chunk_size)
        return self.out_proj(y.transpose(1, 2))


def make_mamba(d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *, device="cpu",
               dtype=None, allow_torch_on_cuda: bool = False) -> tuple[nn.Module, str]:
    """(module, kernel label) for the device. CUDA: mamba_ssm's `Mamba`, created on the device with
    `device=`/`dtype=`, when its kernels import; otherwise a JobError, or `TorchMamba` if
    `allow_torch_on_cuda`. Any other device: `TorchMamba`."""
    device = torch.device(device)
    if device.type == "cuda":
        from ssmbench.models.kernels import fused_mamba_kernels

        kernels = fused_mamba_kernels()
        if kernels:
            from mamba_ssm.modules.mamba_simple import Mamba

            module = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, device=device, dtype=dtype)
            return module, FUSED_KERNEL
        if not allow_torch_on_cuda:
            raise JobError(f"mixer 'mamba' on {device}: mamba_ssm's fused kernels are unavailable "
                           f"({kernels.reason}); install them, or allow the pure-torch scan on CUDA "
                           f"(allow_torch_on_cuda=True, recorded as kernel {TORCH_KERNEL!r})")
    module = TorchMamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, device=device, dtype=dtype)
    return module, TORCH_KERNEL


def mamba_mixer(config: SmallModelConfig, *, device="cpu", dtype=None,
                allow_torch_on_cuda: bool = False) -> Mixer:
    """The registry's factory: one Mamba layer at the config's d_model, d_state, d_conv and expand."""
    module, kernel = make_mamba(config.d_model, config.d_state, config.d_conv, config.expand, device=device,
                                dtype=dtype, allow_torch_on_cuda=allow_torch_on_cuda)
    return Mixer(module, kernel)
