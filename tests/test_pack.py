"""Packed training: many small models trained side by side on one device (ssmbench.train.train_pack, and a
task's `pack: K` through `ssmbench run`), each computing exactly what it computes alone.

On the CPU the runs of a pack take turns in one thread, so a packed run must equal its solo run bit for bit:
the same weights, the same curve, the same records. A run that fails is that run's outcome, the others go
on; a pack stopped by a signal resumes exactly; a run that never leaves chance is named as collapsed.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import invoke, write

from ssmbench.data.synthetic import fixed_batches, make_batch, seeded_generator
from ssmbench.models.builder import SmallModelConfig, build_model
from ssmbench.records import read_records
from ssmbench.train import Trainer, TrainSettings, train, train_pack

SETTINGS = TrainSettings(steps=30, batch_size=8, seq_len=16, lr=3e-3, eval_every=10, autocast=None)
ARCHS = [("mamba", 0), ("mamba", 1), ("mha-rope", 0), ("s4d", 2)]


def model(mixer: str, seed: int) -> torch.nn.Module:
    return build_model(SmallModelConfig(mixer=mixer, d_model=16, vocab_size=8, n_heads=2), seed=seed).module


def draw(generator: torch.Generator):
    return make_batch("induction_heads", 8, 16, generator=generator, device="cpu", vocab_size=8)


def validation():
    return {16: list(fixed_batches("induction_heads", 16, 16, 8, seed=0, purpose="validation", device="cpu",
                                   vocab_size=8))}


def trainer(mixer: str, seed: int, settings: TrainSettings = SETTINGS, **kwargs) -> Trainer:
    return Trainer(model(mixer, seed), kwargs.pop("draw", draw), seeded_generator(seed, "cpu"), validation(), settings,
                   "cpu", own_stream=True, **kwargs)


def curve(result) -> list[tuple]:
    return [(log.step, log.loss, log.accuracy, log.by_length) for log in result.curve]


def test_packed_runs_compute_exactly_what_each_computes_alone():
    alone = []
    for mixer, seed in ARCHS:
        module = model(mixer, seed)
        alone.append((module, train(module, draw, seeded_generator(seed, "cpu"), validation(), SETTINGS, "cpu")))
    runs = [trainer(mixer, seed) for mixer, seed in ARCHS]
    outcomes = dict((id(t), result) for t, result in train_pack(runs, width=4))
    for run, (module, result) in zip(runs, alone, strict=True):
        packed = outcomes[id(run)]
        assert curve(packed) == curve(result) and packed.steps == 30
        for (name, a), b in zip(module.state_dict().items(), run.module.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_a_pack_narrower_than_its_runs_starts_each_run_when_one_ends():
    started: list[int] = []
    ended: list[int] = []
    runs = [trainer("mamba", seed, TrainSettings(**(SETTINGS.__dict__ | {"steps": 10 * (seed + 1)})))
            for seed in range(4)]

    def lazily():
        for i, run in enumerate(runs):
            started.append(i)
            yield run

    for run, result in train_pack(lazily(), width=2):
        ended.append(runs.index(run))
        assert result.steps == 10 * (runs.index(run) + 1)
        assert len(started) - len(ended) <= 2  # never more than two runs at once
    assert ended == [0, 1, 2, 3] and started == [0, 1, 2, 3]


def test_a_run_that_fails_is_its_own_outcome_and_the_others_go_on():
    def failing(generator: torch.Generator):
        if failing.calls == 7:
            raise torch.OutOfMemoryError("CUDA out of memory (as a test raises it)")
        failing.calls += 1
        return draw(generator)

    failing.calls = 0
    runs = [trainer("mamba", 0), trainer("mamba", 1, draw=failing), trainer("mamba", 2)]
    outcomes = {runs.index(t): result for t, result in train_pack(runs, width=3)}
    assert isinstance(outcomes[1], torch.OutOfMemoryError)
    assert outcomes[0].steps == outcomes[2].steps == 30


def test_a_run_at_chance_for_collapse_evals_evaluations_is_declared_collapsed_and_stops():
    chance = math.log(7)  # induction heads at vocab 8: 7 ordinary tokens to recall
    watch = {"collapse_evals": 20, "chance_loss": chance, "steps": 300}
    dead = TrainSettings(**(SETTINGS.__dict__ | watch | {"lr": 1e-9}))  # learns nothing
    result = train(model("mamba", 0), draw, seeded_generator(0, "cpu"), validation(), dead, "cpu")
    assert result.collapsed and result.steps == 200 and not result.stopped_early
    assert all(log.loss >= 0.99 * chance for log in result.curve)
    # This one sits at chance for its first 13 evaluations (a plateau, as the paper's models have), then learns.
    learning = TrainSettings(**(SETTINGS.__dict__ | watch | {"lr": 1e-2}))
    result = train(model("mamba", 0), draw, seeded_generator(0, "cpu"), validation(), learning, "cpu")
    assert not result.collapsed and result.steps == 300 and result.final.loss < 0.5 * chance
    assert sum(log.loss >= 0.99 * chance for log in result.curve) >= 10


# --- through the command line ----------------------------------------------------------------------------

TASK = {"kind": "synthetic", "name": "ih", "task": "induction_heads", "vocab_size": 8, "seeds": [0, 1, 2],
        "architectures": {"mamba": {"mixer": "mamba", "d_model": 16},
                          "rope": {"mixer": "mha-rope", "d_model": 16, "n_heads": 2}},
        "train": {"steps": 40, "batch_size": 8, "seq_len": 16, "lr": 3e-3, "eval_every": 10},
        "eval_lengths": [16, 64], "eval_samples": 16}


def suite(tmp_path: Path, name: str, **task) -> Path:
    return write(tmp_path / f"{name}.yaml", yaml.safe_dump({"name": name, "defaults": {"device": "cpu", "seed": 0},
                                                            "tasks": [TASK | task]}))


def figures(records) -> dict:
    """Every figure of a run but its timings, by job, point, metric and curve step."""
    timed = {"train_s", "steps_per_s", "train_tok_s"}
    return {(r.job, r.point, r.metric, r.slice.get("step")): r.value for r in records
            if r.metric not in timed and r.status == "ok"}


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.rglob("records.jsonl")]
    return run_dir.parent


def test_a_packed_suite_writes_every_record_and_artifact_a_solo_run_writes(tmp_path: Path):
    solo = invoke("run", str(suite(tmp_path, "solo")), "--out", str(tmp_path / "solo"))
    assert solo.exit_code == 0, solo.output
    packed = invoke("run", str(suite(tmp_path, "packed", pack=4)), "--out", str(tmp_path / "packed"))
    assert packed.exit_code == 0, packed.output
    a, b = read_records(only_run(tmp_path / "solo") / "records.jsonl"), read_records(only_run(tmp_path / "packed") / "records.jsonl")
    assert figures(a) == figures(b) and len(figures(b)) > 6 * 10
    train = [r for r in b if r.metric == "train_steps"]
    assert len(train) == 6 and {r.extra["pack"] for r in train} == {4} and all("pack" not in r.extra for r in a)
    assert {r.slice["layout"] for r in b} == {"uniform"}
    for job in {r.job for r in b}:
        folder = only_run(tmp_path / "packed") / "artifacts" / job
        assert (folder / "model.pt").is_file() and (folder / "train_state.pt").is_file(), job


def test_the_plan_says_what_packing_does_on_the_cpu(tmp_path: Path):
    result = invoke("run", str(suite(tmp_path, "plan", pack=4)), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "pack 4: on the CPU the 6 models take turns in one thread" in " ".join(result.output.split())


def test_an_out_of_memory_run_in_a_pack_is_that_jobs_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ssmbench.kinds.synthetic.runner import SyntheticRunner

    made = SyntheticRunner.pack_trainer

    def failing_for_seed_1(self, point):
        run = made(self, point)
        if self.job.id == "ih/mamba/seed=1":
            def oom(*args, **kwargs):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            run.step = oom
        return run

    monkeypatch.setattr(SyntheticRunner, "pack_trainer", failing_for_seed_1)
    result = invoke("run", str(suite(tmp_path, "oom", pack=3)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output  # the eval points of the job without a model are errors
    records = read_records(only_run(tmp_path / "out") / "records.jsonl")
    failed = [r for r in records if r.job == "ih/mamba/seed=1"]
    assert [r.status for r in failed if r.point == "phase=train"] == ["oom"]
    assert {r.status for r in failed if r.point != "phase=train"} == {"error"}
    assert {r.status for r in records if r.job != "ih/mamba/seed=1"} == {"ok"}
    assert len({r.job for r in records if r.metric == "accuracy" and r.status == "ok"}) == 5


def test_the_early_layout_trains_on_its_own_data_and_is_tested_on_the_uniform_examples(tmp_path: Path):
    generator = seeded_generator(0, "cpu")
    batch = make_batch("induction_heads", 64, 32, generator=generator, device="cpu", vocab_size=8, special_within=4)
    first = (batch.inputs[:, :-1] == 0).int().argmax(dim=1)
    assert int(first.max()) < 4 and int(first.min()) == 0
    early = invoke("run", str(suite(tmp_path, "early", task_params={"special_within": 4}, seeds=[0],
                                    architectures={"mamba": TASK["architectures"]["mamba"]})),
                   "--out", str(tmp_path / "early"))
    uniform = invoke("run", str(suite(tmp_path, "uniform", seeds=[0], architectures={"mamba": TASK["architectures"]["mamba"]})),
                     "--out", str(tmp_path / "uniform"))
    assert early.exit_code == uniform.exit_code == 0, early.output + uniform.output
    a, b = (read_records(only_run(tmp_path / name) / "records.jsonl") for name in ("early", "uniform"))
    assert {r.slice["layout"] for r in a} == {"first-4"} and {r.slice["layout"] for r in b} == {"uniform"}
    fingerprints = lambda records: {r.slice["seq_len"]: r.extra["eval_set"]["sha256"] for r in records  # noqa: E731
                                    if r.metric == "accuracy" and "seq_len" in r.slice}
    assert fingerprints(a) == fingerprints(b)
    assert figures(a) != figures(b)  # the training data differ
    table = (only_run(tmp_path / "early") / "table.md").read_text()
    assert "Training layout: first-4: the first special token within the first 4 positions" in table


def test_a_layout_that_is_no_count_names_the_field(tmp_path: Path):
    result = invoke("validate", str(suite(tmp_path, "bad", task_params={"special_within": 0})))
    assert result.exit_code == 2
    assert "task_params.special_within: the first special token's positions, a count of at least 1, got 0" in result.output


def ssmbench(*args: str) -> subprocess.Popen:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ssmbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_pack_stopped_by_sigterm_resumes_every_run_exactly(tmp_path: Path):
    task = {"seeds": [0, 1], "pack": 4, "architectures": {"mamba": TASK["architectures"]["mamba"]},
            "train": TASK["train"] | {"steps": 300, "eval_every": 50, "checkpoint_every_s": 0.2}}
    path = suite(tmp_path, "resume", **task)
    straight = ssmbench("run", str(path), "--out", str(tmp_path / "straight"))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    stopped = ssmbench("run", str(path), "--out", str(tmp_path / "stopped"))
    deadline = time.monotonic() + 240
    states: list[Path] = []
    while len(states) < 2 and time.monotonic() < deadline and stopped.poll() is None:
        states = list((tmp_path / "stopped").glob("resume/*/artifacts/ih/mamba/seed=*/train_state.pt"))
        time.sleep(0.05)
    assert len(states) == 2, "both runs of the pack should have written a checkpoint"
    stopped.send_signal(signal.SIGTERM)
    output = stopped.communicate(timeout=120)[0]
    assert stopped.returncode == 143, output
    run_dir = only_run(tmp_path / "stopped")
    resumed = ssmbench("run", "--resume", str(run_dir))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a, b = read_records(only_run(tmp_path / "straight") / "records.jsonl"), read_records(run_dir / "records.jsonl")
    assert figures(a) == figures(b)
    resumed_at = [r.extra["resumed_at_steps"] for r in b if r.metric == "train_steps"]
    assert len(resumed_at) == 2 and all(steps and 0 < steps[0] < 300 for steps in resumed_at), resumed_at


def test_a_collapsed_run_is_recorded_as_such_and_counted_apart_in_the_tables(tmp_path: Path):
    task = {"seeds": [0], "architectures": {"mamba": TASK["architectures"]["mamba"] | {"seeds": [0, 1]},
                                             "dead": TASK["architectures"]["mamba"] | {"lr": 1e-9, "seeds": [5]}},
            "train": TASK["train"] | {"steps": 300, "lr": 1e-2, "collapse_evals": 20}, "pack": 3}
    result = invoke("run", str(suite(tmp_path, "dead", **task)), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "collapsed at chance" in result.output
    records = read_records(only_run(tmp_path / "out") / "records.jsonl")
    steps = {r.job: r for r in records if r.metric == "train_steps"}
    assert sorted(steps) == ["ih/dead/seed=5", "ih/mamba/seed=0", "ih/mamba/seed=1"]
    dead = steps["ih/dead/seed=5"]
    assert dead.extra["outcome"] == "collapsed at chance" and dead.value == 200 and dead.status == "ok"
    assert dead.message.startswith("collapsed at chance: training loss within 1% of chance (ln 7 = 1.946) or above "
                                   "at 20 evaluations in a row, from step 10; stopped at step 200")
    assert dead.extra["norm_f_weight_l2"] > 0
    assert {steps[j].extra["outcome"] for j in ("ih/mamba/seed=0", "ih/mamba/seed=1")} == {"trained every step"}
    table = (only_run(tmp_path / "out") / "table.md").read_text()
    assert "dead: 0 of 1 seeds ≥ 99% at every test length; 1 collapsed at chance" in table
