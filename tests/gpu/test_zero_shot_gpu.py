"""Zero-shot through lm-eval on CUDA: the fixture tasks with tiny models and a random-weight mamba-130m in
smoke mode, to show transformers' Mamba runs mamba_ssm's fused kernels under lm-eval. Prints the wall time.

Run on the GPU machine: `python -m pytest -q -s tests/gpu/test_zero_shot_gpu.py`. Skipped without CUDA.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval_fixtures import FIXTURE_TASKS, suite_data  # the fixture `task_dir` comes from there too
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.models.kernels import fused_mamba_kernels
from ssmbench.records import read_records

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.skipif(not fused_mamba_kernels(), reason="mamba_ssm kernels unavailable")
def test_zero_shot_smoke_on_cuda_uses_the_fused_kernels(task_dir: Path, tmp_path: Path) -> None:
    # Random weights make any tokenizer as good as another: the byte tokenizer needs no download.
    data = suite_data(task_dir, ["tiny-gpt2", "tiny-mamba", {"name": "mamba-130m", "tokenizer": "bytes"}],
                      FIXTURE_TASKS)
    data["defaults"] = {"device": "cuda", "dtype": "float16", "weights": "random"}
    suite = tmp_path / "zs-gpu.yaml"
    suite.write_text(yaml.safe_dump(data))
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    wall_s = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "zs-test").iterdir()
    records = [r for r in read_records(run_dir / "records.jsonl") if r.status == "ok"]
    kernels = {r.model: r.kernel for r in records}
    assert kernels == {"tiny-gpt2": "hf-sdpa", "tiny-mamba": "hf-mamba_ssm-kernels",
                       "mamba-130m": "hf-mamba_ssm-kernels"}
    assert {r.slice["lm_eval_task"] for r in records} == set(FIXTURE_TASKS)
    assert all(r.device.startswith("NVIDIA") for r in records)
    print(f"\nzero-shot GPU smoke: {len(records)} records from 3 models x {len(FIXTURE_TASKS)} tasks "
          f"in {wall_s:.1f} s wall (model loads included)")
