"""Small language models built from scratch for the synthetic tasks (selective copying, induction heads,
MQAR, MAD's): one list of layers, sequence mixers and channel mixers alike (SmallModelConfig.layers).

    tokens -> embedding (+ absolute positions, if a mixer asks) (-> dropout, if asked)
           -> for each layer of the list: [RMSNorm -> layer -> + residual] -> RMSNorm
           -> LM head, tied to the embedding (`head: tied`) or a Linear with a bias (`untied`)
           -> logits (batch, L, vocab)

The Mamba paper's models are a mixer repeated (`mixer: mamba, n_layers: 2`), with no MLP: that is how its
parameter counts come out, and it is mamba_ssm's MambaLMHeadModel with d_intermediate=0. MAD's are
`mamba, swiglu, mamba, swiglu`: a channel mixer is one more entry of the list, in a block of its own (as in
MAD-lab's LanguageModel), and a hybrid is a list of two or more sequence mixers. The module names follow
MambaLMHeadModel (`backbone.embedding`, `backbone.layers.{i}.norm`, `backbone.layers.{i}.mixer`,
`backbone.norm_f`, `lm_head`), so a Mamba model's state_dict loads into mamba_ssm's own model
(rms_norm=True, same sizes); a channel mixer's block is `backbone.layers.{i}` too, its layer `mixer`.

`head: compression` is MAD's auto-encoder for its compression task (CompressionAE below; MAD-lab's
benchmark.py picks that backbone for compression, the LM for the other five tasks): the backbone reads
the sequence into the hidden state at its last position, and every position is decoded from that one
vector by an MLP. Its interface is the LM's: token ids in, logits (batch, L, vocab) out, where the logits
at position l reconstruct input token l.

Norm: RMSNorm (eps 1e-5) for every mixer. It is what MambaLMHeadModel uses by default (rms_norm=True), so
the Mamba models match the calibration runs made with mamba_ssm; using the same norm for the attention
baselines keeps the mixer the only difference between the rows of a table. `block: zoology` builds zoology's
models instead (its MQAR Figure 2; ZoologyBlock): LayerNorm blocks that add their second norm's output to
the residual stream around every non-Mamba layer, RMSNorm pre-norm blocks around Mamba's, a final
LayerNorm.

Initialisation: each layer's own (TorchMamba draws exactly as mamba_ssm's Mamba), then the model-level
scheme of `init`:
    mamba_ssm (default)  mamba_ssm's `_init_weights`, GPT-2's scheme, for every layer alike: embeddings (tokens,
                         learned positions) N(0, 0.02), Linear biases zero (except those marked `_no_reinit`:
                         Mamba's dt_proj, Hyena's filter FFN), and each branch's output weight (`out_proj`, a
                         channel mixer's `w3` or `proj`) re-drawn from torch's default and divided by
                         sqrt(n_layers), every entry of the list counting as a layer (mamba_ssm's
                         n_residuals_per_layer · n_layer)
    mad                  MAD-lab's: for the LM (language_model.py, after its Dec 2024 "fix mamba init"),
                         embeddings N(0, 0.02) and every Linear bias zero but dt_proj's, weights as the layers
                         drew them; for compression (auto_encoder.py, never changed), every Linear weight
                         N(0, 0.02) and every bias zero, dt_proj's too. MAD's published scores predate that fix:
                         their LMs were initialised as the auto-encoder still is.
    zoology              zoology's LanguageModel (zoology/model.py at dbcb60d): for a model of Mamba layers
                         mamba_ssm's scheme above (n_residuals_per_layer 1); for any other, GPT-2's: every
                         Linear and embedding N(0, 0.02), biases zero, out_proj N(0, 0.02/sqrt(2·n_layers))

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

Parameter counts of MAD's presets (ssmbench/models/architecture.py; width 128, vocab 16, MAD's baseline;
checked in tests/test_mad_builder.py), per layer:
    mamba   d_state 4, d_conv 4, expand 2 (d_inner 256, dt_rank 8): in_proj 128·512 = 65,536; conv1d 256·4 +
            256 = 1,280; x_proj 256·(8 + 2·4) = 4,096; dt_proj 8·256 + 256 = 2,304; A_log 256·4 = 1,024; D 256;
            out_proj 256·128 = 32,768                                                          -> 107,264
    attention (16 heads or 1): qkv 128·384 + 384 = 49,536; out_proj 128·128 + 128 = 16,512    ->  66,048
    hyena   order 2, inner_factor 4, proj_groups 4 (ssmbench/models/mixers/hyena.py)           -> 123,964
    swiglu  w1, w2 128·352, w3 352·128 (ssmbench/models/mixers/channel.py)                      -> 135,168
  model = embedding 16·128 = 2,048 + 4 × RMSNorm 128 + norm_f 128 + untied head 128·16 + 16 = 2,064
          + the four layers:
    mad-attention, mad-attention-1h   2 × 66,048 + 2 × 135,168 + 4,752                         = 407,184
    mad-hyena                         2 × 123,964 + 2 × 135,168 + 4,752                        = 523,016
    mad-mamba                         2 × 107,264 + 2 × 135,168 + 4,752                        = 489,616
    mad-hybrid                        107,264 + 66,048 + 2 × 135,168 + 4,752                   = 448,400
  MAD-lab's own models of these layers have the same counts, but for Hyena's learned positional features
  (3·L more: 96 at L = 32). `head: compression` adds the decoder, 2 × (RMSNorm 128 + Linear 128·128 + 128)
  = 33,280 (mad-mamba: 522,896); vocabulary V adds 2 × 128·(V - 16) + (V - 16) with the untied head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssmbench.models.architecture import ABS_POSITIONS, PRESETS, SmallModelConfig
from ssmbench.models.mixers import HYBRID, Mixer, get_mixer, is_channel_mixer

__all__ = ["ABS_POSITIONS", "PRESETS", "BuiltModel", "SmallModelConfig", "build_model"]

NORM_EPS = 1e-5
EMBEDDING_STD = 0.02
# The last Linear of each residual branch, re-drawn and scaled by 1/sqrt(layers) in mamba_ssm's scheme
# (mamba_ssm rescales out_proj and its MLP's fc2; here the channel mixers' w3 and proj).
BRANCH_OUTPUTS = frozenset({"out_proj.weight", "w3.weight", "proj.weight"})


@dataclass
class BuiltModel:
    module: nn.Module  # input_ids (batch, L) -> logits (batch, L, vocab_size)
    kernel: str  # the sequence mixers' code path, recorded with every result
    n_params: int  # counted, tied weights once
    config: SmallModelConfig


class Block(nn.Module):
    """Pre-norm residual block around one layer (a sequence or a channel mixer)."""

    def __init__(self, mixer: nn.Module, d_model: int, device=None, dtype=None):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=NORM_EPS, device=device, dtype=dtype)
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))


class ZoologyBlock(nn.Module):
    """zoology's TransformerBlock with the identity as its state mixer, as its MQAR Figure 2 builds every
    non-Mamba model (HazyResearch/zoology, zoology/model.py at dbcb60d). zoology passes (hidden, residual)
    pairs and adds each block's output to the residual at the start of the next block (or before the
    final norm); written out on the residual stream r, one block is

        r <- r + mixer(LayerNorm1(r))
        r <- r + LayerNorm2(r)          the identity state mixer's output, added like any branch's

    so the second norm's output joins the stream: not the plain pre-norm block (Block)."""

    def __init__(self, mixer: nn.Module, d_model: int, device=None, dtype=None):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=NORM_EPS, device=device, dtype=dtype)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model, eps=NORM_EPS, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm(x))
        return x + self.norm2(x)


def zoology_mamba_block(name: str) -> bool:
    """Whether zoology puts this layer in its MambaBlock (RMSNorm pre-norm, ssmbench's Block) rather than its
    TransformerBlock: its configs' rule, `'mamba' in sequence_mixer`."""
    return "mamba" in name


class Backbone(nn.Module):
    """Embedding, then the blocks in order, then (`final_norm`) norm_f: hidden states (batch, L, d_model).
    `block: zoology`: zoology's blocks (ZoologyBlock around every non-Mamba layer) and its final LayerNorm."""

    def __init__(self, config: SmallModelConfig, mixers: list[nn.Module], positions: nn.Module | None,
                 final_norm: bool = True, device=None, dtype=None):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, device=device, dtype=dtype)
        self.positions = positions  # None, or called as positions(L, device, dtype) -> (L, d_model)
        # No module at p = 0: a dropout of nothing would still draw random numbers every step.
        self.embed_dropout = nn.Dropout(config.embed_dropout) if config.embed_dropout else None
        zoology = config.block == "zoology"
        self.layers = nn.ModuleList(
            (ZoologyBlock if zoology and not zoology_mamba_block(name) else Block)(m, config.d_model, device=device,
                                                                                 dtype=dtype)
            for name, m in zip(config.layer_mixers, mixers, strict=True))
        norm = nn.LayerNorm if zoology else nn.RMSNorm
        self.norm_f = norm(config.d_model, eps=NORM_EPS, device=device, dtype=dtype) if final_norm else None

    def forward(self, input_ids: Tensor) -> Tensor:
        x = self.embedding(input_ids)
        if self.positions is not None:
            x = x + self.positions(input_ids.shape[1], x.device, x.dtype)
        if self.embed_dropout is not None:
            x = self.embed_dropout(x)
        for layer in self.layers:
            x = layer(x)
        return x if self.norm_f is None else self.norm_f(x)


class SmallLM(nn.Module):
    """A language model: each position's logits from its hidden state. The head is tied to the embedding
    (no bias), or its own Linear with a bias (`tied=False`, MAD-lab's LanguageModel)."""

    def __init__(self, backbone: Backbone, tied: bool = True, device=None, dtype=None):
        super().__init__()
        self.backbone = backbone
        vocab, d_model = backbone.embedding.weight.shape
        self.lm_head = nn.Linear(d_model, vocab, bias=not tied, device=device, dtype=dtype)
        if tied:
            self.lm_head.weight = backbone.embedding.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids (batch, L) -> logits (batch, L, vocab_size)."""
        return self.lm_head(self.backbone(input_ids))


class CompressionAE(nn.Module):
    """MAD's auto-encoder (mad-lab mad/model/auto_encoder.py, global_pool 'last'): the sequence is read
    into one vector, the hidden state at its last position (the aggregation token: the compression task's
    last input token), and every position is decoded from that vector and the position alone.

        z = backbone(input_ids)[:, -1]                              (batch, d_model), the bottleneck
        x_l = z + sincos_l                                          MAD's posemb_sincos_1d, unscaled
        x_l = GELU(W2 RMSNorm(GELU(W1 RMSNorm(x_l))))               `decoder`, width d_model, biases
        logits_l = lm_head(norm_f(x_l))                             (batch, L, vocab_size), a Linear with a bias

    Deviations from MAD-lab: it decodes as many positions as the input has (MAD-lab: always max_length, the
    task's sequence length, which is the same thing in MAD's tasks); its other pools ('avg', 'cls') are not
    offered: MAD's benchmark uses 'last'.
    """

    def __init__(self, backbone: Backbone, device=None, dtype=None):
        super().__init__()
        self.backbone = backbone  # no norm_f: the decoder's first RMSNorm comes after the positions are added
        vocab, d_model = backbone.embedding.weight.shape
        factory = {"device": device, "dtype": dtype}
        self.decoder = nn.Sequential(nn.RMSNorm(d_model, eps=NORM_EPS, **factory), nn.Linear(d_model, d_model, **factory),
                                     nn.GELU(), nn.RMSNorm(d_model, eps=NORM_EPS, **factory),
                                     nn.Linear(d_model, d_model, **factory), nn.GELU())
        self.norm_f = nn.RMSNorm(d_model, eps=NORM_EPS, **factory)
        self.lm_head = nn.Linear(d_model, vocab, **factory)

    def encode(self, input_ids: Tensor) -> Tensor:
        """input_ids (batch, L) -> the aggregation token's hidden state (batch, d_model)."""
        return self.backbone(input_ids)[:, -1]

    def decode(self, z: Tensor, length: int) -> Tensor:
        """z (batch, d_model) -> logits (batch, length, vocab_size), one position at a time."""
        x = z[:, None] + sincos_positions(length, z.shape[-1], z.device).to(z.dtype)
        return self.lm_head(self.norm_f(self.decoder(x)))

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.decode(self.encode(input_ids), input_ids.shape[1])


def sincos_positions(length: int, d_model: int, device) -> Tensor:
    """MAD-lab's posemb_sincos_1d (fairseq's): (length, d_model), sines then cosines of positions at
    frequencies 10000^(-i/(d/2 - 1)), a zero column when d_model is odd."""
    half = d_model // 2
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -(math.log(10_000.0) / (half - 1)))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq[None]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(table, (0, d_model % 2))


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
        compression = config.head == "compression"
        backbone = Backbone(config, [m.module for m in mixers], positions, not compression, device, dtype)
        module = CompressionAE(backbone, device, dtype) if compression else \
            SmallLM(backbone, config.head == "tied", device, dtype)
        _initialise(module, config)
    n_params = sum(p.numel() for p in module.parameters())
    return BuiltModel(module=module, kernel=_kernel(config, mixers), n_params=n_params, config=config)


def _kernel(config: SmallModelConfig, mixers: list[Mixer]) -> str:
    """The model's code path: its sequence mixer's; a hybrid's, each of its mixers' in layer order, joined by
    '+'. Channel mixers are plain matmuls and are not named."""
    kernels = list(dict.fromkeys(m.kernel for name, m in zip(config.layer_mixers, mixers, strict=True)
                                 if not is_channel_mixer(name)))
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


def _initialise(model: nn.Module, config: SmallModelConfig) -> None:
    """The model-level initialisation, after each layer's own (module doc)."""
    if config.init == "zoology" and not all(zoology_mamba_block(name) for name in config.layer_mixers):
        _init_zoology_gpt2(model, config.n_layers)
        return
    if config.init in ("mamba_ssm", "zoology"):  # zoology's MambaBlock models: mamba_ssm's scheme itself
        model.apply(lambda m: _init_weights(m, config.n_layers))
        return
    autoencoder = config.head == "compression"
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=EMBEDDING_STD)
        elif isinstance(m, nn.Linear):
            if autoencoder:  # MAD-lab's AutoEncoder._init_weights: every Linear, Mamba's dt_proj too
                nn.init.normal_(m.weight, std=EMBEDDING_STD)
            if m.bias is not None and (autoencoder or not name.endswith("dt_proj")):
                nn.init.zeros_(m.bias)  # MAD-lab's LanguageModel keeps the one bias its layers mark: dt_proj's


def _init_weights(module: nn.Module, n_layers: int) -> None:
    """mamba_ssm's MixerModel `_init_weights` (mamba_ssm/models/mixer_seq_simple.py) with its defaults,
    applied to every submodule; n_layers counts every residual branch (mamba_ssm's n_residuals_per_layer ·
    n_layer), a channel mixer's too."""
    if isinstance(module, nn.Linear) and module.bias is not None:
        if not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=EMBEDDING_STD)
    for name, p in module.named_parameters():
        if name in BRANCH_OUTPUTS:
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            with torch.no_grad():
                p /= math.sqrt(n_layers)


def _init_zoology_gpt2(model: nn.Module, n_layers: int) -> None:
    """zoology's `_init_weights` for its TransformerBlock models (zoology/model.py at dbcb60d): every Linear
    N(0, 0.02) with zero biases, every embedding (tokens, learned positions) N(0, 0.02), and every out_proj
    weight N(0, 0.02 / sqrt(2 n_layers)) (GPT-2's scaled residual branches: 0.01 at 2 layers)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=EMBEDDING_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=EMBEDDING_STD)
    for name, p in model.named_parameters():
        if name.endswith("out_proj.weight"):
            nn.init.normal_(p, std=EMBEDDING_STD / math.sqrt(2 * n_layers))
