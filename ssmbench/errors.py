"""Errors a user can cause, kept apart from bugs.

A `UserError` ends the command with one line and exit code 2 (the CLI catches it); anything else is a bug
and keeps its traceback. A `JobError` is a user-level problem confined to one job (weights not cached,
kernels missing): the run records it as that job's failure and goes on with the others.
"""

from __future__ import annotations

import difflib
import errno
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class UserError(Exception):
    """Bad input: a missing file, a bad field, an unknown name. Printed as one line; exit code 2."""


class WriteError(UserError):
    """A file of the run could not be written (a full disk, a quota, a read-only folder): not a bug, and
    nothing written before it is lost; `ssmbench run --resume` continues once the cause is fixed."""

    def __init__(self, path: Any, reason: str, then: str = ""):
        super().__init__(f"{path}: cannot write ({reason}){then}")
        self.path, self.reason = path, reason


# The errnos that say the storage refused a write, not that ssmbench did something wrong.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def cannot_write(path: Any, exc: OSError, run_dir: Any = None) -> WriteError:
    """The one line for a failed write: the path, the OS's reason, and how to go on."""
    then = f"; free space (or fix the folder), then `ssmbench run --resume {run_dir}`" if run_dir else ""
    return WriteError(path, str(exc.strerror or exc), then)


class JobError(Exception):
    """A job cannot run for a reason the user can fix; recorded as the job's error, the run goes on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, `kill`): handled as Ctrl-C is, what is done is kept, exit 143."""


def first_line(exc: BaseException, limit: int) -> str:
    """The first line of an exception's message, cut to `limit`, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def format_loc(loc: Sequence[Any]) -> str:
    """A pydantic error's location as a suite spells it: tasks[1].batch_sizes[0]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def error_message(err: Mapping[str, Any]) -> str:
    """What is wrong at one pydantic error's location, as a suite's author reads it: the value given, then
    the fault, with the fix where one is plain (`"1e-3"` unquoted, `4` as `[4]`, `3e2` as `300`). Our own
    validators' messages (value errors) say it all themselves and are kept as they are."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind, value = str(err["type"]), err.get("input")
    if kind == "value_error" or "input" not in err:
        return msg
    if kind == "missing":
        return "required, and not given"
    shown = shown_value(value)
    if kind in ("float_type", "int_type") and isinstance(value, str) and _is_number(value):
        what = "an integer" if kind == "int_type" else "a number"
        return f"{shown} is a string, and {what} is expected: write it unquoted, {value.strip()}"
    if kind == "int_type" and isinstance(value, float) and value.is_integer():
        return (f"{shown} is a float, and an integer is expected: write {int(value)} (no decimal point, "
                "no exponent)")
    if kind == "list_type" and not isinstance(value, (dict, list)):
        return f"{shown} is not a list: write [{shown}]"
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", msg.removeprefix("Input should be ")))
        choices = re.findall(r"'([^']*)'", expected)
        close = [c for c in choices if isinstance(value, str) and c.lower() == value.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else did_you_mean(str(value), choices)
        return f"{shown} is not one of {expected}{hint}"
    if msg.startswith("Input should be "):
        return f"{shown} must be {msg.removeprefix('Input should be ')}"
    return f"{shown}: {msg}"


def shown_value(value: Any) -> str:
    """A value as an error echoes it: JSON (strings quoted, so "8" is seen to be text), a long list or a
    mapping by its size."""
    text = json.dumps(value, default=str)
    if len(text) <= 60:
        return text
    return f"a list of {len(value)} items" if isinstance(value, list) else \
        f"a mapping of {len(value)} keys" if isinstance(value, dict) else text[:57] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- a union's errors: the branch that fits the input's shape ---------------------------------------------

# pydantic names each branch of a union in an error's location ("constrained-float", "list[constrained-float]",
# "literal['auto']", a model's class name, "function-after[f(), list[int]]"): what a branch takes, by its name.
_WRAPPED = r"(?:function-[\w-]+\[.*?\(\), )*"
_LIST_BRANCH = re.compile(_WRAPPED + r"(?:list|tuple|set|frozenset)\[")
_MAPPING_BRANCH = re.compile(_WRAPPED + r"(?:dict\[|typed-dict|model|[A-Z])")
# How a branch's own type error says what it takes, when no branch of a union fits and they are listed.
_TAKES = {"float_type": "a number", "int_type": "an integer", "list_type": "a list", "dict_type": "a mapping",
          "model_type": "a mapping", "string_type": "a string", "bool_type": "true or false"}


def settle_unions(errors: Sequence[Mapping[str, Any]], data: Any) -> list[dict[str, Any]]:
    """pydantic's errors with every union settled, its branch names gone from the locations.

    For a field that takes one value or a list (`lr: 1e-3` or `lr: [1e-3, 3e-3]`) pydantic reports every
    branch's failure, the one the input was written for among the others ("got a list" from the number's
    branch). Only the branch of the input's shape (a list, a mapping, a single value) speaks; where none has
    that shape, or several single-value branches fail at the top ('auto' or an integer), one error lists
    what the field takes. `data` is the input validated, walked to tell branch names from fields."""
    slots: list[Any] = []  # an error, or the location of the union its error belongs to
    unions: dict[tuple[Any, ...], tuple[Any, dict[str, list[Mapping[str, Any]]]]] = {}
    for err in errors:
        found = _union_at(err, data)
        if found is None:
            slots.append(dict(err))
            continue
        at, value = found
        prefix = tuple(err["loc"][:at])
        if prefix not in unions:
            unions[prefix] = (value, {})
            slots.append(prefix)
        unions[prefix][1].setdefault(str(err["loc"][at]), []).append(err)
    if not unions:
        return slots
    settled = [e for slot in slots for e in (_settle(slot, *unions[slot]) if isinstance(slot, tuple) else [slot])]
    return settle_unions(settled, data)  # a branch may hold a union of its own: lists of unions


def _union_at(err: Mapping[str, Any], data: Any) -> tuple[int, Any] | None:
    """(where, the input there) of the first branch name in an error's location, or None: a part of the
    location that is no key of the mapping it stands in (nor a required key that is missing) names a branch."""
    loc, value = err["loc"], data
    for i, part in enumerate(loc):
        if isinstance(part, int):
            value = value[part] if isinstance(value, list) and -len(value) <= part < len(value) else None
        elif isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, dict) and i == len(loc) - 1 and err["type"] == "missing":
            return None
        else:
            return i, value
    return None


def _settle(prefix: tuple[Any, ...], value: Any, branches: dict[str, list[Mapping[str, Any]]]
            ) -> list[dict[str, Any]]:
    """One union's errors: those of the branch the input fits, or one error saying what the field takes."""
    def unbranched(err: Mapping[str, Any]) -> dict[str, Any]:
        return {**err, "loc": (*prefix, *err["loc"][len(prefix) + 1:])}

    fitting = [name for name in branches if _shape_of_branch(name) == _shape(value)]
    if len(branches) == 1 or len(fitting) == 1:  # one branch (a task by its kind), or one of this shape
        return [unbranched(e) for e in branches[fitting[0] if fitting else next(iter(branches))]]
    listed = fitting or list(branches)
    tops = [e for name in listed for e in branches[name] if len(e["loc"]) == len(prefix) + 1]
    if len(tops) < sum(len(branches[name]) for name in listed):  # a branch failed inside: say where
        return [unbranched(e) for name in listed for e in branches[name]]
    takes = " or ".join(dict.fromkeys(_TAKES.get(str(e["type"]), str(e["msg"]).removeprefix("Input should be "))
                                      for e in tops))
    return [{"type": "union_type", "loc": prefix, "msg": f"Input should be {takes}", "input": value}]


def _shape(value: Any) -> str:
    return "list" if isinstance(value, (list, tuple)) else "mapping" if isinstance(value, dict) else "single"


def _shape_of_branch(name: str) -> str:
    return "list" if _LIST_BRANCH.match(name) else "mapping" if _MAPPING_BRANCH.match(name) else "single"
