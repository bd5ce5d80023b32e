"""Packed training on CUDA: the captured step draws the very batches the eager loop draws, packed models
train as they do alone, and a packed suite says how each model ran.

Run on the GPU machine: `python -m pytest -q tests/gpu/test_pack_gpu.py`. Skipped without CUDA or without
mamba_ssm's kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.data.synthetic import fixed_batches, make_batch, seeded_generator
from ssmbench.models.builder import SmallModelConfig, build_model
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.records import read_records
from ssmbench.train import Trainer, TrainSettings, train_pack

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(torch.cuda.is_available() and not fused_mamba_kernels(),
                                 reason="mamba_ssm kernels unavailable")]

TASKS = [("induction_heads", {}), ("induction_heads", {"special_within": 16}),
         ("selective_copying", {"n_memorize": 16}),
         ("mqar", {"num_kv_pairs": 16, "vocab_size": 8192, "power_a": 0.01, "random_non_queries": False})]


@pytest.mark.parametrize(("task", "params"), TASKS)
def test_a_captured_draw_replays_the_eager_draws_bit_for_bit(task: str, params: dict):
    """PyTorch's graph-safe RNG, as the packed step relies on it: a draw captured with its generator
    registered gives, replay after replay, the batches the same generator draws eagerly, and leaves the
    generator where the eager draws leave it."""
    graphed, eager = seeded_generator(7, "cuda"), seeded_generator(7, "cuda")
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(graphed)
    with torch.cuda.graph(graph):
        out = make_batch(task, 8, 256, generator=graphed, device="cuda", **params)
    for _ in range(5):
        graph.replay()
        expected = make_batch(task, 8, 256, generator=eager, device="cuda", **params)
        assert torch.equal(out.inputs, expected.inputs) and torch.equal(out.targets, expected.targets)
    assert torch.equal(graphed.get_state(), eager.get_state())


def _runs(packed: bool, seeds=(0, 1, 2), steps: int = 200) -> list[Trainer]:
    settings = TrainSettings(steps=steps, batch_size=8, seq_len=256, lr=1e-3, autocast=None, eval_every=50,
                             cuda_graphs=True)
    validation = {256: list(fixed_batches("induction_heads", 64, 256, 64, seed=0, purpose="validation",
                                          device="cuda"))}
    return [Trainer(build_model(SmallModelConfig(mixer="mamba", d_model=64), device="cuda", seed=seed).module,
                    lambda g: make_batch("induction_heads", 8, 256, generator=g, device="cuda"),
                    seeded_generator(seed, "cuda"), validation, settings, "cuda", own_stream=packed) for seed in seeds]


def test_packed_models_train_as_they_do_alone():
    solo_runs = _runs(packed=False)
    alone = [list(train_pack([run], width=1))[0][1] for run in solo_runs]
    runs = _runs(packed=True)
    packed = {id(run): result for run, result in train_pack(runs, width=3)}
    for run, solo_run, solo in zip(runs, solo_runs, alone, strict=True):
        result = packed[id(run)]
        assert run.draw_in_graph is True and run.graph_note == "" and run.cuda_stream is not None
        assert torch.equal(run.stream.get_state(), solo_run.stream.get_state())  # the same batches drawn
        # Same initialisation, same batches, same updates: the curves agree up to the kernels' nondeterminism.
        assert [log.loss for log in result.curve] == pytest.approx([log.loss for log in solo.curve], rel=2e-2)
    assert len({tuple(log.loss for log in packed[id(run)].curve) for run in runs}) == 3  # three models, not one


def test_a_packed_suite_on_cuda_records_how_each_model_ran(tmp_path: Path):
    suite = {"name": "pack-gpu", "defaults": {"device": "cuda", "seed": 0},
             "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads", "pack": 4,
                        "architectures": {"mamba": {"mixer": "mamba", "d_model": 64, "seeds": [0, 1, 2]},
                                          "rope": {"mixer": "mha-rope", "d_model": 128, "n_heads": 8, "seeds": [0],
                                                   "eval_dtype": "bfloat16"}},
                        "train": {"steps": 300, "batch_size": 8, "seq_len": 256, "lr": 1e-3, "autocast": None,
                                  "eval_every": 100, "collapse_evals": 2},
                        "eval_lengths": [256, 4096], "eval_samples": 32}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "pack-gpu").iterdir()
    records = read_records(run_dir / "records.jsonl")
    steps = [r for r in records if r.metric == "train_steps"]
    assert len(steps) == 4 and all(r.extra["pack"] == 4 and r.extra["graph"] == "draw+step" for r in steps)
    assert all(r.cuda_graphs is True for r in steps)
    assert {r.status for r in records} == {"ok"}
    assert len([r for r in records if r.metric == "accuracy" and "seq_len" in r.slice]) == 8


def _mamba_run(graphs: bool, checkpoint: Path | None = None, stop_at: int | None = None) -> Trainer:
    import os
    import signal

    settings = TrainSettings(steps=80, batch_size=8, seq_len=256, lr=1e-3, autocast=None, eval_every=20,
                             cuda_graphs=graphs)
    validation = {256: list(fixed_batches("induction_heads", 16, 256, 16, seed=0, purpose="validation",
                                          device="cuda"))}

    def on_step(step: int) -> None:
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    return Trainer(build_model(SmallModelConfig(mixer="mamba", d_model=64), device="cuda", seed=3).module,
                   lambda g: make_batch("induction_heads", 8, 256, generator=g, device="cuda"),
                   seeded_generator(3, "cuda"), validation, settings, "cuda", checkpoint=checkpoint, on_step=on_step)


def test_the_graphed_step_leaves_the_stream_where_the_eager_loop_leaves_it(tmp_path: Path):
    """Capture's warm-up draws are undone and each replay draws once: after as many steps, the training
    stream's generator is in the same state under both loops, and after a resume from a checkpoint."""
    eager, graphed = _mamba_run(graphs=False), _mamba_run(graphs=True)
    for run in (eager, graphed):
        ((_, result),) = train_pack([run], width=1)
        assert result.steps == 80
    assert graphed.draw_in_graph is True
    assert torch.equal(graphed.stream.get_state(), eager.stream.get_state())
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        list(train_pack([_mamba_run(graphs=True, checkpoint=checkpoint, stop_at=30)], width=1))
    resumed = _mamba_run(graphs=True, checkpoint=checkpoint)
    ((_, result),) = train_pack([resumed], width=1)
    assert result.resumed_at == [30] and torch.equal(resumed.stream.get_state(), eager.stream.get_state())
