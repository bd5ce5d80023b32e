"""Score a run's trained synthetic models again on the CPU, on the same fixed test examples.

Why: a GPU run tests its models with the fused CUDA kernels. When a model's accuracy decays with length
(the H100 induction models of results/reference/h100/synthetic_paper/20261206-141114 are perfect to 2^13
and fall off beyond), this says whether the decay belongs to the trained model or to the kernels: the CPU
runs ssmbench's pure-torch twin of the mixer (for Mamba: torch-chunked-scan) over the same weights
(artifacts/<job>/model.pt) and the same examples (the test set's sha256 must equal the record's
`extra.eval_set.sha256`). The model, vocabulary and test sets come from the run's own suite.resolved.yaml.

    .venv/bin/python scripts/cpu_crosscheck.py RUN_DIR --length 16384 --samples 256 --seeds 0,1
    .venv/bin/python scripts/cpu_crosscheck.py results/reference/h100/synthetic_paper/20261206-141114 \\
        --length 16384 --samples 256 --seeds 0,1      # ~5 min a seed on 2 cores

One line per seed; exit status 0 when every seed's CPU accuracy equals the recorded one on the same
examples, 1 otherwise (2 when a job or record is missing).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

from ssmbench.data.synthetic import fixed_batches
from ssmbench.models.builder import build_model
from ssmbench.plan import job_identifier
from ssmbench.records import Record, read_records
from ssmbench.spec import load_suite
from ssmbench.train import evaluate


def recorded(records: list[Record], job: str, length: int) -> Record | None:
    found = [r for r in records if r.job == job and r.metric == "accuracy" and r.status == "ok"
             and r.slice.get("phase") == "eval" and r.slice.get("seq_len") == length]
    return found[-1] if found else None


def crosscheck(run: Path, task_name: str, model: str, length: int, n: int, seeds: list[int]) -> int:
    """Print one line per seed; the exit status (0: all equal, 1: some differ, 2: something missing)."""
    records = read_records(run / "records.jsonl")
    suite, _ = load_suite(run / "suite.resolved.yaml")
    (task,) = [t.for_device(suite.defaults.device) for t in suite.tasks if t.task_name == task_name]
    config = task.architectures[model].config(task.vocab_size, task.train.seq_len)
    status = 0
    for seed in seeds:
        axes = [a for a in task.job_axes(model) if a.get("seed", suite.defaults.seed) == seed]
        if len(axes) != 1:
            print(f"{task_name}/{model}: {len(axes)} jobs of seed {seed} (a learning-rate sweep is not handled)",
                  file=sys.stderr)
            status = 2
            continue
        job = job_identifier(task_name, model, axes[0])
        gpu, weights = recorded(records, job, length), run / "artifacts" / job / "model.pt"
        if gpu is None or not weights.is_file():
            print(f"{job}: no accuracy record at L={length} or no {weights.name}", file=sys.stderr)
            status = 2
            continue
        built = build_model(config, device="cpu", seed=seed)
        built.module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        digest, start = hashlib.sha256(), time.perf_counter()
        batches = fixed_batches(task.task, n, length, task.batch_at(length), seed=task.eval_seed, purpose="test",
                                device="cpu", digest=digest, vocab_size=task.vocab_size, **task.test_params)
        result = evaluate(built.module, batches, "cpu", None)
        same_examples = n == gpu.extra["n_examples"] and digest.hexdigest()[:16] == gpu.extra["eval_set"]["sha256"]
        agree = same_examples and result.accuracy == gpu.value
        status = max(status, 0 if agree else 1)
        print(f"seed {seed}, L={length}: CPU ({built.kernel}) {100 * result.accuracy:.2f}% of {result.n_examples}, "
              f"{time.perf_counter() - start:.0f} s; recorded ({gpu.kernel}, {gpu.device}) {100 * gpu.value:.2f}% of "
              f"{gpu.extra['n_examples']}; same examples: {same_examples}; {'equal' if agree else 'DIFFERENT'}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run directory (records.jsonl, suite.resolved.yaml, artifacts/)")
    parser.add_argument("--task", default="induction-heads", help="the suite's task name")
    parser.add_argument("--model", default="mamba", help="the task's architecture")
    parser.add_argument("--length", type=int, required=True, help="the test length to score")
    parser.add_argument("--samples", type=int, required=True, help="examples (the record's n_examples)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    args = parser.parse_args(argv)
    return crosscheck(args.run, args.task, args.model, args.length, args.samples,
                      [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    sys.exit(main())
