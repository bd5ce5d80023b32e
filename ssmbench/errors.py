"""Errors a user can cause, kept apart from bugs.

A `UserError` ends the command with one line and exit code 2 (the CLI catches it); anything else is a bug
and keeps its traceback. A `JobError` is a user-level problem confined to one job (weights not cached,
kernels missing): the run records it as that job's failure and goes on with the others.
"""

from __future__ import annotations

import difflib
import errno
import json
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
    """A pydantic error's message; a wrong type says what was written ("valid integer, got true")."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if str(err["type"]).endswith("_type") or err["type"] == "int_from_float":
        value = err.get("input")
        written = json.dumps(value) if value is None or isinstance(value, (bool, int, float, str)) else \
            f"a {type(value).__name__}"
        msg += f", got {written}"
    return msg
