"""A machine that cannot reach the hub, without HF_HUB_OFFLINE=1: every job that needs a download fails at
once with the remedy, after one short probe, and no library retries the hub.

The other tests run in offline mode (conftest sets it); these take it away, point HF_ENDPOINT at a closed
local port and the cache at an empty directory, and restore everything afterwards.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssmbench.models import hub
from ssmbench.records import read_records

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def closed_port() -> int:
    """A local port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Online mode, an endpoint that refuses connections, an empty hub cache; the probe counted."""
    import datasets.config
    import huggingface_hub.constants as constants

    endpoint = f"http://127.0.0.1:{closed_port()}"
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    probes: list[str] = []
    ask = hub._ask
    monkeypatch.setattr(hub, "_ask", lambda url: probes.append(url) or ask(url))
    hub.reset()
    yield endpoint, probes
    hub.reset()  # undo go_offline before monkeypatch restores the offline settings of the other tests
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_the_probe_answers_once_and_puts_the_libraries_offline(unreachable_hub) -> None:
    import datasets.config
    import huggingface_hub.constants as constants

    endpoint, probes = unreachable_hub
    assert not hub.offline_mode()
    started = time.perf_counter()
    assert hub.hub_reachable() is False and hub.hub_reachable() is False
    assert time.perf_counter() - started < hub.PROBE_TIMEOUT_S + 1
    assert probes == [endpoint]  # once per process
    assert constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True
    assert datasets.config.HF_DATASETS_OFFLINE is True
    assert hub.offline_mode()
    assert f"the hub ({endpoint}) did not answer within 3 s" in hub.unavailable_reason()
    with pytest.raises(hub.HubUnavailable, match="not in the Hugging Face cache"):
        hub.from_hub("openai-community/gpt2", lambda local: pytest.fail("must not try to load"))


def test_offline_mode_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    hub.reset()
    monkeypatch.setattr(hub, "_ask", lambda url: pytest.fail("probed in offline mode"))
    assert hub.hub_reachable() is False
    assert "HF_HUB_OFFLINE=1" in hub.unavailable_reason()


@pytest.fixture
def hub_connections(unreachable_hub, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every socket connection attempted to the unreachable hub's port, by any library.

    Counting attempts pins "no retries" as behaviour; a wall-clock bound would only stand in for it, and
    fails on a slow or busy machine (importing the libraries alone can take most of one there).
    """
    endpoint, _ = unreachable_hub
    port = int(endpoint.rsplit(":", 1)[1])
    attempts: list[tuple] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def counted(original):
        def attempt(sock, address):
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == port:
                attempts.append(address)
            return original(sock, address)
        return attempt

    monkeypatch.setattr(socket.socket, "connect", counted(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", counted(connect_ex))
    return attempts


def test_compare_fails_every_job_at_once_with_the_remedy(unreachable_hub, hub_connections: list[tuple],
                                                         tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from ssmbench.cli import app

    endpoint, probes = unreachable_hub
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["compare", "gpt2", "mamba-130m", "--device", "cpu",
                                      "--out", str(tmp_path / "out")])
    elapsed = time.perf_counter() - started
    print(f"compare gpt2 mamba-130m against an unreachable hub: {elapsed:.1f} s", file=sys.__stderr__)
    assert result.exit_code == 1, result.output
    assert probes == [endpoint]
    assert len(hub_connections) == 1, hub_connections  # the probe's; no library tried the hub again
    (run_dir,) = (tmp_path / "out" / "compare").iterdir()
    records = read_records(run_dir / "records.jsonl")
    jobs = {r.job for r in records}
    assert {j.rsplit("/", 1)[1] for j in jobs} == {"gpt2", "mamba-130m"} and len(jobs) == 8  # four tasks each
    assert records and {r.status for r in records} == {"error"}
    for r in records:
        source = "openai-community/gpt2" if r.model == "gpt2" else "state-spaces/mamba-130m-hf"
        assert r.message.startswith(f"model {r.model!r}: weights {source!r} could not be loaded (not in the "
                                    f"Hugging Face cache, and the hub ({endpoint}) did not answer")
        assert f"`hf download {source}`" in r.message and "`path:`" in r.message
        assert "`weights: random`" in r.message
    seen = result.output + capfd.readouterr().err + caplog.text
    assert "retry" not in seen.lower() and "retrying" not in seen.lower()
