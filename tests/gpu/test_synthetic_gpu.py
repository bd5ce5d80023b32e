"""Kind `synthetic` on CUDA: the fused-kernel Mamba block trains, and a trained model is tested at 2^20.

Run on the GPU machine: `python -m pytest -q tests/gpu/test_synthetic_gpu.py`. Skipped without CUDA or
without mamba_ssm's kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.records import read_records

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(torch.cuda.is_available() and not fused_mamba_kernels(),
                                 reason="mamba_ssm kernels unavailable")]


def test_fused_mamba_trains_and_runs_at_2_to_the_20(tmp_path: Path):
    suite = {"name": "syn-gpu", "defaults": {"device": "cuda", "seed": 0},
             "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads",
                        "architectures": {"mamba": {"mixer": "mamba", "d_model": 64}},
                        "train": {"steps": 400, "batch_size": 64, "seq_len": 64, "lr": 1e-3, "eval_every": 100},
                        "eval_lengths": [64, 2**20], "eval_samples": 2, "eval_min_samples": 2}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "syn-gpu").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert {r.status for r in records} == {"ok"}
    assert {r.kernel for r in records} == {"mamba_ssm-cuda"}
    curve = [r.value for r in records if r.metric == "loss" and "step" in r.slice]
    assert len(curve) == 4 and curve[-1] < curve[0]
    (longest,) = [r for r in records if r.metric == "accuracy" and r.slice.get("seq_len") == 2**20]
    assert 0.0 <= longest.value <= 1.0 and longest.extra["n_examples"] == 2 and longest.dtype == "float32"
    (rate,) = [r for r in records if r.metric == "steps_per_s"]
    assert rate.value > 0 and rate.dtype == "bfloat16" and rate.cuda_graphs is True


def _graphs_run(graphs: bool, checkpoint: Path | None = None, stop_at: int | None = None, steps: int = 60,
                schedule: str = "constant", warmup_steps: int = 0, **more):
    import os
    import signal

    from ssmbench.data.synthetic import make_batch, seeded_generator
    from ssmbench.models.builder import SmallModelConfig, build_model
    from ssmbench.train import TrainSettings, train

    model = build_model(SmallModelConfig(mixer="mamba", d_model=64), device="cuda", seed=0)
    held = {64: [make_batch("induction_heads", 64, 64, generator=seeded_generator(1, "cuda"), device="cuda")]}
    fields = {"steps": steps, "batch_size": 32, "seq_len": 64, "lr": 1e-3, "eval_every": 20} | more
    settings = TrainSettings(**fields, cuda_graphs=graphs, schedule=schedule, warmup_steps=warmup_steps)

    def on_step(step: int) -> None:
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(model.module, lambda g: make_batch("induction_heads", 32, 64, generator=g, device="cuda"),
                   seeded_generator(0, "cuda"), held, settings, "cuda", checkpoint=checkpoint, on_step=on_step)
    return model.module, result


def test_a_graphed_training_step_trains_as_the_eager_one():
    losses = {graphs: [log.loss for log in _graphs_run(graphs)[1].curve] for graphs in (False, True)}
    # Same initialisation, same batches, same updates: the curves agree up to kernel nondeterminism.
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_a_graphed_step_follows_a_warmed_up_cosine_schedule_as_the_eager_one():
    """The scheduled LR lives in a device tensor the graph reads: a graph holding the LR of its capture
    would train at a constant LR, and its curve would leave the eager one."""
    runs = {graphs: _graphs_run(graphs, steps=100, schedule="cosine", warmup_steps=10) for graphs in (False, True)}
    losses = {graphs: [log.loss for log in result.curve] for graphs, (_, result) in runs.items()}
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)


def test_a_graphed_cosine_run_resumes_as_if_never_stopped(tmp_path: Path):
    straight = _graphs_run(True, steps=80, schedule="cosine", warmup_steps=10)[1]
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _graphs_run(True, checkpoint, stop_at=30, steps=80, schedule="cosine", warmup_steps=10)
    resumed = _graphs_run(True, checkpoint, steps=80, schedule="cosine", warmup_steps=10)[1]
    assert resumed.resumed_at == [30]
    assert [log.loss for log in resumed.curve] == pytest.approx([log.loss for log in straight.curve], rel=2e-2)


def test_a_graphed_run_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path: Path):
    """The captured step is rebuilt over the loaded weights and Adam moments, in place, and the training
    stream's CUDA generator continues: the curve matches an uninterrupted graphed run."""
    straight = _graphs_run(True, steps=80)[1]
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _graphs_run(True, checkpoint, stop_at=30, steps=80)
    resumed = _graphs_run(True, checkpoint, steps=80)[1]
    assert resumed.resumed_at == [30]
    assert [log.loss for log in resumed.curve] == pytest.approx([log.loss for log in straight.curve], rel=2e-2)


def test_a_graphed_run_that_diverges_stops_at_the_next_evaluation():
    """The loss sum the graph keeps on the device turns NaN or inf with the first bad step; the evaluation
    that reads it stops the run: no host sync was added to the replayed steps."""
    _, result = _graphs_run(True, steps=200, lr=1e6, grad_clip=None)
    assert result.diverged and result.diverged_at == 20 and result.steps == 20 and result.curve == []
    assert not (result.diverged_loss < 1e30)  # nan or inf


def test_the_trainer_benchmark_times_all_three_loops_on_one_model(tmp_path: Path):
    suite = {"name": "speed-gpu", "defaults": {"device": "cuda", "seed": 0},
             "tasks": [{"kind": "train_speed", "batch_sizes": [8], "warmup_steps": 5, "steps": 20, "repeats": 3}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "speed-gpu").iterdir()
    rates = {r.slice["loop"]: r for r in read_records(run_dir / "records.jsonl") if r.metric == "steps_per_s"}
    assert set(rates) == {"ssmbench-graphs", "ssmbench-eager", "mamba_ssm-plain"}
    assert all(r.status == "ok" and r.value > 0 and r.stats.n == 3 for r in rates.values())
    assert rates["mamba_ssm-plain"].kernel == "mamba_ssm.MambaLMHeadModel"
    assert rates["ssmbench-graphs"].kernel == "mamba_ssm-cuda" and rates["ssmbench-graphs"].cuda_graphs is True
