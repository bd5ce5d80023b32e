"""Launchers: the same suite on a local Ray cluster (2 CPUs) and through submitit's local executor (the SLURM
path) gives the records the local launcher gives, apart from timings and where they ran; a worker killed
mid-run becomes an error record and a resume finishes cleanly; retries resubmit a lost job's unfinished
points; --dry-run writes SLURM scripts without submitting; a missing extra is one line, exit 2; and a table
whose figures come from several GPUs says so."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_cli import assert_user_error, invoke, write

from ssmbench import kinds
from ssmbench.kinds import all_kinds
from ssmbench.records import Record, read_records, upgrade
from ssmbench.report import build_tables

TESTS = REPO / "tests"

# Deterministic toy points (names' lengths) beside a real model's throughput points, two jobs each kind.
PAIR_SUITE = """\
name: pair
defaults: {device: cpu, weights: random, seed: 0}
models: [tiny-gpt2, tiny-mamba]
tasks:
  - kind: throughput
    models: [tiny-gpt2]
    batch_sizes: [1]
    prompt_lengths: [8]
    new_tokens: 4
    warmup: 0
    repeats: 2
  - {kind: toy, repeats: 2}
"""

CRASH_SUITE = """\
name: crash
defaults: {{device: cpu, seed: 0}}
launch: {{retries: {retries}}}
models: [tiny-gpt2]
tasks:
  - {{kind: toy, repeats: 2}}
  - {{kind: crash, marker: {marker}, points: 3, crash_at: 1}}
"""


@pytest.fixture(scope="module")
def test_kinds():
    """toy and crash registered here; workers find them through PYTHONPATH and the work's kind target."""
    saved = dict(kinds.KINDS)
    kinds.register_kind("toy", "toy_kind:KIND")
    kinds.register_kind("crash", "crash_kind:KIND")
    yield
    kinds.KINDS.clear()
    kinds.KINDS.update(saved)


@pytest.fixture(scope="module")
def tests_on_pythonpath():
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), old]))
    yield
    os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)


@pytest.fixture(scope="module")
def ray_cluster(tests_on_pythonpath):
    """A local Ray cluster of 2 CPU workers for the module; `--launcher ray` joins the one already running.
    ray.init makes SIGTERM exit the driver (so that its atexit hook stops the cluster) and shutdown leaves
    that handler in place: the test process gets its own back."""
    ray = pytest.importorskip("ray")
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "HF_HUB_OFFLINE": "1",
                                       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    yield
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture
def slurm_local(tests_on_pythonpath, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("SSMBENCH_SLURM_CLUSTER", "local")


@pytest.fixture(params=["ray", "slurm"])
def launcher(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("ray_cluster" if request.param == "ray" else "slurm_local")
    return request.param


def run(suite: Path, out: Path, *args: str) -> tuple[int, Path, list[Record]]:
    result = invoke("run", suite, "--out", out, *args)
    (run_dir,) = [d for d in (out / suite.stem).iterdir() if d.is_dir()]
    assert "Traceback" not in result.output, result.output
    return result.exit_code, run_dir, read_records(run_dir / "records.jsonl")


def comparable(records: list[Record]) -> list[tuple]:
    """What must not depend on the launcher: everything but timings, where and when; toy values exactly."""
    def key(r: Record) -> tuple:
        fields = r.model_dump(mode="json", exclude={"time", "run_id", "value", "stats", "stderr", "host", "extra"})
        return (*sorted((k, str(v)) for k, v in fields.items()), tuple(sorted(r.extra)),
                r.value if r.kind == "toy" else None)
    return sorted(key(r) for r in records)


@pytest.fixture(scope="module")
def local_records(test_kinds, tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    """The pair suite under the local launcher: what the others must reproduce."""
    base = tmp_path_factory.mktemp("local")
    code, _, records = run(write(base / "pair.yaml", PAIR_SUITE), base / "out")
    assert code == 0
    return records


def test_launchers_give_the_local_records(local_records: list[Record], launcher: str, tmp_path: Path):
    local = local_records
    suite = write(tmp_path / "pair.yaml", PAIR_SUITE)
    code, run_dir, remote = run(suite, tmp_path / launcher, "--launcher", launcher)
    assert code == 0
    assert len(remote) == len(local) > 0
    assert comparable(remote) == comparable(local)
    assert {r.host for r in remote} == {r.host for r in local} == {socket.gethostname()}
    assert (run_dir / "artifacts" / "toy" / "tiny-mamba" / "copy1.txt").read_text() == "tiny-mamba"
    table = (run_dir / "table.md").read_text()
    assert "### throughput (throughput)" in table
    launched = json.loads((run_dir / "env.json").read_text())["launcher"]
    assert launched["name"] == launcher and f"- launcher: {launcher} (" in table
    if launcher == "ray":  # the cluster the fixture started: one node, two CPUs, no GPU
        assert (launched["nodes"], launched["cpus"], launched["gpus"]) == (1, 2, 0)
        assert launched["cluster"] == sys.modules["ray"].get_runtime_context().gcs_address  # the fixture's
        assert launched["ray"] == importlib.metadata.version("ray")


def test_a_killed_worker_is_an_error_record_and_resume_finishes(test_kinds, launcher: str, tmp_path: Path):
    suite = write(tmp_path / "crash.yaml", CRASH_SUITE.format(retries=0, marker=tmp_path / "killed"))
    code, run_dir, records = run(suite, tmp_path / "out", "--launcher", launcher)
    assert code == 1
    assert (tmp_path / "killed").exists()
    status = {(r.job, r.point): r.status for r in records}
    assert status == {("toy/tiny-gpt2", "copy=0"): "ok", ("toy/tiny-gpt2", "copy=1"): "ok",
                      ("crash/tiny-gpt2", "step=0"): "ok", ("crash/tiny-gpt2", "step=1"): "error",
                      ("crash/tiny-gpt2", "step=2"): "error"}
    lost = [r for r in records if r.status == "error"]
    assert all(r.message.startswith("job lost: ") and r.host is None for r in lost)
    assert "ERR" in (run_dir / "table.md").read_text()

    resumed = invoke("run", "--resume", run_dir, "--launcher", launcher)
    assert resumed.exit_code == 0, resumed.output
    records = read_records(run_dir / "records.jsonl")
    # Only the two lost points ran again, as attempt 1; nothing done was redone.
    assert Counter((r.point, r.attempt) for r in records if r.job == "crash/tiny-gpt2") == {
        ("step=0", 0): 1, ("step=1", 0): 1, ("step=2", 0): 1, ("step=1", 1): 1, ("step=2", 1): 1}
    assert Counter(r.job for r in records)["toy/tiny-gpt2"] == 2
    assert all(r.status == "ok" for r in records if r.attempt == 1)


def test_retries_resubmit_a_lost_job(test_kinds, ray_cluster, tmp_path: Path):
    """On Ray; SLURM's lost jobs go through the same resubmission (launch.remote)."""
    suite = write(tmp_path / "crash.yaml", CRASH_SUITE.format(retries=1, marker=tmp_path / "killed"))
    result = invoke("run", suite, "--out", tmp_path / "out", "--launcher", "ray")
    assert result.exit_code == 0, result.output
    assert "resubmitting its 2 unfinished points (retry 1 of 1)" in result.stderr
    (run_dir,) = (tmp_path / "out" / "crash").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert sorted(r.point for r in records if r.job == "crash/tiny-gpt2") == ["step=0", "step=1", "step=2"]
    assert {r.status for r in records} == {"ok"}


def test_slurm_dry_run_writes_scripts_and_submits_nothing(tmp_path: Path):
    pytest.importorskip("submitit")
    suite = write(tmp_path / "pair.yaml", PAIR_SUITE.replace(
        "tasks:", "launch: {resources: {partition: gpu, time_min: 30, mem_gb: 16}}\ntasks:").replace(
        "  - {kind: toy, repeats: 2}", "  - {kind: throughput, name: long, models: [tiny-mamba], resources: {time_min: 90}}"))
    result = invoke("run", suite, "--out", tmp_path / "out", "--launcher", "slurm", "--dry-run")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "pair" / "slurm-dry-run"
    scripts = {p.name: p.read_text() for p in folder.glob("*.sbatch")}
    assert sorted(scripts) == ["long__tiny-mamba.sbatch", "throughput__tiny-gpt2.sbatch"]
    assert "#SBATCH --time=30" in scripts["throughput__tiny-gpt2.sbatch"]
    assert "#SBATCH --time=90" in scripts["long__tiny-mamba.sbatch"]
    assert all("#SBATCH --partition=gpu" in s and "#SBATCH --mem=16GB" in s for s in scripts.values())
    assert all("gpus" not in s for s in scripts.values())  # a CPU suite asks for no GPU
    assert not list(folder.glob("*/*.pkl")) and [p.name for p in (tmp_path / "out" / "pair").iterdir()] == [folder.name]


@pytest.mark.parametrize(("launcher", "module"), [("ray", "ray"), ("slurm", "submitit")])
def test_a_launcher_without_its_extra_is_one_line(launcher: str, module: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, module, None)  # what `import ray` meets when ray is not installed
    suite = write(tmp_path / "pair.yaml", PAIR_SUITE)
    assert_user_error(invoke("run", suite, "--out", tmp_path / "out", "--launcher", launcher),
                      f"--launcher {launcher} needs {module}", f"pip install 'ssmbench[{launcher}]'")
    assert not (tmp_path / "out").exists()


def test_ray_address_needs_the_ray_launcher(tmp_path: Path):
    suite = write(tmp_path / "pair.yaml", PAIR_SUITE)
    assert_user_error(invoke("run", suite, "--out", tmp_path / "out", "--ray-address", "auto"),
                      "--ray-address applies to --launcher ray")


def _record(model: str, device: str, batch: int, host: str | None = "node1") -> Record:
    return Record(task="throughput", kind="throughput", job=f"throughput/{model}", point=f"batch={batch}",
                  model=model, metric="decode_tok_s", value=100.0 + batch, unit="tok/s", slice={"batch": batch},
                  device=device, host=host)


def test_a_table_says_when_its_figures_come_from_several_gpus():
    one_gpu = [_record(m, "NVIDIA H100", b) for m in ("gpt2", "mamba-130m") for b in (1, 2)]
    assert not any("GPU" in n or "devices" in n for t in build_tables(one_gpu, all_kinds()) for n in t.notes)
    mixed = [*one_gpu[:3], _record("mamba-130m", "NVIDIA A100", 2, host="node2")]
    (table,) = [t for t in build_tables(mixed, all_kinds()) if t.task == "throughput"]
    assert "⚠ mixed GPUs: the figures of mamba-130m come from 2 devices: NVIDIA H100 (1 figures), " \
           "NVIDIA A100 (1 figures)" in table.notes
    assert "devices differ between models: gpt2 on NVIDIA H100; mamba-130m on NVIDIA H100, NVIDIA A100" in table.notes


def test_records_before_host_was_kept_still_read():
    old = _record("gpt2", "cpu", 1).model_dump(mode="json", exclude={"host"}) | {"schema_version": 1}
    assert Record.model_validate(upgrade(old)).host is None
