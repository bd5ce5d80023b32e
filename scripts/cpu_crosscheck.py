"""Score the H100-trained induction models again on the CPU, on the same fixed test sets.

Why: the Mamba seeds of 20261206-141114 are perfect to 2^13 and decay beyond it. This checks that the
decay belongs to the trained models, not to the fused CUDA kernels they were tested with: the CPU runs
ssmbench's pure-torch Mamba (torch-chunked-scan) over the same weights (model.pt) and the same examples
(the set's sha256 must equal the record's `extra.eval_set.sha256`).

    .venv/bin/python results/reference/h100/synthetic_paper/cpu_crosscheck.py LENGTH N SEEDS
    .venv/bin/python results/reference/h100/synthetic_paper/cpu_crosscheck.py 16384 256 0,1   # ~5 min a seed on 2 cores
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from ssmbench.data.synthetic import fixed_batches
from ssmbench.models.builder import build_model
from ssmbench.spec import load_suite
from ssmbench.train import evaluate

RUN = Path(__file__).resolve().parent / "20261206-141114"


def gpu_record(records: list[dict], job: str, length: int) -> dict:
    (record,) = [r for r in records if r["job"] == job and r["metric"] == "accuracy"
                 and r["slice"].get("phase") == "eval" and r["slice"].get("seq_len") == length]
    return record


def main(length: int, n: int, seeds: list[int]) -> None:
    records = [json.loads(line) for line in (RUN / "records.jsonl").read_text().splitlines()]
    suite, _ = load_suite(RUN / "suite.resolved.yaml")  # the run's own task: model, vocabulary, test sets
    (task,) = [t for t in suite.tasks if t.name == "induction-heads"]
    config = task.architectures["mamba"].config(task.vocab_size, task.train.seq_len)
    for seed in seeds:
        job = f"induction-heads/mamba/seed={seed}"
        gpu = gpu_record(records, job, length)
        built = build_model(config, device="cpu", seed=seed)
        weights = torch.load(RUN / "artifacts" / job / "model.pt", map_location="cpu", weights_only=True)
        built.module.load_state_dict(weights)
        digest, start = hashlib.sha256(), time.perf_counter()
        batches = fixed_batches(task.task, n, length, task.batch_at(length), seed=task.eval_seed, purpose="test",
                                device="cpu", digest=digest, vocab_size=task.vocab_size, **task.task_params)
        result = evaluate(built.module, batches, "cpu", None)
        same = digest.hexdigest()[:16] == gpu["extra"]["eval_set"]["sha256"]
        print(f"seed {seed}, L={length}: CPU ({built.kernel}) {100 * result.accuracy:.2f}% of "
              f"{result.n_examples}, {time.perf_counter() - start:.0f} s; H100 ({gpu['kernel']}) "
              f"{100 * gpu['value']:.2f}% of {gpu['extra']['n_examples']}; same examples: "
              f"{same if n == gpu['extra']['n_examples'] else 'n/a (another n)'}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")])
