"""`ssmbench schema`: the JSON Schema of a suite file, committed as suites/suite.schema.json and named on the
first line of every packaged suite, so that an editor with the YAML language server checks suites as they are
typed. The schema must accept every packaged suite and refuse what `ssmbench validate` refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import jsonschema
import pytest
import yaml
from conftest import REPO
from test_cli import assert_user_error, invoke, write

from ssmbench.schema import field_comments, schema_text, suite_schema
from ssmbench.spec import _StrictLoader, packaged_suites_dir

SCHEMA_FILE = REPO / "suites" / "suite.schema.json"
FIRST_LINE = "# yaml-language-server: $schema=./suite.schema.json"
SUITES = sorted({*(REPO / "suites").glob("*.yaml"), *(REPO / "suites").glob("*.yml"), *packaged_suites_dir().glob("*.yaml")})


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_one_the_models_give():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: ssmbench schema --out suites/suite.schema.json"


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.name)
def test_every_packaged_suite_names_the_schema_and_passes_it(suite: Path):
    text = suite.read_text()
    assert text.splitlines()[0] == FIRST_LINE
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(yaml.load(text, _StrictLoader))]
    assert errors == []


def test_the_schema_names_the_kinds_and_describes_their_fields():
    schema = suite_schema()
    kinds = schema["properties"]["tasks"]["items"]["discriminator"]["mapping"]
    assert {"throughput", "memory", "scan", "zero_shot", "synthetic"} <= set(kinds)
    throughput = schema["$defs"]["ThroughputTask"]["properties"]
    assert throughput["new_tokens"] == {"default": 32, "minimum": 2, "title": "New Tokens", "type": "integer",
                                        "description": "tokens generated, exactly this many: no early stop"}
    assert throughput["cuda_graphs"]["description"] == "auto: with and without graphs on CUDA, without on CPU"
    assert throughput["library_baseline"]["description"].startswith("also time the library's own generate()")
    assert throughput["models"]["description"] == "a subset of the suite's models, by name; all when absent"


def test_field_comments_read_beside_and_above_a_field_never_inside_a_string():
    from pydantic import BaseModel

    class Base(BaseModel):
        kind: str  # the base's words

    class Example(Base):
        """A docstring that names a field is prose:
        c: not its description
        """

        # the first line
        # and the second
        a: int = 1  # beside
        b: str = "# not a comment"
        c: int = 0  # only this
        kind: Literal["x"] = "x"

    assert field_comments(Example) == {"kind": "the base's words", "a": "the first line and the second beside",
                                       "c": "only this"}


SUITE = """\
name: bad
models: [tiny-gpt2]
tasks:
  - kind: throughput
    batch_sizes: [1]
    new_tokens: 4
"""

BAD = {
    "unknown task key": SUITE.replace("batch_sizes:", "batch_size:"),
    "unknown suite key": SUITE.replace("models:", "model:"),
    "unknown model key": SUITE.replace("[tiny-gpt2]", "[{name: tiny-gpt2, weight: random}]"),
    "a boolean for a count": SUITE.replace("[1]", "[true]"),
    "a string for a count": SUITE.replace("new_tokens: 4", 'new_tokens: "4"'),
    "below the minimum": SUITE.replace("new_tokens: 4", "new_tokens: 1"),
    "not an allowed value": SUITE + "defaults: {device: CPU}\n",
    "unknown kind": SUITE.replace("kind: throughput", "kind: thruput"),
    "no kind": SUITE.replace("kind: throughput", "repeats: 3"),
    "no tasks": SUITE.split("tasks:")[0] + "tasks: []\n",
    "no name": SUITE.replace("name: bad\n", ""),
}


def test_the_good_suite_passes_both():
    assert list(validator().iter_errors(yaml.safe_load(SUITE))) == []


@pytest.mark.parametrize("fault", BAD)
def test_the_schema_refuses_what_validate_refuses(fault: str, tmp_path: Path):
    path = write(tmp_path / "bad.yaml", BAD[fault])
    assert invoke("validate", path).exit_code == 2
    assert list(validator().iter_errors(yaml.safe_load(BAD[fault]))), f"the schema accepts a suite with {fault}"


def test_the_command_prints_the_schema_or_writes_it(tmp_path: Path):
    printed = invoke("schema")
    assert printed.exit_code == 0 and printed.stdout == schema_text()
    written = invoke("schema", "--out", tmp_path / "s.json")
    assert written.exit_code == 0 and (tmp_path / "s.json").read_text() == schema_text()
    assert_user_error(invoke("schema", "--out", tmp_path / "no" / "s.json"), "s.json: cannot write the schema")


def test_every_field_of_every_mapping_has_a_description():
    schema = suite_schema()
    undescribed = [f"{name}.{field}" for name, node in [("Suite", schema), *schema["$defs"].items()]
                   for field, spec in node.get("properties", {}).items() if not spec.get("description")]
    assert undescribed == [], "say what each is in a comment beside the field"
