"""MAD's six synthetic tasks (Mechanistic Architecture Design: Poli et al. 2024, arXiv 2403.17844), drawn
as whole batches on the device, and MAD's 66 task settings as plain data.

The tasks: in-context recall, noisy in-context recall, fuzzy in-context recall, selective copying (MAD's
variant: `mad_selective_copying`, not the Mamba paper's `selective_copying`), compression and memorization.
Each generator follows MAD-lab's definition (athms/mad-lab at 0f49a45: `mad/data/instances.py`; settings in
`configs/tasks/*.yml`, read through `mad/configs.py`), written anew with the conventions of
ssmbench.data.synthetic, where they are registered (`make_batch("in_context_recall", ...)`, `task_params`,
`answer_values`): vectorised torch draws from a `torch.Generator` on the device; a public function that
draws and a private `_..._layout` that turns the draws into tokens, pinned by the worked example in each
docstring; targets aligned with the outputs (the logits at position t predict `targets[t]`, IGNORE where
nothing is scored). MAD's recall instances come out of MAD-lab shifted the same way (`inputs[:-1]`,
`targets[1:]`), so positions here are MAD's positions.

Parameters carry MAD's names, and their defaults are MAD's baseline setting as MAD's benchmark runs it
(its task config over MADConfig's defaults), which is not always the default of MAD's instance function:
MADConfig passes noise_vocab_size=0 to in-context recall, whose function would default to 16. The length
is make_batch's `seq_len` (MAD's `seq_len`): in-context recall and noisy recall examples are seq_len - 1
tokens long (MAD builds seq_len tokens and drops the last), the other four seq_len.

Training and test layouts. MAD trains the three recall tasks as language models: its training targets are
the next token everywhere (`is_training=True`: every position scored, noise and first-seen values
included), while its test targets score only the values of keys seen before (`is_training=False`, the
default here, the layout the docstrings show). Fuzzy recall's training keys also vary in length (1 ..
k_motif_size tokens) where its test keys are all k_motif_size long. The other three tasks have one layout.

MAD's data protocol (mad/configs.py, train.py): per setting, 12,800 training examples (the setting's
`num_train_examples`) and 1,280 test examples, drawn once, one after the other, from one numpy generator
seeded with the config's seed (12345, the same for every setting, every optimizer point and the model's
initialisation), cached on disk and shared by the six learning-rate x weight-decay runs of the setting;
trained for 200 epochs at batch 128; the test set is also what MAD validates on after each epoch (and
its EarlyStopping stops a run once that accuracy reaches 0.999). Here:
`fixed_training_set(setting, seed=MAD_SEED)` draws the training set with ExamplePool.draw on the CPU from
`pool_seed(seed)` and moves it to the device (walk it in epochs with synthetic.EpochWalk, or sample it), and `fixed_test_batches(setting, seed=MAD_SEED)` draws the test
set with fixed_batches (`fixed_set_seed(seed, seq_len, "test")`): the same examples for the same seed on
every device, run and job, different examples for the training and the test set.

Where ssmbench's draw differs from MAD-lab's (each one on purpose; none changes a task's distribution
except where said):
  - Random numbers: torch on the device instead of numpy (and numpy's global generator, which MAD's
    selective copying uses for its blanks), so no MAD example is reproduced id for id; each draw follows
    MAD's distribution. Per-example maps and choices are drawn as whole tensors (in-context recall draws
    a value per pair slot and keeps the one drawn at the key's first slot: MAD's lazily drawn map, in
    distribution).
  - Training and test sets come from two seeded streams (pool_seed and fixed_set_seed of one seed), not
    from one stream continued; the seed of the data is the helpers' `seed`, not the job's model seed.
  - Sampling: MAD walks the training set in shuffled epochs of ceil(n / 128) batches (the last one short
    when 128 does not divide n: 800 examples make 6 batches of 128 and one of 32). The synthetic kind
    (suites/mad.yaml) walks it with synthetic.EpochWalk: every example once an epoch, each epoch in a
    seeded order, but batches run on across an epoch's end, so every batch holds 128 examples (one shape
    for a CUDA graph): 200 epochs of 800 examples are 1,250 steps there, 1,400 in MAD; of the other sizes,
    MAD's own steps (mad_settings.training_steps).
  - MAD warns when more than 0.1% of test inputs also appear in training (`check_for_leakage`); nothing
    here checks (memorization's test set shares its facts with training by design).
  - In-context recall: MAD keeps one pair slot, chosen uniformly among the seq_len / 2 slots, free of
    noise (the last slot is the query, so one time in seq_len / 2 none is kept); an example whose slots
    before the query all come out noise makes MAD raise (it has no key to query). Here its first slot is a
    pair instead: with MAD's noisiest setting (0.8 at seq_len 128) that is one example in ~1e8.
  - Not provided: MAD's single-query recall (`multi_query=False`, with a copy-prefix token; every MAD
    config sets multi_query: True), and noise in compression and memorization (MAD's instance functions
    take noise_vocab_size and frac_noise there, but no MAD setting sets them, and MAD's compression
    returns its noisy inputs as targets, ignoring the noise mask it builds).
  - Kept from MAD-lab, although odd: fuzzy recall's final query may ask for a key never shown before it
    (MAD places the shown copy of the query pair at a random point that the sequence can end before, and
    still scores the query); in the test layout this happens in 2-3% of examples at seq_len 128, where
    no model can answer it (2,000 examples each: MAD-lab's generator 2.0% at vocab 16 and 2.9% at vocab
    64, this module's 2.0% and 2.4%).
  - Scoring, for whoever compares numbers: MAD's accuracy is torchmetrics' MulticlassAccuracy, whose
    default average is "macro" (the mean, over the classes that occur, of each class's accuracy); ssmbench's
    answer_accuracy is correct answers / answer positions.
  - History: MAD-lab before 35772e8 (Dec 2024, "fix MADConfig instance_fn_kwargs") did not pass
    num_tokens_to_copy to its generator, so its selective copying copied 16 tokens in every setting,
    including the three settings that change it to 32, 64 and 96; the code released with the paper
    (March 2024) predates the fix.

MAD_TASKS is MAD's task configs (baseline and changes) as data; MAD_SETTINGS expands them as MAD's
`make_benchmark_mad_configs` does: the baseline, then each change alone from the baseline, one value at a
time, in the configs' order: 11 + 14 + 11 + 6 + 11 + 13 = 66 settings (in-context recall, noisy, fuzzy,
memorization, compression, selective copying), each swept by MAD over MAD_TRAINING's learning rates and
weight decays.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ssmbench.data import synthetic
from ssmbench.data.mad_settings import (  # noqa: F401 - MAD's settings, re-exported
    MAD_SEED,
    MAD_SETTINGS,
    MAD_TASKS,
    MAD_TEST_EXAMPLES,
    MAD_TRAINING,
    MadSetting,
    expand_settings,
)
from ssmbench.data.synthetic import (
    IGNORE,
    Batch,
    ExamplePool,
    _check_generator,
    _require,
    fixed_batches,
    pool_seed,
)

# --- in-context recall and noisy in-context recall ------------------------------------------------------


def _recall_vocab(vocab_size: int, noise_vocab_size: int) -> tuple[int, int]:
    """(key ids, value ids) of a recall task: keys are 0 .. k-1 and values k .. k+v-1 below the noise ids,
    which take the top noise_vocab_size ids of `vocab_size`."""
    plain = vocab_size - noise_vocab_size
    return plain // 2, plain - plain // 2


def _check_noise(vocab_size: int, noise_vocab_size: int, frac_noise: float, n_keys: int) -> None:
    _require(0 <= frac_noise < 1, f"frac_noise must be in [0, 1), got {frac_noise}")
    _require(noise_vocab_size >= 0, f"noise_vocab_size must be at least 0, got {noise_vocab_size}")
    _require(frac_noise == 0 or noise_vocab_size > 0, "frac_noise > 0 needs noise_vocab_size > 0")
    _require(n_keys >= 1, f"vocab_size={vocab_size} with noise_vocab_size={noise_vocab_size} leaves no key id")


def _noise_tokens(shape: tuple[int, ...], vocab_size: int, noise_vocab_size: int, frac_noise: float,
                  generator: torch.Generator, device: torch.device) -> Tensor:
    """Noise ids (the top noise_vocab_size ids) of `shape`; zeros where the task has no noise to draw."""
    if frac_noise == 0:
        return torch.zeros(shape, dtype=torch.int64, device=device)
    return torch.randint(vocab_size - noise_vocab_size, vocab_size, shape, generator=generator, device=device)


def in_context_recall(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 16,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    is_training: bool = False,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's in-context recall (multi-query associative recall over a sequence of key-value pairs); MAD's
    baseline: vocab_size 16, seq_len 128, 12,800 training examples; MAD varies vocab_size (32, 64, 128),
    seq_len (256, 512, 1024) and num_train_examples (6400 .. 800).

    Layout of one example, seq_len - 1 tokens long (MAD builds seq_len tokens and drops the last):
      - ids: keys 0 .. k-1 and values k .. 2k-1 (or one more value id when the plain vocabulary is odd),
        k = (vocab_size - noise_vocab_size) // 2; noise ids are the top noise_vocab_size ids;
      - seq_len / 2 - 1 pair slots at positions (2i, 2i+1), then the query slot: in each pair slot a key
        drawn uniformly with replacement, followed by its value. Each example has its own map: a key's
        value is drawn uniformly (two keys may share a value) where the key first comes, and repeated
        after. With frac_noise, each pair slot is instead two noise tokens with that probability (one
        slot chosen uniformly is kept a pair, as MAD does);
      - the query slot: a key drawn uniformly among the distinct keys shown, then its value, of which only
        the key is in the inputs;
      - scored (the test layout): every value of a key already shown (MAD's multi_query) and the query's.
        The target of a value sits at its key's position, where the model has read the key;
      - with is_training (MAD's training set): the target is the next token at every position.

    Worked example (vocab_size=16, seq_len=12: keys 0..7, values 8..15; draws: keys 2 5 2 7 5 with
    values 9 12 (14) 8 (11), the values in brackets unused as their keys were drawn before; query key 7;
    "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10
        inputs    2  9  5 12  2  9  7  8  5 12  7
        targets   .  .  .  .  9  .  .  . 12  .  8
        training  9  5 12  2  9  7  8  5 12  7  8

    Source: MAD-lab `generate_in_context_recall_instance` (multi_query=True, as in every MAD config).
    """
    device = _check_generator(generator, device)
    n_keys, n_values = _recall_vocab(vocab_size, noise_vocab_size)
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(seq_len >= 4 and seq_len % 2 == 0,
             f"in-context recall needs an even seq_len of at least 4 (pairs, then the query), got {seq_len}")
    _check_noise(vocab_size, noise_vocab_size, frac_noise, n_keys)
    n_slots = seq_len // 2 - 1
    keys = torch.randint(0, n_keys, (batch, n_slots), generator=generator, device=device)
    values = torch.randint(n_keys, n_keys + n_values, (batch, n_slots), generator=generator, device=device)
    is_noise = torch.rand(batch, n_slots, generator=generator, device=device) < frac_noise
    # MAD keeps one of its seq_len / 2 slots free of noise; the last is the query, already a pair.
    kept = torch.randint(0, n_slots + 1, (batch, 1), generator=generator, device=device)
    is_noise &= torch.arange(n_slots, device=device) != kept
    is_noise[:, 0] &= ~is_noise.all(dim=1)
    noise = _noise_tokens((batch, n_slots, 2), vocab_size, noise_vocab_size, frac_noise, generator, device)
    shown = torch.zeros(batch, n_keys + 1, dtype=torch.bool, device=device)
    shown = shown.scatter_(1, torch.where(is_noise, n_keys, keys), True)[:, :n_keys]
    scores = torch.rand(batch, n_keys, generator=generator, device=device).masked_fill(~shown, -1.0)
    return _recall_layout(keys, values, is_noise, noise, scores.argmax(dim=1), is_training)


def noisy_in_context_recall(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 32,
    noise_vocab_size: int = 16,
    frac_noise: float = 0.2,
    is_training: bool = False,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's noisy in-context recall: in-context recall (see there) with noise pairs, MAD's defaults.

    MAD's baseline: vocab_size 32 of which the top 16 ids are noise, frac_noise 0.2 of the pair slots
    noise, seq_len 128, 12,800 training examples; MAD varies vocab_size (48, 80, 144: 16 more than recall's
    32, 64, 128, for the noise), seq_len, num_train_examples and frac_noise (0.4, 0.6, 0.8). Noise slots
    are never scored; in the training layout their tokens are targets like any other.

    Worked example (vocab_size=32, noise_vocab_size=16: keys 0..7, values 8..15, noise 16..31, seq_len=12;
    draws: slots 3:11, noise 20 17, 3, 6:14, noise 29 25; query key 3; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10
        inputs    3 11 20 17  3 11  6 14 29 25  3
        targets   .  .  .  . 11  .  .  .  .  . 11

    Source: MAD-lab `generate_noisy_in_context_recall_instance`, which calls the recall generator.
    """
    return in_context_recall(batch, seq_len, vocab_size=vocab_size, noise_vocab_size=noise_vocab_size,
                             frac_noise=frac_noise, is_training=is_training, generator=generator, device=device)


def _first_occurrence(ids: Tensor) -> Tensor:
    """[B, S] index of the first slot holding each slot's id (a slot whose id is unique: itself)."""
    ordered, order = ids.sort(dim=1, stable=True)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    group_start = torch.where(new, rank, 0).cummax(dim=1).values
    return torch.empty_like(order).scatter_(1, order, order.gather(1, group_start))


def _recall_layout(keys: Tensor, values: Tensor, is_noise: Tensor, noise: Tensor, query: Tensor,
                   is_training: bool) -> Batch:
    """Tokens from the draws: per pair slot [B, n] its key, the value drawn for it (used where the key
    comes first) and whether it is noise, with its noise tokens [B, n, 2]; the query's key [B]."""
    batch, n_slots = keys.shape
    slot = torch.arange(n_slots + 1, device=keys.device)
    is_noise = torch.cat([is_noise, torch.zeros_like(is_noise[:, :1])], dim=1)
    keys = torch.cat([keys, query[:, None]], dim=1)
    first = _first_occurrence(torch.where(is_noise, -1 - slot, keys))  # a noise slot matches nothing
    values = torch.cat([values, values[:, :1]], dim=1).gather(1, first)  # the query's key came before
    scored = (first < slot) & ~is_noise
    noise = torch.cat([noise, torch.zeros_like(noise[:, :1])], dim=1)
    tokens = torch.where(is_noise[..., None], noise, torch.stack([keys, values], dim=2)).flatten(1)
    answers = torch.stack([torch.full_like(keys, IGNORE), torch.where(scored, values, IGNORE)], dim=2)
    targets = tokens[:, 1:] if is_training else answers.flatten(1)[:, 1:]
    return Batch(tokens[:, :-1].contiguous(), targets.contiguous())


# --- fuzzy in-context recall ----------------------------------------------------------------------------


def _distinct_tokens(shape: tuple[int, ...], size: int, low: int, high: int, generator: torch.Generator,
                     device: torch.device) -> Tensor:
    """[*shape, size] distinct ids from low .. high-1 in random order (a uniformly random permutation of
    `size` of them, of which any prefix is one of its own length)."""
    drawn: list[Tensor] = []
    for i in range(size):
        token = torch.randint(0, high - low - i, shape, generator=generator, device=device)
        if drawn:  # the token-th id not drawn yet: step over the drawn ones, smallest first
            for taken in torch.stack(drawn, dim=-1).sort(dim=-1).values.unbind(-1):
                token = token + (token >= taken).long()
        drawn.append(token)
    return torch.stack(drawn, dim=-1) + low


class _FuzzyDraws(NamedTuple):
    """The draws of fuzzy recall: per slot [B, S] of MAD's loop, then the probe pair's [B]."""

    key_tokens: Tensor  # [B, S, k_motif_size]: the slot's key is its first key_sizes tokens
    key_sizes: Tensor  # [B, S]
    value_tokens: Tensor  # [B, S, v_motif_size]: the value drawn for the key, used where the key comes first
    value_sizes: Tensor  # [B, S]
    is_noise: Tensor  # [B, S] bool
    noise_tokens: Tensor  # [B, S, k_motif_size + v_motif_size]: a noise slot's key_size + value_size tokens
    probe_key: Tensor  # [B, k_motif_size] (the first probe_key_size tokens)
    probe_key_size: Tensor  # [B]
    probe_value: Tensor  # [B, v_motif_size] (the first probe_value_size tokens)
    probe_value_size: Tensor  # [B]
    probe_at: Tensor  # [B] MAD's probe_idx: the probe pair is shown at the first slot starting there or later


def fuzzy_in_context_recall(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 16,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    is_training: bool = False,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's fuzzy in-context recall: keys and values are motifs of several tokens. MAD's baseline:
    vocab_size 16, seq_len 128, k_motif_size and v_motif_size 3, 12,800 training examples; MAD varies
    vocab_size (32, 64, 128), seq_len (256, 512, 1024) and num_train_examples (6400 .. 800).

    Layout of one example, seq_len tokens long:
      - ids: the pad token is vocab_size - 1; below it, keys 0 .. k-1, values k .. and noise on top, as in
        in_context_recall with vocab_size - 1 ids;
      - a key is 1 .. k_motif_size distinct key ids (always k_motif_size in the test layout), a value
        1 .. v_motif_size distinct value ids, each length uniform, each motif uniform over the
        arrangements of its length;
      - first the probe pair (a key and its value) is drawn, and an index probe_at uniform in
        [0, seq_len - 2 * P), P the pair's length. Then, as MAD's loop does, slots are appended while
        the sequence is shorter than seq_len - P - (k_motif_size + v_motif_size): at the first slot that
        would start at probe_at or later the probe pair is shown (unless its key came up by chance
        before), and every other slot is a key and its value (the value drawn where the key first
        comes, the probe's value for the probe key) or, with probability frac_noise, as many noise ids;
      - then the probe pair again, and pad tokens in front up to seq_len + 1 tokens, of which the
        example is the first seq_len (MAD's shift);
      - scored (the test layout): each value token of a key shown before, the final probe's always (its
        key may never have been shown: the sequence can end before probe_at, see the module docstring);
        the target of a value's first token sits at its key's last token;
      - with is_training: the next token at every position.

    Worked example (vocab_size=16: keys 0..6, values 7..14, pad 15; seq_len=20, k_motif_size=2,
    v_motif_size=2, test layout; draws: probe pair 3 1 : 12, probe_at 7; slots 0 4 : 9 10, then 5 6 : 8,
    then 0 4 : (11), whose value is the first slot's since its key repeats, then 2 3 : ..., which would
    start at 14, past the limit 20 - 3 - 4 = 13. The probe pair is shown at 7, where the third slot would
    have started; 4 pad tokens fill the front; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19
        inputs   15 15 15 15  0  4  9 10  5  6  8  3  1 12  0  4  9 10  3  1
        targets   .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  9 10  .  . 12
        training 15 15 15  0  4  9 10  5  6  8  3  1 12  0  4  9 10  3  1 12

    Source: MAD-lab `generate_fuzzy_in_context_recall_instance` (multi_query=True, as in MAD's config).
    """
    device = _check_generator(generator, device)
    n_keys, n_values = _recall_vocab(vocab_size - 1, noise_vocab_size)
    width = k_motif_size + v_motif_size
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(k_motif_size >= 1 and v_motif_size >= 1,
             f"k_motif_size and v_motif_size must be at least 1, got {k_motif_size} and {v_motif_size}")
    _check_noise(vocab_size - 1, noise_vocab_size, frac_noise, n_keys)
    _require(n_keys >= k_motif_size and n_values >= v_motif_size,
             f"vocab_size={vocab_size} has {n_keys} key and {n_values} value ids, fewer than a motif of "
             f"k_motif_size={k_motif_size} or v_motif_size={v_motif_size} distinct ids")
    _require(seq_len > 2 * width, f"fuzzy recall needs seq_len > 2 * (k_motif_size + v_motif_size) = "
                                  f"{2 * width} (room for the probe pair twice), got {seq_len}")
    _require((vocab_size + 1) ** k_motif_size < 2**62, f"k_motif_size={k_motif_size} is too long to index")
    draws = _fuzzy_draws(batch, seq_len, vocab_size, k_motif_size, v_motif_size, noise_vocab_size, frac_noise,
                         is_training, generator, device)
    return _fuzzy_layout(draws, seq_len, vocab_size - 1, is_training)


def _fuzzy_draws(batch: int, seq_len: int, vocab_size: int, k_motif_size: int, v_motif_size: int,
                 noise_vocab_size: int, frac_noise: float, is_training: bool, generator: torch.Generator,
                 device: torch.device) -> _FuzzyDraws:
    """Everything fuzzy recall draws, for `seq_len // 2` slots (enough: a slot holds at least 2 tokens)."""
    n_keys, n_values = _recall_vocab(vocab_size - 1, noise_vocab_size)
    width = k_motif_size + v_motif_size
    n_slots = seq_len // 2

    def sizes(motif: int, shape: tuple[int, ...], varies: bool) -> Tensor:
        if not varies:
            return torch.full(shape, motif, dtype=torch.int64, device=device)
        return torch.randint(1, motif + 1, shape, generator=generator, device=device)

    probe_key_size = sizes(k_motif_size, (batch,), is_training)
    probe_value_size = sizes(v_motif_size, (batch,), True)
    probe_key = _distinct_tokens((batch,), k_motif_size, 0, n_keys, generator, device)
    probe_value = _distinct_tokens((batch,), v_motif_size, n_keys, n_keys + n_values, generator, device)
    room = seq_len - 2 * (probe_key_size + probe_value_size)
    probe_at = torch.minimum((torch.rand(batch, generator=generator, device=device) * room).long(), room - 1)
    shape = (batch, n_slots)
    return _FuzzyDraws(
        key_tokens=_distinct_tokens(shape, k_motif_size, 0, n_keys, generator, device),
        key_sizes=sizes(k_motif_size, shape, is_training),
        value_tokens=_distinct_tokens(shape, v_motif_size, n_keys, n_keys + n_values, generator, device),
        value_sizes=sizes(v_motif_size, shape, True),
        is_noise=torch.rand(shape, generator=generator, device=device) < frac_noise,
        noise_tokens=_noise_tokens((*shape, width), vocab_size - 1, noise_vocab_size, frac_noise, generator,
                                   device),
        probe_key=probe_key, probe_key_size=probe_key_size, probe_value=probe_value,
        probe_value_size=probe_value_size, probe_at=probe_at,
    )


def _motif_ids(tokens: Tensor, sizes: Tensor, base: int) -> Tensor:
    """One integer per motif (its first `sizes` of `tokens` [..., m], ids below base - 1): equal motifs,
    and only they, get equal integers."""
    digits = torch.where(torch.arange(tokens.shape[-1], device=tokens.device) < sizes[..., None], tokens + 1, 0)
    powers = base ** torch.arange(tokens.shape[-1], device=tokens.device)
    return (digits * powers).sum(dim=-1)


def _join(head: Tensor, head_len: Tensor, tail: Tensor, width: int) -> Tensor:
    """[..., width]: the first head_len ids of head [..., h], then tail's [..., t] (the rest is filler)."""
    offset = torch.arange(width, device=head.device)
    from_head = head.gather(-1, offset.clamp(max=head.shape[-1] - 1).expand(*head.shape[:-1], width))
    from_tail = tail.gather(-1, (offset - head_len[..., None]).clamp(0, tail.shape[-1] - 1))
    return torch.where(offset < head_len[..., None], from_head, from_tail)


def _fuzzy_layout(d: _FuzzyDraws, seq_len: int, pad_token: int, is_training: bool) -> Batch:
    """Tokens from the draws, as MAD's loop lays them out: slot lengths and starts, where the probe pair is
    shown, which slots fit, which values are scored; then every piece is scattered to its positions."""
    batch, n_slots, k_motif = d.key_tokens.shape
    width = k_motif + d.value_tokens.shape[2]
    device = d.key_tokens.device
    slot = torch.arange(n_slots, device=device)
    ids = torch.where(d.is_noise, -1 - slot, _motif_ids(d.key_tokens, d.key_sizes, pad_token + 1))
    first = _first_occurrence(ids)
    is_probe = ids == _motif_ids(d.probe_key, d.probe_key_size, pad_token + 1)[:, None]
    # A key's value is the one drawn where the key first comes; the probe key's is the probe's everywhere.
    first_value = d.value_tokens.gather(1, first[..., None].expand(-1, -1, d.value_tokens.shape[2]))
    value = torch.where(is_probe[..., None], d.probe_value[:, None], first_value)
    value_size = torch.where(is_probe, d.probe_value_size[:, None], d.value_sizes.gather(1, first))
    length = d.key_sizes + torch.where(d.is_noise, d.value_sizes, value_size)
    start = length.cumsum(dim=1) - length
    probe_len = d.probe_key_size + d.probe_value_size
    limit = (seq_len - probe_len - width)[:, None]  # MAD appends while the sequence is shorter than this
    # The probe pair goes in at the first slot starting at probe_at or later, if the loop gets there and
    # the probe key has not come up by chance before; the slots from there on move by its length.
    at = (start < d.probe_at[:, None]).sum(dim=1, keepdim=True)
    start_at = start.gather(1, at.clamp(max=n_slots - 1))
    inserted = (at < n_slots) & (start_at < limit) & ~(is_probe & (slot < at)).any(dim=1, keepdim=True)
    after = inserted & (slot >= at)
    start = start + torch.where(after, probe_len[:, None], 0)
    fits = start < limit
    scored = fits & ~d.is_noise & ((first < slot) | (is_probe & after))
    end = torch.maximum(torch.where(fits, start + length, 0).amax(dim=1, keepdim=True),
                        torch.where(inserted, start_at + probe_len[:, None], 0))
    pad = seq_len + 1 - end - probe_len[:, None]  # MAD pads in front to seq_len + 1 tokens

    ignore = torch.full_like(d.key_tokens, IGNORE)
    pairs = _join(d.key_tokens, d.key_sizes, value, width)
    slot_tokens = torch.where(d.is_noise[..., None], d.noise_tokens, pairs)
    slot_answers = _join(ignore, d.key_sizes, torch.where(scored[..., None], value, IGNORE), width)
    probe = _join(d.probe_key, d.probe_key_size, d.probe_value, width)[:, None]
    final_answers = _join(ignore[:, 0], d.probe_key_size, d.probe_value, width)[:, None]
    pieces = torch.cat([slot_tokens, probe, probe], dim=1)  # the slots, the probe pair shown, the final probe
    answers = torch.cat([slot_answers, torch.full_like(probe, IGNORE), final_answers], dim=1)
    piece_start = torch.cat([start, start_at, end], dim=1) + pad
    piece_len = torch.cat([length, probe_len[:, None], probe_len[:, None]], dim=1)
    placed = torch.cat([fits, inserted, torch.ones_like(inserted)], dim=1)
    offset = torch.arange(width, device=device)
    keep = placed[..., None] & (offset < piece_len[..., None])
    where = torch.where(keep, piece_start[..., None] + offset, seq_len + 1).flatten(1)  # the rest: a spare column
    tokens = torch.full((batch, seq_len + 2), pad_token, device=device).scatter_(1, where, pieces.flatten(1))
    answer_row = torch.full_like(tokens, IGNORE).scatter_(1, where, answers.flatten(1))
    targets = tokens[:, 1:-1] if is_training else answer_row[:, 1:-1]
    return Batch(tokens[:, :seq_len].contiguous(), targets.contiguous())


# --- selective copying (MAD's) --------------------------------------------------------------------------


def mad_selective_copying(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 16,
    num_tokens_to_copy: int = 16,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's selective copying: copy the data tokens of a region, in order, after a copy token. MAD's
    baseline: vocab_size 16, seq_len 256, num_tokens_to_copy 16, 12,800 training examples; MAD varies
    vocab_size (32, 64, 128), seq_len (512, 1024), num_train_examples (6400 .. 800) and
    num_tokens_to_copy (32, 64, 96).

    Layout of one example, seq_len tokens long, n = num_tokens_to_copy:
      - ids: data 0 .. vocab_size-3, blank vocab_size-2, copy token vocab_size-1;
      - positions 0 .. seq_len-n-2 (the region): n data tokens drawn uniformly with replacement, and
        seq_len - 2n - 1 blanks between them, each blank put before one of the n data tokens chosen
        uniformly (MAD's np.insert at random indices), so the region ends with a data token. This is not
        the Mamba paper's layout (`selective_copying`: uniformly random positions, a marker per answer);
      - position seq_len-n-1: the copy token, then n blanks, at which the data tokens are the targets in
        order (the first at the first blank after the copy token); nothing else is scored.

    Worked example (vocab_size=16: data 0..13, blank 14, copy 15; seq_len=16, num_tokens_to_copy=4;
    draws: data 7 8 8 5, the 7 blanks before data tokens 0 1 1 1 1 2 2, i.e. 1, 4, 2 and 0 blanks before
    each; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
        inputs   14  7 14 14 14 14  8 14 14  8  5 15 14 14 14 14
        targets   .  .  .  .  .  .  .  .  .  .  .  .  7  8  8  5

    Source: MAD-lab `generate_selective_copying_instance` (its `generate_copying_instance`, selective=True).
    """
    device = _check_generator(generator, device)
    n_blanks = seq_len - 2 * num_tokens_to_copy - 1
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(num_tokens_to_copy >= 1, f"num_tokens_to_copy must be at least 1, got {num_tokens_to_copy}")
    _require(n_blanks >= 1, f"MAD's selective copying needs seq_len > 2 * num_tokens_to_copy + 1 = "
                            f"{2 * num_tokens_to_copy + 1}, got {seq_len}")
    _require(vocab_size >= 3, f"vocab_size must leave a data id besides blank and copy, got {vocab_size}")
    tokens = torch.randint(0, vocab_size - 2, (batch, num_tokens_to_copy), generator=generator, device=device)
    gaps = torch.randint(0, num_tokens_to_copy, (batch, n_blanks), generator=generator, device=device)
    return _mad_copying_layout(tokens, gaps, seq_len, vocab_size)


def _mad_copying_layout(tokens: Tensor, gaps: Tensor, seq_len: int, vocab_size: int) -> Batch:
    """Tokens from the draws: data tokens [B, n] and, per blank [B, seq_len - 2n - 1], the index of the
    data token it goes before."""
    batch, n = tokens.shape
    blanks_before = torch.zeros_like(tokens).scatter_add_(1, gaps, torch.ones_like(gaps)).cumsum(dim=1)
    positions = torch.arange(n, device=tokens.device) + blanks_before
    inputs = torch.full((batch, seq_len), vocab_size - 2, device=tokens.device).scatter_(1, positions, tokens)
    inputs[:, seq_len - n - 1] = vocab_size - 1
    targets = torch.full_like(inputs, IGNORE)
    targets[:, seq_len - n:] = tokens
    return Batch(inputs, targets)


# --- compression ----------------------------------------------------------------------------------------


def compression(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 16,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's compression: reconstruct the whole input from one aggregation token. MAD's baseline:
    vocab_size 16, seq_len 32, 12,800 training examples; MAD varies vocab_size (32, 64, 128), seq_len
    (64, 128, 256) and num_train_examples (6400 .. 800).

    Layout of one example, seq_len tokens long: seq_len - 1 tokens drawn uniformly with replacement from
    0 .. vocab_size-2, then the compression token vocab_size-1. Targets: the inputs themselves, every
    position scored (the compression token's own included, as in MAD).

    What the model must output: MAD trains an auto-encoder (mad/model/auto_encoder.py), not a language
    model: its layers read the inputs, the state at the last position (the compression token) is the
    whole code, and an MLP decodes from it, plus a sinusoidal embedding of each position p, the logits at
    p, scored against the input token at p. A causal language model's outputs would see the token they
    must return; the auto-encoder's see only the code.

    Worked example (vocab_size=16: data 0..14, compression token 15; seq_len=8; draws: 5 1 7 14 6 5 8)::

        position  0  1  2  3  4  5  6  7
        inputs    5  1  7 14  6  5  8 15
        targets   5  1  7 14  6  5  8 15

    Source: MAD-lab `generate_compression_instance` (noise_vocab_size=0 and frac_noise=0, as in MAD's
    configs) and its AutoEncoder with global_pool='last' (the default of MAD's benchmark).
    """
    device = _check_generator(generator, device)
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(seq_len >= 2, f"compression needs seq_len >= 2 (a token and the compression token), got {seq_len}")
    _require(vocab_size >= 2, f"vocab_size must leave a data id besides the compression token, got {vocab_size}")
    tokens = torch.randint(0, vocab_size - 1, (batch, seq_len - 1), generator=generator, device=device)
    return _compression_layout(tokens, vocab_size)


def _compression_layout(tokens: Tensor, vocab_size: int) -> Batch:
    """Tokens from the draws: the data tokens [B, seq_len - 1]."""
    inputs = torch.cat([tokens, torch.full_like(tokens[:, :1], vocab_size - 1)], dim=1)
    return Batch(inputs, inputs.clone())


# --- memorization ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _facts(vocab_size: int, kv_map_seed: int, device: str) -> Tensor:
    generator = synthetic.seeded_generator(kv_map_seed, "cpu")
    n_keys, n_values = (vocab_size - 1) // 2, (vocab_size - 1) - (vocab_size - 1) // 2
    return (torch.randperm(n_values, generator=generator)[:n_keys] + n_keys).to(device)


def memorization_map(vocab_size: int = 256, kv_map_seed: int = MAD_SEED,
                     device: str | torch.device = "cpu") -> Tensor:
    """Memorization's facts: [n_keys] int64, the value id of each key id 0 .. n_keys-1, n_keys =
    (vocab_size - 1) // 2, the values being distinct ids among n_keys .. vocab_size-2 (a uniformly random
    one-to-one map; for an even vocab_size one value id is left over). Drawn once from kv_map_seed on the
    CPU with torch.randperm: the same map for
    the training and the test set, on every device (MAD: `generate_kv_map(vocab_size - 1, seed=config.seed)`
    in MADConfig, shared by all instances). Cached per device; do not modify the returned tensor."""
    _require(vocab_size >= 3,
             f"memorization needs vocab_size >= 3 (a key, a value, the insert token), got {vocab_size}")
    return _facts(vocab_size, kv_map_seed, str(torch.device(device)))


def memorization(
    batch: int,
    seq_len: int,
    *,
    vocab_size: int = 256,
    kv_map_seed: int = MAD_SEED,
    generator: torch.Generator,
    device: str | torch.device,
) -> Batch:
    """MAD's memorization: recall facts learnt in training (a map fixed across all examples, not given in
    the input). MAD's baseline: vocab_size 256, seq_len 32, 256 training examples; MAD varies vocab_size
    (512 .. 8192).

    Layout of one example, seq_len tokens long: seq_len / 2 slots of two positions, each a key drawn
    uniformly with replacement from 0 .. n_keys-1, n_keys = (vocab_size - 1) // 2, then the insert token
    vocab_size-1. The target at the insert token is the key's value under memorization_map(vocab_size,
    kv_map_seed); the values never appear in the inputs. Nothing else is scored.

    Worked example (vocab_size=16: keys 0..6, values 7..14, insert token 15; seq_len=8; draws: the map
    0->9 1->7 2->12 3->13 4->11 5->10 6->8 (value 14 left over), keys 5 3 1 3; "." is IGNORE)::

        position  0  1  2  3  4  5  6  7
        inputs    5 15  3 15  1 15  3 15
        targets   . 10  . 13  .  7  . 13

    Source: MAD-lab `generate_memorization_instance` and `generate_kv_map` (noise_vocab_size=0 and
    frac_noise=0, as in MAD's configs).
    """
    device = _check_generator(generator, device)
    _require(batch >= 1, f"batch must be at least 1, got {batch}")
    _require(seq_len >= 2 and seq_len % 2 == 0, f"memorization needs an even seq_len of at least 2, got {seq_len}")
    facts = memorization_map(vocab_size, kv_map_seed, device)
    keys = torch.randint(0, facts.shape[0], (batch, seq_len // 2), generator=generator, device=device)
    return _memorization_layout(keys, facts, vocab_size)


def _memorization_layout(keys: Tensor, facts: Tensor, vocab_size: int) -> Batch:
    """Tokens from the draws: the keys [B, seq_len / 2], and the facts [n_keys]."""
    inputs = torch.stack([keys, torch.full_like(keys, vocab_size - 1)], dim=2).flatten(1)
    targets = torch.stack([torch.full_like(keys, IGNORE), facts[keys]], dim=2).flatten(1)
    return Batch(inputs, targets)


# --- registration ---------------------------------------------------------------------------------------

GENERATORS = {
    "in_context_recall": in_context_recall,
    "noisy_in_context_recall": noisy_in_context_recall,
    "fuzzy_in_context_recall": fuzzy_in_context_recall,
    "memorization": memorization,
    "compression": compression,
    "mad_selective_copying": mad_selective_copying,
}
MAD_NAMES = {  # ssmbench's task name -> MAD-lab's
    "in_context_recall": "in-context-recall",
    "noisy_in_context_recall": "noisy-in-context-recall",
    "fuzzy_in_context_recall": "fuzzy-in-context-recall",
    "memorization": "memorization",
    "compression": "compression",
    "mad_selective_copying": "selective-copying",
}
# How many ids a task's scored answers (its test layout) are drawn from, given all its parameters.
_ANSWER_IDS = {
    "in_context_recall": lambda p: _recall_vocab(p["vocab_size"], p["noise_vocab_size"])[1],
    "noisy_in_context_recall": lambda p: _recall_vocab(p["vocab_size"], p["noise_vocab_size"])[1],
    "fuzzy_in_context_recall": lambda p: _recall_vocab(p["vocab_size"] - 1, p["noise_vocab_size"])[1],
    "memorization": lambda p: (p["vocab_size"] - 1) // 2,  # one value per key
    "compression": lambda p: p["vocab_size"] - 1,
    "mad_selective_copying": lambda p: p["vocab_size"] - 2,
}


def answer_values(task: str, vocab_size: int, **params) -> int:
    """synthetic.answer_values for a MAD task: how many ids its scored answers are drawn from (the test
    layout's: values for the recall tasks, one per key for memorization), the generator's defaults
    standing in for parameters not given."""
    defaults = {name: p.default for name, p in synthetic.task_params(task).items()
                if p.default is not inspect.Parameter.empty}
    return _ANSWER_IDS[task](defaults | params | {"vocab_size": vocab_size})


synthetic.GENERATORS.update(GENERATORS)
synthetic.ANSWER_VALUES.update({task: functools.partial(answer_values, task) for task in GENERATORS})


# --- MAD's fixed data -----------------------------------------------------------------------------------


def training_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` in MAD's training layout: is_training=True for the tasks that have one (the recall tasks,
    trained on the next token everywhere); the others' training and test examples are laid out alike."""
    if "is_training" in synthetic.task_params(task):
        return {**params, "is_training": True}
    return dict(params)


def fixed_training_set(setting: MadSetting, *, seed: int = MAD_SEED,
                       device: str | torch.device = "cpu") -> ExamplePool:
    """MAD's fixed training set of a setting: setting.num_train_examples examples in the training layout,
    drawn once on the CPU from pool_seed(seed), so the same on every device, then moved to `device`.
    Walk it in epochs with synthetic.EpochWalk (as the synthetic kind trains it), or sample it with `.sample`."""
    pool = ExamplePool.draw(setting.task, setting.num_train_examples, setting.seq_len, seed=pool_seed(seed),
                            device="cpu", **training_params(setting.task, setting.params))
    return ExamplePool(pool.inputs.to(device), pool.targets.to(device))


def fixed_test_batches(setting: MadSetting, batch_size: int = 128, *, seed: int = MAD_SEED,
                 device: str | torch.device = "cpu", n: int = MAD_TEST_EXAMPLES, digest=None) -> Iterator[Batch]:
    """MAD's fixed test set of a setting: n examples (MAD's 1,280) in the test layout, drawn by
    fixed_batches with purpose 'test' from `seed` (the same on every device; `digest` as there)."""
    return fixed_batches(setting.task, n, setting.seq_len, batch_size, seed=seed, purpose="test",
                         device=device, digest=digest, **setting.params)
