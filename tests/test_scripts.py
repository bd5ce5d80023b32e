"""The project's scripts keep working: scripts/cpu_crosscheck.py scores a committed H100 run's models on the
CPU and finds the recorded accuracy on the same examples."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

RUN = REPO / "results" / "reference" / "h100" / "synthetic_paper" / "20261206-141114"


def test_the_cpu_crosscheck_reproduces_the_h100_accuracy_on_the_same_examples():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cpu_crosscheck.py"), str(RUN), "--length", "64",
                             "--samples", "256", "--seeds", "2"], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("seed 2, L=64: CPU (torch-chunked-scan) 3.52% of 256" in result.stdout
            and "recorded (mamba_ssm-cuda, NVIDIA H100 80GB HBM3) 3.52% of 256; same examples: True; equal" in result.stdout)


def test_the_cpu_crosscheck_says_what_is_missing():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cpu_crosscheck.py"), str(RUN), "--length", "77",
                             "--samples", "8", "--seeds", "0"], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "no accuracy record at L=77" in result.stderr


def _script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoology_cell_is_the_suites_cell_in_zoologys_terms():
    """scripts/zoology_reference.py builds zoology's TrainConfig from the suite's task, as zoology's
    iclr24 Figure 2 configs build it (zoology itself is not needed for the mapping, only to train)."""
    from ssmbench.spec import load_suite

    tasks = {t.name: t for t in load_suite(REPO / "suites" / "mqar_zoology.yaml")[0].tasks}
    make = _script("zoology_reference").zoology_config
    short = tasks["mqar-64"]
    config = make(short, short.architectures["attention-d128"], 1e-3, seed=5)
    assert config["max_epochs"] == 64 and config["data"]["batch_size"] == 512 and config["seed"] == 5
    assert config["data"]["train_configs"] == [{"num_examples": 100_000, "vocab_size": 8192, "input_seq_len": 64,
                                                "num_kv_pairs": 4, "power_a": 0.01, "random_non_queries": False}]
    assert config["data"]["test_configs"][0]["num_examples"] == 3000
    model = config["model"]
    assert (model["block_type"], model["n_layers"], model["d_model"], model["max_position_embeddings"],
            model["embed_dropout"]) == ("TransformerBlock", 2, 128, 64, 0.1)
    assert model["sequence_mixer"] == {"name": "zoology.mixers.attention.MHA", "kwargs": {"dropout": 0.1, "num_heads": 1}}
    assert (config["learning_rate"], config["weight_decay"], config["early_stopping_threshold"]) == (1e-3, 0.1, 0.99)
    long = tasks["mqar-256"]
    mamba = make(long, long.architectures["mamba-d64"], 1e-3, seed=0)
    assert mamba["max_epochs"] == 64 and mamba["data"]["batch_size"] == 256
    assert (mamba["model"]["block_type"], mamba["model"]["max_position_embeddings"]) == ("MambaBlock", 0)


def test_the_zoology_script_refuses_what_it_cannot_run(tmp_path):
    script = str(REPO / "scripts" / "zoology_reference.py")
    for extra, message in ((["--task", "mqar-64", "--model", "nope"], "no task 'mqar-64' with architecture 'nope'"),
                           (["--task", "mqar-64", "--model", "mamba-d64"], "not a checkout of HazyResearch/zoology")):
        result = subprocess.run([sys.executable, script, "--zoology", str(tmp_path), "--lr", "1e-3", "--out",
                                 str(tmp_path / "o.json"), *extra], capture_output=True, text=True, timeout=120,
                                cwd=REPO, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_zoology_script_refuses_a_checkout_at_another_commit_than_the_one_it_supports(tmp_path):
    checkout = tmp_path / "zoology"
    (checkout / "zoology").mkdir(parents=True)
    (checkout / "zoology" / "train.py").write_text("")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "not zoology's dbcb60d"], check=True)
    problem = _script("zoology_reference").zoology_problem(checkout)
    assert problem is not None and "this script supports zoology at dbcb60d" in problem
    assert f"git -C {checkout} checkout dbcb60d" in problem


def test_a_packed_run_comes_back_whole_in_parts_the_device_can_return(tmp_path, monkeypatch):
    lease = _script("lease")
    run = tmp_path / "gpu" / "results" / "suite-x" / "20261207-010101"
    (run / "artifacts" / "job").mkdir(parents=True)
    (run / "records.jsonl").write_text('{"metric": "accuracy"}\n')
    (run / "run.lock").write_text("")
    (run / "artifacts" / "job" / "train_state.pt.prev").write_bytes(b"older state")
    state = os.urandom(5000)  # incompressible, so that it needs several parts
    (run / "artifacts" / "job" / "train_state.pt").write_bytes(state)
    monkeypatch.setattr(lease, "PART_BYTES", 2000)
    parts = lease.pack(run, tmp_path / "gpu", tmp_path / "out")
    assert len(parts) == 3 and all(p.stat().st_size <= 2000 for p in parts)
    back = lease.unpack(tmp_path / "out", tmp_path / "here")
    assert back == tmp_path / "here" / "results" / "suite-x" / "20261207-010101"
    assert (back / "artifacts" / "job" / "train_state.pt").read_bytes() == state
    assert (back / "records.jsonl").read_text() == '{"metric": "accuracy"}\n'
    assert not (back / "run.lock").exists()  # the lock is the GPU machine's process's, not the run's
    assert not (back / "artifacts" / "job" / "train_state.pt.prev").exists()  # the fallback stays behind
    monkeypatch.setattr(lease, "MAX_PARTS", 2)
    with pytest.raises(ValueError, match="more than 2 parts"):
        lease.pack(run, tmp_path / "gpu", tmp_path / "out2")
    # Too large with its training state: the records still come back, and the manifest says what stayed.
    light, with_states = lease.pack_what_fits(run, tmp_path / "gpu", tmp_path / "out3")
    assert not with_states and len(light) == 1
    records_only = lease.unpack(tmp_path / "out3", tmp_path / "here3")
    assert (records_only / "records.jsonl").is_file() and not list(records_only.rglob("train_state.pt"))
    assert "states left behind" in (tmp_path / "out3" / "run.manifest").read_text()
    (tmp_path / "out" / parts[1].name).unlink()
    with pytest.raises(FileNotFoundError, match="missing run.tar.gz.01"):
        lease.unpack(tmp_path / "out", tmp_path / "again")


SLOW_SUITE = """\
name: lease-test
defaults: {device: cpu, seed: 0}
tasks:
  - kind: synthetic
    name: induction
    task: induction_heads
    architectures:
      mamba: {mixer: mamba, d_model: 8}
    vocab_size: 8
    train: {steps: 10000000, batch_size: 4, seq_len: 32, lr: 1.0e-3, eval_every: 1000000, eval_samples: 8,
            checkpoint_every_s: 1000}
    eval_lengths: [32]
    eval_samples: 8
"""


def test_the_lease_stops_a_long_training_with_its_state_saved_and_packs_it(tmp_path):
    """SIGTERM at the limit: ssmbench saves the training state, the lease says so and packs the run, and the
    unpacked copy continues with --resume (the resume is stopped too: ten million steps do not fit a test)."""
    (tmp_path / "suite.yaml").write_text(SLOW_SUITE)
    script = str(REPO / "scripts" / "lease.py")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, script, "run", "suite.yaml", "--seconds", "25", "--pack", "out"],
                            capture_output=True, text=True, timeout=200, cwd=tmp_path, env=env)
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not finished. Continue with: python scripts/lease.py resume results/lease-test/" in result.stdout
    here = tmp_path / "here"
    here.mkdir()
    unpacked = subprocess.run([sys.executable, script, "unpack", str(tmp_path / "out")], capture_output=True,
                              text=True, timeout=60, cwd=here, env=env)
    assert unpacked.returncode == 0, unpacked.stderr
    run = here / unpacked.stdout.splitlines()[0]
    (state,) = run.rglob("train_state.pt")
    import torch

    saved = torch.load(state, weights_only=True)
    assert saved["progress"]["step"] > 0
    resumed = subprocess.run([sys.executable, script, "resume", str(run.relative_to(here)), "--seconds", "25"],
                             capture_output=True, text=True, timeout=200, cwd=here, env=env)
    assert resumed.returncode == 3, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert torch.load(state, weights_only=True)["progress"]["step"] > saved["progress"]["step"]


def test_profile_pack_counts_overlapping_kernels_once_in_the_busy_time():
    merged_length = _script("profile_pack").merged_length
    assert merged_length([]) == 0
    assert merged_length([(0, 2), (1, 3), (5, 6)]) == 4  # two overlapping kernels, then one alone
    assert merged_length([(0, 10), (2, 3), (4, 5)]) == 10  # kernels inside a longer one add nothing


def test_profile_pack_times_one_model_and_the_pack_on_the_cpu(tmp_path):
    import json

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "profile_pack.py"), "--device", "cpu", "--pack", "2",
                             "--d-model", "16", "--seq-len", "32", "--warmup", "1", "--rounds", "2",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [p["pack"] for p in summary["points"]] == [1, 2]
    one, two = summary["points"]
    assert one["graph"] == "eager" and "replay_ms_per_round" not in one  # no CUDA graphs on a CPU
    assert summary["wall_ratio"] == pytest.approx(two["trainer_ms_per_round"] / one["trainer_ms_per_round"])
    assert {"trace-k1.json.gz", "trace-k2.json.gz", "tables.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert "== k2: 2 model(s)" in (tmp_path / "tables.txt").read_text()
