"""The interface every backend offers: a loaded model and a greedy decoder with prefill and decode apart.

Both families decode through the same loop (`Decoder.decode`): one single-token step per new token, the
argmax taken on the device, no host synchronisation inside the loop. The only difference between the eager
and the CUDA-graph path is who runs the step: Python, or a replay of the captured step. That is what makes
a Mamba-vs-Transformer decode comparison fair.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    import torch


class NoGraphDecoding(ValueError):
    """The model cannot decode under CUDA graphs at all (not a setting to fix): a graphed point is skipped."""


class Decoder(ABC):
    """Greedy generation for a fixed batch size and maximum length, reusable across repeats.

    Use: `start()` (untimed: resets caches), `prefill(ids)` (returns the first new token), then
    `decode(token, steps)` (returns the next `steps` tokens).
    """

    def __init__(self, batch: int, max_len: int, device: str, cuda_graphs: bool):
        import torch

        if cuda_graphs and device != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.batch, self.max_len, self.device, self.cuda_graphs = batch, max_len, device, cuda_graphs
        # The step reads the current token from this buffer and writes the next one back into it.
        self._token = torch.zeros(batch, dtype=torch.long, device=device)
        self._graph: Any = None
        self.sampler: Sampler | None = None  # None: greedy (the argmax); see `sample_with`

    def sample_with(self, sampler: Sampler) -> None:
        """Draw each token from the model's distribution instead of taking the argmax. Sampling runs eagerly:
        a captured step would need the sampler's generator registered with the graph."""
        if self.cuda_graphs:
            raise ValueError("sampled decoding runs without CUDA graphs; make the decoder with cuda_graphs=False")
        self.sampler = sampler

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each row from its logits [B, V]: the argmax, or a draw from the sampler."""
        return logits.argmax(-1) if self.sampler is None else self.sampler(logits)

    @abstractmethod
    def start(self) -> None:
        """Forget the previous sequence (reset caches), outside any timed region."""

    @abstractmethod
    def _prompt_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt through the model, filling the cache; logits of the last position, [B, V]."""

    @abstractmethod
    def _step(self) -> None:
        """One decode step: read `self._token`, advance the cache, write the next token (`pick`) back to it."""

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        token = self.pick(self._prompt_logits(input_ids))
        if self.cuda_graphs and self._graph is None:
            from ssmbench.models.graphs import capture

            self._token.copy_(token)
            self._graph = capture(self._step)
            # Warm-up and capture ran real steps and moved the state on: run the prompt again from scratch.
            self.start()
            token = self.pick(self._prompt_logits(input_ids))
        return token

    def decode(self, token: torch.Tensor, steps: int) -> torch.Tensor:
        import torch

        out = torch.empty((self.batch, steps), dtype=torch.long, device=self.device)
        step: Callable[[], None] = self._graph.replay if self._graph is not None else self._step
        self._token.copy_(token)
        for i in range(steps):
            step()
            out[:, i] = self._token
        return out

    def generate(self, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """All `new_tokens` greedy tokens, [B, new_tokens] (prefill gives the first)."""
        import torch

        self.start()
        first = self.prefill(input_ids)
        rest = self.decode(first, new_tokens - 1)
        return torch.cat([first[:, None], rest], dim=1)


@dataclass
class Sampler:
    """Sampled decoding: softmax(logits / temperature) over the top_k tokens (all with None), drawn from its
    own seeded generator on the model's device, so a seed gives the same continuation run after run."""

    temperature: float
    top_k: int | None
    generator: Any  # torch.Generator on the decoding device

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        import torch

        scaled = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scaled.shape[-1]:
            kth = scaled.topk(self.top_k, dim=-1).values[..., -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


@dataclass
class LoadedModel(ABC):
    """A model on its device, with what a record must say about it."""

    ref: ResolvedModel
    module: Any  # torch.nn.Module
    kernel: str  # the code path of the sequence mixer: mamba_ssm-cuda, hf-mamba_ssm-kernels, hf-torch, hf-sdpa
    backend: str  # hf | mamba_ssm
    n_params: int
    # What was loaded (see common.checkpoint_identity): hub id, absolute path or "random init"; a short hash of
    # the weight files read (None for random init, or when none could be found); the config's model_type.
    checkpoint: str = "random init"
    weights_sha256: str | None = None
    architecture: str = ""
    tokenizer_name: str | None = None  # which tokenizer its text goes through (tokenizers.tokenizer_source)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def vocab_size(self) -> int:
        return int(self.ref.spec.config["vocab_size"])

    @property
    def graph_decoding(self) -> bool:
        """Whether its decoder can replay decode steps from a CUDA graph (a hybrid cannot: NoGraphDecoding)."""
        return True

    @abstractmethod
    def decoder(self, batch: int, max_len: int, cuda_graphs: bool) -> Decoder:
        """A decoder for `batch` sequences of at most `max_len` tokens (prompt + new)."""

    @abstractmethod
    def library_generate(self, input_ids: torch.Tensor, new_tokens: int, cuda_graphs: bool) -> torch.Tensor:
        """The backend library's own generate(), untouched: the reference our decoder is compared with."""

    @property
    @abstractmethod
    def library_generate_label(self) -> str:
        """How the reference generate() is named in records, e.g. 'transformers.generate'."""

    def record_fields(self) -> dict[str, Any]:
        """The fields every record about this model carries; `extra` says what was loaded."""
        return {"model": self.name, "family": self.ref.spec.family, "kernel": self.kernel,
                "weights": self.ref.weights, "dtype": self.ref.dtype, "seed": self.ref.seed,
                "extra": self.identity()}

    def identity(self) -> dict[str, Any]:
        """checkpoint, weights_sha256, architecture, tokenizer: what a record needs to say what it measured."""
        return {"checkpoint": self.checkpoint, "weights_sha256": self.weights_sha256,
                "architecture": self.architecture or self.ref.spec.arch, "tokenizer": self.tokenizer_name}

    def tokenizer(self) -> Any:
        from ssmbench.models.tokenizers import load_tokenizer

        return load_tokenizer(self.ref)
