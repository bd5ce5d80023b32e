"""Synthetic task generators: layouts, invariants, seeding, the docstrings' worked examples, accuracy."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from ssmbench.data import synthetic as syn
from ssmbench.data.synthetic import (
    GENERATORS,
    IGNORE,
    IH_SPECIAL_ID,
    MQAR_FILLER_ID,
    SC_MARKER_ID,
    SC_NOISE_ID,
    Batch,
    accuracy_by_answer_index,
    answer_accuracy,
    induction_heads,
    make_batch,
    mqar,
    power_law_gap_probs,
    seeded_generator,
    selective_copying,
)

CPU = "cpu"
# (task, seq_len, params, expected input length, expected answers per example)
CASES = [
    ("selective_copying", 64, {"n_memorize": 8}, 72, 8),
    ("induction_heads", 64, {}, 64, 1),
    ("mqar", 64, {"num_kv_pairs": 8, "vocab_size": 64}, 64, 8),
]


def draw(task: str, seq_len: int, params: dict, seed: int = 0, batch: int = 16) -> Batch:
    return make_batch(task, batch, seq_len, generator=seeded_generator(seed, CPU), device=CPU, **params)


def docstring_rows(fn) -> dict[str, list[int]]:
    """The worked example's `inputs` and `targets` rows, "." read as IGNORE."""
    rows = {}
    for name in ("position", "inputs", "targets"):
        match = re.search(rf"^\s*{name}((?:\s+(?:\d+|\.))+)\s*$", fn.__doc__, flags=re.MULTILINE)
        assert match, f"{fn.__name__}'s docstring has no {name} row"
        rows[name] = [IGNORE if tok == "." else int(tok) for tok in match.group(1).split()]
    assert rows["position"] == list(range(len(rows["inputs"])))
    return rows


def as_rows(batch: Batch) -> dict[str, list[int]]:
    return {"inputs": batch.inputs[0].tolist(), "targets": batch.targets[0].tolist()}


# --- common shape, seeding and answer positions --------------------------------------------------------


@pytest.mark.parametrize(("task", "seq_len", "params", "length", "n_answers"), CASES)
def test_shapes_dtypes_and_answer_count(task, seq_len, params, length, n_answers):
    batch = draw(task, seq_len, params)
    assert batch.inputs.shape == batch.targets.shape == (16, length)
    assert batch.inputs.dtype == batch.targets.dtype == torch.int64
    assert batch.answer_mask.dtype == torch.bool
    assert batch.answer_mask.sum(dim=1).tolist() == [n_answers] * 16
    assert torch.equal(batch.answer_mask, batch.targets != IGNORE)


@pytest.mark.parametrize(("task", "seq_len", "params", "length", "n_answers"), CASES)
def test_same_seed_same_batch_other_seed_other_batch(task, seq_len, params, length, n_answers):
    first, again, other = (
        draw(task, seq_len, params, 7),
        draw(task, seq_len, params, 7),
        draw(task, seq_len, params, 8),
    )
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.inputs, other.inputs)
    assert not torch.equal(first.targets, other.targets)


def test_consecutive_draws_from_one_generator_differ():
    generator = seeded_generator(0, CPU)
    a = induction_heads(8, 32, generator=generator, device=CPU)
    b = induction_heads(8, 32, generator=generator, device=CPU)
    assert not torch.equal(a.inputs, b.inputs)


# --- selective copying ---------------------------------------------------------------------------------


def test_selective_copying_docstring_example():
    data_tokens = torch.tensor([[7, 3, 3, 9]])
    data_positions = torch.tensor([[1, 4, 5, 10]])
    batch = syn._selective_copying_layout(data_tokens, data_positions, seq_len=12)
    expected = docstring_rows(selective_copying)
    assert as_rows(batch) == {"inputs": expected["inputs"], "targets": expected["targets"]}
    assert batch.inputs[0].tolist() == [0, 7, 0, 0, 3, 3, 0, 0, 0, 0, 9, 0, 1, 1, 1, 1]
    assert batch.targets[0].tolist() == [IGNORE] * 12 + [7, 3, 3, 9]


def test_selective_copying_answers_are_the_data_tokens_in_order():
    seq_len, n_memorize = 40, 16
    batch = selective_copying(
        32, seq_len, n_memorize=n_memorize, generator=seeded_generator(3, CPU), device=CPU
    )
    region, markers = batch.inputs[:, :seq_len], batch.inputs[:, seq_len:]
    assert (markers == SC_MARKER_ID).all()
    assert not (region == SC_MARKER_ID).any()
    assert (batch.targets[:, :seq_len] == IGNORE).all()
    answers = batch.targets[:, seq_len:]
    assert not ((answers == SC_NOISE_ID) | (answers == SC_MARKER_ID)).any()
    assert answers.min() >= 2 and answers.max() <= 15
    data_mask = region != SC_NOISE_ID
    assert data_mask.sum(dim=1).tolist() == [n_memorize] * 32
    # Row-major boolean indexing keeps each row's data tokens in order of appearance.
    assert torch.equal(region[data_mask].view(32, n_memorize), answers)


def test_selective_copying_positions_cover_the_region():
    seq_len = 64
    batch = selective_copying(256, seq_len, n_memorize=4, generator=seeded_generator(0, CPU), device=CPU)
    used = (batch.inputs[:, :seq_len] != SC_NOISE_ID).any(dim=0)
    assert used.all(), "every region position should hold a data token in some of 256 examples"


def test_selective_copying_region_may_be_all_data():
    batch = selective_copying(4, 5, n_memorize=5, generator=seeded_generator(0, CPU), device=CPU)
    assert torch.equal(batch.inputs[:, :5], batch.targets[:, 5:])


# --- induction heads -----------------------------------------------------------------------------------


def test_induction_heads_docstring_example():
    tokens = torch.tensor([[5, 9, 2, 14, 7, 11, 3, 3, 8, 1, 6, 4]])
    batch = syn._induction_heads_layout(tokens, torch.tensor([3]))
    expected = docstring_rows(induction_heads)
    assert as_rows(batch) == {"inputs": expected["inputs"], "targets": expected["targets"]}
    assert batch.inputs[0].tolist() == [5, 9, 2, 0, 7, 11, 3, 3, 8, 1, 6, 0]
    assert batch.targets[0].tolist() == [IGNORE] * 11 + [7]


def check_induction_invariants(batch: Batch) -> None:
    inputs, targets = batch.inputs, batch.targets
    n, length = inputs.shape
    special = inputs == IH_SPECIAL_ID
    assert special.sum(dim=1).tolist() == [2] * n
    assert special[:, -1].all()
    first = special.int().argmax(dim=1)
    assert int(first.max()) <= length - 4
    rows = torch.arange(n)
    assert torch.equal(targets[:, -1], inputs[rows, first + 1])
    assert (targets[:, :-1] == IGNORE).all()
    assert not (targets[:, -1] == IH_SPECIAL_ID).any()


def test_induction_heads_invariants_and_spread():
    batch = induction_heads(512, 32, generator=seeded_generator(1, CPU), device=CPU)
    check_induction_invariants(batch)
    first = (batch.inputs == IH_SPECIAL_ID).int().argmax(dim=1)
    assert int(first.min()) == 0 and int(first.max()) == 32 - 4
    assert sorted(set(batch.targets[:, -1].tolist())) == list(range(1, 16))


def test_induction_heads_shortest_sequence():
    batch = induction_heads(8, 4, generator=seeded_generator(0, CPU), device=CPU)
    assert (batch.inputs[:, 0] == IH_SPECIAL_ID).all() and (batch.inputs[:, 3] == IH_SPECIAL_ID).all()
    assert torch.equal(batch.targets[:, 3], batch.inputs[:, 1])
    with pytest.raises(ValueError, match="seq_len >= 4"):
        induction_heads(8, 3, generator=seeded_generator(0, CPU), device=CPU)


def test_induction_heads_long_sequence():
    batch = induction_heads(8, 2**16, generator=seeded_generator(0, CPU), device=CPU)
    assert batch.inputs.shape == (8, 2**16)
    check_induction_invariants(batch)


# --- MQAR ----------------------------------------------------------------------------------------------


def test_mqar_docstring_example():
    keys, values, gaps = torch.tensor([[2, 4]]), torch.tensor([[8, 7]]), torch.tensor([[4, 1]])
    batch = syn._mqar_layout(keys, values, gaps, seq_len=16, fillers=None)
    expected = docstring_rows(mqar)
    assert as_rows(batch) == {"inputs": expected["inputs"], "targets": expected["targets"]}
    assert batch.inputs[0].tolist() == [2, 8, 4, 7, 0, 0, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0]


@pytest.mark.parametrize("random_non_queries", [False, True])
def test_mqar_queries_recall_their_values(random_non_queries):
    k, vocab, seq_len, n = 8, 64, 96, 64
    batch = mqar(
        n,
        seq_len,
        num_kv_pairs=k,
        vocab_size=vocab,
        random_non_queries=random_non_queries,
        generator=seeded_generator(2, CPU),
        device=CPU,
    )
    keys, values = batch.inputs[:, 0 : 2 * k : 2], batch.inputs[:, 1 : 2 * k : 2]
    assert keys.min() >= 1 and keys.max() < vocab // 2
    assert values.min() >= vocab // 2 and values.max() < vocab
    assert (keys.sort(dim=1).values.diff(dim=1) > 0).all(), "keys repeat within an example"
    assert (values.sort(dim=1).values.diff(dim=1) > 0).all(), "values repeat within an example"
    assert (batch.targets[:, : 2 * k] == IGNORE).all()

    mask = batch.answer_mask
    positions = mask.nonzero()[:, 1].view(n, k)
    assert ((positions - 2 * k) % 2 == 0).all(), "queries sit at even offsets of the query region"
    query_keys = batch.inputs[mask].view(n, k)
    answers = batch.targets[mask].view(n, k)
    # Each query key is one of the pairs' keys, and its target is that pair's value.
    match = query_keys[:, :, None] == keys[:, None, :]
    assert (match.sum(dim=2) == 1).all()
    assert torch.equal(answers, (match.long() * values[:, None, :]).sum(dim=2))
    # Every key is queried exactly once.
    assert torch.equal(query_keys.sort(dim=1).values, keys.sort(dim=1).values)

    fillers = batch.inputs[:, 2 * k :][~mask[:, 2 * k :]]
    if random_non_queries:
        assert fillers.max() > MQAR_FILLER_ID and fillers.min() >= 0 and fillers.max() < vocab
    else:
        assert (fillers == MQAR_FILLER_ID).all()


def test_mqar_power_law_pulls_queries_toward_the_pairs():
    def mean_gap(power_a: float) -> float:
        batch = mqar(
            256,
            256,
            num_kv_pairs=4,
            vocab_size=64,
            power_a=power_a,
            generator=seeded_generator(0, CPU),
            device=CPU,
        )
        return ((batch.answer_mask.nonzero()[:, 1] - 8) / 2).mean().item()

    # Uniform gaps over 0..123 average about 61.5; power_a=0.01 bunches them near the pairs.
    assert 50 < mean_gap(1.0) < 73
    assert mean_gap(0.01) < 35


def test_power_law_gap_probs_exact():
    assert torch.allclose(power_law_gap_probs(4, 1.0), torch.full((4,), 0.25))
    weights = torch.tensor([1.0, 2**-0.5, 3**-0.5, 0.5])
    assert torch.allclose(power_law_gap_probs(4, 0.5), weights / weights.sum())


def test_mqar_checks_its_room():
    generator = seeded_generator(0, CPU)
    with pytest.raises(ValueError, match="seq_len >= 4 \\* num_kv_pairs = 32"):
        mqar(2, 31, num_kv_pairs=8, vocab_size=64, generator=generator, device=CPU)
    with pytest.raises(ValueError, match="has 7 key ids"):
        mqar(2, 64, num_kv_pairs=8, vocab_size=16, generator=generator, device=CPU)
    # The smallest legal case: 4k tokens, k keys out of vocab_size//2 - 1 ids.
    batch = mqar(2, 32, num_kv_pairs=8, vocab_size=18, generator=generator, device=CPU)
    assert batch.answer_mask.sum().item() == 16


# --- entry point ---------------------------------------------------------------------------------------


def test_generators_registry_and_make_batch_errors():
    assert set(GENERATORS) == {"selective_copying", "induction_heads", "mqar",  # and MAD's (tests/test_mad_data.py)
                               "in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall",
                               "memorization", "compression", "mad_selective_copying"}
    generator = seeded_generator(0, CPU)
    with pytest.raises(ValueError, match="did you mean 'induction_heads'"):
        make_batch("induction_head", 2, 16, generator=generator, device=CPU)
    with pytest.raises(ValueError, match="induction_heads does not take n_memorize"):
        make_batch("induction_heads", 2, 16, generator=generator, device=CPU, n_memorize=4)
    with pytest.raises(ValueError, match="mqar needs num_kv_pairs, vocab_size"):
        make_batch("mqar", 2, 16, generator=generator, device=CPU)


def test_generator_on_another_device_is_refused():
    with pytest.raises(ValueError, match="generator is on cpu but the batch is drawn on meta"):
        selective_copying(2, 32, generator=seeded_generator(0, CPU), device="meta")


def test_cross_entropy_touches_answer_positions_only():
    batch = draw("selective_copying", 24, {"n_memorize": 4}, batch=4)
    logits = torch.randn(4, 28, 16, generator=torch.Generator().manual_seed(0))
    shuffled = logits.clone()
    shuffled[~batch.answer_mask] = torch.randn(int((~batch.answer_mask).sum()), 16)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
    assert torch.equal(
        loss, F.cross_entropy(shuffled.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
    )
    answers_only = F.cross_entropy(logits[batch.answer_mask], batch.targets[batch.answer_mask])
    assert torch.allclose(loss, answers_only)


# --- accuracy ------------------------------------------------------------------------------------------

I = IGNORE  # noqa: E741
# Three examples, answers marked by targets != IGNORE; predictions at non-answer positions are junk.
TARGETS = torch.tensor(
    [
        [I, I, 5, 6, I, 7],  # 3 answers
        [I, 4, I, I, 2, I],  # 2 answers
        [I, I, I, I, I, 9],  # 1 answer
    ]
)
PREDICTIONS = torch.tensor(
    [
        [1, 1, 5, 6, 0, 7],  # all 3 right, junk elsewhere
        [4, 4, 2, 2, 3, 2],  # 1st right, 2nd wrong (3 != 2); the 2s off the answers do not count
        [9, 9, 9, 9, 9, 9],  # right
    ]
)


def test_answer_accuracy_counts_answer_positions_only():
    per_position, per_example = answer_accuracy(PREDICTIONS, TARGETS)
    assert per_position.dim() == per_example.dim() == 0
    assert per_position.item() == pytest.approx(5 / 6)
    assert per_example.item() == pytest.approx(2 / 3)
    # Rewriting every non-answer prediction changes nothing.
    other = torch.where(TARGETS == IGNORE, 15, PREDICTIONS)
    assert [t.item() for t in answer_accuracy(other, TARGETS)] == [per_position.item(), per_example.item()]
    # All right, then all wrong.
    perfect = torch.where(TARGETS == IGNORE, 0, TARGETS)
    assert [t.item() for t in answer_accuracy(perfect, TARGETS)] == [1.0, 1.0]
    assert [t.item() for t in answer_accuracy(perfect + 1, TARGETS)] == [0.0, 0.0]


def test_answer_accuracy_skips_examples_without_answers():
    targets = torch.cat([TARGETS, torch.full((1, 6), IGNORE)])
    predictions = torch.cat([PREDICTIONS, torch.zeros(1, 6, dtype=torch.int64)])
    per_position, per_example = answer_accuracy(predictions, targets)
    assert per_position.item() == pytest.approx(5 / 6)
    assert per_example.item() == pytest.approx(2 / 3)


def test_accuracy_by_answer_index():
    # 1st answers: 5 right, 4 right, 9 right -> 3/3; 2nd: 6 right, 2 wrong -> 1/2; 3rd: 7 right -> 1/1.
    assert accuracy_by_answer_index(PREDICTIONS, TARGETS).tolist() == [1.0, 0.5, 1.0]
    assert accuracy_by_answer_index(PREDICTIONS, TARGETS, n_answers=2).tolist() == [1.0, 0.5]
    padded = accuracy_by_answer_index(PREDICTIONS, TARGETS, n_answers=4)
    assert padded[:3].tolist() == [1.0, 0.5, 1.0] and torch.isnan(padded[3])


def test_accuracy_by_answer_index_on_selective_copying():
    batch = draw("selective_copying", 32, {"n_memorize": 4}, batch=8)
    predictions = torch.where(batch.answer_mask, batch.targets, 0)
    predictions[:, 32 + 2] = SC_MARKER_ID  # the 3rd answer always wrong
    predictions[:4, 32 + 3] = SC_MARKER_ID  # the 4th wrong in half the examples
    assert accuracy_by_answer_index(predictions, batch.targets, n_answers=4).tolist() == [1.0, 1.0, 0.0, 0.5]
    per_position, per_example = answer_accuracy(predictions, batch.targets)
    assert per_position.item() == pytest.approx((8 + 8 + 0 + 4) / 32)
    assert per_example.item() == 0.0


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        answer_accuracy(PREDICTIONS[:, :5], TARGETS)


# --- fixed test and validation sets ---------------------------------------------------------------------


def _fixed(n: int, batch_size: int, seed: int = 0, purpose: str = "test", length: int = 32):
    import hashlib

    digest = hashlib.sha256()
    batches = list(syn.fixed_batches("induction_heads", n, length, batch_size, seed=seed, purpose=purpose,
                                      device="cpu", digest=digest, vocab_size=16))
    return torch.cat([b.inputs for b in batches]), torch.cat([b.targets for b in batches]), digest.hexdigest()


def test_a_fixed_set_does_not_depend_on_the_batch_size_and_grows_by_appending():
    inputs, targets, digest = _fixed(10, 3)
    same_inputs, same_targets, same_digest = _fixed(10, 10)
    assert torch.equal(inputs, same_inputs) and torch.equal(targets, same_targets) and digest == same_digest
    more, _, other_digest = _fixed(14, 4)
    assert torch.equal(more[:10], inputs) and other_digest != digest  # the first 10 of 14 are those 10
    assert len({tuple(row.tolist()) for row in inputs}) == 10  # ten different examples, not one repeated


def test_fixed_sets_differ_by_seed_purpose_and_length():
    base = _fixed(4, 4)[0]
    assert not torch.equal(base, _fixed(4, 4, seed=1)[0])
    assert not torch.equal(base, _fixed(4, 4, purpose="validation")[0])
    assert not torch.equal(base[:, :16], _fixed(4, 4, length=16)[0])


def test_a_pool_is_a_fixed_training_set_sampled_by_the_stream():
    """zoology's finite training set: drawn once from its seed (the same pool on every call), then each batch
    is a sample of its rows chosen by the training stream, so two streams differ and one stream repeats."""
    pool = syn.ExamplePool.draw("mqar", 300, 32, seed=syn.pool_seed(0), device="cpu", num_kv_pairs=4,
                                vocab_size=64)
    again = syn.ExamplePool.draw("mqar", 300, 32, seed=syn.pool_seed(0), device="cpu", num_kv_pairs=4,
                                 vocab_size=64)
    assert len(pool) == 300 and torch.equal(pool.inputs, again.inputs) and torch.equal(pool.targets, again.targets)
    first = syn.make_batch("mqar", 300, 32, generator=syn.seeded_generator(syn.pool_seed(0), "cpu"), device="cpu",
                           num_kv_pairs=4, vocab_size=64)
    assert torch.equal(first.inputs, pool.inputs)  # under one chunk: one draw of 300 from the pool's seed
    batch = pool.sample(16, syn.seeded_generator(1, "cpu"))
    rows = {tuple(r) for r in pool.inputs.tolist()}
    assert batch.inputs.shape == (16, 32) and all(tuple(r) in rows for r in batch.inputs.tolist())
    for inputs, targets in zip(batch.inputs, batch.targets, strict=True):  # each row keeps its own targets
        (i,) = [k for k, r in enumerate(pool.inputs.tolist()) if r == inputs.tolist()][:1]
        assert torch.equal(pool.targets[i], targets)
    assert torch.equal(pool.sample(16, syn.seeded_generator(1, "cpu")).inputs, batch.inputs)
    assert not torch.equal(pool.sample(16, syn.seeded_generator(2, "cpu")).inputs, batch.inputs)
