"""Phonebook recall: seeded phonebooks, prompts that ask for one number, and the scores of an answer.

The task (Jelassi et al. 2024, "Repeat After Me"; Waleffe et al. 2024) is in-context retrieval: the model
reads a book of `First Last: dddddddddd` lines and must copy one person's number. Transformers can look
the line up; a state-space model must have kept it in a fixed-size state, and when it fails it tends to
answer with a "fuzzy" number that shares many digits, in place, with the right one. Exact match alone
hides that, so every answer also gets a digit accuracy and an edit distance.

Worked example, the `standard` format (a 3-entry book, querying the middle entry)::

    Emma Rossi: 6175550123
    Oscar Tanaka: 9012345678
    Nina Walsh: 7123456789

    Nina Walsh: 7123456789
    Emma Rossi: 6175550123

    Oscar Tanaka:

and the model should continue with ` 9012345678` and a newline. The prompt ends at the colon, with no
space: GPT-2 and GPT-NeoX tokenisers merge the space with the first digit(s) (`Ġ9`, `Ġ617`), so a
trailing space would leave the model to continue from an unnatural lone-space token.

Pure Python: no torch, nothing downloaded. Books are a function of (n_entries, seed) and of the two name
lists shipped in `ssmbench/data/names/`; editing those lists changes every book.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

POSITIONS = ("start", "middle", "end", "random")
FORMATS = ("standard", "reversed")
N_DIGITS = 10
N_EXAMPLES = 2


@dataclass(frozen=True, slots=True)
class Entry:
    """One person in a book."""

    first: str
    last: str
    number: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def line(self) -> str:
        return f"{self.name}: {self.number}"


@dataclass(frozen=True, slots=True)
class Query:
    """One prompt and what it asks for.

    `index` is the queried entry's place in the book and `examples` the places of the two example
    entries; `position` and `fmt` are the slice keys the results are grouped by.
    """

    prompt: str
    answer: str
    name: str
    index: int
    examples: tuple[int, ...]
    n_entries: int
    position: str
    fmt: str


@dataclass(frozen=True, slots=True)
class AnswerScore:
    """The scores of one generated answer; `answer` is the text that was scored (first line, stripped)."""

    exact: bool
    digit_accuracy: float
    edit_distance: int
    answer: str


# --- names and books -------------------------------------------------------------------------------------


@cache
def _names(filename: str) -> tuple[str, ...]:
    text = files("ssmbench.data").joinpath("names", filename).read_text(encoding="ascii")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def first_names() -> tuple[str, ...]:
    """The shipped first names, in file order (the order is part of what a seed means)."""
    return _names("first_names.txt")


def last_names() -> tuple[str, ...]:
    """The shipped last names, in file order."""
    return _names("last_names.txt")


def n_name_pairs() -> int:
    """How many distinct `First Last` names exist: the largest possible book."""
    return len(first_names()) * len(last_names())


def make_book(n_entries: int, seed: int) -> list[Entry]:
    """A book of `n_entries` people with unique names and unique numbers, the same for the same seed.

    Names are drawn without replacement from all first x last pairs, so no name repeats and no
    retry loop is needed. Numbers have 10 digits, the first one 6-9 (as in Jelassi et al.), and are
    unique within the book so that an exact match can only mean the queried entry's number.
    """
    if n_entries < 1:
        raise ValueError(f"a phonebook needs at least one entry, got n_entries={n_entries}")
    firsts, lasts = first_names(), last_names()
    if n_entries > n_name_pairs():
        raise ValueError(
            f"n_entries={n_entries} exceeds the {n_name_pairs()} unique names "
            f"({len(firsts)} first x {len(lasts)} last names)"
        )
    rng = random.Random(seed)
    pairs = rng.sample(range(n_name_pairs()), n_entries)
    numbers: list[str] = []
    seen: set[str] = set()
    while len(numbers) < n_entries:
        number = str(rng.randrange(6 * 10 ** (N_DIGITS - 1), 10**N_DIGITS))
        if number not in seen:
            seen.add(number)
            numbers.append(number)
    return [
        Entry(firsts[pair // len(lasts)], lasts[pair % len(lasts)], number)
        for pair, number in zip(pairs, numbers, strict=True)
    ]


# --- queries ---------------------------------------------------------------------------------------------


def position_band(n_entries: int, position: str) -> range:
    """The indices a query at `position` may take.

    With w = max(1, n_entries // 10) (a tenth of the book, at least one entry):
    `start` is the first w entries, `end` the last w, `middle` the w entries centred in the book
    (starting at (n_entries - w) // 2), and `random` the whole book. For a 100-entry book: 0-9, 45-54,
    90-99 and 0-99; for a 3-entry book: 0, 1, 2 and 0-2.
    """
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; expected one of {', '.join(POSITIONS)}")
    if n_entries < 1:
        raise ValueError(f"a phonebook needs at least one entry, got n_entries={n_entries}")
    width = max(1, n_entries // 10)
    if position == "start":
        return range(0, width)
    if position == "end":
        return range(n_entries - width, n_entries)
    if position == "middle":
        low = (n_entries - width) // 2
        return range(low, low + width)
    return range(0, n_entries)


def query_index(n_entries: int, position: str, rng: random.Random) -> int:
    """A queried entry's index, uniform within `position_band(n_entries, position)`."""
    band = position_band(n_entries, position)
    return rng.randrange(band.start, band.stop)


def format_prompt(book: list[Entry], index: int, examples: tuple[int, ...], fmt: str) -> str:
    """The prompt text asking for `book[index]`'s number, with `book[i]` for i in `examples` as examples.

    `standard` (Jelassi et al.): the book, a blank line, the example lines, a blank line, `Name:`::

        Emma Rossi: 6175550123
        Oscar Tanaka: 9012345678
        Nina Walsh: 7123456789

        Nina Walsh: 7123456789
        Emma Rossi: 6175550123

        Oscar Tanaka:

    `reversed` (Waleffe et al.): the same, preceded by a line naming who will be asked for and a blank
    line, so that a model reading left to right knows which line to keep before it reads the book::

        Find the number of Oscar Tanaka.

        Emma Rossi: 6175550123
        Oscar Tanaka: 9012345678
        Nina Walsh: 7123456789

        Nina Walsh: 7123456789
        Emma Rossi: 6175550123

        Oscar Tanaka:

    No trailing space or newline: the model continues with ` dddddddddd`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    name = book[index].name
    body = "\n".join(entry.line for entry in book)
    shots = "\n".join(book[i].line for i in examples)
    prompt = f"{body}\n\n{shots}\n\n{name}:"
    if fmt == "reversed":
        prompt = f"Find the number of {name}.\n\n{prompt}"
    return prompt


def make_query(book: list[Entry], position: str, fmt: str, rng: random.Random) -> Query:
    """Ask for one entry of `book`, chosen by `position`, with two other entries as examples.

    The examples are drawn uniformly from the other entries (in random order), so they never give the
    answer away.
    """
    n = len(book)
    if n < 1 + N_EXAMPLES:
        raise ValueError(
            f"a query needs at least {1 + N_EXAMPLES} entries (itself and two examples), got {n}"
        )
    index = query_index(n, position, rng)
    # Draw from the n - 1 other entries: indices at or past the query shift up by one.
    examples = tuple(i + (i >= index) for i in rng.sample(range(n - 1), N_EXAMPLES))
    return Query(
        prompt=format_prompt(book, index, examples, fmt),
        answer=book[index].number,
        name=book[index].name,
        index=index,
        examples=examples,
        n_entries=n,
        position=position,
        fmt=fmt,
    )


def _subseed(*parts: object) -> int:
    """A 64-bit seed from parts, stable across runs and Python versions (unlike hash())."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def make_queries(n_entries: int, n_queries: int, position: str, fmt: str, seed: int) -> list[Query]:
    """`n_queries` queries, each on its own freshly drawn book of `n_entries` people.

    One book per query keeps the samples independent: queries on a shared book would share its names,
    its numbers and whatever makes that book easy or hard for a model, so n of them would count as fewer
    than n samples; and with `start`, `middle` or `end` only a tenth of a book is eligible, so a shared
    book would ask for the same entries again and again. Generating a book costs microseconds next to
    the model reading it.

    Query i depends only on (seed, n_entries, i) for its book and on (seed, n_entries, i, position) for
    the queried entry and the examples, never on `fmt` or `n_queries`: the two formats ask the same
    questions about the same books (a paired comparison), and asking for more queries only appends.
    """
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, got {n_queries}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    queries = []
    for i in range(n_queries):
        book = make_book(n_entries, _subseed("book", seed, n_entries, i))
        rng = random.Random(_subseed("query", seed, n_entries, i, position))
        queries.append(make_query(book, position, fmt, rng))
    return queries


# --- scoring ---------------------------------------------------------------------------------------------


def first_line(text: str) -> str:
    """The first line of generated text, stripped of surrounding whitespace.

    Strictly the first line: a model that starts a new line before any number has not answered on the
    query's line, and gets the empty answer.
    """
    return text.split("\n", 1)[0].strip()


def levenshtein(a: str, b: str) -> int:
    """The edit distance between two strings: insertions, deletions and substitutions, each costing one.

    Written here (two-row dynamic programming) because no installed dependency provides it; answers are
    a few characters long, so speed does not matter.
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def score_answer(generated: str, number: str) -> AnswerScore:
    """Score generated text against the queried number.

    The answer is `first_line(generated)`; a malformed answer is scored, not rejected:
    - exact: the answer equals the number (extra text on the line, even after the right digits, is not
      an exact match; text on later lines is ignored).
    - digit_accuracy: the share of the number's digits matched in place by the answer's first
      len(number) characters; missing characters count as wrong and letters never match, so an empty
      answer scores 0 and an answer shifted by one place scores about chance.
    - edit_distance: Levenshtein distance between the whole answer and the number; an empty answer is
      len(number) (10) away, and extra text costs its length (the runner bounds it through
      max_new_tokens).
    """
    if not number:
        raise ValueError("the true number is empty")
    answer = first_line(generated)
    matches = sum(a == b for a, b in zip(answer, number, strict=False))
    return AnswerScore(
        exact=answer == number,
        digit_accuracy=matches / len(number),
        edit_distance=levenshtein(answer, number),
        answer=answer,
    )
