"""Tokenizers: the hub tokenizer of a pretrained model, or a byte-level one built in code for tiny models.

The byte tokenizer needs no download and round-trips any text (one token per UTF-8 byte, ids 0-255, plus
an end-of-text token 256), which makes it the right material for offline tests of every text task.
"""

from __future__ import annotations

import functools
from typing import Any

from ssmbench.errors import JobError
from ssmbench.zoo import BYTES_EOS_ID, BYTES_TOKENIZER, ResolvedModel

EOS_TOKEN = "<|endoftext|>"


@functools.cache
def byte_tokenizer() -> Any:
    """A PreTrainedTokenizerFast over raw bytes: ByteLevel pre-tokenisation, a BPE model with no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()  # byte value -> the printable character ByteLevel maps it to
    vocab = {byte_chars[b]: b for b in range(256)}
    vocab[EOS_TOKEN] = BYTES_EOS_ID
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=None, model_max_length=1 << 20)


def load_tokenizer(ref: ResolvedModel) -> Any:
    """The model's tokenizer; pretrained tokenizers must be local (cache or path) when offline."""
    name = ref.spec.tokenizer
    if name == BYTES_TOKENIZER:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    source = ref.path or name or ref.hf_source
    if source is None:
        raise JobError(f"model {ref.name!r}: no tokenizer is known; give a local `path:`")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:  # ValueError: a directory that holds no tokenizer
        raise JobError(f"model {ref.name!r}: tokenizer {source!r} is not available offline "
                       f"({str(exc).splitlines()[0][:120]}); download it first (`hf download {source}`)") from None
