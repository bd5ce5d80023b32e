"""MAD on CUDA: the epoch walk over a fixed training set replays from a CUDA graph, and a MAD task (a
setting's fixed set, seeded epochs, bf16, a pack of the optimizer grid) trains from graphs end to end.

Run on the GPU machine: `python -m pytest -q tests/gpu/test_mad_gpu.py`. Skipped without CUDA or without
mamba_ssm's kernels. The CPU tests (tests/test_mad_protocol.py) pin the walk's order, its resume and the
tables; what only a GPU shows is that the walk's device cursor advances inside a captured graph.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.data.synthetic import EpochWalk, ExamplePool
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.records import read_records

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(torch.cuda.is_available() and not fused_mamba_kernels(),
                                 reason="mamba_ssm kernels unavailable")]


def test_a_captured_epoch_walk_draws_the_eager_walks_batches():
    """The walk's cursor lives on the device, so a replayed graph draws the next batch each time (a cursor
    held in Python would be frozen at capture, and every step would train on the same batch)."""
    pool = ExamplePool.draw("mqar", 40, 32, seed=0, device="cuda", num_kv_pairs=4, vocab_size=64)
    graphed, eager = EpochWalk(pool, 8, 30, seed=1), EpochWalk(pool, 8, 30, seed=1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = graphed()
    graphed.seek(0)  # capture ran nothing, but say where the walk starts, as the trainer does
    seen = []
    for _ in range(10):  # 80 examples: two epochs of 40
        graph.replay()
        expected = eager()
        assert torch.equal(out.inputs, expected.inputs) and torch.equal(out.targets, expected.targets)
        seen.append(out.inputs.clone())
    assert int(graphed.cursor) == int(eager.cursor) == 10
    epoch = torch.cat(seen[:5])
    assert len({tuple(row.tolist()) for row in epoch}) == len({tuple(row.tolist()) for row in pool.inputs})


def test_a_mad_task_trains_from_graphs_in_a_pack(tmp_path: Path):
    suite = {"name": "mad-gpu", "defaults": {"device": "cuda", "seed": 12345},
             "tasks": [{"kind": "synthetic", "name": "recall", "task": "in_context_recall", "settings": ["baseline"],
                        "architectures": {"mamba": {"preset": "mad-mamba"}, "attention": {"preset": "mad-attention"}},
                        "train": {"epochs": 3, "examples": 512, "batch_size": 128, "lr": [5.0e-4, 1.0e-3],
                                  "weight_decay": [0.0], "optimizer": "adamw", "schedule": "cosine", "min_lr": 1.0e-6,
                                  "grad_clip": None, "autocast": "bfloat16", "eval_every": 4, "eval_samples": 128},
                        "eval_samples": 256, "eval_seed": 12345, "pack": 4}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "mad-gpu").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert {r.status for r in records} == {"ok"}
    steps = [r for r in records if r.metric == "train_steps"]
    assert len(steps) == 4 and {r.value for r in steps} == {12}  # ceil(3 epochs x 512 / 128)
    assert all(r.cuda_graphs is True and r.extra["graph"] == "draw+step" for r in steps)
    assert len([r for r in records if r.metric == "accuracy" and r.slice["phase"] == "eval"]) == 4  # MAD's test set
