"""Shared fixtures. Tests run offline: nothing may download weights or data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the local Ray cluster of tests/test_launchers.py

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ssmbench.zoo import MODELS, ResolvedModel  # noqa: E402

# Fixture modules shared by tests/ and tests/gpu/ (tests/ is on sys.path through this conftest).
pytest_plugins = ["lm_eval_fixtures"]

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def tiny_ref(name: str = "tiny-gpt2", **changes) -> ResolvedModel:
    """A resolved tiny model on the CPU, random weights, float32."""
    fields = dict(name=name, spec=MODELS[name], weights="random", dtype="float32", device="cpu")
    return ResolvedModel(**(fields | changes))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
