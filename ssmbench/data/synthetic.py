"""Synthetic capability tasks of the Mamba paper, drawn as whole batches on the target device.

Three generators: selective copying (paper Table 1), induction heads (Table 11) and multi-query associative
recall (Zoology's MQAR). Each one draws its randomness with a `torch.Generator` that lives on the device the
batch is built on, with vectorised torch ops only: training draws a fresh batch every step and evaluation
goes up to 2^20 tokens, so there is no host round trip and no Python loop over examples or positions.

Every generator splits in two: the public function makes the random draws, a private `_..._layout` turns
draws into tokens. The layout is deterministic, so the worked example in each docstring is checked by the
tests against the layout given the same draws (a seed's output would change with torch's sampling code).

A batch's targets are aligned with the model's output at the same position: the logits at position t
predict `targets[t]`, and `targets` holds IGNORE everywhere but at answer positions, so
`cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)` scores answers only.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100  # target at positions that are not scored: cross_entropy's default ignore_index

# Selective copying ids. S4's generator puts noise at 0 and the marker at vocab_size - 1; the marker sits at
# 1 here so that no reserved id moves with vocab_size. Data tokens are ids 2 .. vocab_size - 1.
SC_NOISE_ID = 0
SC_MARKER_ID = 1
SC_FIRST_DATA_ID = 2

# Induction heads: one special token (the calibration run's "vocab 16 with one special token"); every other
# id is an ordinary token.
IH_SPECIAL_ID = 0
IH_FIRST_TOKEN_ID = 1
IH_MIN_SEQ_LEN = 4  # special, recalled token, at least one token between, final special

# MQAR: Zoology leaves 0 out of the key range (keys are 1 .. vocab_size // 2 - 1) and uses it as the filler
# between queries; with random_non_queries the fillers are redrawn over the whole vocabulary.
MQAR_FILLER_ID = 0


@dataclass(frozen=True)
class Batch:
    """Token ids and aligned targets of one batch.

    inputs:  [B, L] int64 token ids.
    targets: [B, L] int64, the answer token at answer positions and IGNORE elsewhere.
    """

    inputs: Tensor
    targets: Tensor

    @property
    def answer_mask(self) -> Tensor:
        """[B, L] bool, True where the model's output is scored."""
        return self.targets != IGNORE


def seeded_generator(seed: int, device: str | torch.device) -> torch.Generator:
    """A generator on `device` seeded with `seed`: the generators below draw everything from it."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def _check_generator(generator: torch.Generator, device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the batch is drawn on {device}: "
            f"make it with seeded_generator(seed, {str(device)!r})"
        )
    return device


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# --- selective copying ---------------------------------------------------------------------------------


def selective_copying(
    batch: int,
    seq_len: int,
    *,
    n_memorize: int = 16,
    vocab_size: int = 16,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """Selective copying (Gu & Dao 2023, §4.1.1 and Appendix E.1; Table 1 uses seq_len 4096, 16 tokens).

    Layout of one example, `seq_len + n_memorize` tokens long:
      - positions 0 .. seq_len-1 (the copy region): noise (SC_NOISE_ID) except at `n_memorize` distinct
        positions, drawn uniformly and kept in increasing order, which hold data tokens drawn uniformly
        with replacement from ids SC_FIRST_DATA_ID .. vocab_size-1;
      - positions seq_len .. seq_len+n_memorize-1: marker tokens (SC_MARKER_ID). The target at the i-th
        marker is the i-th data token in order of appearance; every other target is IGNORE.
    So `seq_len` counts the copy region (noise plus data tokens), not the markers.

    Source: the Mamba paper's code for this task was not released (state-spaces/mamba issue #343); the
    paper builds on S4's copying task, which this follows: state-spaces/s4
    `src/dataloaders/datasets/copying.py`, `torch_copying_data(L, M, A, variable=True)`: M data tokens
    drawn from randint(1, A-1), placed at sorted `randperm(L+M)[:M]` positions of an (L+M)-long region of
    zeros, then M markers, the targets being the M data tokens read off the model's last M outputs. Here
    seq_len = L + M. Deviations: the marker id is 1 instead of A-1 (data ids 2..A-1 instead of 1..A-2, the
    same 14 data ids for A = 16); positions come from the top-k of uniform noise instead of a per-example
    randperm, the same distribution without a loop.

    Worked example (vocab_size=16, seq_len=12, n_memorize=4; draws: data tokens 7 3 3 9 at region
    positions 1 4 5 10; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
        inputs    0  7  0  0  3  3  0  0  0  0  9  0  1  1  1  1
        targets   .  .  .  .  .  .  .  .  .  .  .  .  7  3  3  9
    """
    device = _check_generator(generator, device)
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(n_memorize >= 1, f"n_memorize must be at least 1, got {n_memorize}")
    _require(
        seq_len >= n_memorize,
        f"seq_len (the copy region) must hold n_memorize={n_memorize} tokens, got {seq_len}",
    )
    _require(
        vocab_size > SC_FIRST_DATA_ID,
        f"vocab_size must leave at least one data id above noise and marker, got {vocab_size}",
    )
    data_tokens = torch.randint(
        SC_FIRST_DATA_ID, vocab_size, (batch, n_memorize), generator=generator, device=device
    )
    # The n_memorize largest of seq_len uniforms sit at a uniformly random subset of positions.
    scores = torch.rand(batch, seq_len, generator=generator, device=device)
    data_positions = scores.topk(n_memorize, dim=1, sorted=False).indices.sort(dim=1).values
    return _selective_copying_layout(data_tokens, data_positions, seq_len)


def _selective_copying_layout(data_tokens: Tensor, data_positions: Tensor, seq_len: int) -> Batch:
    """Tokens from the draws: data_tokens and data_positions are [B, M], positions increasing per row."""
    batch, n_memorize = data_tokens.shape
    total_len = seq_len + n_memorize
    inputs = torch.full((batch, total_len), SC_NOISE_ID, dtype=torch.int64, device=data_tokens.device)
    inputs.scatter_(1, data_positions, data_tokens)
    inputs[:, seq_len:] = SC_MARKER_ID
    targets = torch.full_like(inputs, IGNORE)
    targets[:, seq_len:] = data_tokens
    return Batch(inputs, targets)


# --- induction heads -----------------------------------------------------------------------------------


def induction_heads(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 16,
    special_within: int | None = None,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """Induction heads (Gu & Dao 2023, §4.1.2 and Table 11: trained at 256, tested at 2^6 .. 2^20).

    Layout of one example, exactly `seq_len` tokens long:
      - every position holds a token drawn uniformly from the ordinary ids IH_FIRST_TOKEN_ID..vocab_size-1,
        except two, which hold the special token IH_SPECIAL_ID (it appears nowhere else);
      - the first special sits at a position p drawn uniformly from 0 .. seq_len-4 (with `special_within`
        K: from 0 .. min(K, seq_len-3)-1, the "early" layout of state-spaces/mamba issue #62, where the
        recalled token is always far back), and the token after it, at p+1, is the one to recall; at
        least one ordinary token separates it from the end;
      - the last position, seq_len-1, holds the second special. Its target is the recalled token, and it is
        the only scored position (the calibration run's "loss on the last position only").

    Source: HazyResearch/safari `src/dataloaders/synthetics.py`, `generate_induction_head` with
    induction_len 1 and one trigger, the generator behind H3/Hyena's and the Mamba paper's induction
    task: ordinary tokens, a copy prefix at `rng.integers(input_seq_len - 2)` and the token after it,
    the prefix appended at the end, the token after it as the last target. Deviations: one special token
    instead of safari's two (copy prefix and an unused no-op), so vocab 16 gives 15 ordinary ids; seq_len
    counts the final special (safari's input_seq_len does not); never a second trigger (safari adds one
    half of the time when asked for several).

    Worked example (vocab_size=16, seq_len=12; draws: ordinary tokens 5 9 2 14 7 11 3 3 8 1 6 4, the
    first special at p=3, so the token to recall is 7; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10 11
        inputs    5  9  2  0  7 11  3  3  8  1  6  0
        targets   .  .  .  .  .  .  .  .  .  .  .  7
    """
    device = _check_generator(generator, device)
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(seq_len >= IH_MIN_SEQ_LEN, f"induction_heads needs seq_len >= {IH_MIN_SEQ_LEN}, got {seq_len}")
    _require(
        vocab_size > IH_FIRST_TOKEN_ID,
        f"vocab_size must leave at least one ordinary id besides the special token, got {vocab_size}",
    )
    tokens = torch.randint(
        IH_FIRST_TOKEN_ID, vocab_size, (batch, seq_len), generator=generator, device=device
    )
    _require(special_within is None or special_within >= 1,
             f"special_within must be at least 1 (the first K positions), got {special_within}")
    last = seq_len - 3 if special_within is None else min(special_within, seq_len - 3)
    special_positions = torch.randint(0, last, (batch,), generator=generator, device=device)
    return _induction_heads_layout(tokens, special_positions)


def _induction_heads_layout(tokens: Tensor, special_positions: Tensor) -> Batch:
    """Tokens from the draws: ordinary tokens [B, L] and the first special's position [B] (0 .. L-4).

    Scatter and gather rather than advanced-index assignment: assigning a Python number through a tensor
    index copies it from the host, which a CUDA graph cannot capture (the packed trainer captures the draw).
    """
    inputs = tokens.clone().scatter_(1, special_positions[:, None], IH_SPECIAL_ID)
    inputs[:, -1] = IH_SPECIAL_ID
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = inputs.gather(1, special_positions[:, None] + 1).squeeze(1)
    return Batch(inputs, targets)


# --- multi-query associative recall --------------------------------------------------------------------


def mqar(
    batch: int,
    seq_len: int,
    *,
    num_kv_pairs: int,
    vocab_size: int,
    power_a: float = 0.01,
    random_non_queries: bool = True,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """Multi-query associative recall (Arora, Eyuboglu et al. 2023, "Zoology"), `seq_len` tokens long.

    Layout of one example with k = num_kv_pairs:
      - positions 0 .. 2k-1: k key-value pairs `k1 v1 k2 v2 ...`; keys distinct, drawn from
        1 .. vocab_size//2 - 1, values distinct, drawn from vocab_size//2 .. vocab_size-1;
      - the rest is the query region, starting at 2k: key i is queried once, at position 2k + 2*gap_i.
        The gaps are distinct, drawn from 0 .. (seq_len-2k)//2 - 1 without replacement with probability
        proportional to power_a * (gap+1)**(power_a-1) (power_a=1: uniform; small power_a: queries bunch
        near the pairs), drawn one after another, so key 1's query tends to come first;
      - the target at a query position is that key's value; every other target is IGNORE;
      - every other position of the query region is a filler: MQAR_FILLER_ID (0, never a key), or with
        random_non_queries a token drawn uniformly from the whole vocabulary (it may repeat a key; it is
        not scored).

    Source: HazyResearch/zoology `zoology/data/multiquery_ar.py`, `multiquery_ar` (num_passes=1), whose
    layout this follows id for id. Deviations: torch on the device with this generator instead of numpy's
    global seed (and of torch's unseeded global generator for the random fillers); no JRT `num_passes`;
    Zoology's checks that seq_len is even and vocab_size > seq_len are dropped (the layout needs neither);
    what is checked is seq_len >= 4k and room for k distinct keys and values.

    Worked example (Zoology's own, at vocab_size=12, seq_len=16, num_kv_pairs=2, random_non_queries=False;
    draws: keys 2 4, values 8 7, gaps 4 1, so key 2 is queried at 4 + 2*4 = 12 and key 4 at 4 + 2*1 = 6;
    "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
        inputs    2  8  4  7  0  0  4  0  0  0  0  0  2  0  0  0
        targets   .  .  .  .  .  .  7  .  .  .  .  .  8  .  .  .
    """
    device = _check_generator(generator, device)
    key_vocab_size = vocab_size // 2
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(num_kv_pairs >= 1, f"num_kv_pairs must be at least 1, got {num_kv_pairs}")
    _require(
        seq_len >= 4 * num_kv_pairs,
        f"mqar needs seq_len >= 4 * num_kv_pairs = {4 * num_kv_pairs} (pairs, then a query region with "
        f"room for {num_kv_pairs} queries), got {seq_len}",
    )
    _require(
        num_kv_pairs <= key_vocab_size - 1,
        f"vocab_size={vocab_size} has {max(key_vocab_size - 1, 0)} key ids (1 .. vocab_size//2 - 1), "
        f"fewer than num_kv_pairs={num_kv_pairs}",
    )
    _require(power_a > 0, f"power_a must be positive, got {power_a}")

    def distinct(low: int, high: int) -> Tensor:
        # num_kv_pairs distinct ids from [low, high) per example: the top-k of uniforms is a random subset,
        # and its order (top-k sorts by score) a random order.
        scores = torch.rand(batch, high - low, generator=generator, device=device)
        return scores.topk(num_kv_pairs, dim=1).indices + low

    keys = distinct(1, key_vocab_size)
    values = distinct(key_vocab_size, vocab_size)
    gap_probs = power_law_gap_probs((seq_len - 2 * num_kv_pairs) // 2, power_a, device=device)
    gaps = torch.multinomial(
        gap_probs.expand(batch, -1).contiguous(), num_kv_pairs, replacement=False, generator=generator
    )
    fillers = None
    if random_non_queries:
        fillers = torch.randint(0, vocab_size, (batch, seq_len), generator=generator, device=device)
    return _mqar_layout(keys, values, gaps, seq_len, fillers)


def power_law_gap_probs(n_gaps: int, power_a: float, *, device: str | torch.device = "cpu") -> Tensor:
    """[n_gaps] float32 probabilities of query gaps 0 .. n_gaps-1, proportional to a * (gap+1)**(a-1).

    Zoology's distance law between a key-value pair and its query (repeated bigrams in text are
    power-law spaced); float32 so that devices without float64 can draw from it.
    """
    ranks = torch.arange(1, n_gaps + 1, dtype=torch.float32, device=device)
    weights = power_a * ranks ** (power_a - 1)
    return weights / weights.sum()


def _mqar_layout(keys: Tensor, values: Tensor, gaps: Tensor, seq_len: int, fillers: Tensor | None) -> Batch:
    """Tokens from the draws: keys, values and gaps [B, k]; fillers [B, L] or None for MQAR_FILLER_ID."""
    batch, num_kv_pairs = keys.shape
    context_len = 2 * num_kv_pairs
    if fillers is None:
        inputs = torch.full((batch, seq_len), MQAR_FILLER_ID, dtype=torch.int64, device=keys.device)
    else:
        inputs = fillers.clone()
    inputs[:, 0:context_len:2] = keys
    inputs[:, 1:context_len:2] = values
    query_positions = context_len + 2 * gaps
    inputs.scatter_(1, query_positions, keys)
    targets = torch.full_like(inputs, IGNORE).scatter_(1, query_positions, values)
    return Batch(inputs, targets)


# How many tokens the answers of a task registered by another module are drawn from (ssmbench.data.mad's):
# a function of vocab_size and the task's parameters.
ANSWER_VALUES: dict[str, Callable[..., int]] = {}


def answer_values(task: str, vocab_size: int, **params) -> int:
    """How many tokens an answer of `task` is drawn from: a model that has learned nothing scores
    ln(this) nats per answer (the chance loss that tells a collapsed training run). `params`: the task's
    own, for the tasks whose count depends on them (MAD's)."""
    if task in ANSWER_VALUES:
        return ANSWER_VALUES[task](vocab_size, **params)
    first = {"induction_heads": IH_FIRST_TOKEN_ID, "selective_copying": SC_FIRST_DATA_ID,
             "mqar": vocab_size // 2}[task]
    return vocab_size - first


# --- one entry point -----------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[..., Batch]] = {
    "selective_copying": selective_copying,
    "induction_heads": induction_heads,
    "mqar": mqar,
}


def task_params(task: str) -> dict[str, inspect.Parameter]:
    """A task's own parameters (what `make_batch` takes as **params), by name."""
    signature = inspect.signature(GENERATORS[task])
    return {
        name: p
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("generator", "device")
    }


def make_batch(
    task: str,
    batch: int,
    seq_len: int,
    *,
    generator: torch.Generator,
    device: str | torch.device,
    **params,
) -> Batch:
    """One batch of `task` (a key of GENERATORS) with the task's own parameters; ValueError on bad names."""
    if task not in GENERATORS:
        close = difflib.get_close_matches(task, GENERATORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown synthetic task {task!r}{hint} (known: {', '.join(GENERATORS)})")
    accepted = task_params(task)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{task} does not take {', '.join(unknown)} (it takes: {', '.join(accepted) or 'nothing'})"
        )
    missing = [n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ValueError(f"{task} needs {', '.join(missing)}")
    return GENERATORS[task](batch, seq_len, generator=generator, device=device, **params)


# --- a finite training set ------------------------------------------------------------------------------

POOL_CHUNK = 8192  # examples drawn per call while a pool is built (bounds the generators' scratch memory)


@dataclass(frozen=True)
class ExamplePool:
    """A fixed training set held on the device, sampled a batch at a time.

    zoology trains MQAR for 64 epochs over 100K examples drawn once, not on fresh examples every step: a
    finite set is part of its setting (a model can begin to memorise it). The pool is drawn once from its
    own seed; each step takes `batch` examples from it uniformly with replacement, by the training stream
    (zoology walks its set in the same fixed batches every epoch, unshuffled: the same examples, seen in
    another order). The draw is two kernels on the device, so a CUDA graph captures it like a fresh one."""

    inputs: Tensor  # [N, L]
    targets: Tensor  # [N, L]

    @classmethod
    def draw(cls, task: str, n: int, seq_len: int, *, seed: int, device: str | torch.device, **params) -> ExamplePool:
        generator = seeded_generator(seed, device)
        chunks = [make_batch(task, min(POOL_CHUNK, n - start), seq_len, generator=generator, device=device, **params)
                  for start in range(0, n, POOL_CHUNK)]
        return cls(torch.cat([c.inputs for c in chunks]), torch.cat([c.targets for c in chunks]))

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> Batch:
        """`batch` examples of the pool, chosen by `generator` (the run's training stream)."""
        index = torch.randint(len(self), (batch,), generator=generator, device=self.inputs.device)
        return Batch(self.inputs.index_select(0, index), self.targets.index_select(0, index))


def pool_seed(seed: int) -> int:
    """The seed a job's training pool is drawn from: a function of the job's seed, never its stream's."""
    return seed * 1_000_003 + 0x9001


class EpochWalk:
    """A fixed training set walked in epochs, as MAD trains (200 epochs over its set): every example once
    per epoch, each epoch in its own order (a permutation drawn from `seed` on the CPU, so the same on every
    device), batches running on across an epoch's end so that every batch holds `batch` examples (one
    shape, which a CUDA graph replays; a set that 128 does not divide has no short last batch).

    The batch of step s is a function of s alone, read through a step counter on the device that every draw
    advances (inside a captured graph too); `seek(s)` puts it at step s, which is how a resumed run (or one
    whose graph capture ran warm-up steps) draws what the uninterrupted run would. The training stream it is
    handed is not used: the order is the seed's."""

    def __init__(self, pool: ExamplePool, batch: int, steps: int, seed: int):
        n = len(pool)
        epochs = -(-steps * batch // n)
        generator = seeded_generator(seed, "cpu")
        order = torch.cat([torch.randperm(n, generator=generator, dtype=torch.int32) for _ in range(epochs)])
        device = pool.inputs.device
        self.pool, self.batch, self.order = pool, batch, order.to(device)
        self.offsets = torch.arange(batch, device=device)
        self.cursor = torch.zeros((), dtype=torch.int64, device=device)

    def __call__(self, generator: torch.Generator | None = None) -> Batch:
        rows = self.order.index_select(0, self.cursor * self.batch + self.offsets)
        self.cursor.add_(1)
        return Batch(self.pool.inputs.index_select(0, rows), self.pool.targets.index_select(0, rows))

    def seek(self, step: int) -> None:
        """The next draw is step `step`'s batch."""
        self.cursor.fill_(step)


# --- fixed sets ----------------------------------------------------------------------------------------

# Which fixed set a generator seed is for: the test sets at each length, and the validation sets that
# training evaluates (and stops early) on, never the same examples.
PURPOSES = {"test": 0, "validation": 1}


def fixed_set_seed(seed: int, seq_len: int, purpose: str) -> int:
    """The CPU generator seed of one fixed set: a function of (seed, length, purpose) alone."""
    return (seed * 1_000_003 + seq_len) * len(PURPOSES) + PURPOSES[purpose]


def fixed_batches(task: str, n: int, seq_len: int, batch_size: int, *, seed: int, purpose: str,
                  device: str | torch.device, digest: hashlib._Hash | None = None, **params) -> Iterator[Batch]:
    """`n` examples of `task` at `seq_len`, the same for a given (seed, seq_len, purpose) on every device,
    run and training seed, in batches of `batch_size` moved to `device`.

    The examples are drawn one at a time on the CPU from one generator (fixed_set_seed), so example i does
    not depend on the batch size or the device, and a set of n examples is the first n of a larger one.
    With `digest` (a hashlib object), every example's inputs and targets are fed to it in order: a
    fingerprint that shows two evaluations scored the same examples.
    """
    generator = seeded_generator(fixed_set_seed(seed, seq_len, purpose), "cpu")
    for start in range(0, n, batch_size):
        examples = [make_batch(task, 1, seq_len, generator=generator, device="cpu", **params)
                    for _ in range(min(batch_size, n - start))]
        if digest is not None:
            for example in examples:
                digest.update(example.inputs.numpy().tobytes())
                digest.update(example.targets.numpy().tobytes())
        yield Batch(torch.cat([e.inputs for e in examples]).to(device), torch.cat([e.targets for e in examples]).to(device))


# --- accuracy ------------------------------------------------------------------------------------------


def _check_pair(predictions: Tensor, targets: Tensor) -> None:
    if predictions.shape != targets.shape or targets.dim() != 2:
        raise ValueError(
            f"predictions and targets must both be [B, L], got {tuple(predictions.shape)} and "
            f"{tuple(targets.shape)}"
        )


def answer_accuracy(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(per-position, per-example) accuracy over the answer positions, as 0-d float tensors on the device.

    predictions: [B, L] argmax ids; targets: [B, L] with IGNORE off the answer positions, which never count.
    Per-position: correct answers / answer positions over the whole batch. Per-example: the fraction of
    examples (those with at least one answer position) whose answers are all right. NaN when nothing is
    scored. No host sync, so callers can accumulate over batches and read once.
    """
    _check_pair(predictions, targets)
    scored = targets != IGNORE
    correct = (predictions == targets) & scored
    per_position = correct.sum() / scored.sum()
    has_answers = scored.any(dim=1)
    all_right = (correct | ~scored).all(dim=1) & has_answers
    per_example = all_right.sum() / has_answers.sum()
    return per_position, per_example


def accuracy_by_answer_index(predictions: Tensor, targets: Tensor, n_answers: int | None = None) -> Tensor:
    """[n_answers] float accuracy of each example's 1st, 2nd, ... answer (in position order), over the batch.

    Shows which answers fail: in selective copying, whether the errors pile up on the late tokens. Index i
    averages over the examples that have an i-th answer (NaN if none has). `n_answers` sets the output's
    length (answers beyond it are dropped); without it the length is the batch's largest answer count,
    which costs one host read, so loops should pass it (n_memorize, 1, num_kv_pairs).
    """
    _check_pair(predictions, targets)
    scored = targets != IGNORE
    if n_answers is None:
        n_answers = int(scored.sum(dim=1).max())
    answer_index = scored.cumsum(dim=1) - 1
    # Non-answers and answers past n_answers go to an extra column that is dropped at the end.
    column = torch.where(scored & (answer_index < n_answers), answer_index, n_answers)
    correct = ((predictions == targets) & scored).float()
    counts = torch.zeros(targets.shape[0], n_answers + 1, device=targets.device)
    right = counts.clone().scatter_add_(1, column, correct)
    counts.scatter_add_(1, column, scored.float())
    return (right.sum(dim=0) / counts.sum(dim=0))[:n_answers]


# MAD's six tasks register themselves in GENERATORS and ANSWER_VALUES (they use this module's machinery).
import ssmbench.data.mad  # noqa: E402, F401
