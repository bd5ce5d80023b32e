"""Training longer than one sitting: a run stopped by a signal mid-training and resumed from its checkpoint
ends exactly where the uninterrupted run ends (same batches, same optimizer state, same weights), in the
training loop itself and through `ssmbench run` / `run --resume` in a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ssmbench.data.synthetic import fixed_batches, make_batch, seeded_generator
from ssmbench.models.builder import SmallModelConfig, build_model
from ssmbench.records import read_records
from ssmbench.train import TrainSettings, train

SETTINGS = TrainSettings(steps=40, batch_size=8, seq_len=16, lr=3e-3, eval_every=10, autocast=None)


def fresh_model() -> torch.nn.Module:
    return build_model(SmallModelConfig(mixer="mamba", d_model=16, vocab_size=8), seed=0).module


def draw(generator: torch.Generator):
    return make_batch("induction_heads", 8, 16, generator=generator, device="cpu", vocab_size=8)


def validation():
    return {16: list(fixed_batches("induction_heads", 16, 16, 8, seed=0, purpose="validation", device="cpu",
                                   vocab_size=8))}


def run(settings: TrainSettings = SETTINGS, checkpoint: Path | None = None, stop_at: int | None = None,
        how: int = signal.SIGINT, module: torch.nn.Module | None = None):
    """Train a fresh model (same seed every time); with `stop_at`, this process sends itself `how` during
    that step, as Ctrl-C or a scheduler's SIGTERM would."""
    module = module or fresh_model()

    def on_step(step: int) -> None:
        if step == stop_at:
            os.kill(os.getpid(), how)

    result = train(module, draw, seeded_generator(0, "cpu"), validation(), settings, "cpu", checkpoint=checkpoint,
                   on_step=on_step)
    return module, result


def test_a_resumed_run_ends_bit_for_bit_where_the_uninterrupted_one_ends(tmp_path: Path):
    straight, expected = run()
    checkpoint = tmp_path / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=checkpoint, stop_at=17)
    assert checkpoint.is_file()
    resumed, result = run(checkpoint=checkpoint)
    assert result.resumed_at == [17] and result.steps == 40
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [(log.step, log.loss, log.by_length) for log in result.curve] == \
           [(log.step, log.loss, log.by_length) for log in expected.curve]


def test_sigterm_is_held_to_the_end_of_the_step_and_raised_as_terminated(tmp_path: Path):
    from ssmbench.errors import Terminated

    checkpoint = tmp_path / "state.pt"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Terminated):
        run(checkpoint=checkpoint, stop_at=5, how=signal.SIGTERM)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["progress"]["step"] == 5  # the step in progress finished, then the state was written
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers are given back


def test_a_finished_checkpoint_returns_the_same_result_without_training(tmp_path: Path):
    checkpoint = tmp_path / "state.pt"
    _, first = run(checkpoint=checkpoint)
    module, again = run(checkpoint=checkpoint)
    assert again.steps == 40 and again.resumed_at == [] and [c.loss for c in again.curve] == [c.loss for c in first.curve]


def test_a_checkpoint_of_other_settings_is_set_aside_and_the_run_starts_afresh(tmp_path: Path):
    """Continuing it would mix two runs: the file is kept under another name, the run says so and trains
    from step 0, exactly as a run that never saw the file."""
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=checkpoint, stop_at=3)
    other = TrainSettings(**(SETTINGS.__dict__ | {"lr": 1e-3}))
    fresh, expected = run(settings=other)
    module, result = run(settings=other, checkpoint=checkpoint)
    assert result.resumed_at == [] and result.steps == 40
    assert len(result.set_aside) == 2 and "lr 0.003 -> 0.001" in result.set_aside[0]
    assert result.set_aside[0].endswith("set aside as state.pt.bad") and result.set_aside[1] == "trained from step 0"
    assert (tmp_path / "state.pt.bad").is_file()
    for (name, a), b in zip(fresh.state_dict().items(), module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_early_stop_waits_until_every_validation_length_holds_for_patience_evaluations():
    settings = TrainSettings(**(SETTINGS.__dict__ | {"steps": 60, "early_stop_accuracy": 1e-9, "patience": 3}))
    _, result = run(settings=settings)
    # Any accuracy above 0 "holds" here: the third evaluation in a row stops training.
    assert result.stopped_early and result.steps == 30 and len(result.curve) == 3


# --- through the command line, in a process of its own ---------------------------------------------------

SUITE = {"name": "resume", "defaults": {"device": "cpu", "seed": 0},
         "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads", "vocab_size": 8,
                    "architectures": {"mamba": {"mixer": "mamba", "d_model": 16}},
                    "train": {"steps": 300, "batch_size": 8, "seq_len": 16, "lr": 3e-3, "eval_every": 50,
                              "checkpoint_every_s": 0.2},
                    "eval_lengths": [16, 32], "eval_samples": 16}]}


def ssmbench(*args: str) -> subprocess.Popen:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ssmbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigterm_then_resume_on_the_command_line_matches_an_uninterrupted_run(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SUITE))
    straight = ssmbench("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    stopped = ssmbench("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "stopped"))
    state = None
    deadline = time.monotonic() + 240
    while state is None and time.monotonic() < deadline and stopped.poll() is None:
        found = list((tmp_path / "stopped").glob("resume/*/artifacts/ih/mamba/train_state.pt"))
        state = found[0] if found else None
        time.sleep(0.05)
    assert state is not None, "no checkpoint was written"
    stopped.send_signal(signal.SIGTERM)
    output = stopped.communicate(timeout=120)[0]
    assert stopped.returncode == 143, output
    run_dir = state.parents[3]
    assert "--resume" in output

    resumed = ssmbench("run", "--resume", str(run_dir))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    (straight_dir,) = (tmp_path / "straight" / "resume").iterdir()
    a, b = read_records(straight_dir / "records.jsonl"), read_records(run_dir / "records.jsonl")
    # Timing aside, every figure agrees: the curve, the final loss, the accuracy at each test length.
    timed = {"train_s", "steps_per_s", "train_tok_s"}
    figures = lambda records: {(r.point, r.metric, r.slice.get("step")): r.value for r in records  # noqa: E731
                               if r.metric not in timed and r.status == "ok"}
    assert figures(a) == figures(b)
    (steps,) = [r for r in b if r.metric == "train_steps"]
    assert steps.value == 300 and steps.extra["resumed_at_steps"] and 0 < steps.extra["resumed_at_steps"][0] < 300


def test_a_graphed_step_takes_each_scheduled_lr_through_its_device_tensor():
    """GraphedStep.follow_schedule on a scheduler that fills the LR tensor in place and on one that puts a
    float back (older torch): either way the tensor the captured kernels read holds the new value, and is the
    group's LR again. (The capture itself needs CUDA: tests/gpu/test_synthetic_gpu.py.)"""
    from types import SimpleNamespace

    from ssmbench.train import GraphedStep, make_schedule

    module = fresh_model()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    settings = TrainSettings(steps=100, batch_size=8, seq_len=16, lr=1e-3, schedule="cosine", warmup_steps=10)
    schedule = make_schedule(optimizer, settings)
    tensor = torch.tensor(float(optimizer.param_groups[0]["lr"]))
    optimizer.param_groups[0]["lr"] = tensor
    step = SimpleNamespace(optimizer=optimizer, lr_tensors=[tensor])
    for n in range(1, 30):
        optimizer.step()  # no gradients: nothing moves, but the scheduler sees the order it expects
        schedule.step()
        GraphedStep.follow_schedule(step)
        assert optimizer.param_groups[0]["lr"] is tensor
        if n <= 10:  # linear warm-up
            assert float(tensor) == pytest.approx(1e-3 * n / 10, rel=1e-6)
        else:  # cosine decay
            assert 0 < float(tensor) < 1e-3
    optimizer.param_groups[0]["lr"] = 2.5e-4  # a scheduler that replaces the tensor by a float
    GraphedStep.follow_schedule(step)
    assert optimizer.param_groups[0]["lr"] is tensor and float(tensor) == pytest.approx(2.5e-4)


def test_a_checkpoint_keeps_a_tensor_lr_as_the_number_it_holds(tmp_path: Path):
    """A graphed run's LR tensor (on the GPU) is saved as a float, so the checkpoint loads anywhere and an
    eager run resumed from it keeps a float LR."""
    from ssmbench.train import _Progress, make_schedule, save_checkpoint

    module = fresh_model()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    schedule = make_schedule(optimizer, SETTINGS)
    optimizer.param_groups[0]["lr"] = torch.tensor(7e-4)
    save_checkpoint(tmp_path / "s.pt", module, optimizer, schedule, seeded_generator(0, "cpu"), SETTINGS, _Progress())
    saved = torch.load(tmp_path / "s.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert isinstance(saved, float) and saved == pytest.approx(7e-4)
    assert torch.is_tensor(optimizer.param_groups[0]["lr"])  # the live optimizer keeps its tensor


def test_a_time_budget_stops_the_run_with_a_last_evaluation_and_says_so(tmp_path: Path):
    """`budget_s`: the run stops at the first step that finds its training time spent, evaluates there (so
    its final figures are of the model it ends with), and its result says it ran out of time; resuming
    that checkpoint does not train on."""
    import dataclasses

    budget = dataclasses.replace(SETTINGS, steps=10_000, eval_every=5_000, budget_s=0.5)
    checkpoint = tmp_path / "train_state.pt"
    _, result = run(budget, checkpoint=checkpoint)
    assert result.out_of_time and not result.stopped_early and 1 <= result.steps < 10_000
    assert result.final.step == result.steps and result.train_s >= 0.5
    _, again = run(budget, checkpoint=checkpoint)
    assert again.steps == result.steps and again.out_of_time and again.resumed_at == []


def test_a_graphed_step_at_a_constant_lr_has_no_schedule_to_follow():
    """A constant LR is a number the captured kernels hold: there is no LR tensor to refill, and following
    the schedule must leave the float alone (it once failed every graphed run on the GPU: zip(strict=True)
    of one param group against no tensors)."""
    from types import SimpleNamespace

    from ssmbench.train import GraphedStep

    optimizer = torch.optim.Adam(fresh_model().parameters(), lr=1e-3)
    GraphedStep.follow_schedule(SimpleNamespace(optimizer=optimizer, lr_tensors=[]))
    assert optimizer.param_groups[0]["lr"] == 1e-3
