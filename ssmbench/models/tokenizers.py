"""Tokenizers: a checkpoint's own, the hub tokenizer of a zoo model, or a byte-level one built in code for
tiny models.

The byte tokenizer needs no download and round-trips any text (one token per UTF-8 byte, ids 0-255, plus
an end-of-text token 256), which makes it the right material for offline tests of every text task.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from ssmbench.errors import JobError, first_line
from ssmbench.models.checkpoints import TOKENIZER_FILES, has_tokenizer_files
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


def tokenizer_source(ref: ResolvedModel) -> str | None:
    """Which tokenizer a model uses: the suite's `tokenizer:`; else the checkpoint's own, when a `path:` or
    `hf_id:` checkpoint has one; else the zoo entry's (the tokenizer of `base:`); else a hub checkpoint's
    repository, which may still hold one (load_tokenizer finds out). None: a `path:` checkpoint with no
    tokenizer and nothing to fall back on; its records name no tokenizer rather than that directory."""
    if ref.tokenizer:
        return ref.tokenizer
    if ref.path and has_tokenizer_files(ref.path):
        return ref.path
    if ref.hf_id and _hub_has_tokenizer(ref.hf_id):
        return ref.hf_id
    return ref.spec.tokenizer or (None if ref.path else ref.hf_id or ref.hf_source)


def tokenizer_problem(ref: ResolvedModel, needed_by: str = "") -> str | None:
    """Why the model's text would find no tokenizer, as far as the disk can tell before anything runs, as
    '<suite field>: <what is wrong><needed_by>; <the fix>', or None. A hub checkpoint's own repository is
    not asked here (that takes the network): loading it says what is missing."""
    if ref.hf_id and not ref.tokenizer:
        return None
    return _local_problem(ref, tokenizer_source(ref), needed_by)


def _local_problem(ref: ResolvedModel, source: str | None, needed_by: str = "") -> str | None:
    fix = "set `tokenizer:` (a hub id, a directory, or bytes)"
    files = ", ".join(TOKENIZER_FILES)
    if source is None and ref.path:
        return f"path: {ref.path} holds no tokenizer (none of {files}){needed_by}; {fix}"
    if source is None:
        return f"tokenizer: none is known for this model{needed_by}; {fix} or give a `path:` that holds one"
    if source == BYTES_TOKENIZER or not _is_local(source):
        return None
    if not os.path.isdir(os.path.expanduser(source)):
        return f"tokenizer: {source}: no such directory{needed_by}"
    if not has_tokenizer_files(source):
        return f"tokenizer: {source} holds no tokenizer (none of {files}){needed_by}; {fix}"
    return None


def _hub_has_tokenizer(repo_id: str) -> bool:
    from ssmbench.models import hub

    if any(hub.is_cached(repo_id, name) for name in TOKENIZER_FILES):
        return True
    if not hub.hub_reachable():
        return False
    from huggingface_hub import file_exists

    try:
        return any(file_exists(repo_id, name) for name in TOKENIZER_FILES[:2])
    except Exception:  # noqa: BLE001 - a gated or missing repository: no tokenizer to take from it
        return False


def _is_local(source: str) -> bool:
    return os.path.isabs(os.path.expanduser(source)) or source.startswith(".") or os.path.exists(source)


def load_tokenizer(ref: ResolvedModel) -> Any:
    """The model's tokenizer (see tokenizer_source). A hub tokenizer loads from the cache alone when cached,
    is downloaded when the hub answers, and otherwise fails at once with the remedy."""
    source = tokenizer_source(ref)
    if source == BYTES_TOKENIZER:
        return byte_tokenizer()
    problem = _local_problem(ref, source)
    if problem is not None:
        raise JobError(f"model {ref.name!r}: {problem}")
    assert source is not None  # a missing one is a problem
    from transformers import AutoTokenizer

    from ssmbench.models import hub

    if _is_local(source):
        try:
            return AutoTokenizer.from_pretrained(source, trust_remote_code=ref.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise JobError(f"model {ref.name!r}: tokenizer {source} could not be loaded "
                           f"({first_line(exc, 160)})") from None
    try:
        revision = ref.revision if source == ref.hf_source else None  # the checkpoint's own tokenizer only
        return hub.from_hub(source, lambda local: AutoTokenizer.from_pretrained(
            source, local_files_only=local, revision=revision, trust_remote_code=ref.trust_remote_code),
            marker=TOKENIZER_FILES, revision=revision)
    except (OSError, ValueError) as exc:  # ValueError: a repository that holds no tokenizer
        first = first_line(exc, 200)
        raise JobError(f"model {ref.name!r}: tokenizer {source!r} is not available offline ({first}); "
                       f"download it first (`hf download {source}`) where the hub is reachable, or set "
                       "`tokenizer:` to a local directory") from None
