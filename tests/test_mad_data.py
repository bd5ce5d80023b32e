"""MAD's six task generators (ssmbench.data.mad): the docstrings' worked examples, layouts that an oracle
reading the inputs answers perfectly, fuzzy recall against MAD's loop on the same draws, memorization's
fixed map, the fixed training and test sets, and the settings table against MAD-lab's configs."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from ssmbench.data import mad
from ssmbench.data.mad import (
    MAD_SETTINGS,
    MAD_TASKS,
    _compression_layout,
    _fuzzy_draws,
    _fuzzy_layout,
    _FuzzyDraws,
    _mad_copying_layout,
    _memorization_layout,
    _recall_layout,
    fixed_test_batches,
    fixed_training_set,
    memorization_map,
)
from ssmbench.data.synthetic import (
    IGNORE,
    Batch,
    answer_accuracy,
    answer_values,
    make_batch,
    seeded_generator,
    task_params,
)

CPU = "cpu"
TASKS = list(mad.GENERATORS)


def draw(task: str, seq_len: int, batch: int = 64, seed: int = 0, **params) -> Batch:
    return make_batch(task, batch, seq_len, generator=seeded_generator(seed, CPU), device=CPU, **params)


def docstring_rows(fn) -> dict[str, list[int]]:
    """A worked example's rows by name (position, inputs, targets, and training where shown), "." as IGNORE."""
    rows = {}
    for name, tokens in re.findall(r"^\s*(position|inputs|targets|training)((?:\s+(?:\d+|\.))+)\s*$",
                                   fn.__doc__, flags=re.MULTILINE):
        rows[name] = [IGNORE if tok == "." else int(tok) for tok in tokens.split()]
    assert rows["position"] == list(range(len(rows["inputs"]))), fn.__name__
    return rows


def rows_of(batch: Batch, training: Batch | None = None) -> dict[str, list[int]]:
    rows = {"position": list(range(batch.inputs.shape[1])), "inputs": batch.inputs[0].tolist(),
            "targets": batch.targets[0].tolist()}
    if training is not None:
        assert torch.equal(training.inputs, batch.inputs)
        rows["training"] = training.targets[0].tolist()
    return rows


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows)


# --- the docstrings' worked examples, from their draws --------------------------------------------------


def test_in_context_recall_docstring_example():
    draws = (t([2, 5, 2, 7, 5]), t([9, 12, 14, 8, 11]), torch.zeros(1, 5, dtype=torch.bool),
             torch.zeros(1, 5, 2, dtype=torch.long), t(7))
    assert rows_of(_recall_layout(*draws, False), _recall_layout(*draws, True)) == \
        docstring_rows(mad.in_context_recall)


def test_noisy_in_context_recall_docstring_example():
    noise = torch.zeros(1, 5, 2, dtype=torch.long)
    noise[0, 1], noise[0, 4] = t(20, 17), t(29, 25)
    draws = (t([3, 0, 3, 6, 0]), t([11, 8, 9, 14, 8]), t([False, True, False, False, True]), noise, t(3))
    assert rows_of(_recall_layout(*draws, False)) == docstring_rows(mad.noisy_in_context_recall)


def fuzzy_example_draws() -> _FuzzyDraws:
    """The docstring's draws: probe 3 1 : 12 at 7; slots 0 4 : 9 10, 5 6 : 8, 0 4 : (11), 2 3 : 7, ..."""
    n_slots = 10
    keys = torch.zeros(1, n_slots, 2, dtype=torch.long)
    keys[0, :4] = t([0, 4], [5, 6], [0, 4], [2, 3])
    values = torch.full((1, n_slots, 2), 7)
    values[0, :3] = t([9, 10], [8, 7], [11, 7])
    value_sizes = torch.ones(1, n_slots, dtype=torch.long)
    value_sizes[0, 0] = 2
    return _FuzzyDraws(keys, torch.full((1, n_slots), 2), values, value_sizes,
                       torch.zeros(1, n_slots, dtype=torch.bool), torch.zeros(1, n_slots, 4, dtype=torch.long),
                       probe_key=t([3, 1]), probe_key_size=t(2), probe_value=t([12, 7]), probe_value_size=t(1),
                       probe_at=t(7))


def test_fuzzy_in_context_recall_docstring_example():
    draws = fuzzy_example_draws()
    assert rows_of(_fuzzy_layout(draws, 20, 15, False), _fuzzy_layout(draws, 20, 15, True)) == \
        docstring_rows(mad.fuzzy_in_context_recall)


def test_mad_selective_copying_docstring_example():
    layout = _mad_copying_layout(t([7, 8, 8, 5]), t([0, 1, 1, 1, 1, 2, 2]), 16, 16)
    assert rows_of(layout) == docstring_rows(mad.mad_selective_copying)


def test_compression_docstring_example():
    assert rows_of(_compression_layout(t([5, 1, 7, 14, 6, 5, 8]), 16)) == docstring_rows(mad.compression)


def test_memorization_docstring_example():
    facts = torch.tensor([9, 7, 12, 13, 11, 10, 8])
    assert rows_of(_memorization_layout(t([5, 3, 1, 3]), facts, 16)) == docstring_rows(mad.memorization)


# --- oracles: every scored answer follows from the inputs -----------------------------------------------


def recall_oracle(inputs: torch.Tensor, n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, which positions must be scored) of in-context recall's test layout, from the inputs:
    at a slot's key (even positions), the value that followed the key the first time it came."""
    predictions = torch.full_like(inputs, IGNORE)
    expected = torch.zeros_like(inputs, dtype=torch.bool)
    for b, row in enumerate(inputs.tolist()):
        seen: dict[int, int] = {}
        for pos in range(0, len(row), 2):
            key = row[pos]
            if key >= n_keys:  # a noise slot
                continue
            if key in seen:
                predictions[b, pos], expected[b, pos] = seen[key], True
            elif pos + 1 < len(row):
                seen[key] = row[pos + 1]
    return predictions, expected


@pytest.mark.parametrize(("task", "params", "n_keys"), [
    ("in_context_recall", {}, 8),
    ("in_context_recall", {"vocab_size": 64}, 32),
    ("noisy_in_context_recall", {}, 8),
    ("noisy_in_context_recall", {"vocab_size": 48, "frac_noise": 0.8}, 16),
])
def test_recall_scores_every_repeated_key_and_the_oracle_answers_all(task, params, n_keys):
    batch = draw(task, 64, batch=32, **params)
    assert batch.inputs.shape == (32, 63)  # MAD builds seq_len tokens and drops the last
    predictions, expected = recall_oracle(batch.inputs, n_keys)
    assert torch.equal(batch.answer_mask, expected)
    assert batch.answer_mask[:, -1].all()  # the query is always scored
    assert [float(a) for a in answer_accuracy(predictions, batch.targets)] == [1.0, 1.0]


def test_noisy_recall_noise_sits_in_whole_slots_at_its_fraction_and_is_never_scored():
    batch = draw("noisy_in_context_recall", 128, batch=256, frac_noise=0.4)
    noise = batch.inputs >= 16
    slots = noise[:, :-1].reshape(256, -1, 2)
    assert torch.equal(slots[..., 0], slots[..., 1])  # both tokens of a slot, or neither
    assert not (batch.answer_mask & noise).any()
    assert abs(slots[..., 0].float().mean().item() - 0.4) < 0.02
    assert (batch.targets[batch.answer_mask] >= 8).all() and (batch.targets[batch.answer_mask] < 16).all()


def test_recall_keeps_a_key_to_query_even_when_every_slot_would_be_noise():
    batch = draw("noisy_in_context_recall", 6, batch=512, seed=3, frac_noise=0.99)  # 2 slots, then the query
    keys = batch.inputs[:, [0, 2]]
    assert ((keys < 8).sum(dim=1) == 1).float().mean() > 0.9  # nearly all noise but one slot
    assert (keys < 8).any(dim=1).all()
    assert ((keys == batch.inputs[:, 4:5]) & (keys < 8)).any(dim=1).all()  # the query asks a key shown
    assert batch.answer_mask[:, -1].all()


def fuzzy_oracle(inputs: torch.Tensor, n_keys: int, n_values: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, orphan) for fuzzy recall's test layout, from the inputs: runs of key ids are keys,
    the run of value ids after a key its value; at a key shown before, the value's tokens are predicted
    from the key's last token on. orphan [B]: the final query's key was never shown before it."""
    predictions = torch.full_like(inputs, IGNORE)
    orphan = torch.zeros(inputs.shape[0], dtype=torch.bool)

    def kind(token: int) -> str:
        return "key" if token < n_keys else "value" if token < n_keys + n_values else "other"

    for b, row in enumerate(inputs.tolist()):
        runs: list[tuple[str, int, list[int]]] = []  # (kind, start, tokens)
        for pos, token in enumerate(row):
            if runs and runs[-1][0] == kind(token) != "other":
                runs[-1][2].append(token)
            else:
                runs.append((kind(token), pos, [token]))
        keys = [i for i, run in enumerate(runs) if run[0] == "key"]
        values: dict[tuple[int, ...], list[int]] = {}
        for i in keys:
            key, end = tuple(runs[i][2]), runs[i][1] + len(runs[i][2]) - 1
            if key in values:
                known = values[key]
                predictions[b, end:end + len(known)] = torch.tensor(known)[:len(row) - end]
            elif i == keys[-1]:
                orphan[b] = True  # the final query, its key never shown
            else:
                values[key] = runs[i + 1][2]
    return predictions, orphan


@pytest.mark.parametrize(("seq_len", "params"), [
    (128, {}), (256, {"vocab_size": 32}), (128, {"k_motif_size": 2, "v_motif_size": 1}),
    (128, {"vocab_size": 24, "noise_vocab_size": 6, "frac_noise": 0.3}),
])
def test_fuzzy_recall_oracle_answers_all_but_the_queries_mad_never_shows(seq_len, params):
    batch = draw("fuzzy_in_context_recall", seq_len, batch=256, **params)
    plain = params.get("vocab_size", 16) - 1 - params.get("noise_vocab_size", 0)
    predictions, orphan = fuzzy_oracle(batch.inputs, plain // 2, plain - plain // 2)
    wrong = (predictions != batch.targets) & batch.answer_mask
    assert orphan.float().mean() < 0.1  # MAD's unanswerable final queries: a few percent
    assert wrong[orphan].any(dim=1).all()
    assert not wrong[orphan, : seq_len - params.get("v_motif_size", 3)].any()  # at the final value only
    answerable = batch.targets.clone()
    answerable[orphan] = IGNORE
    assert [float(a) for a in answer_accuracy(predictions, answerable)] == [1.0, 1.0]


def test_fuzzy_recall_scores_a_final_query_that_was_never_shown_as_mad_does():
    # The docstring's draws with probe_at 13: no slot starts there before the limit (13), so the probe
    # pair is never shown, and its final query (3 1 : 12) is scored all the same.
    batch = _fuzzy_layout(fuzzy_example_draws()._replace(probe_at=t(13)), 20, 15, False)
    assert rows_of(batch) == {
        "position": list(range(20)),
        "inputs": [15, 15, 15, 15, 0, 4, 9, 10, 5, 6, 8, 0, 4, 9, 10, 2, 3, 7, 3, 1],
        "targets": [IGNORE] * 12 + [9, 10] + [IGNORE] * 5 + [12],
    }
    assert fuzzy_oracle(batch.inputs, 7, 8)[1].tolist() == [True]


def fuzzy_by_mads_loop(d: _FuzzyDraws, b: int, seq_len: int, pad: int,
                       training: bool) -> tuple[list[int], list[int]]:
    """MAD's loop (generate_fuzzy_in_context_recall_instance, multi-query), run on the vectorised draws."""
    k_motif, v_motif = d.key_tokens.shape[2], d.value_tokens.shape[2]

    def motif(tokens: torch.Tensor, size) -> tuple[int, ...]:
        return tuple(tokens[: int(size)].tolist())

    probe_key = motif(d.probe_key[b], d.probe_key_size[b])
    probe_value = motif(d.probe_value[b], d.probe_value_size[b])
    inputs: list[int] = []
    targets: list[int] = []
    values: dict[tuple[int, ...], tuple[int, ...]] = {}
    shown: set[tuple[int, ...]] = set()
    probe_added, j = False, 0
    while len(inputs) < seq_len - len(probe_key) - len(probe_value) - (k_motif + v_motif):
        if len(inputs) >= int(d.probe_at[b]) and not probe_added:
            inputs += probe_key + probe_value
            targets += [IGNORE] * (len(probe_key) + len(probe_value))
            shown.add(probe_key)
            probe_added = True
            continue
        key_size, value_size = int(d.key_sizes[b, j]), int(d.value_sizes[b, j])
        if d.is_noise[b, j]:
            inputs += motif(d.noise_tokens[b, j], key_size + value_size)
            targets += [IGNORE] * (key_size + value_size)
        else:
            key = motif(d.key_tokens[b, j], key_size)
            if key == probe_key:
                value, probe_added = probe_value, True
            else:
                value = values.setdefault(key, motif(d.value_tokens[b, j], value_size))
            inputs += key + value
            targets += [IGNORE] * key_size + (list(value) if key in shown else [IGNORE] * len(value))
            shown.add(key)
        j += 1
    inputs += probe_key + probe_value
    targets += [IGNORE] * len(probe_key) + list(probe_value)
    n_pad = seq_len + 1 - len(inputs)
    inputs, targets = [pad] * n_pad + inputs, [IGNORE] * n_pad + targets
    return inputs[:-1], inputs[1:] if training else targets[1:]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(("seq_len", "vocab", "k_motif", "v_motif", "noise", "frac"), [
    (40, 16, 3, 3, 0, 0.0), (50, 32, 3, 3, 6, 0.3), (30, 8, 2, 1, 0, 0.0), (64, 10, 1, 2, 2, 0.5),
])
def test_fuzzy_layout_is_mads_loop_on_the_same_draws(training, seq_len, vocab, k_motif, v_motif, noise, frac):
    # Small vocabularies make the probe key come up by chance and keys repeat: every branch of the loop.
    d = _fuzzy_draws(300, seq_len, vocab, k_motif, v_motif, noise, frac, training, seeded_generator(5, CPU),
                     torch.device(CPU))
    batch = _fuzzy_layout(d, seq_len, vocab - 1, training)
    for b in range(300):
        expected = fuzzy_by_mads_loop(d, b, seq_len, vocab - 1, training)
        assert (batch.inputs[b].tolist(), batch.targets[b].tolist()) == expected, b


def test_fuzzy_training_keys_vary_in_length_and_test_keys_do_not():
    d = _fuzzy_draws(64, 128, 16, 3, 3, 0, 0.0, True, seeded_generator(0, CPU), torch.device(CPU))
    assert set(d.key_sizes.unique().tolist()) == {1, 2, 3} and set(d.probe_key_size.tolist()) == {1, 2, 3}
    d = _fuzzy_draws(64, 128, 16, 3, 3, 0, 0.0, False, seeded_generator(0, CPU), torch.device(CPU))
    assert set(d.key_sizes.unique().tolist()) == {3} and set(d.value_sizes.unique().tolist()) == {1, 2, 3}
    motifs = d.key_tokens.sort(dim=-1).values
    assert (motifs[..., 1:] != motifs[..., :-1]).all()  # a motif's ids are distinct


@pytest.mark.parametrize("task", ["in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall"])
def test_recall_training_layout_is_the_next_token_everywhere(task):
    test_layout = draw(task, 64, seed=4)
    batch = draw(task, 64, seed=4, is_training=True)
    assert batch.answer_mask.all()
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])
    if task != "fuzzy_in_context_recall":  # fuzzy's keys change length with the layout
        assert torch.equal(batch.inputs, test_layout.inputs)
        scored = test_layout.answer_mask
        assert torch.equal(batch.targets[scored], test_layout.targets[scored])


@pytest.mark.parametrize(("seq_len", "n"), [(16, 4), (256, 16), (256, 96), (64, 1)])
def test_mad_selective_copying_oracle_and_layout(seq_len, n):
    batch = draw("mad_selective_copying", seq_len, num_tokens_to_copy=n)
    region = batch.inputs[:, : seq_len - n - 1]
    data = region != 14
    assert (data.sum(dim=1) == n).all() and data[:, -1].all()  # n data tokens; the region ends with one
    assert (batch.inputs[:, seq_len - n - 1] == 15).all() and (batch.inputs[:, seq_len - n:] == 14).all()
    assert (batch.inputs[:, :-n - 1][data] < 14).all()
    predictions = torch.full_like(batch.targets, IGNORE)
    predictions[:, seq_len - n:] = region[data].view(-1, n)
    assert torch.equal(batch.answer_mask.sum(dim=1), torch.full((64,), n))
    assert [float(a) for a in answer_accuracy(predictions, batch.targets)] == [1.0, 1.0]


def test_mad_selective_copying_puts_each_blank_before_a_uniform_data_token():
    batch = draw("mad_selective_copying", 256, batch=512)
    region = batch.inputs[:, :239]
    data_positions = (region != 14).nonzero()[:, 1].view(512, 16)
    before = torch.diff(data_positions, dim=1, prepend=torch.full((512, 1), -1)) - 1
    assert (before.sum(dim=1) == 223).all()
    assert ((before.float().mean(dim=0) - 223 / 16).abs() < 1.0).all()
    # Multinomial counts (variance 223 * 1/16 * 15/16 = 13.1), not the spacings of uniformly random
    # positions (variance ~190), which the Mamba paper's layout has.
    assert 10 < before.float().var().item() < 17


def test_compression_targets_are_the_whole_input():
    batch = draw("compression", 32, vocab_size=64)
    assert torch.equal(batch.targets, batch.inputs) and batch.answer_mask.all()
    assert (batch.inputs[:, -1] == 63).all() and (batch.inputs[:, :-1] < 63).all()
    assert batch.inputs[:, :-1].unique().numel() == 63


def test_memorization_oracle_uses_the_fixed_map():
    facts = memorization_map(256)
    batch = draw("memorization", 32)
    keys, inserts = batch.inputs[:, 0::2], batch.inputs[:, 1::2]
    assert (inserts == 255).all() and (keys < 127).all()
    predictions = torch.full_like(batch.targets, IGNORE)
    predictions[:, 1::2] = facts[keys]
    assert torch.equal(batch.answer_mask[:, 1::2], torch.ones_like(keys, dtype=torch.bool))
    assert not batch.answer_mask[:, 0::2].any()
    assert [float(a) for a in answer_accuracy(predictions, batch.targets)] == [1.0, 1.0]


# --- memorization's map ---------------------------------------------------------------------------------


def test_memorization_map_is_one_to_one_fixed_by_its_seed_and_shared_by_training_and_test():
    facts = memorization_map(256)
    assert facts.shape == (127,) and facts.unique().numel() == 127
    assert facts.min() >= 127 and facts.max() <= 254
    assert torch.equal(memorization_map(256, mad.MAD_SEED), facts.clone())
    assert not torch.equal(memorization_map(256, kv_map_seed=1), facts)
    setting = dataclasses.replace(MAD_SETTINGS["memorization"][0], num_train_examples=64)
    training = fixed_training_set(setting, seed=1)
    test = next(fixed_test_batches(setting, 64, seed=2, n=64))
    for batch in (Batch(training.inputs, training.targets), test):  # other data seeds, the same facts
        assert torch.equal(batch.targets[:, 1::2], facts[batch.inputs[:, 0::2]])
    other = draw("memorization", 32, kv_map_seed=7)
    assert torch.equal(other.targets[:, 1::2], memorization_map(256, 7)[other.inputs[:, 0::2]])


# --- the fixed training and test sets ---------------------------------------------------------------------


def small(task: str, **changes) -> mad.MadSetting:
    return dataclasses.replace(MAD_SETTINGS[task][0], **changes)


def test_training_and_test_sets_are_fixed_by_their_seed_and_differ_by_purpose():
    setting = small("in_context_recall", seq_len=32, num_train_examples=100)
    training = fixed_training_set(setting, seed=3)
    assert training.inputs.shape == (100, 31)
    assert torch.equal(training.targets[:, :-1], training.inputs[:, 1:])  # MAD's training layout
    again = fixed_training_set(setting, seed=3)
    assert torch.equal(training.inputs, again.inputs) and torch.equal(training.targets, again.targets)
    assert not torch.equal(fixed_training_set(setting, seed=4).inputs, training.inputs)
    test = torch.cat([b.inputs for b in fixed_test_batches(setting, 16, seed=3, n=100)])
    assert torch.equal(test, torch.cat([b.inputs for b in fixed_test_batches(setting, 64, seed=3, n=100)]))
    assert not torch.equal(test, training.inputs)
    assert not set(map(tuple, test.tolist())) & set(map(tuple, training.inputs.tolist()))
    assert not torch.equal(test, torch.cat([b.inputs for b in fixed_test_batches(setting, 16, seed=4, n=100)]))
    scored = torch.cat([b.answer_mask for b in fixed_test_batches(setting, 16, seed=3, n=100)])
    assert not scored.all()  # MAD's test layout


def test_mads_set_sizes_by_default():
    setting = MAD_SETTINGS["compression"][0]
    assert len(fixed_training_set(setting)) == 12800
    assert sum(b.inputs.shape[0] for b in fixed_test_batches(setting)) == 1280


def test_a_training_set_is_sampled_with_the_pools_machinery():
    pool = fixed_training_set(small("compression", num_train_examples=50))
    batch = pool.sample(128, seeded_generator(0, CPU))
    assert batch.inputs.shape == (128, 32)
    assert set(map(tuple, batch.inputs.tolist())) <= set(map(tuple, pool.inputs.tolist()))


# --- the settings table ---------------------------------------------------------------------------------


def test_the_settings_table_has_mads_66_settings():
    assert {task: len(settings) for task, settings in MAD_SETTINGS.items()} == {
        "in_context_recall": 11, "noisy_in_context_recall": 14, "fuzzy_in_context_recall": 11,
        "memorization": 6, "compression": 11, "mad_selective_copying": 13}
    assert sum(map(len, MAD_SETTINGS.values())) == 66
    assert set(MAD_SETTINGS) == set(mad.GENERATORS) == set(MAD_TASKS) == set(mad.MAD_NAMES)


def test_settings_match_mads_configs():
    noisy = MAD_SETTINGS["noisy_in_context_recall"]
    assert noisy[0] == mad.MadSetting("noisy_in_context_recall", None, 128, 12800,
                                      {"vocab_size": 32, "noise_vocab_size": 16, "frac_noise": 0.2})
    assert [s.label for s in noisy] == [
        "baseline", "vocab_size=48", "vocab_size=80", "vocab_size=144", "seq_len=256", "seq_len=512",
        "seq_len=1024", "num_train_examples=6400", "num_train_examples=3200", "num_train_examples=1600",
        "num_train_examples=800", "frac_noise=0.4", "frac_noise=0.6", "frac_noise=0.8"]
    assert noisy[-1].params == {"vocab_size": 32, "noise_vocab_size": 16, "frac_noise": 0.8}
    copying = {s.label: s for s in MAD_SETTINGS["mad_selective_copying"]}
    assert copying["num_tokens_to_copy=96"] == mad.MadSetting(
        "mad_selective_copying", ("num_tokens_to_copy", 96), 256, 12800,
        {"vocab_size": 16, "num_tokens_to_copy": 96})
    assert copying["seq_len=1024"].params["num_tokens_to_copy"] == 16
    memorization = MAD_SETTINGS["memorization"]
    assert [(s.params["vocab_size"], s.seq_len, s.num_train_examples) for s in memorization] == \
        [(v, 32, 256) for v in (256, 512, 1024, 2048, 4096, 8192)]
    fuzzy = {s.label: s for s in MAD_SETTINGS["fuzzy_in_context_recall"]}
    assert fuzzy["num_train_examples=800"].params == {"vocab_size": 16, "k_motif_size": 3, "v_motif_size": 3}
    assert fuzzy["num_train_examples=800"].num_train_examples == 800
    assert MAD_SETTINGS["compression"][6].change == ("seq_len", 256)
    assert MAD_SETTINGS["in_context_recall"][0].params == {"vocab_size": 16}


def test_every_setting_draws_its_examples():
    for task, settings in MAD_SETTINGS.items():
        for setting in settings:
            batch = draw(task, setting.seq_len, batch=2, **setting.params)
            assert batch.inputs.shape[1] in (setting.seq_len, setting.seq_len - 1), setting
            assert batch.inputs.max() < setting.params["vocab_size"], setting
            assert batch.answer_mask.any(dim=1).all(), setting


# --- registration ---------------------------------------------------------------------------------------


def test_the_six_tasks_are_registered_with_their_parameters():
    assert {task: set(task_params(task)) for task in TASKS} == {
        "in_context_recall": {"vocab_size", "noise_vocab_size", "frac_noise", "is_training"},
        "noisy_in_context_recall": {"vocab_size", "noise_vocab_size", "frac_noise", "is_training"},
        "fuzzy_in_context_recall": {"vocab_size", "k_motif_size", "v_motif_size", "noise_vocab_size",
                                    "frac_noise", "is_training"},
        "memorization": {"vocab_size", "kv_map_seed"},
        "compression": {"vocab_size"},
        "mad_selective_copying": {"vocab_size", "num_tokens_to_copy"},
    }
    with pytest.raises(ValueError, match="in_context_recall does not take multi_query"):
        draw("in_context_recall", 16, multi_query=True)


def test_answer_values_count_each_tasks_answers():
    baselines = {task: settings[0].params for task, settings in MAD_SETTINGS.items()}
    assert {task: answer_values(task, **params) for task, params in baselines.items()} == {
        "in_context_recall": 8, "noisy_in_context_recall": 8, "fuzzy_in_context_recall": 8,
        "memorization": 127, "compression": 15, "mad_selective_copying": 14}
    assert answer_values("noisy_in_context_recall", 144) == 64  # 16 of its ids are noise
    assert answer_values("in_context_recall", 32, noise_vocab_size=16, frac_noise=0.2) == 8
    assert answer_values("fuzzy_in_context_recall", 128) == 64
    assert answer_values("memorization", 256) == 127
    assert answer_values("mqar", 64) == 32  # the existing tasks keep their count


@pytest.mark.parametrize(("task", "seq_len", "params", "message"), [
    ("in_context_recall", 15, {}, "even seq_len of at least 4"),
    ("noisy_in_context_recall", 16, {"frac_noise": 1.0}, r"frac_noise must be in \[0, 1\)"),
    ("in_context_recall", 16, {"frac_noise": 0.2}, "frac_noise > 0 needs noise_vocab_size > 0"),
    ("fuzzy_in_context_recall", 12, {}, r"seq_len > 2 \* \(k_motif_size \+ v_motif_size\) = 12"),
    ("fuzzy_in_context_recall", 64, {"vocab_size": 6}, "fewer than a motif"),
    ("mad_selective_copying", 33, {}, r"seq_len > 2 \* num_tokens_to_copy \+ 1 = 33"),
    ("memorization", 31, {}, "even seq_len"),
])
def test_impossible_settings_are_refused(task, seq_len, params, message):
    with pytest.raises(ValueError, match=message):
        draw(task, seq_len, **params)
