"""Request-level generation for tasks that read what a model writes (phonebook recall): text in, text out.

It drives the same Decoder as the throughput kind (prefill, then greedy single-token steps through the one
decode loop, from a CUDA graph when asked), so answers come from the kernels the speed figures measure;
the timed path itself is untouched.

Prompts are never padded: padding on the left would run pad tokens through a Mamba's recurrence and
corrupt its state, and on the right would put them between the prompt and the answer. Prompts of equal
length are decoded together in one batch, the rest alone. Each row decodes `max_new_tokens` tokens and the
text is cut at the first `until`: stopping at the newline as soon as it appears would need the host to
read every step's token, a synchronisation per token inside the loop that is kept free of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ssmbench.models.base import Decoder, LoadedModel


@dataclass(frozen=True)
class Generation:
    text: str  # the greedy continuation, cut before the first `until`
    prompt_tokens: int
    stopped: bool  # `until` appeared within max_new_tokens


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt as the model reads it: the tokenizer's own encoding, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate_until(model: LoadedModel, prompts: Sequence[str], max_new_tokens: int, until: str = "\n",
                   cuda_graphs: bool = False, batch_size: int = 8, tokenizer: Any = None) -> list[Generation]:
    """Greedy continuations of `prompts`, each cut at the first `until`, in the order given."""
    import torch

    tokenizer = tokenizer if tokenizer is not None else model.tokenizer()
    ids = [encode(tokenizer, p) for p in prompts]
    out: list[Generation | None] = [None] * len(prompts)
    # One decoder per batch size, sized for the longest prompt: its cache (and graph, captured once) serves
    # every group of that size, since each generation starts by resetting the cache in place.
    max_len = max((len(t) for t in ids), default=0) + max_new_tokens
    decoders: dict[int, Decoder] = {}
    for group in _equal_length_batches(ids, batch_size):
        length = len(ids[group[0]])
        batch = torch.tensor([ids[i] for i in group], dtype=torch.long, device=model.ref.device)
        decoder = decoders.get(len(group)) or decoders.setdefault(
            len(group), model.decoder(len(group), max_len, cuda_graphs))
        with torch.inference_mode():
            new = decoder.generate(batch, max_new_tokens).tolist()
        for i, row in zip(group, new, strict=True):
            text = tokenizer.decode(row, skip_special_tokens=True)
            head, found, _ = text.partition(until)
            out[i] = Generation(head, length, bool(found))
    return [g for g in out if g is not None]


def _equal_length_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` grouped by length (in order of first appearance), at most batch_size a group."""
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(ids):
        by_length.setdefault(len(tokens), []).append(i)
    return [group[start:start + batch_size] for group in by_length.values()
            for start in range(0, len(group), batch_size)]
