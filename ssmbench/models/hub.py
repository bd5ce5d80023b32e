"""The Hugging Face hub, asked once: is it reachable, and is a repository already in the cache?

Without `HF_HUB_OFFLINE=1`, on a machine that cannot reach the hub, every `from_pretrained` of a hub id
retries the hub five times before it gives up: a two-model comparison took minutes to fail and printed a
screen of retry lines. Instead, ssmbench probes the hub once per process, with a short timeout, and then:

- a repository whose files are cached loads from the cache alone (`local_files_only=True`): no request;
- one that is not cached fails its job at once (`HubUnavailable`), and the loader adds the remedy;
- and once the probe has failed, the process goes offline for good (`go_offline`), so that lm-eval's
  dataset loading, which ssmbench does not call directly, fails fast from the cache as well.

Nothing here imports huggingface_hub at module level: `ssmbench --help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ssmbench.errors import first_line

T = TypeVar("T")

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_FAILED_VAR = "SSMBENCH_HUB_UNREACHABLE"  # why, for child processes, which inherit the offline switches
_TRUE = {"1", "ON", "YES", "TRUE"}

_probe: tuple[bool, str] | None = None  # (reachable, why not), once per process
_undo: list[Callable[[], None]] = []  # how to reverse go_offline (tests only)


class HubUnavailable(OSError):
    """A hub repository is not cached and cannot be downloaded now. An OSError, like the ones
    `from_pretrained` raises for a missing repository, so loaders handle both in one place."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """Whether the user (or an earlier failed probe) has put the Hugging Face libraries offline."""
    # huggingface_hub reads TRANSFORMERS_OFFLINE as HF_HUB_OFFLINE; HF_DATASETS_OFFLINE concerns datasets only.
    if any((os.environ.get(var) or "").upper() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(constants is not None and constants.HF_HUB_OFFLINE)


def hub_reachable() -> bool:
    """Whether downloads can work: False in offline mode, else the answer of one probe per process (an
    HTTP request to HF_ENDPOINT with a PROBE_TIMEOUT_S timeout). A failed probe puts the process offline."""
    global _probe
    if offline_mode():
        return False
    if _probe is None:
        _probe = _ask(endpoint())
        if not _probe[0]:
            go_offline()
    return _probe[0]


def _ask(url: str) -> tuple[bool, str]:
    import urllib.error  # here, not at the top: http.client and ssl cost the CLI's start-up 25 ms
    import urllib.request

    request = urllib.request.Request(url + "/api/models?limit=1", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return True, ""
    except urllib.error.HTTPError as exc:  # it answered: reachable, unless it is down
        return (exc.code < 500), f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, no route, DNS, timeout
        reason = getattr(exc, "reason", exc)
        return False, str(reason) or type(exc).__name__


def unavailable_reason() -> str:
    """Why a file that is not cached cannot be downloaded now (after hub_reachable() said False)."""
    if _probe is not None and not _probe[0]:
        return (f"not in the Hugging Face cache, and the hub ({endpoint()}) did not answer within "
                f"{PROBE_TIMEOUT_S:.0f} s: {_probe[1]}")
    if os.environ.get(PROBE_FAILED_VAR):  # a child process of one whose probe failed
        return f"not in the Hugging Face cache, and {os.environ[PROBE_FAILED_VAR]}"
    return "not in the Hugging Face cache, and offline mode (HF_HUB_OFFLINE=1) forbids downloads"


@contextlib.contextmanager
def offline(why: str) -> Iterator[None]:
    """The hub out of reach while the block runs, for a reason of ssmbench's own (`ssmbench validate` checks
    what the cache holds and never downloads); errors say `why`. Undone when the block ends."""
    mark = len(_undo)
    go_offline(why)
    try:
        yield
    finally:
        while len(_undo) > mark:
            _undo.pop()()


def go_offline(why: str | None = None) -> None:
    """Put huggingface_hub, transformers and datasets offline for the rest of the process.

    These libraries read their offline switches when they are imported (huggingface_hub.constants
    .HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE and HF_DATASETS_OFFLINE): setting the environment
    variables reaches modules imported later (and child processes, such as the memory kind's), and the
    modules already imported get their constants set too. transformers asks huggingface_hub
    (`is_offline_mode()`), so it follows.
    """
    why = why or (f"the hub ({endpoint()}) did not answer within {PROBE_TIMEOUT_S:.0f} s: {_probe[1]}"
                  if _probe is not None else "the hub did not answer")
    for var, value in [*((v, "1") for v in OFFLINE_VARS), (PROBE_FAILED_VAR, why)]:
        old = os.environ.get(var)
        os.environ[var] = value
        _undo.append(lambda var=var, old=old: os.environ.pop(var, None) if old is None
                     else os.environ.__setitem__(var, old))
    for module, names in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        mod = sys.modules.get(module)
        for name in names if mod is not None else ():
            old_value = getattr(mod, name, None)
            setattr(mod, name, True)
            _undo.append(lambda mod=mod, name=name, old_value=old_value: setattr(mod, name, old_value))


def reset() -> None:
    """Forget the probe and undo go_offline (for tests: the next hub_reachable() probes again)."""
    global _probe
    _probe = None
    while _undo:
        _undo.pop()()


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> str | None:
    """The cached path of one file of a hub repository (at `revision`, default main), or None (also for ids
    that are not repo ids)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - HFValidationError for a string that is no repo id
        return None
    return path if isinstance(path, str) else None


def is_cached(repo_id: str, filename: str = "config.json", revision: str | None = None) -> bool:
    return cached_file(repo_id, filename, revision) is not None


def snapshot_dir(repo_id: str, revision: str | None = None) -> str | None:
    """The cached snapshot directory of a repository at `revision` (where its config.json lies), or None."""
    path = cached_file(repo_id, "config.json", revision)
    return os.path.dirname(path) if path else None


def from_hub(repo_id: str, load: Callable[[bool], T], marker: Sequence[str] = ("config.json",),
             revision: str | None = None) -> T:
    """`load(local_files_only)` for a hub repository, without the hub's retries when it cannot answer.

    Cached (any of `marker` files): from the cache alone. Not cached: downloaded if the hub is reachable,
    else HubUnavailable at once. A cache that lacks some file (weights never downloaded) is completed
    online when the hub is reachable, and otherwise reported.
    """
    if any(is_cached(repo_id, name, revision) for name in marker):
        try:
            return load(True)
        except (OSError, ValueError) as exc:
            if not hub_reachable():
                first = first_line(exc, 160)
                raise HubUnavailable(f"only partly cached ({first}); {unavailable_reason()}") from None
    elif not hub_reachable():
        raise HubUnavailable(unavailable_reason())
    return load(False)


def hub_config(repo_id: str, download: bool = True) -> dict[str, Any] | None:
    """A hub repository's config.json: from the cache, else (with `download`) downloaded when the hub is
    reachable, else None."""
    import json

    path = cached_file(repo_id, "config.json")
    if path is None and download and hub_reachable():
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(repo_id, "config.json")
        except Exception:  # noqa: BLE001 - no such repository, no config.json, a gated repository
            return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
