"""`ssmbench run --gpus` on a real device: the worker pool pins each pack to a GPU it can see, and the
records say which GPU ran them, the same as a run in one process does.

Run on the GPU machine: `python -m pytest -q tests/gpu/test_multi_gpu_gpu.py`. Skipped without CUDA or
without mamba_ssm's kernels. tests/test_multi_gpu.py covers the pool on the CPU with fake devices; what
only a GPU shows is that a pinned worker finds its device and trains on it from graphs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.records import read_records

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(torch.cuda.is_available() and not fused_mamba_kernels(),
                                 reason="mamba_ssm kernels unavailable")]

SUITE = {"name": "gpus", "defaults": {"device": "cuda", "seed": 0},
         "tasks": [{"kind": "synthetic", "name": "ih", "task": "induction_heads", "pack": 2,
                    "architectures": {"mamba": {"mixer": "mamba", "d_model": 64, "seeds": [0, 1]}},
                    "train": {"steps": 200, "batch_size": 8, "seq_len": 256, "lr": 1e-3, "autocast": None,
                              "eval_every": 100},
                    "eval_lengths": [256], "eval_samples": 32}]}


def test_a_pack_run_by_a_pinned_worker_trains_on_its_gpu_from_graphs(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SUITE))
    run = subprocess.run([sys.executable, "-m", "ssmbench", "run", str(tmp_path / "s.yaml"), "--gpus", "1",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (run_dir,) = (tmp_path / "out" / "gpus").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert {r.status for r in records} == {"ok"}
    assert {r.device for r in records} == {torch.cuda.get_device_name(0)}
    steps = [r for r in records if r.metric == "train_steps"]
    assert len(steps) == 2 and all(r.cuda_graphs is True and r.extra["graph"] == "draw+step" for r in steps)
    assert list((run_dir / "launch" / "workers").glob("*.log"))  # the pack ran in a worker process of its own
