"""The model zoo: short names mapped to each model's real architecture.

Every entry carries the full Hugging Face config of its model, so `weights: random` builds the real
full-size network offline (right for speed and memory, meaningless for quality), and the analytic sizes a
report needs (parameters, KV cache or SSM state per sequence) come from the same numbers.

Sources: the configs of the published checkpoints (openai-community/gpt2*, EleutherAI/pythia-*,
state-spaces/mamba-*-hf, state-spaces/mamba2-*, and for the other rows of the Mamba paper's Table 3
facebook/opt-*, EleutherAI/gpt-neo-*, EleutherAI/gpt-j-6b, RWKV/rwkv-4-*-pile); nominal parameter counts
from their model cards and from the Mamba paper (Gu & Dao, arXiv 2312.00752, Table 3).

Families: "transformer" (a KV cache that grows with the context), "ssm" (Mamba's selective state spaces),
"rnn" (RWKV: a linear-attention recurrence with a constant-size state, neither attention nor an SSM; it is
kept apart so that a report grouping by family never counts it as either) and "hybrid" (attention and a
Mamba mixer in one network, Falcon-H1: a sequence carries a KV cache and an SSM state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ssmbench.errors import UserError, did_you_mean

Family = Literal["transformer", "ssm", "rnn", "hybrid"]

# The byte-level tokenizer the tiny models use (ssmbench.models.tokenizers): no download, any text
# round-trips. Ids 0-255 are bytes, 256 is the end-of-text token.
BYTES_TOKENIZER = "bytes"
BYTES_EOS_ID = 256
_TINY_SPECIAL = {"bos_token_id": BYTES_EOS_ID, "eos_token_id": BYTES_EOS_ID}


class Architecture:
    """What ssmbench must know about one architecture, read from a transformers-style config dict.

    Each architecture answers for itself (its family, its widths, its position limit, and above all the size
    of the state a sequence carries while decoding), so a new one (S4D, H3, Hyena, ...) is one subclass and
    one line in ARCHITECTURES, without touching the generic code that uses these numbers.
    """

    family: Family

    def n_layers(self, config: dict[str, Any]) -> int:
        return int(config["num_hidden_layers"])

    def d_model(self, config: dict[str, Any]) -> int:
        return int(config["hidden_size"])

    def max_positions(self, config: dict[str, Any]) -> int | None:
        """The longest sequence the architecture accepts, or None when it has no hard limit."""
        return None

    def context_length(self, config: dict[str, Any]) -> int | None:
        """The longest context the model was trained to read (the hard limit where there is one): what a
        task that judges answers (phonebook recall) may give it. None: no stated limit (Mamba)."""
        return self.max_positions(config)

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        """Elements of the inference state one sequence carries after `context_len` tokens."""
        raise NotImplementedError

    def state_bytes_per_sequence(self, config: dict[str, Any], context_len: int, bytes_per_element: int) -> int:
        """Bytes of that state when every element has the model's dtype; an architecture that keeps part of its
        state in another dtype (RWKV keeps some in float32 whatever the model's dtype) says so here."""
        return self.state_elements_per_sequence(config, context_len) * bytes_per_element

    def state_traffic_factor(self) -> int:
        """How many times one decode step moves its state: a KV cache is read once (the new position's
        write is negligible); a recurrent state is read and written back (2)."""
        return 1 if self.family == "transformer" else 2

    def decode_state_traffic_bytes(self, config: dict[str, Any], context_len: int, bytes_per_element: int) -> int:
        """Bytes of inference state one decode step moves per sequence."""
        return self.state_bytes_per_sequence(config, context_len, bytes_per_element) * self.state_traffic_factor()


class _KVCache(Architecture):
    """Attention with a key and a value of d_model for every past token in every layer: grows with context."""

    family: Family = "transformer"

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        return 2 * self.n_layers(config) * self.d_model(config) * context_len


class GPT2(_KVCache):
    def n_layers(self, config: dict[str, Any]) -> int:
        return int(config["n_layer"])

    def d_model(self, config: dict[str, Any]) -> int:
        return int(config["n_embd"])

    def max_positions(self, config: dict[str, Any]) -> int | None:
        """GPT-2's learned position table ends at n_positions."""
        return int(config["n_positions"])


class GPTNeoX(_KVCache):
    """Pythia. Its rotary positions extrapolate: max_position_embeddings is where training stopped, not a limit."""

    def context_length(self, config: dict[str, Any]) -> int | None:
        return int(config["max_position_embeddings"])


class OPT(_KVCache):
    """OPT (Zhang et al. 2022, arXiv 2205.01068): a pre-LayerNorm decoder with a learned position table, so
    max_position_embeddings is a hard limit. Keys and values are hidden_size wide in every layer (heads x
    head dim), as the base class counts them."""

    def max_positions(self, config: dict[str, Any]) -> int | None:
        return int(config["max_position_embeddings"])


class GPTNeo(_KVCache):
    """GPT-Neo: learned positions (a hard limit at max_position_embeddings), and layers that alternate
    global attention with local attention over a sliding window of `window_size` (256) positions.

    A global layer keeps keys and values for every past token; a local layer needs only the window's, so
    the state counted here is, per layer, 2 x hidden_size x (context_len for a global layer, min(context_len,
    window_size) for a local one): what the architecture must keep. transformers' own GPTNeo cache
    (DynamicCache or StaticCache) does not exploit the window: it stores every position in the local layers
    too and masks them, so the memory it holds past 256 tokens is larger than this count (by 2 x hidden_size x
    (context_len - 256) per local layer).
    """

    def n_layers(self, config: dict[str, Any]) -> int:
        return int(config["num_layers"])

    def max_positions(self, config: dict[str, Any]) -> int | None:
        return int(config["max_position_embeddings"])

    def attention_layers(self, config: dict[str, Any]) -> list[str]:
        """'global' or 'local' for each layer, expanded from `attention_types` ([[["global", "local"], 12]]
        is the pair repeated 12 times) as transformers' GPTNeoConfig does, with its default when absent."""
        types = config.get("attention_types") or [[["global", "local"], 12]]
        return [kind for pattern, repeat in types for _ in range(int(repeat)) for kind in pattern]

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        window = int(config.get("window_size", 256))
        per_token = 2 * self.d_model(config)
        return sum(per_token * (context_len if kind == "global" else min(context_len, window))
                   for kind in self.attention_layers(config))


class GPTJ(GPT2):
    """GPT-J: rotary positions on the first `rotary_dim` (64) dimensions of each head, and a feed-forward block
    in parallel with attention. Its 16 heads of 256 make keys and values n_embd wide per layer. Rotary
    positions could extrapolate, but transformers precomputes their sines and cosines for n_positions rows
    only: a longer sequence fails there, so n_positions is a hard limit as the model is run."""


class RWKV(Architecture):
    """RWKV-4 (Peng et al. 2023, arXiv 2305.13048): a recurrent network whose time-mixing is a linear-attention
    recurrence (the WKV operator), so the state does not grow with the context.

    Its state per layer is the one transformers' RwkvModel passes along (`state`, five tensors of shape
    [batch, hidden_size, num_hidden_layers]): the last input of the feed-forward block's and of the
    time-mixing block's token shift (hidden_size each, in the model's dtype), and the WKV numerator, denominator
    and running maximum (aa, bb, pp: attention_hidden_size each, always float32). Family "rnn": it is neither
    attention with a KV cache nor a selective SSM. `context_length` is the length it was trained on, not a
    limit: the recurrence runs on (ssmbench's decoder feeds longer prompts in chunks of that length, the
    longest single pass transformers' WKV CUDA kernel takes).
    """

    family: Family = "rnn"

    def context_length(self, config: dict[str, Any]) -> int | None:
        return int(config["context_length"])

    def _widths(self, config: dict[str, Any]) -> tuple[int, int]:
        hidden = self.d_model(config)
        return hidden, int(config.get("attention_hidden_size") or hidden)

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        hidden, attention = self._widths(config)
        return self.n_layers(config) * (2 * hidden + 3 * attention)

    def state_bytes_per_sequence(self, config: dict[str, Any], context_len: int, bytes_per_element: int) -> int:
        hidden, attention = self._widths(config)
        return self.n_layers(config) * (2 * hidden * bytes_per_element + 3 * attention * 4)


class Mamba(Architecture):
    """A fixed-size convolution window and SSM state per layer, whatever the context."""

    family: Family = "ssm"

    def d_inner(self, config: dict[str, Any]) -> int:
        return int(config.get("expand", 2)) * self.d_model(config)

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        d_state, d_conv = int(config["state_size"]), int(config.get("conv_kernel", 4))
        return self.n_layers(config) * self.d_inner(config) * (d_state + d_conv)


class Mamba2(Mamba):
    """Mamba-2's convolution also runs over the B and C projections (n_groups x d_state each)."""

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        d_inner, d_state = self.d_inner(config), int(config["state_size"])
        conv_dim = d_inner + 2 * int(config.get("n_groups", 1)) * d_state
        return self.n_layers(config) * (d_inner * d_state + conv_dim * int(config.get("conv_kernel", 4)))


class FalconH1(Architecture):
    """Falcon-H1 (TII, 2025; transformers' FalconH1Model): every layer runs grouped-query attention and a
    Mamba-2 mixer side by side on the same input and adds their outputs, then an MLP. A sequence therefore
    carries both states in every layer: keys and values of num_key_value_heads x head_dim for each past
    token (grows with the context, read once a step) and Mamba-2's convolution window and SSM state (fixed,
    read and written back). Rotary positions: no hard limit."""

    family: Family = "hybrid"

    def _kv_per_token(self, config: dict[str, Any]) -> int:
        return 2 * int(config["num_key_value_heads"]) * int(config["head_dim"])

    def _ssm_elements(self, config: dict[str, Any]) -> int:
        d_ssm, d_state = int(config["mamba_d_ssm"]), int(config["mamba_d_state"])
        conv_dim = d_ssm + 2 * int(config["mamba_n_groups"]) * d_state
        return int(config["mamba_n_heads"]) * int(config["mamba_d_head"]) * d_state + conv_dim * int(config["mamba_d_conv"])

    def state_elements_per_sequence(self, config: dict[str, Any], context_len: int) -> int:
        return self.n_layers(config) * (self._kv_per_token(config) * context_len + self._ssm_elements(config))

    def decode_state_traffic_bytes(self, config: dict[str, Any], context_len: int, bytes_per_element: int) -> int:
        """The KV cache is read once, the SSM state read and written back."""
        per_layer = self._kv_per_token(config) * context_len + 2 * self._ssm_elements(config)
        return self.n_layers(config) * per_layer * bytes_per_element


ARCHITECTURES: dict[str, Architecture] = {"gpt2": GPT2(), "gpt_neox": GPTNeoX(), "opt": OPT(), "gpt_neo": GPTNeo(),
                                          "gptj": GPTJ(), "rwkv": RWKV(), "mamba": Mamba(), "mamba2": Mamba2(),
                                          "falcon_h1": FalconH1()}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo: what it is, where its weights live, and how to build it from scratch."""

    name: str
    arch: str  # a key of ARCHITECTURES (transformers' model_type)
    config: dict[str, Any]
    params_nominal: int
    hf_id: str | None = None  # a transformers checkpoint (AutoModelForCausalLM)
    mamba_ssm_id: str | None = None  # a mamba_ssm checkpoint (MambaLMHeadModel.from_pretrained)
    tokenizer: str | None = None  # hub id, or BYTES_TOKENIZER
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    # The context the checkpoint was trained on, where its config does not say (Falcon-H1's
    # max_position_embeddings sizes a rotary table, not the training context).
    trained_context: int | None = None

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.arch]

    @property
    def family(self) -> Family:
        return self.architecture.family

    @property
    def n_layers(self) -> int:
        return self.architecture.n_layers(self.config)

    @property
    def max_positions(self) -> int | None:
        return self.architecture.max_positions(self.config)

    @property
    def d_model(self) -> int:
        return self.architecture.d_model(self.config)

    @property
    def context_length(self) -> int | None:
        return self.trained_context or self.architecture.context_length(self.config)

    def state_elements_per_sequence(self, context_len: int) -> int:
        return self.architecture.state_elements_per_sequence(self.config, context_len)

    def state_bytes_per_sequence(self, context_len: int, bytes_per_element: int) -> int:
        """Analytic size of the inference state one sequence carries after `context_len` tokens.

        Transformers keep keys and values for every past token (grows with the context); Mamba keeps a
        fixed-size convolution window and SSM state, RWKV a fixed-size recurrent state (neither does).
        """
        return self.architecture.state_bytes_per_sequence(self.config, context_len, bytes_per_element)

    def decode_state_traffic_bytes(self, context_len: int, bytes_per_element: int) -> int:
        """Bytes of inference state one decode step moves per sequence."""
        return self.architecture.decode_state_traffic_bytes(self.config, context_len, bytes_per_element)


def _gpt2(n_embd: int, n_layer: int, n_head: int, vocab: int = 50257, positions: int = 1024) -> dict[str, Any]:
    return {"model_type": "gpt2", "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
            "vocab_size": vocab, "n_positions": positions}


def _pythia(hidden: int, layers: int, heads: int, vocab: int = 50304, positions: int = 2048) -> dict[str, Any]:
    return {"model_type": "gpt_neox", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": 4 * hidden, "vocab_size": vocab,
            "max_position_embeddings": positions, "rotary_pct": 0.25, "rotary_emb_base": 10000,
            "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "tie_word_embeddings": False}


def _opt(hidden: int, layers: int, heads: int, vocab: int = 50272, positions: int = 2048) -> dict[str, Any]:
    """facebook/opt-1.3b and up: the input embedding is hidden_size wide (no projection, unlike opt-350m)."""
    return {"model_type": "opt", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "ffn_dim": 4 * hidden, "word_embed_proj_dim": hidden, "vocab_size": vocab,
            "max_position_embeddings": positions, "do_layer_norm_before": True, "activation_function": "relu",
            "enable_bias": True, "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 2,
            "pad_token_id": 1}


def _gpt_neo(hidden: int, layers: int, heads: int, vocab: int = 50257, positions: int = 2048) -> dict[str, Any]:
    """EleutherAI/gpt-neo-*: global and local (window 256) attention alternate, layer by layer."""
    return {"model_type": "gpt_neo", "hidden_size": hidden, "num_layers": layers, "num_heads": heads,
            "attention_types": [[["global", "local"], layers // 2]], "window_size": 256, "intermediate_size": None,
            "vocab_size": vocab, "max_position_embeddings": positions, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "bos_token_id": 50256, "eos_token_id": 50256}


def _gptj(n_embd: int, n_layer: int, n_head: int, rotary_dim: int = 64, vocab: int = 50400,
          positions: int = 2048) -> dict[str, Any]:
    """EleutherAI/gpt-j-6b: its embedding has 50400 rows for the 50257 tokens of the GPT-2 tokenizer."""
    return {"model_type": "gptj", "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head, "rotary_dim": rotary_dim,
            "n_inner": None, "vocab_size": vocab, "n_positions": positions, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256}


def _rwkv4(hidden: int, layers: int, vocab: int = 50277, context: int = 1024) -> dict[str, Any]:
    """RWKV/rwkv-4-*-pile: GPT-NeoX-20B's tokenizer (50277 ids), trained on the Pile with 1024-token contexts."""
    return {"model_type": "rwkv", "hidden_size": hidden, "num_hidden_layers": layers, "attention_hidden_size": hidden,
            "intermediate_size": 4 * hidden, "vocab_size": vocab, "context_length": context,
            "layer_norm_epsilon": 1e-5, "rescale_every": 6, "tie_word_embeddings": False}


def _mamba(hidden: int, layers: int, vocab: int = 50280) -> dict[str, Any]:
    return {"model_type": "mamba", "hidden_size": hidden, "num_hidden_layers": layers, "vocab_size": vocab,
            "state_size": 16, "expand": 2, "conv_kernel": 4, "use_bias": False, "use_conv_bias": True,
            "residual_in_fp32": True, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
            "time_step_rank": math.ceil(hidden / 16)}


def _mamba2(hidden: int, layers: int, vocab: int = 50288) -> dict[str, Any]:
    head_dim = 64
    return {"model_type": "mamba2", "hidden_size": hidden, "num_hidden_layers": layers, "vocab_size": vocab,
            "state_size": 128, "expand": 2, "conv_kernel": 4, "head_dim": head_dim,
            "num_heads": 2 * hidden // head_dim, "n_groups": 1, "chunk_size": 256, "use_bias": False,
            "use_conv_bias": True, "residual_in_fp32": True, "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True}


def _falcon_h1(hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, intermediate: int,
               mamba_heads: int, mamba_head_dim: int, d_state: int, vocab: int = 32784) -> dict[str, Any]:
    """A Falcon-H1 config of the given sizes (tiiuae/Falcon-H1-0.5B's, from transformers' Falcon-H1
    documentation table: depth 36, width 1024, 8 attention heads over 2 KV heads, 24 Mamba heads of 64,
    d_state 128), the rest as that checkpoint's published config reads (vocabulary 32784, rotary base 1e11,
    Mamba-2 chunks of 128 with no inner RMSNorm) with its muP multipliers, which scale activations and so
    matter for generated text, not for cost."""
    return {"model_type": "falcon_h1", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
            "intermediate_size": intermediate, "vocab_size": vocab, "max_position_embeddings": 131072,
            "rope_theta": 1e11, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "mamba_d_ssm": mamba_heads * mamba_head_dim, "mamba_n_heads": mamba_heads, "mamba_d_head": mamba_head_dim,
            "mamba_d_state": d_state, "mamba_n_groups": 1, "mamba_d_conv": 4, "mamba_expand": 2,
            "mamba_chunk_size": 128, "mamba_conv_bias": True, "mamba_proj_bias": False,
            "mamba_norm_before_gate": False, "mamba_rms_norm": False, "bos_token_id": 1, "eos_token_id": 11,
            "pad_token_id": 0, "embedding_multiplier": 5.656854249492381, "lm_head_multiplier": 0.0390625,
            "key_multiplier": 0.390625, "attention_in_multiplier": 1.0, "attention_out_multiplier": 0.9375,
            "ssm_in_multiplier": 1.25, "ssm_out_multiplier": 0.23570226039551587,
            "mlp_multipliers": [0.8838834764831844, 0.5859375],
            "ssm_multipliers": [0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738]}


def _zoo() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    gpt2_tok = "openai-community/gpt2"
    for name, (d, n, h), params in [
        ("gpt2", (768, 12, 12), 124_000_000),
        ("gpt2-medium", (1024, 24, 16), 355_000_000),
        ("gpt2-large", (1280, 36, 20), 774_000_000),
        ("gpt2-xl", (1600, 48, 25), 1_558_000_000),
    ]:
        specs.append(ModelSpec(name, "gpt2", _gpt2(d, n, h), params, hf_id=f"openai-community/{name}",
                               tokenizer=gpt2_tok))
    for size, (d, n, h), params in [
        ("70m", (512, 6, 8), 70_000_000),
        ("160m", (768, 12, 12), 162_000_000),
        ("410m", (1024, 24, 16), 405_000_000),
        ("1b", (2048, 16, 8), 1_012_000_000),
        ("1.4b", (2048, 24, 16), 1_415_000_000),
        ("2.8b", (2560, 32, 32), 2_775_000_000),
    ]:
        hub = f"EleutherAI/pythia-{size}"
        specs.append(ModelSpec(f"pythia-{size}", "gpt_neox", _pythia(d, n, h), params, hf_id=hub, tokenizer=hub))
    # Pythia-6.9B pads its embedding to 50432 rows, where the smaller ones pad to 50304.
    specs.append(ModelSpec("pythia-6.9b", "gpt_neox", _pythia(4096, 32, 32, vocab=50432), 6_857_000_000,
                           hf_id="EleutherAI/pythia-6.9b", tokenizer="EleutherAI/pythia-6.9b"))
    neox_tok = "EleutherAI/gpt-neox-20b"
    for size, (d, n), params in [
        ("130m", (768, 24), 130_000_000),
        ("370m", (1024, 48), 370_000_000),
        ("790m", (1536, 48), 790_000_000),
        ("1.4b", (2048, 48), 1_400_000_000),
        ("2.8b", (2560, 64), 2_800_000_000),
    ]:
        specs.append(ModelSpec(f"mamba-{size}", "mamba", _mamba(d, n), params,
                               hf_id=f"state-spaces/mamba-{size}-hf", mamba_ssm_id=f"state-spaces/mamba-{size}",
                               tokenizer=neox_tok))
    for size, (d, n), params in [
        ("130m", (768, 24), 130_000_000),
        ("370m", (1024, 48), 370_000_000),
        ("780m", (1536, 48), 780_000_000),
        ("1.3b", (2048, 48), 1_300_000_000),
        ("2.7b", (2560, 64), 2_700_000_000),
    ]:
        specs.append(ModelSpec(f"mamba2-{size}", "mamba2", _mamba2(d, n), params,
                               mamba_ssm_id=f"state-spaces/mamba2-{size}", tokenizer=neox_tok,
                               notes="pretrained weights are published for mamba_ssm only (no -hf checkpoint)"))
    # The other rows of the Mamba paper's Table 3, at the checkpoints it evaluated. Each ships its own tokenizer
    # (OPT's and GPT-J's and GPT-Neo's are GPT-2's BPE; RWKV's is GPT-NeoX-20B's).
    table3 = "a baseline of the Mamba paper's Table 3"
    for size, (d, n, h), params in [
        ("1.3b", (2048, 24, 32), 1_300_000_000),
        ("2.7b", (2560, 32, 32), 2_700_000_000),
        ("6.7b", (4096, 32, 32), 6_700_000_000),
    ]:
        hub = f"facebook/opt-{size}"
        specs.append(ModelSpec(f"opt-{size}", "opt", _opt(d, n, h), params, hf_id=hub, tokenizer=hub, notes=table3))
    for size, (d, n, h), params in [
        ("1.3B", (2048, 24, 16), 1_300_000_000),
        ("2.7B", (2560, 32, 20), 2_700_000_000),
    ]:
        hub = f"EleutherAI/gpt-neo-{size}"
        specs.append(ModelSpec(f"gpt-neo-{size.lower()}", "gpt_neo", _gpt_neo(d, n, h), params, hf_id=hub,
                               tokenizer=hub, notes=table3))
    # 6,053,381,344: the model card's count; transformers' GPTJForCausalLM holds 2.5M (0.04%) fewer parameters.
    specs.append(ModelSpec("gpt-j-6b", "gptj", _gptj(4096, 28, 16), 6_053_381_344, hf_id="EleutherAI/gpt-j-6b",
                           tokenizer="EleutherAI/gpt-j-6b", notes=table3))
    for size, (d, n), params in [
        ("1b5", (2048, 24), 1_500_000_000),
        ("3b", (2560, 32), 3_000_000_000),
        ("7b", (4096, 32), 7_400_000_000),  # the paper's RWKV-7.4B
    ]:
        hub = f"RWKV/rwkv-4-{size}-pile"
        specs.append(ModelSpec(f"rwkv-4-{size}", "rwkv", _rwkv4(d, n), params, hf_id=hub, tokenizer=hub,
                               notes=table3))
    # A published hybrid at the size of the small models above. 521,411,104 parameters is what transformers
    # builds from this config (the model card says 0.5B). Its pretraining context is 4K tokens (16K after
    # instruction tuning), per transformers' Falcon-H1 documentation.
    specs.append(ModelSpec("falcon-h1-0.5b", "falcon_h1", _falcon_h1(1024, 36, 8, 2, 64, 2048, 24, 64, 128),
                           521_411_104, hf_id="tiiuae/Falcon-H1-0.5B-Base", tokenizer="tiiuae/Falcon-H1-0.5B-Base",
                           trained_context=4096,
                           notes="hybrid: attention and Mamba-2 side by side in every layer (TII, 2025)"))
    tiny = "random init, about 1M parameters, for CPU tests and the embedded default suite"
    specs += [
        ModelSpec("tiny-gpt2", "gpt2", {**_gpt2(128, 4, 4, vocab=512), **_TINY_SPECIAL}, 1_000_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
        ModelSpec("tiny-pythia", "gpt_neox", {**_pythia(128, 4, 4, vocab=512), **_TINY_SPECIAL}, 920_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
        ModelSpec("tiny-mamba", "mamba", {**_mamba(128, 8, vocab=512), **_TINY_SPECIAL}, 970_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
        ModelSpec("tiny-falcon-h1", "falcon_h1",
                  {**_falcon_h1(128, 4, 4, 2, 32, 256, 8, 32, 16, vocab=512), **_TINY_SPECIAL, "mamba_chunk_size": 64},
                  1_140_000, tokenizer=BYTES_TOKENIZER, notes=tiny, tags=("tiny",)),
    ]
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _zoo()


def get_model(name: str) -> ModelSpec:
    """The zoo entry for `name`, or a UserError that suggests close names."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; "
                        "`ssmbench list models` shows them all") from None


def is_tiny(spec: ModelSpec) -> bool:
    return "tiny" in spec.tags


@dataclass(frozen=True)
class ResolvedModel:
    """A suite's model with every choice made: its spec (a zoo entry, or a checkpoint's own config; overrides
    applied), weights, dtype, device, and which checkpoint to load.

    `path` and `hf_id` name a checkpoint other than the zoo's published ones. `checkpoint_format` says how
    that checkpoint is stored, when its config.json was read: "hf" (transformers' from_pretrained) or
    "mamba_ssm" (MambaLMHeadModel's own format); None for the zoo's checkpoints, published in both where
    the zoo lists both ids.
    """

    name: str
    spec: ModelSpec
    weights: Literal["pretrained", "random"]
    dtype: str  # float32 | float16 | bfloat16
    device: str  # cpu | cuda
    backend: str = "auto"  # auto | hf | mamba_ssm
    path: str | None = None  # local checkpoint directory, overrides the hub ids
    hf_id: str | None = None  # overrides spec.hf_id
    seed: int = 0
    require_fused: bool = False
    tokenizer: str | None = None  # the suite's `tokenizer:`, which wins over the checkpoint's own
    checkpoint_format: Literal["hf", "mamba_ssm"] | None = None
    revision: str | None = None  # a branch, tag or commit of a hub checkpoint (transformers' from_pretrained)
    trust_remote_code: bool = False  # let from_pretrained run the checkpoint's own modelling code

    @property
    def hf_source(self) -> str | None:
        """What transformers' from_pretrained loads: the checkpoint, unless it is in mamba_ssm's format."""
        if self.path or self.hf_id:
            return None if self.checkpoint_format == "mamba_ssm" else self.path or self.hf_id
        return self.spec.hf_id

    @property
    def mamba_ssm_source(self) -> str | None:
        """What mamba_ssm's from_pretrained loads: the checkpoint, unless it is in transformers' format (an
        `hf_id:` is, unless its config says otherwise)."""
        if self.path or self.hf_id:
            fmt = self.checkpoint_format or ("hf" if self.hf_id else None)
            return None if fmt == "hf" else self.path or self.hf_id
        return self.spec.mamba_ssm_id

    def describe_source(self) -> str:
        if self.weights == "random":
            return "random init"
        return self.path or self.hf_id or self.spec.hf_id or self.spec.mamba_ssm_id or "?"
