"""The task kinds, one registration line each.

A kind is a module (or package) under ssmbench/kinds/ whose `KIND` holds all of it: task spec, runner,
description, metric order, tables and plots (see kinds/base.py). The registry maps a short name to
"module:object" and imports it on first use, like lm-eval's registries, so naming the kinds costs nothing.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from ssmbench.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from ssmbench.kinds.base import Kind

KINDS: dict[str, str] = {
    "throughput": "ssmbench.kinds.throughput:KIND",
    "memory": "ssmbench.kinds.memory:KIND",
    "scan": "ssmbench.kinds.scan:KIND",
    "zero_shot": "ssmbench.kinds.zero_shot:KIND",
    "synthetic": "ssmbench.kinds.synthetic:KIND",
    "phonebook": "ssmbench.kinds.phonebook:KIND",
    "train_speed": "ssmbench.kinds.train_speed:KIND",
    "generate": "ssmbench.kinds.generate:KIND",
    "finetune": "ssmbench.kinds.finetune:KIND",
}


def register_kind(name: str, target: str) -> None:
    """Add a kind ("module:object" of its Kind entry); the suite schema includes it from then on."""
    KINDS[name] = target
    _load.cache_clear()


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def registered() -> tuple[tuple[str, str], ...]:
    """The registry's entries as they stand now (what the suite schema is built from)."""
    return tuple(KINDS.items())


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise UserError(f"unknown task kind {name!r}{did_you_mean(name, KINDS)}; kinds: {', '.join(KINDS)}")
    return _load(name, KINDS[name])


def all_kinds() -> dict[str, Kind]:
    return {name: get_kind(name) for name in KINDS}


@functools.cache
def _load(name: str, target: str) -> Kind:
    module_name, _, attribute = target.partition(":")
    kind = getattr(importlib.import_module(module_name), attribute)
    if kind.name != name:
        raise RuntimeError(f"kind registered as {name!r} calls itself {kind.name!r} ({target})")
    return kind
