"""The model zoo: short names mapped to each model's real architecture.

Every entry carries the full Hugging Face config of its model, so `weights: random` builds the real
full-size network offline (right for speed and memory, meaningless for quality), and the analytic sizes a
report needs (parameters, KV cache or SSM state per sequence) come from the same numbers.

Sources: the configs of the published checkpoints (openai-community/gpt2*, EleutherAI/pythia-*,
state-spaces/mamba-*-hf, state-spaces/mamba2-*); nominal parameter counts from their model cards and from
the Mamba paper (Gu & Dao, arXiv 2312.00752, Table 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ssmbench.errors import UserError, did_you_mean

Family = Literal["transformer", "ssm"]

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

    def state_traffic_factor(self) -> int:
        """How many times one decode step moves its state: a KV cache is read once (the new position's
        write is negligible); a recurrent state is read and written back (2)."""
        return 1 if self.family == "transformer" else 2


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


ARCHITECTURES: dict[str, Architecture] = {"gpt2": GPT2(), "gpt_neox": GPTNeoX(), "mamba": Mamba(), "mamba2": Mamba2()}


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
        return self.architecture.context_length(self.config)

    def state_elements_per_sequence(self, context_len: int) -> int:
        return self.architecture.state_elements_per_sequence(self.config, context_len)

    def state_bytes_per_sequence(self, context_len: int, bytes_per_element: int) -> int:
        """Analytic size of the inference state one sequence carries after `context_len` tokens.

        Transformers keep keys and values for every past token (grows with the context); Mamba keeps a
        fixed-size convolution window and SSM state (does not).
        """
        return self.state_elements_per_sequence(context_len) * bytes_per_element

    def decode_state_traffic_bytes(self, context_len: int, bytes_per_element: int) -> int:
        """Bytes of inference state one decode step moves per sequence."""
        return self.state_bytes_per_sequence(context_len, bytes_per_element) * self.architecture.state_traffic_factor()


def _gpt2(n_embd: int, n_layer: int, n_head: int, vocab: int = 50257, positions: int = 1024) -> dict[str, Any]:
    return {"model_type": "gpt2", "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head,
            "vocab_size": vocab, "n_positions": positions}


def _pythia(hidden: int, layers: int, heads: int, vocab: int = 50304, positions: int = 2048) -> dict[str, Any]:
    return {"model_type": "gpt_neox", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": 4 * hidden, "vocab_size": vocab,
            "max_position_embeddings": positions, "rotary_pct": 0.25, "rotary_emb_base": 10000,
            "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "tie_word_embeddings": False}


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
    tiny = "random init, about 1M parameters, for CPU tests and the embedded default suite"
    specs += [
        ModelSpec("tiny-gpt2", "gpt2", {**_gpt2(128, 4, 4, vocab=512), **_TINY_SPECIAL}, 1_000_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
        ModelSpec("tiny-pythia", "gpt_neox", {**_pythia(128, 4, 4, vocab=512), **_TINY_SPECIAL}, 920_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
        ModelSpec("tiny-mamba", "mamba", {**_mamba(128, 8, vocab=512), **_TINY_SPECIAL}, 970_000, tokenizer=BYTES_TOKENIZER,
                  notes=tiny, tags=("tiny",)),
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
