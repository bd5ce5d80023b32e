"""Small language models built from scratch for the synthetic tasks (selective copying, induction heads,
MQAR): the paper's 2-layer, tiny-vocabulary models, with the sequence mixer as the only thing that varies.

    tokens -> embedding (+ absolute positions, if the mixer asks) (-> dropout, if asked)
           -> n_layers x [RMSNorm -> mixer -> + residual] -> RMSNorm
           -> LM head tied to the embedding -> logits (batch, L, vocab)

Blocks hold a mixer and nothing else (no MLP): that is how the paper's parameter counts come out, and it
is mamba_ssm's MambaLMHeadModel with d_intermediate=0. The module names follow MambaLMHeadModel
(`backbone.embedding`, `backbone.layers.{i}.norm`, `backbone.layers.{i}.mixer`, `backbone.norm_f`,
`lm_head`), so a Mamba model's state_dict loads into mamba_ssm's own model (rms_norm=True, same sizes).

Norm: RMSNorm (eps 1e-5) for every mixer. It is what MambaLMHeadModel uses by default (rms_norm=True), so
the Mamba models match the calibration runs made with mamba_ssm; using the same norm for the attention
baselines keeps the mixer the only difference between the rows of a table.

Initialisation: each mixer's own (TorchMamba draws exactly as mamba_ssm's Mamba), then mamba_ssm's
model-level `_init_weights`, which is GPT-2's scheme, for every mixer alike: embeddings (tokens, learned
positions) N(0, 0.02), Linear biases zero (except dt_proj's, marked `_no_reinit`), and each `out_proj`
weight re-drawn from torch's default and divided by sqrt(n_layers).

Parameter counts at the paper's sizes (vocab 16, 2 layers; checked in tests/test_builder.py):

    mamba, d_model 64, d_state 16, d_conv 4, expand 2 (d_inner 128, dt_rank 4), per layer:
        in_proj 64·256 = 16,384; conv1d 128·4 + 128 = 640; x_proj 128·(4 + 2·16) = 4,608;
        dt_proj 4·128 + 128 = 640; A_log 128·16 = 2,048; D 128; out_proj 128·64 = 8,192   -> 32,640
        model: embedding 16·64 = 1,024 + 2 × (32,640 + norm 64) + norm_f 64              = 66,496
      The calibration run's 66K; the paper's Table 11 says 74K (its exact setting is not given).
    mha-abs / mha-rope, d_model 128, 8 heads, per layer:
        qkv 128·384 + 384 = 49,536; out_proj 128·128 + 128 = 16,512                        -> 66,048
        model: embedding 16·128 = 2,048 + 2 × (66,048 + norm 128) + norm_f 128            = 134,528
      The paper's 137K; an untied head would add 2,048 (136,576). Sinusoidal and rotary positions have
      no parameters; a learned table adds max_positions·d_model (256 positions: 32,768).
    S4D, H3, Hyena and Table 1's grid (s4d, s6, h3, h3-hyena, h3-s6, mamba-s4d, mamba-hyena, hyena): the
      arithmetic per layer is in ssmbench/models/mixers/grid.py and hyena.py, the totals at the sizes of
      suites/synthetic_mixers.yaml in tests/test_mixers_lti.py (e.g. h3 at d_model 128: 147,584).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssmbench.models.architecture import ABS_POSITIONS, SmallModelConfig
from ssmbench.models.mixers import HYBRID, Mixer, get_mixer

__all__ = ["ABS_POSITIONS", "BuiltModel", "SmallModelConfig", "build_model"]

NORM_EPS = 1e-5
EMBEDDING_STD = 0.02


@dataclass
class BuiltModel:
    module: nn.Module  # input_ids (batch, L) -> logits (batch, L, vocab_size)
    kernel: str  # the mixers' code path, recorded with every result
    n_params: int  # counted, tied weights once
    config: SmallModelConfig


class Block(nn.Module):
    """Pre-norm residual block around one mixer."""

    def __init__(self, mixer: nn.Module, d_model: int, device=None, dtype=None):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=NORM_EPS, device=device, dtype=dtype)
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))


class Backbone(nn.Module):
    def __init__(self, config: SmallModelConfig, mixers: list[nn.Module], positions: nn.Module | None,
                 device=None, dtype=None):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, device=device, dtype=dtype)
        self.positions = positions  # None, or called as positions(L, device, dtype) -> (L, d_model)
        # No module at p = 0: a dropout of nothing would still draw random numbers every step.
        self.embed_dropout = nn.Dropout(config.embed_dropout) if config.embed_dropout else None
        self.layers = nn.ModuleList(Block(m, config.d_model, device=device, dtype=dtype) for m in mixers)
        self.norm_f = nn.RMSNorm(config.d_model, eps=NORM_EPS, device=device, dtype=dtype)

    def forward(self, input_ids: Tensor) -> Tensor:
        x = self.embedding(input_ids)
        if self.positions is not None:
            x = x + self.positions(input_ids.shape[1], x.device, x.dtype)
        if self.embed_dropout is not None:
            x = self.embed_dropout(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)


class SmallLM(nn.Module):
    def __init__(self, backbone: Backbone, device=None, dtype=None):
        super().__init__()
        self.backbone = backbone
        vocab, d_model = backbone.embedding.weight.shape
        self.lm_head = nn.Linear(d_model, vocab, bias=False, device=device, dtype=dtype)
        self.lm_head.weight = backbone.embedding.weight  # tied

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids (batch, L) -> logits (batch, L, vocab_size)."""
        return self.lm_head(self.backbone(input_ids))


def build_model(config: SmallModelConfig, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                allow_torch_on_cuda: bool = False) -> BuiltModel:
    """The model for `config` on `device`, its weights drawn from `seed` (the global RNG is left as it
    was). `allow_torch_on_cuda`: see ssmbench.models.mixers (a mixer's fused kernels missing on CUDA)."""
    device = torch.device(device)
    factories = [get_mixer(name) for name in config.layer_mixers]
    rng_devices = []
    if device.type == "cuda" and torch.cuda.is_available():  # without CUDA the mixers refuse the device
        rng_devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        mixers = [factory(config, device=device, dtype=dtype, allow_torch_on_cuda=allow_torch_on_cuda)
                  for factory in factories]
        positions = _positions(config, mixers, device, dtype)
        backbone = Backbone(config, [m.module for m in mixers], positions, device, dtype)
        module = SmallLM(backbone, device, dtype)
        module.apply(lambda m: _init_weights(m, config.n_layers))
    n_params = sum(p.numel() for p in module.parameters())
    return BuiltModel(module=module, kernel=_kernel(config, mixers), n_params=n_params, config=config)


def _kernel(config: SmallModelConfig, mixers: list[Mixer]) -> str:
    """The model's code path: its mixer's; a hybrid's, each of its mixers' in layer order, joined by '+'."""
    kernels = list(dict.fromkeys(m.kernel for m in mixers))
    if len(kernels) != 1 and config.mixer != HYBRID:
        raise RuntimeError(f"mixer {config.mixer!r}: layers report different kernels {sorted(kernels)}")
    return "+".join(kernels)


def _positions(config: SmallModelConfig, mixers: list[Mixer], device, dtype) -> nn.Module | None:
    """Absolute position embeddings when a layer's mixer asks for them (added once, at the input)."""
    asked = {m.positions for m in mixers} - {None}
    if not asked:
        return None
    if asked == {"absolute"}:
        from ssmbench.models.mixers.attention import absolute_positions

        return absolute_positions(config, device=device, dtype=dtype)
    raise ValueError(f"mixer {config.mixer!r}: unknown positions {sorted(asked)}")


def _init_weights(module: nn.Module, n_layers: int) -> None:
    """mamba_ssm's MixerModel `_init_weights` (mamba_ssm/models/mixer_seq_simple.py) with its defaults and
    no MLP (one residual per layer), applied to every submodule."""
    if isinstance(module, nn.Linear) and module.bias is not None:
        if not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=EMBEDDING_STD)
    for name, p in module.named_parameters():
        if name == "out_proj.weight":
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            with torch.no_grad():
                p /= math.sqrt(n_layers)
