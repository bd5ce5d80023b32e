"""The JSON Schema of a suite file, from the same pydantic models that validate suites.

Editors with the YAML language server read it (a suite's first line `# yaml-language-server: $schema=...`)
to complete and check fields as one types, and the docs' suite reference is rendered from it, so neither
can drift from the code. A field's description is its `Field(description=...)` where it has one, else the
comment written beside (or just above) it in the model's source: the comments already say what each field
means, and one copy of that text is enough.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from ssmbench.errors import UserError

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
# A field line at the class body's indent: `name: annotation` (a method or a nested block is not one).
_FIELD = re.compile(r"^    ([A-Za-z_]\w*)\s*:\s*\S")


def suite_schema() -> dict[str, Any]:
    """The schema of a suite file, with the kinds registered now."""
    from ssmbench.spec import suite_model

    schema = suite_model().model_json_schema(schema_generator=_WithComments)
    models = schema["properties"]["models"]
    models["items"] = {"anyOf": [{"type": "string", "description": "a model of the zoo (`ssmbench list models`)"},
                                 models["items"]]}  # spec.Suite reads a bare name as {name: ...}
    schema["properties"]["tasks"]["minItems"] = 1  # spec.Suite refuses a suite with no tasks in its validator
    return {"$schema": SCHEMA_URI, **schema}


def schema_text() -> str:
    """The schema as the committed suites/suite.schema.json holds it (stable key order, a final newline)."""
    return json.dumps(suite_schema(), indent=2, ensure_ascii=False) + "\n"


def write_schema(out: Path | None) -> str:
    """Write the schema to `out` (or nothing, for stdout) and return its text."""
    text = schema_text()
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{out}: cannot write the schema ({exc.strerror or exc})") from None
    return text


class _WithComments(GenerateJsonSchema):
    """pydantic's generator, with each field's source comment as its description where it has none."""

    def model_schema(self, schema: Any) -> dict[str, Any]:
        out = super().model_schema(schema)
        cls = schema.get("cls")
        properties = out.get("properties", {})
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            for name, text in field_comments(cls).items():
                if name in properties and text and "description" not in properties[name]:
                    properties[name]["description"] = text
        return out


def field_comments(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment beside it (and the comment lines just above it), through the class's
    bases, so a task's fields from TaskBase are described too."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # made at run time (create_model): no source
            continue
        found.update({name: text for name, text in _comments_in(source).items() if text})  # a redefinition
        # without a comment (a task's `kind: Literal[...]`) keeps its base's
    return {name: text for name, text in found.items() if name in cls.model_fields}


def _comments_in(source: str) -> dict[str, str]:
    """The comments of a class's field lines, read with the tokenizer (a '#' inside a string is no comment)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    comments = {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}
    in_strings = {n for tok in tokens if tok.type == tokenize.STRING and not tok.line[:tok.start[1]].strip()
                  for n in range(tok.start[0], tok.end[0] + 1)}  # strings that open their line: docstrings
    found: dict[str, str] = {}
    above: list[str] = []
    for number, line in enumerate(source.splitlines(), 1):
        if number in in_strings:  # a docstring's `name: text` is prose, not a field
            above = []
            continue
        if re.match(r"^    #", line):
            above.append(comments.get(number, ""))
            continue
        field = _FIELD.match(line)
        if field and not line.lstrip().startswith(("def ", "class ", "@")):
            found[field.group(1)] = " ".join(filter(None, [*above, comments.get(number, "")]))
        above = []
    return found
