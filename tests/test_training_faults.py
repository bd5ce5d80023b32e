"""A fault costs only the model it hit: a diverged run is caught and named, the rest of its pack trains bit
for bit as without it, and a damaged checkpoint is set aside (never loaded unsafely) while the run resumes
from its last good state."""

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
from ssmbench.train import Trainer, TrainSettings, UnreadableCheckpoint, load_safely, train, train_pack

SETTINGS = TrainSettings(steps=40, batch_size=8, seq_len=16, lr=3e-3, eval_every=10, autocast=None)
BLOWS_UP = TrainSettings(**(SETTINGS.__dict__ | {"lr": 1e6, "grad_clip": None}))


def fresh_model(seed: int = 0) -> torch.nn.Module:
    return build_model(SmallModelConfig(mixer="mamba", d_model=16, vocab_size=8), seed=seed).module


def draw(generator: torch.Generator):
    return make_batch("induction_heads", 8, 16, generator=generator, device="cpu", vocab_size=8)


def validation():
    return {16: list(fixed_batches("induction_heads", 16, 16, 8, seed=0, purpose="validation", device="cpu",
                                   vocab_size=8))}


def trainer(settings: TrainSettings = SETTINGS, seed: int = 0, checkpoint: Path | None = None,
            on_step=lambda step: None) -> Trainer:
    return Trainer(fresh_model(seed), draw, seeded_generator(seed, "cpu"), validation(), settings, "cpu",
                   checkpoint=checkpoint, on_step=on_step)


def run(settings: TrainSettings = SETTINGS, checkpoint: Path | None = None, stop_at: int | None = None):
    def on_step(step: int) -> None:
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    t = trainer(settings, checkpoint=checkpoint, on_step=on_step)
    result = train(t.module, t.draw, t.stream, t.validation, settings, "cpu", checkpoint=checkpoint, on_step=on_step)
    return t.module, result


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


# --- divergence ----------------------------------------------------------------------------------------

def test_a_run_whose_loss_turns_non_finite_stops_at_the_next_evaluation():
    _, result = run(BLOWS_UP)
    assert result.diverged and result.diverged_at == 10 and result.steps == 10
    assert not (result.diverged_loss < float("inf"))  # nan or inf
    assert result.curve == [] and result.final is None  # its weights were never validated


def test_a_loss_past_the_suites_bound_counts_as_diverged():
    _, result = run(TrainSettings(**(SETTINGS.__dict__ | {"max_loss": 0.01})))
    assert result.diverged_at == 10 and 0.01 < result.diverged_loss < 10


def test_the_rest_of_a_pack_trains_bit_for_bit_as_without_the_diverged_member():
    alone = trainer(seed=1)
    ((_, expected),) = train_pack([alone], width=1)
    good, bad = trainer(seed=1), trainer(BLOWS_UP, seed=2)
    outcomes = dict((id(t), r) for t, r in train_pack([bad, good], width=2))
    assert outcomes[id(bad)].diverged and outcomes[id(bad)].steps == 10
    assert outcomes[id(good)].steps == 40 and not outcomes[id(good)].diverged
    assert [(log.step, log.loss, log.by_length) for log in outcomes[id(good)].curve] == \
           [(log.step, log.loss, log.by_length) for log in expected.curve]
    assert same_weights(good.module, alone.module)


# --- checkpoints ---------------------------------------------------------------------------------------

EVERY_STEP = TrainSettings(**(SETTINGS.__dict__ | {"checkpoint_every_s": 1e-9}))


@pytest.mark.parametrize("damage", ["truncate", "junk", "pickle"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(tmp_path: Path, damage: str):
    straight, expected = run(EVERY_STEP)
    checkpoint = tmp_path / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(EVERY_STEP, checkpoint, stop_at=17)
    damage_file(checkpoint, damage)
    resumed, result = run(EVERY_STEP, checkpoint)
    assert result.resumed_at == [17] and result.steps == 40  # the previous checkpoint (saved again at the signal)
    assert result.set_aside[0].startswith(f"{checkpoint}: ") and result.set_aside[0].endswith(
        "set aside as train_state.pt.bad")
    assert result.set_aside[1] == "resumed from train_state.pt.prev at step 17"
    assert "weights_only" not in " ".join(result.set_aside)
    assert (tmp_path / "train_state.pt.bad").is_file()
    assert same_weights(straight, resumed)  # the resume is exact from the older state too
    assert [log.loss for log in result.curve] == [log.loss for log in expected.curve]


def test_with_every_checkpoint_damaged_the_run_trains_from_step_0_as_a_fresh_one(tmp_path: Path):
    straight, _ = run(EVERY_STEP)
    checkpoint = tmp_path / "train_state.pt"
    with pytest.raises(KeyboardInterrupt):
        run(EVERY_STEP, checkpoint, stop_at=17)
    damage_file(checkpoint, "truncate")
    damage_file(checkpoint.with_name("train_state.pt.prev"), "junk")
    resumed, result = run(EVERY_STEP, checkpoint)
    assert result.resumed_at == [] and result.set_aside[-1] == "trained from step 0"
    assert {p.name for p in tmp_path.iterdir()} >= {"train_state.pt.bad", "train_state.pt.prev.bad"}
    assert same_weights(straight, resumed)  # a half-done load left nothing of itself in the model


def damage_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "junk":  # overwritten by something else: text, the same every time
        path.write_bytes(b"not a checkpoint\n" * (len(data) // 17))
    else:  # a pickle that runs code when loaded without weights_only
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        path.write_bytes(pickle.dumps(Payload()))


@pytest.mark.parametrize("damage", ["truncate", "junk", "pickle"])
def test_an_unloadable_file_gets_one_line_naming_it_and_never_torchs_advice(tmp_path: Path, damage: str):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1000)}, path)
    damage_file(path, damage)
    with pytest.raises(UnreadableCheckpoint) as caught:
        load_safely(path, "cpu")
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "weights_only" not in message and "pwned" not in message


WRITER = """
import sys, torch
from pathlib import Path
from ssmbench.train import save_atomically
path, big = Path(sys.argv[1]), torch.arange(8_000_000, dtype=torch.float32)
for version in range(1, 10_000):
    save_atomically({"version": version, "data": big + version}, path)
    print(version, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_file_whole(tmp_path: Path):
    """SIGKILL while a 32 MB state is being written (its temporary file exists): the file at the path is
    the last one written whole, and loads."""
    path = tmp_path / "train_state.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    written = 0
    try:
        written = int(writer.stdout.readline())  # one whole version exists
        tmp = path.with_name(path.name + ".tmp")
        deadline = time.monotonic() + 60
        while not (tmp.is_file() and tmp.stat().st_size > 0) and time.monotonic() < deadline:
            pass
        writer.kill()
    finally:
        writer.wait()
    assert tmp.is_file(), "the writer was not caught mid-write"
    state = load_safely(path, "cpu")
    assert state["version"] >= written and torch.equal(state["data"], torch.arange(8_000_000.0) + state["version"])


# --- the whole run, on the command line ----------------------------------------------------------------

def ssmbench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


SWEEP = {"name": "faults", "defaults": {"device": "cpu", "seed": 0},
         "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads", "vocab_size": 8, "pack": 2,
                    "architectures": {"mamba": {"mixer": "mamba", "d_model": 16}},
                    "train": {"steps": 40, "batch_size": 8, "seq_len": 16, "lr": [3e-3, 1e6], "grad_clip": None,
                              "eval_every": 10},
                    "eval_lengths": [16, 32], "eval_samples": 16}]}


def test_a_packed_lr_sweep_names_the_diverged_run_and_never_reports_it_as_best(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    result = ssmbench("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "faults").iterdir()
    records = read_records(run_dir / "records.jsonl")
    (blown,) = [r for r in records if r.metric == "train_steps" and r.slice["lr"] == 1e6]
    assert blown.status == "ok" and blown.value == 10 and blown.extra["outcome"] == "diverged at step 10 (loss nan)"
    assert not [r for r in records if r.slice.get("lr") == 1e6 and r.metric in ("final_loss", "validation_accuracy")]
    tests = [r for r in records if r.slice.get("lr") == 1e6 and r.slice.get("phase") == "eval"]
    assert tests and all(r.status == "skipped" and r.message.startswith("not tested: training diverged at step 10")
                         for r in tests)
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    table = (run_dir / "table.md").read_text()
    sweep = table[table.index("learning-rate sweep"):table.index(": training")].splitlines()
    rows = {cells(line)[1]: cells(line) for line in sweep if line.startswith("| mamba")}
    assert rows["1e+06"][2:] == ["diverged", "✗ (diverged)", "✗ (diverged)", "10", ""]
    assert rows["0.003"][-2:] == ["40", "best"]
    training = table[table.index(": training"):].splitlines()
    ended = [cells(line)[-1] for line in training if line.startswith("| mamba")]
    assert sorted(ended) == ["diverged at step 10 (loss nan)", "trained every step"]
    assert "mamba, how its 2 runs ended: 1 diverged, 1 trained every step" in table
    assert "diverged at step 10 (loss nan)" in result.stdout


def test_a_resume_sets_damaged_checkpoints_aside_and_finishes_the_run(tmp_path: Path):
    """A run stopped with SIGTERM, one train_state.pt then truncated and the other overwritten with junk:
    one `--resume` finishes both points, says which files it set aside and why, and records it."""
    suite = SWEEP | {"tasks": [SWEEP["tasks"][0] | {"train": SWEEP["tasks"][0]["train"] | {
        "lr": [1e-3, 3e-3], "steps": 300, "grad_clip": 1.0, "checkpoint_every_s": 0.2}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    stopped = subprocess.Popen([sys.executable, "-m", "ssmbench", "run", str(tmp_path / "s.yaml"), "--out",
                                str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    states: list[Path] = []
    while len(states) < 2 and time.monotonic() < deadline and stopped.poll() is None:
        states = sorted(tmp_path.glob("faults/*/artifacts/**/train_state.pt"))
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=120) == 143 and len(states) == 2
    damage_file(states[0], "truncate")
    damage_file(states[1], "junk")
    run_dir = states[0].parents[4]
    # Checkpoints every 0.2 s were for catching the run early; resumed, a save per step (each fsynced) would
    # make the test wait on the disk. How often states are saved may change between sittings.
    resolved = run_dir / "suite.resolved.yaml"
    text = resolved.read_text()
    assert "checkpoint_every_s: 0.2\n" in text
    resolved.write_text(text.replace("checkpoint_every_s: 0.2\n", "checkpoint_every_s: 60.0\n"))
    result = ssmbench("run", "--resume", str(run_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "weights_only" not in output
    records = read_records(run_dir / "records.jsonl")
    trained = [r for r in records if r.metric == "train_steps"]
    assert len(trained) == 2 and all(r.status == "ok" and r.value == 300 for r in trained)
    for record, state, cause in zip(sorted(trained, key=lambda r: r.slice["lr"]), states,
                                    ("truncated", "not a tensors-only torch file"), strict=True):
        notes = record.extra["checkpoints_set_aside"]
        assert notes[0].startswith(f"{state}: ") and cause in notes[0] and notes[0].endswith("train_state.pt.bad")
        assert f"{state}: " in output
        assert state.with_name("train_state.pt.bad").is_file()
    assert all(r.status == "ok" for r in records if r.slice.get("phase") == "eval")


def test_a_damaged_model_file_is_rebuilt_from_the_finished_training_state(tmp_path: Path):
    """The test points of a resumed run read model.pt: a damaged one is set aside with one line and rebuilt
    from train_state.pt (the same weights), and the tests score what they scored the first time."""
    import json

    suite = SWEEP | {"tasks": [SWEEP["tasks"][0] | {"pack": 1, "train": SWEEP["tasks"][0]["train"] | {
        "lr": 3e-3, "grad_clip": 1.0}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    assert ssmbench("run", str(tmp_path / "s.yaml"), "--out", str(tmp_path)).returncode == 0
    (run_dir,) = (tmp_path / "faults").iterdir()
    records = run_dir / "records.jsonl"
    lines = records.read_text().splitlines()
    first = {r.point: r.value for r in read_records(records) if r.metric == "accuracy" and r.slice.get("phase") == "eval"}
    records.write_text("".join(line + "\n" for line in lines if json.loads(line)["slice"].get("phase") != "eval"))
    (weights,) = run_dir.rglob("model.pt")
    damage_file(weights, "truncate")
    result = ssmbench("run", "--resume", str(run_dir))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    again = {r.point: r.value for r in read_records(records) if r.metric == "accuracy" and r.slice.get("phase") == "eval"}
    assert again == first and len(first) == 2
    assert "model.pt: truncated or damaged" in (result.stdout + result.stderr).replace("\n", ""), result.stderr
    assert weights.with_name("model.pt.bad").is_file() and load_safely(weights, "cpu")


def test_a_signal_while_the_caller_tests_a_finished_run_acts_at_once_with_the_others_saved(tmp_path: Path):
    """A pack hands each finished run to its caller (which tests it, for minutes at 2^20); a SIGTERM then
    must not wait for those tests: it is raised at once, and the runs still training were saved first."""
    from ssmbench.errors import Terminated

    short = TrainSettings(**(SETTINGS.__dict__ | {"steps": 10}))
    first, other = trainer(short, seed=1), trainer(seed=2, checkpoint=tmp_path / "other.pt")
    pack = train_pack([first, other], width=2)
    finished, result = next(pack)
    assert finished is first and result.steps == 10
    saved = torch.load(tmp_path / "other.pt", weights_only=True)["progress"]["step"]
    assert saved == other.progress.step == 9  # it steps after the first in each round
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)  # the caller's work is interrupted here, not after it
        time.sleep(5)
        pytest.fail("the signal waited for the caller")
    pack.close()
    assert signal.getsignal(signal.SIGTERM) is not None
