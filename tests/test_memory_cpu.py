"""CPU memory, measured in a fresh process per point: the figures do not depend on what ran before them, the
work covers what the architecture must hold (a Transformer's KV cache, Mamba's fixed state, a training step's
gradients and optimizer state), and a measuring process that fails becomes its point's record.

Tolerances: a point's work includes one step's activations besides its state, and repeated runs of one point
scatter by about 0.15 MiB either way (allocations that depend on how the work falls to torch's threads).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.kinds import memory
from ssmbench.kinds.base import JobContext
from ssmbench.kinds.memory import MemoryRunner
from ssmbench.plan import build_plan
from ssmbench.records import read_records
from ssmbench.spec import parse_suite
from ssmbench.zoo import MODELS, ResolvedModel

MIB = 2**20
NEW_TOKENS = 8


def measure(model: str, batch_sizes: list[int], prompt_lengths: list[int],
            mode: str = "inference") -> dict[tuple[int, int], dict[str, float]]:
    """{(batch, prompt_len): {metric: value}} for one model's job, run by the memory kind's runner."""
    suite = {"name": "s", "models": [model], "defaults": {"device": "cpu", "seed": 0},
             "tasks": [{"kind": "memory", "mode": mode, "batch_sizes": batch_sizes,
                        "prompt_lengths": prompt_lengths, "new_tokens": NEW_TOKENS}]}
    (job,) = build_plan(parse_suite(suite), "cpu").jobs
    runner = MemoryRunner(job, JobContext("test", "s", Path("unused")))  # writes no artifacts
    runner.setup()
    try:
        out = {}
        for pt in job.points:
            records = runner.measure(pt)
            assert {r.status for r in records} == {"ok"}
            out[pt.params["batch"], pt.params["prompt_len"]] = {r.metric: r.value for r in records}
        return out
    finally:
        runner.teardown()


def state_mib(model: str, batch: int, prompt_len: int) -> float:
    """The analytic inference state from the zoo: KV cache or conv + SSM state, float32."""
    return MODELS[model].state_bytes_per_sequence(prompt_len + NEW_TOKENS, 4) * batch / MIB


def decode_work(values: dict[str, float]) -> float:
    """The decode steps' peak above the baseline (after load and warm-up): state + one step's activations."""
    baseline = values["peak_rss_mib"] - values["work_rss_mib"]
    return values["decode_peak_rss_mib"] - baseline


@pytest.fixture(scope="module")
def points() -> dict[str, dict[tuple[int, int], dict[str, float]]]:
    """Batch 4 at prompts 64 and 256 for a Transformer and for Mamba, measured once for this module."""
    return {model: measure(model, [4], [64, 256]) for model in ("tiny-gpt2", "tiny-mamba")}


# --- the work is what the architecture must hold ------------------------------------------------------------


def test_a_transformers_work_holds_its_kv_cache(points):
    for prompt_len in (64, 256):
        values = points["tiny-gpt2"][4, prompt_len]
        kv = state_mib("tiny-gpt2", 4, prompt_len)
        assert values["state_mib"] == pytest.approx(kv)
        assert values["work_rss_mib"] >= 0.8 * kv  # the whole generation: cache and the prompt's activations
        # Decoding holds the cache and one step's activations (4 tokens; the logits of a 512-word vocabulary).
        assert 0.8 * kv <= decode_work(values) <= kv + 1.0


def test_decoding_holds_mambas_fixed_state_while_a_transformers_cache_grows(points):
    gpt2, mamba = points["tiny-gpt2"], points["tiny-mamba"]
    kv_growth = state_mib("tiny-gpt2", 4, 256) - state_mib("tiny-gpt2", 4, 64)  # 3 MiB more keys and values
    assert decode_work(gpt2[4, 256]) - decode_work(gpt2[4, 64]) >= 0.8 * kv_growth
    # Mamba's state does not depend on the prompt: neither does what decoding holds, within a third of the
    # Transformer's growth (one measurement scatters by about 0.15 MiB either way, a difference by twice that).
    assert abs(decode_work(mamba[4, 256]) - decode_work(mamba[4, 64])) < kv_growth / 3
    for prompt_len in (64, 256):
        fixed = state_mib("tiny-mamba", 4, prompt_len)
        assert fixed == pytest.approx(4 * 8 * 256 * (4 + 16) * 4 / MIB)  # 8 layers x 256 channels x (conv 4 + N 16)
        # The state and one step's activations: transformers' reference selective-state update makes a few
        # (4, 256, 16) float tensors (64 KiB) per layer; under 1 MiB in all.
        assert 0.8 * fixed <= decode_work(mamba[4, prompt_len]) <= fixed + 1.0
    # (The whole generation is another matter on the CPU: transformers' reference scan materialises
    # (batch, 256, L, 16) tensors in the prompt pass, so Mamba's work_rss_mib grows with the prompt too.)


def test_a_training_steps_work_holds_gradients_and_adamw_state():
    values = measure("tiny-gpt2", [2], [32], mode="training")[2, 32]
    # fp32 gradients and AdamW's two moments, each the size of the weights, besides the activations.
    assert values["work_rss_mib"] >= 3 * values["weights_mib"]
    assert values["peak_rss_mib"] > values["work_rss_mib"] + values["weights_mib"]


# --- a measuring process that fails is its point's record -------------------------------------------------


def _fail_at_batch_1(how: str, ref: ResolvedModel, mode: str, batch: int, *rest: Any) -> dict[str, Any]:
    """Stands in for memory._measure_point in the measuring process (the test module is imported there)."""
    if batch == 1:
        if how == "sigkill":  # as the kernel's OOM killer does
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "memory_error":
            raise MemoryError
        if how == "torch_alloc":  # torch's CPU allocator failing raises a RuntimeError
            import torch

            torch.empty(2**62, dtype=torch.uint8)
        if how == "exception":
            raise ValueError("boom")
        if how == "exit":
            os._exit(3)
    return memory._measure_point(ref, mode, batch, *rest)


# Module-level, so that the measuring process finds them by name.
def _sigkill(*args: Any) -> dict[str, Any]:
    return _fail_at_batch_1("sigkill", *args)


def _memory_error(*args: Any) -> dict[str, Any]:
    return _fail_at_batch_1("memory_error", *args)


def _torch_alloc(*args: Any) -> dict[str, Any]:
    return _fail_at_batch_1("torch_alloc", *args)


def _exception(*args: Any) -> dict[str, Any]:
    return _fail_at_batch_1("exception", *args)


def _exit(*args: Any) -> dict[str, Any]:
    return _fail_at_batch_1("exit", *args)


@pytest.mark.parametrize(("how", "status", "message"), [
    ("sigkill", "oom", "out of memory: the measuring process was killed by SIGKILL, most likely by the kernel's "
                       "out-of-memory killer"),
    ("memory_error", "oom", "out of memory: MemoryError"),
    ("torch_alloc", "oom", "out of memory: [enforce fail at alloc_cpu.cpp"),
    ("exception", "error", "FreshProcessError: ValueError in the measuring process: boom (at test_memory_cpu.py:"),
    ("exit", "error", "FreshProcessError: the measuring process died (exit code 3) before it reported"),
])
def test_a_failed_measuring_process_is_a_record_and_the_run_goes_on(
        how: str, status: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(memory, "_measure_point", globals()[f"_{how}"])
    suite = tmp_path / "mem.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "mem", "defaults": {"device": "cpu", "seed": 0}, "models": ["tiny-gpt2"],
        "tasks": [{"kind": "memory", "batch_sizes": [1, 2], "prompt_lengths": [16], "new_tokens": 4}]}))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == (0 if status == "oom" else 1), result.output  # an error fails the run, at its end
    assert "Traceback" not in result.output
    (run_dir,) = (tmp_path / "out" / "mem").iterdir()
    records = read_records(run_dir / "records.jsonl")
    (failed,) = [r for r in records if r.slice["batch"] == 1]
    assert (failed.status, failed.metric, failed.model) == (status, None, "tiny-gpt2")
    assert failed.message.startswith(message), failed.message
    ok = [r for r in records if r.slice["batch"] == 2]
    assert ok and {r.status for r in ok} == {"ok"} and {r.kernel for r in ok} == {"hf-sdpa"}
    assert {r.metric for r in ok} >= {"peak_rss_mib", "work_rss_mib", "decode_peak_rss_mib", "state_mib"}


def test_a_model_that_cannot_load_fails_its_points_with_the_loaders_message(tmp_path: Path):
    ref = ResolvedModel(name="gpt2", spec=MODELS["gpt2"], weights="pretrained", dtype="float32", device="cpu",
                        path=str(tmp_path / "no-such-checkpoint"))
    suite = {"name": "s", "models": ["tiny-gpt2"], "defaults": {"device": "cpu"},
             "tasks": [{"kind": "memory", "batch_sizes": [1, 2], "prompt_lengths": [16], "new_tokens": 4}]}
    (job,) = build_plan(parse_suite(suite), "cpu").jobs
    job.model = ref
    runner = MemoryRunner(job, JobContext("test", "s", tmp_path))
    runner.setup()
    from ssmbench.errors import JobError

    errors = []
    for pt in job.points:
        with pytest.raises(JobError) as raised:
            runner.measure(pt)
        errors.append(raised.value)
    assert "no-such-checkpoint" in str(errors[0])
    assert errors[1] is errors[0]  # the second point did not start a process to fail the same way


# --- the report draws the work ----------------------------------------------------------------------------


def test_a_cpu_run_of_one_prompt_length_draws_each_models_work_as_a_bar(tmp_path: Path):
    """Issue 36: with one prompt length the run drew no plot; with two, it drew each model's peak RSS, which
    ~360 MiB of interpreter and libraries (alike for both models) dwarfs. Now: a bar per model of its
    work_rss_mib, beside its analytic state, read from the run's own records."""
    suite = tmp_path / "mem.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "mem", "defaults": {"device": "cpu", "seed": 0}, "models": ["tiny-gpt2", "tiny-mamba"],
        "tasks": [{"kind": "memory", "batch_sizes": [2], "prompt_lengths": [32], "new_tokens": 4}]}))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "mem").iterdir()
    records = read_records(run_dir / "records.jsonl")
    value = {(r.model, r.metric): r.value for r in records}
    spec = json.loads((run_dir / "memory_memory_batch2_prompt32.plot.json").read_text())
    assert (run_dir / "memory_memory_batch2_prompt32.png").stat().st_size > 0 and spec["bars"]
    work, state = spec["lines"]
    assert work["x"] == ["tiny-gpt2", "tiny-mamba"]
    assert work["y"] == [value["tiny-gpt2", "work_rss_mib"], value["tiny-mamba", "work_rss_mib"]]
    assert state["y"] == [value["tiny-gpt2", "state_mib"], value["tiny-mamba", "state_mib"]]
    assert all(y < value[model, "peak_rss_mib"] / 5 for model, y in zip(work["x"], work["y"], strict=True))


# --- what ran before does not matter -----------------------------------------------------------------------


# Last in this module: the new helper process it starts would otherwise be started again for the tests after it.
def test_cpu_memory_does_not_depend_on_what_this_process_loaded_before(points, monkeypatch: pytest.MonkeyPatch):
    alone = points["tiny-gpt2"][4, 256]
    before = psutil.Process().memory_info().rss
    from ssmbench.models import load_model

    gpt2 = load_model(ResolvedModel(name="gpt2", spec=MODELS["gpt2"], weights="random", dtype="float32",
                                    device="cpu"))
    try:
        # The test is only worth something if this process now holds far more than the point's peak varies by.
        assert (psutil.Process().memory_info().rss - before) / MIB > 300
        after = measure("tiny-gpt2", [4], [256])[4, 256]
        # A new environment starts a new helper process: spawned now, while this one holds the full-size gpt2.
        monkeypatch.setenv("SSMBENCH_TEST_FRESH_HELPER", "1")
        after_new_helper = measure("tiny-gpt2", [4], [256])[4, 256]
    finally:
        del gpt2
    for values in (after, after_new_helper):
        for metric in ("peak_rss_mib", "work_rss_mib", "decode_peak_rss_mib"):
            assert values[metric] == pytest.approx(alone[metric], rel=0.10), metric
