"""Placing packs on several GPUs, on the CPU: `ssmbench run --gpus N` with fake devices (SSMBENCH_FAKE_GPUS)
runs each pack, and each job that does not pack, in a worker process of its own pinned to one GPU with
CUDA_VISIBLE_DEVICES, N at a time, the driver the one writer of records.jsonl; a worker that dies costs its
unfinished points; SIGTERM stops the workers after their packs saved their training states, and --resume
finishes every run from there. On a local Ray cluster that declares two fake GPUs, each pack is one task
that asks for a whole GPU, and two packs run at the same time.

"At the same time" is shown without timing anything: a probe kind's first point in each process waits until
two processes have come (tests/probe_kind.py), so units run one after another would fail, not pass."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_cli import assert_user_error, invoke, write
from test_pack import figures, only_run, ssmbench

from ssmbench import kinds
from ssmbench.launch import packs
from ssmbench.records import Record, read_records

TESTS = REPO / "tests"


@pytest.fixture(scope="module")
def probe_kinds():
    """probe and crash registered here; workers find them through PYTHONPATH (their task's module)."""
    saved = dict(kinds.KINDS)
    kinds.register_kind("probe", "probe_kind:KIND")
    kinds.register_kind("crash", "crash_kind:KIND")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), old]))
    yield
    os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    kinds.KINDS.clear()
    kinds.KINDS.update(saved)


@pytest.fixture
def two_fake_gpus(probe_kinds, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SSMBENCH_FAKE_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def probe_suite(tmp_path: Path, **probe) -> Path:
    """A pack of two probe jobs twice over, meeting in one folder, and a probe job that does not pack."""
    tasks = [{"kind": "probe", "jobs": 4, "pack": 2, "meet": str(tmp_path / "meet")} | probe,
             {"kind": "probe", "name": "alone", "jobs": 1}]
    return write(tmp_path / "probe.yaml", yaml.safe_dump({"name": "probe", "defaults": {"device": "cpu"},
                                                          "tasks": tasks}))


def where(records: list[Record]) -> dict[str, tuple[int, str]]:
    """Each job's (process id, CUDA_VISIBLE_DEVICES), the same for all its points."""
    found: dict[str, set[tuple[int, str]]] = {}
    for r in records:
        found.setdefault(r.job, set()).add((int(r.value), r.extra["cuda_visible_devices"]))
    assert all(len(places) == 1 for places in found.values()), found
    return {job: next(iter(places)) for job, places in found.items()}


def test_each_pack_runs_whole_in_a_worker_process_pinned_to_a_gpu_of_its_own(two_fake_gpus, tmp_path: Path):
    result = invoke("run", probe_suite(tmp_path), "--out", tmp_path / "out", "--gpus", "2")
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path / "out")
    records = read_records(run_dir / "records.jsonl")
    assert {r.status for r in records} == {"ok"}
    placed = where(records)
    first, second = placed["probe/copy=0"], placed["probe/copy=2"]
    assert placed["probe/copy=1"] == first and placed["probe/copy=3"] == second  # a pack: one process, one GPU
    assert first[0] != second[0] and {first[1], second[1]} == {"0", "1"}  # two packs: two processes, both GPUs
    assert placed["alone/copy=0"][0] not in (first[0], second[0], os.getpid())  # a job that does not pack: its own
    assert placed["alone/copy=0"][1] in ("0", "1")
    assert len(list((tmp_path / "meet").iterdir())) >= 2  # the packs met: they ran at the same time
    # A worker's notes are said on the driver's screen, whole, one line each.
    said = [line for line in result.stderr.splitlines() if ": measured in process " in line]
    assert sorted(said) == sorted(f"note: {job}, {pt}: measured in process {placed[job][0]}"
                                  for job in placed for pt in ("step=0", "step=1"))
    # One writer: every point once, every line whole.
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 5 * 2 and all(json.loads(line) for line in lines)
    assert Counter((r.job, r.point) for r in records).most_common(1)[0][1] == 1
    assert json.loads((run_dir / "env.json").read_text())["launcher"] == {"name": "local", "gpus": 2, "devices": "0,1"}
    assert len(list((run_dir / "launch" / "workers").glob("*.log"))) == 3


def test_the_drivers_own_cuda_visible_devices_are_the_gpus_handed_out(two_fake_gpus, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    result = invoke("run", probe_suite(tmp_path), "--out", tmp_path / "out", "--gpus", "all")
    assert result.exit_code == 0, result.output
    placed = where(read_records(only_run(tmp_path / "out") / "records.jsonl"))
    assert {cuda for _, cuda in placed.values()} <= {"3", "5"}
    assert {placed["probe/copy=0"][1], placed["probe/copy=2"][1]} == {"3", "5"}


def test_packs_are_cut_to_keep_every_device_busy_and_one_device_streams_a_task_whole(probe_kinds):
    from ssmbench.launch import Work
    from ssmbench.plan import build_plan
    from ssmbench.spec import parse_suite

    def cut(jobs: int, pack: int, places: int | None) -> list[list[int]]:
        text = f"name: p\ntasks:\n  - {{kind: probe, jobs: {jobs}, pack: {pack}}}\n  - {{kind: probe, name: solo}}\n"
        works = [Work(job, job.points, "r", "p", Path("."), "probe_kind:KIND")
                 for job in build_plan(parse_suite(yaml.safe_load(text)), "cpu").jobs]
        groups = packs(works, places)
        assert [[w.job.id for w in g] for g in groups[-4:]] == [[f"solo/copy={i}"] for i in range(4)]
        return [[int(w.job.id.split("=")[-1]) for w in g] for g in groups[:-4]]

    assert cut(4, 2, 2) == [[0, 1], [2, 3]]
    assert cut(5, 4, 2) == [[0, 1, 2], [3, 4]]  # fewer than K a device: every device gets some
    assert cut(96, 32, 8) == [list(range(i, i + 12)) for i in range(0, 96, 12)]  # 8 of 12, not 3 of 32
    assert [len(p) for p in cut(21, 4, 2)] == [4, 4, 4, 3, 3, 3]  # whole rounds of two, none over K
    assert cut(5, 2, None) == [[0, 1, 2, 3, 4]]  # one device: the task's pack streams them K at a time


@pytest.mark.parametrize(("gpus", "fake", "fragment"), [
    ("2", None, "--gpus 2: this machine has no CUDA GPU; run without --gpus"),
    ("3", "2", "--gpus 3: this machine has 2 GPUs; give at most 2, or all"),
    ("0", "2", "--gpus 0: give a number of GPUs (1 or more) or all"),
    ("two", "2", "--gpus two: give a number of GPUs (1 or more) or all"),
])
def test_gpus_that_are_not_there_are_one_line(gpus: str, fake: str | None, fragment: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("torch")
    if fake is None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        monkeypatch.delenv("SSMBENCH_FAKE_GPUS", raising=False)
    else:
        monkeypatch.setenv("SSMBENCH_FAKE_GPUS", fake)
    suite = write(tmp_path / "s.yaml", "name: s\ndefaults: {device: cpu}\nmodels: [tiny-gpt2]\n"
                                       "tasks:\n  - {kind: throughput, batch_sizes: [1], prompt_lengths: [8]}\n")
    assert_user_error(invoke("run", suite, "--out", tmp_path / "out", "--gpus", gpus), fragment)
    assert not (tmp_path / "out").exists()


def test_gpus_is_the_local_launchers(tmp_path: Path):
    pytest.importorskip("submitit")
    suite = write(tmp_path / "s.yaml", "name: s\ndefaults: {device: cpu}\nmodels: [tiny-gpt2]\n"
                                       "tasks:\n  - {kind: throughput, batch_sizes: [1], prompt_lengths: [8]}\n")
    assert_user_error(invoke("run", suite, "--out", tmp_path / "out", "--gpus", "2", "--launcher", "slurm"),
                      "--gpus applies to --launcher local, not slurm")


CRASH_SUITE = """\
name: crash
defaults: {{device: cpu, seed: 0}}
models: [tiny-gpt2]
tasks:
  - {{kind: probe, jobs: 1}}
  - {{kind: crash, marker: {marker}, points: 3, crash_at: 1}}
"""


def test_a_worker_that_dies_costs_its_unfinished_points_and_resume_finishes(two_fake_gpus, tmp_path: Path):
    suite = write(tmp_path / "crash.yaml", CRASH_SUITE.format(marker=tmp_path / "killed"))
    first = invoke("run", suite, "--out", tmp_path / "out", "--gpus", "2")
    assert first.exit_code == 1, first.output
    run_dir = only_run(tmp_path / "out")
    records = read_records(run_dir / "records.jsonl")
    status = {(r.job, r.point): r.status for r in records}
    assert status == {("probe/copy=0", "step=0"): "ok", ("probe/copy=0", "step=1"): "ok",
                      ("crash/tiny-gpt2", "step=0"): "ok", ("crash/tiny-gpt2", "step=1"): "error",
                      ("crash/tiny-gpt2", "step=2"): "error"}
    lost = [r for r in records if r.status == "error"]
    assert all(r.message.startswith("job lost: its worker process (GPU ") and "died (signal SIGKILL)" in r.message
               for r in lost), lost[0].message
    resumed = invoke("run", "--resume", run_dir, "--gpus", "2")
    assert resumed.exit_code == 0, resumed.output
    records = read_records(run_dir / "records.jsonl")
    assert Counter((r.point, r.attempt) for r in records if r.job == "crash/tiny-gpt2") == {
        ("step=0", 0): 1, ("step=1", 0): 1, ("step=2", 0): 1, ("step=1", 1): 1, ("step=2", 1): 1}
    assert Counter(r.job for r in records)["probe/copy=0"] == 2


# --- a pack stopped by SIGTERM, through the command line -------------------------------------------------

TRAIN = {"kind": "synthetic", "name": "ih", "task": "induction_heads", "vocab_size": 8, "seeds": [0, 1, 2, 3],
         "pack": 2, "architectures": {"mamba": {"mixer": "mamba", "d_model": 16}},
         "train": {"steps": 150, "batch_size": 8, "seq_len": 16, "lr": 3e-3, "eval_every": 50,
                   "checkpoint_every_s": 0.2},
         "eval_lengths": [16, 64], "eval_samples": 16}


def test_sigterm_stops_the_workers_after_their_packs_saved_and_resume_finishes_each_run_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SSMBENCH_FAKE_GPUS", "2")  # test_pack's ssmbench() passes the environment on
    path = write(tmp_path / "train.yaml", yaml.safe_dump({"name": "train", "defaults": {"device": "cpu", "seed": 0},
                                                          "tasks": [TRAIN]}))
    straight = ssmbench("run", str(path), "--out", str(tmp_path / "straight"))  # in one process, no --gpus
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    stopped = ssmbench("run", str(path), "--out", str(tmp_path / "stopped"), "--gpus", "2")
    saved = lambda: list((tmp_path / "stopped").glob("train/*/artifacts/ih/mamba/seed=*/train_state.pt"))  # noqa: E731
    deadline = time.monotonic() + 300
    while len(saved()) < 4 and time.monotonic() < deadline and stopped.poll() is None:
        time.sleep(0.05)
    assert len(saved()) == 4, "the four runs of both packs should have written a checkpoint"
    stopped.send_signal(signal.SIGTERM)
    output = stopped.communicate(timeout=300)[0]
    assert stopped.returncode == 143, output
    run_dir = only_run(tmp_path / "stopped")
    logs = "".join(p.read_text() for p in (run_dir / "launch" / "workers").glob("*.log"))
    assert logs.count("stopped by the driver") == 2, logs  # both packs' workers, each once

    resumed = ssmbench("run", "--resume", str(run_dir), "--gpus", "2")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    a, b = read_records(only_run(tmp_path / "straight") / "records.jsonl"), read_records(run_dir / "records.jsonl")
    assert figures(a) == figures(b)  # none lost, and each run computed what it computes uninterrupted
    assert Counter((r.job, r.point, r.metric, r.slice.get("step")) for r in b).most_common(1)[0][1] == 1  # none twice
    resumed_at = [r.extra["resumed_at_steps"] for r in b if r.metric == "train_steps"]
    assert len(resumed_at) == 4 and all(steps and 0 < steps[0] < 150 for steps in resumed_at), resumed_at


# --- Ray: a pack is one task on one whole GPU --------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_with_two_gpus(probe_kinds):
    """A local Ray cluster of 2 CPUs that declares 2 GPUs (none is real: Ray only counts them and sets each
    task's CUDA_VISIBLE_DEVICES). As tests/test_launchers.py's, it gives SIGTERM's handler back at the end."""
    ray = pytest.importorskip("ray")
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


def test_on_ray_each_pack_is_one_task_on_a_whole_gpu_and_packs_run_at_once(ray_with_two_gpus, tmp_path: Path):
    suite = probe_suite(tmp_path, resources={"gpus": 1, "cpus": 1})  # a CPU job asks for a GPU only when told
    result = invoke("run", suite, "--out", tmp_path / "out", "--launcher", "ray")
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path / "out")
    records = read_records(run_dir / "records.jsonl")
    assert {r.status for r in records} == {"ok"} and len(records) == 10
    placed = where(records)
    first, second = placed["probe/copy=0"], placed["probe/copy=2"]
    assert placed["probe/copy=1"] == first and placed["probe/copy=3"] == second  # each pack whole, in one task
    assert first[0] != second[0] and {first[1], second[1]} == {"0", "1"}  # one whole GPU each, both busy at once
    assert json.loads((run_dir / "env.json").read_text())["launcher"]["gpus"] == 2


def test_ray_asks_a_whole_gpu_for_each_pack():
    """Ray imports nothing here: the ask is worked out from the job alone."""
    from ssmbench.launch.ray import ray_gpus
    from ssmbench.plan import build_plan
    from ssmbench.spec import parse_suite

    text = ("name: p\ntasks:\n  - {kind: synthetic, seeds: [0, 1], pack: 4}\n"
            "  - {kind: synthetic, name: alone, seeds: [0], resources: {gpus: 2}, pack: 4}\n")
    jobs = build_plan(parse_suite(yaml.safe_load(text)), "cuda").jobs
    assert [ray_gpus(job) for job in jobs] == [1, 1, 2]
    assert [ray_gpus(job) for job in build_plan(parse_suite(yaml.safe_load(text)), "cpu").jobs] == [0, 0, 2]
