"""What `ssmbench validate` says about bad fields: every fault, each on its own line, naming the file, the
field's path, the value given and what is wrong with it (issue 36).

A new user's `lr: [1e-3, 3e-3, -1]` got `tasks[0].train.lr.constrained-float: Input should be a valid
number, got a list (and 1 more)`: the list branch of `lr`'s one-value-or-a-list was not the one heard,
pydantic's name for a branch stood in the path, and the -1 was hidden in "(and 1 more)". Each case below
is a suite file as a user writes it (YAML text: `3e2` and `"1e-3"` are what PyYAML makes of them), run
through the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.cli import app

SUITE = """\
name: bad
defaults: {device: cpu, weights: random}
models: [tiny-mamba]
tasks:
  - kind: throughput
    batch_sizes: [1, 2]
    prompt_lengths: [8]
    new_tokens: 4
    cuda_graphs: auto
  - kind: synthetic
    task: induction_heads
    vocab_size: 8
    architectures:
      mamba: {mixer: mamba, d_model: 16}
    train: {steps: 100, batch_size: 8, seq_len: 16, lr: 1.0e-3}
"""

# (what the user wrote instead of the valid text, [(field path, value as echoed, the fault), ...])
CASES = {
    "a list's bad item": (
        {"lr: 1.0e-3": "lr: [1e-3, 3e-3, -1]"},
        [("tasks[1].train.lr[2]", "-1", "must be greater than 0")]),
    "every bad item of a list": (
        {"lr: 1.0e-3": "lr: [-1e-3, 3e-3, -1]"},
        [("tasks[1].train.lr[0]", "-0.001", "must be greater than 0"),
         ("tasks[1].train.lr[2]", "-1", "must be greater than 0")]),
    "a quoted number": (
        {"lr: 1.0e-3": 'lr: "1e-3"'},
        [("tasks[1].train.lr", '"1e-3"', "is a string, and a number is expected: write it unquoted, 1e-3")]),
    "a quoted number in a list": (
        {"lr: 1.0e-3": 'lr: [1e-3, "3e-3"]'},
        [("tasks[1].train.lr[1]", '"3e-3"', "is a string, and a number is expected: write it unquoted, 3e-3")]),
    "neither one value nor a list": (
        {"lr: 1.0e-3": "lr: {value: 1e-3}"},
        [("tasks[1].train.lr", '{"value": 0.001}', "must be a number or a list")]),
    "one value where a list is taken": (
        {"batch_sizes: [1, 2]": "batch_sizes: 4"},
        [("tasks[0].batch_sizes", "4", "is not a list: write [4]")]),
    "an exponent where an integer is taken": (
        {"steps: 100": "steps: 3e2"},
        [("tasks[1].train.steps", "300.0",
          "is a float, and an integer is expected: write 300 (no decimal point, no exponent)")]),
    "a choice in capitals": (
        {"device: cpu": "device: CPU"},
        [("defaults.device", '"CPU"', "is not one of 'auto', 'cpu' or 'cuda' (did you mean 'cpu'?)")]),
    "none of a union's single values": (
        {"cuda_graphs: auto": "cuda_graphs: sometimes"},
        [("tasks[0].cuda_graphs", '"sometimes"', "must be 'auto' or true or false")]),
    "a list's bad item in on_cpu": (
        {"lr: 1.0e-3}": "lr: 1.0e-3}\n    on_cpu: {because: small, train: {steps: 10, lr: [1e-3, -1]}}"},
        [("tasks[1].on_cpu.train.lr[1]", "-1", "must be greater than 0")]),
    "faults in several fields, in the file's order": (
        {"device: cpu": "device: CPU", "batch_sizes: [1, 2]": "batch_sizes: 4",
         "lr: 1.0e-3": "lr: [1e-3, 3e-3, -1]"},
        [("defaults.device", '"CPU"', "is not one of 'auto', 'cpu' or 'cuda' (did you mean 'cpu'?)"),
         ("tasks[0].batch_sizes", "4", "is not a list: write [4]"),
         ("tasks[1].train.lr[2]", "-1", "must be greater than 0")]),
}


@pytest.mark.parametrize("case", CASES)
def test_validate_names_each_fields_path_value_and_fault(tmp_path: Path, case: str) -> None:
    changes, faults = CASES[case]
    text = SUITE
    for valid, bad in changes.items():
        assert valid in text
        text = text.replace(valid, bad)
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"error: {file}: {path}: {value} {fault}" for path, value, fault in faults]
    for pydantic_words in ("constrained-", "list[", "Input should", "more)"):
        assert pydantic_words not in result.stderr


def test_the_valid_suite_passes(tmp_path: Path) -> None:
    """The cases above differ from a suite that validates only in what they change."""
    file = tmp_path / "good.yaml"
    file.write_text(SUITE)
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 0, result.output


def test_unions_inside_lists_and_of_mappings_are_settled_by_shape() -> None:
    """settle_unions on shapes the suites may grow: a list whose items are unions, a union with a mapping
    (a model) branch, a branch wrapped in a validator."""
    from typing import Annotated

    from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

    from ssmbench.errors import error_message, format_loc, settle_unions

    class Inner(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        x: int

    class Outer(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        items: list[int | str] | int = 1
        inner: Inner | list[Inner] | None = None
        sizes: dict[str, int] | Annotated[list[int], AfterValidator(lambda v: v)] = 1

    def lines(data: dict) -> list[str]:
        with pytest.raises(ValidationError) as info:
            Outer.model_validate(data)
        return [f"{format_loc(e['loc'])}: {error_message(e)}" for e in settle_unions(info.value.errors(), data)]

    assert lines({"items": [1, None]}) == ["items[1]: null must be an integer or a string"]
    assert lines({"inner": {"x": "1"}}) == [
        'inner.x: "1" is a string, and an integer is expected: write it unquoted, 1']
    assert lines({"inner": [{"x": 1}, {}]}) == ["inner[1].x: required, and not given"]
    assert lines({"sizes": [1, "2"]}) == ['sizes[1]: "2" is a string, and an integer is expected: write it '
                                          "unquoted, 2"]
    assert lines({"sizes": 3}) == ["sizes: 3 must be a mapping or a list"]
