"""Phonebook generator and scoring: seeded books, exact prompt layouts, query positions, answer scores."""

from __future__ import annotations

import random
import re

import pytest

from ssmbench.data import phonebook as pb
from ssmbench.data.phonebook import Entry

NUMBER = re.compile(r"[6-9]\d{9}")
BOOK3 = [
    Entry("Emma", "Rossi", "6175550123"),
    Entry("Oscar", "Tanaka", "9012345678"),
    Entry("Nina", "Walsh", "7123456789"),
]
BODY3 = "Emma Rossi: 6175550123\nOscar Tanaka: 9012345678\nNina Walsh: 7123456789"


# --- names and books -------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [pb.first_names(), pb.last_names()], ids=["first", "last"])
def test_name_lists_are_plain_unique_and_long_enough(names):
    assert len(names) >= 300
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Z][a-z]+", name) for name in names)


def test_entry_name_and_line():
    entry = Entry("Emma", "Rossi", "6175550123")
    assert entry.name == "Emma Rossi"
    assert entry.line == "Emma Rossi: 6175550123"


def test_book_is_deterministic_by_seed():
    assert pb.make_book(200, seed=7) == pb.make_book(200, seed=7)
    assert pb.make_book(200, seed=7) != pb.make_book(200, seed=8)


def test_book_names_unique_numbers_well_formed():
    book = pb.make_book(2000, seed=0)
    assert len(book) == 2000
    assert len({e.name for e in book}) == 2000
    assert len({e.number for e in book}) == 2000
    assert all(NUMBER.fullmatch(e.number) for e in book)
    assert {e.number[0] for e in book} == {"6", "7", "8", "9"}
    assert all(e.first in pb.first_names() and e.last in pb.last_names() for e in book)


def test_book_size_limits():
    assert len(pb.make_book(1, seed=0)) == 1
    with pytest.raises(ValueError, match="unique names"):
        pb.make_book(pb.n_name_pairs() + 1, seed=0)
    with pytest.raises(ValueError):
        pb.make_book(0, seed=0)


# --- prompts ---------------------------------------------------------------------------------------------


def test_standard_prompt_layout():
    prompt = pb.format_prompt(BOOK3, 1, (2, 0), "standard")
    assert prompt == (
        "Emma Rossi: 6175550123\n"
        "Oscar Tanaka: 9012345678\n"
        "Nina Walsh: 7123456789\n"
        "\n"
        "Nina Walsh: 7123456789\n"
        "Emma Rossi: 6175550123\n"
        "\n"
        "Oscar Tanaka:"
    )


def test_reversed_prompt_layout():
    prompt = pb.format_prompt(BOOK3, 1, (2, 0), "reversed")
    assert prompt == (
        "Find the number of Oscar Tanaka.\n"
        "\n"
        "Emma Rossi: 6175550123\n"
        "Oscar Tanaka: 9012345678\n"
        "Nina Walsh: 7123456789\n"
        "\n"
        "Nina Walsh: 7123456789\n"
        "Emma Rossi: 6175550123\n"
        "\n"
        "Oscar Tanaka:"
    )


def test_unknown_format_and_position_are_refused():
    with pytest.raises(ValueError, match="format"):
        pb.format_prompt(BOOK3, 1, (2, 0), "sideways")
    with pytest.raises(ValueError, match="position"):
        pb.query_index(10, "centre", random.Random(0))


@pytest.mark.parametrize("fmt", pb.FORMATS)
@pytest.mark.parametrize(("position", "index"), [("start", 0), ("middle", 1), ("end", 2)])
def test_make_query_on_a_hand_built_book(fmt, position, index):
    query = pb.make_query(BOOK3, position, fmt, random.Random(3))
    assert (query.index, query.answer, query.name) == (index, BOOK3[index].number, BOOK3[index].name)
    assert sorted(query.examples) == [i for i in range(3) if i != index]
    assert query.prompt == pb.format_prompt(BOOK3, index, query.examples, fmt)
    assert query.prompt.endswith(f"\n\n{BOOK3[index].name}:")
    assert (query.n_entries, query.position, query.fmt) == (3, position, fmt)


def test_make_query_needs_three_entries():
    with pytest.raises(ValueError, match="at least 3"):
        pb.make_query(BOOK3[:2], "random", "standard", random.Random(0))


@pytest.mark.parametrize(
    ("n", "position", "band"),
    [
        (100, "start", range(0, 10)),
        (100, "middle", range(45, 55)),
        (100, "end", range(90, 100)),
        (100, "random", range(0, 100)),
        (25, "start", range(0, 2)),
        (25, "middle", range(11, 13)),
        (25, "end", range(23, 25)),
        (10, "middle", range(4, 5)),
        (3, "start", range(0, 1)),
        (3, "middle", range(1, 2)),
        (3, "end", range(2, 3)),
    ],
)
def test_query_positions_land_in_their_band(n, position, band):
    assert pb.position_band(n, position) == band
    rng = random.Random(0)
    drawn = {pb.query_index(n, position, rng) for _ in range(3000)}
    assert drawn == set(band)  # every index of the band is reachable, and none outside it


@pytest.mark.parametrize("position", pb.POSITIONS)
def test_examples_never_equal_the_query(position):
    for query in pb.make_queries(30, 200, position, "standard", seed=1):
        assert len(set(query.examples)) == 2
        assert query.index not in query.examples
        assert query.index in pb.position_band(30, position)


def test_queries_deterministic_independent_and_paired_across_formats():
    standard = pb.make_queries(50, 8, "random", "standard", seed=5)
    assert standard == pb.make_queries(50, 8, "random", "standard", seed=5)
    assert standard[:3] == pb.make_queries(50, 3, "random", "standard", seed=5)
    assert standard != pb.make_queries(50, 8, "random", "standard", seed=6)
    # One book per query: the first lines differ from query to query.
    assert len({q.prompt.split("\n", 1)[0] for q in standard}) == 8
    # The reversed format asks the same questions about the same books.
    reversed_ = pb.make_queries(50, 8, "random", "reversed", seed=5)
    for s, r in zip(standard, reversed_, strict=True):
        assert (s.index, s.examples, s.answer) == (r.index, r.examples, r.answer)
        assert r.prompt == f"Find the number of {s.name}.\n\n{s.prompt}"


def test_queried_line_is_in_the_book_once():
    for query in pb.make_queries(40, 20, "random", "standard", seed=2):
        book_text = query.prompt.split("\n\n")[0]
        assert book_text.split("\n").count(f"{query.name}: {query.answer}") == 1
        assert len(book_text.split("\n")) == 40


# --- scoring ---------------------------------------------------------------------------------------------


def test_levenshtein():
    assert pb.levenshtein("", "") == 0
    assert pb.levenshtein("", "abc") == 3
    assert pb.levenshtein("kitten", "sitting") == 3
    assert pb.levenshtein("sitting", "kitten") == 3
    assert pb.levenshtein("0123456789", "1234567890") == 2


def test_first_line():
    assert pb.first_line(" 6175550123\nBob Smith: 7000000000\n") == "6175550123"
    assert pb.first_line("  6175550123  ") == "6175550123"
    assert pb.first_line("\n6175550123") == ""
    assert pb.first_line("") == ""


@pytest.mark.parametrize(
    ("generated", "exact", "digit_accuracy", "edit_distance", "answer"),
    [
        # Right, with the generated space in front.
        (" 6175550123", True, 1.0, 0, "6175550123"),
        # Right, followed by a newline and the model carrying on with the book.
        (" 6175550123\nNina Walsh: 7123456789\n", True, 1.0, 0, "6175550123"),
        (" 6175550123\n", True, 1.0, 0, "6175550123"),
        # Fuzzy: two digits wrong, in place.
        (" 6175850193", False, 0.8, 2, "6175850193"),
        # Shifted: the first digit dropped; few digits in place, but only one edit away.
        (" 175550123", False, 0.2, 1, "175550123"),
        # Shifted the other way: one digit inserted in front, the last one pushed out of the 10 places.
        (" 66175550123", False, 0.3, 1, "66175550123"),
        # Extra text on the same line: digits in place, but not an exact match.
        (" 6175550123 (mobile)", False, 1.0, 9, "6175550123 (mobile)"),
        # Malformed: a letter O for a zero and one digit short; then no digits at all.
        (" 617555O12", False, 0.8, 2, "617555O12"),
        (" unknown", False, 0.0, 10, "unknown"),
        # Empty: nothing generated, or only a newline before the number.
        ("", False, 0.0, 10, ""),
        ("\n6175550123", False, 0.0, 10, ""),
    ],
)
def test_score_answer(generated, exact, digit_accuracy, edit_distance, answer):
    score = pb.score_answer(generated, "6175550123")
    assert score == pb.AnswerScore(exact, pytest.approx(digit_accuracy), edit_distance, answer)


def test_score_answer_needs_a_number():
    with pytest.raises(ValueError):
        pb.score_answer("6175550123", "")
