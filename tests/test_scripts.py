"""The project's scripts keep working: scripts/cpu_crosscheck.py scores a committed H100 run's models on the
CPU and finds the recorded accuracy on the same examples."""

from __future__ import annotations

import os
import subprocess
import sys

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


def _zoology_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoology_reference", REPO / "scripts" / "zoology_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoology_cell_is_the_suites_cell_in_zoologys_terms():
    """scripts/zoology_reference.py builds zoology's TrainConfig from the suite's task, as zoology's
    iclr24 Figure 2 configs build it (zoology itself is not needed for the mapping, only to train)."""
    from ssmbench.spec import load_suite

    tasks = {t.name: t for t in load_suite(REPO / "suites" / "mqar_zoology.yaml")[0].tasks}
    make = _zoology_script().zoology_config
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
