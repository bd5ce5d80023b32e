"""Where the time of a pack goes: K small models trained side by side (ssmbench.train.train_pack), timed
three ways and profiled for one window with torch.profiler.

Why: the packing benchmark (suites/train_speed.yaml, pack-mamba) measures how much K packed models gain
over the same K one after another, not why they gain no more. The issue's target (8 packed Mamba models
in at most 2x one model's wall time) was missed on an H100, and what to fix depends on what bounds a
packed round: the host issuing the steps (Python around each graph replay, the launches themselves), the
GPU running the kernels (how many of K models' small kernels it runs at once), or waits between streams.

    python scripts/profile_pack.py --pack 8 --out DIR          # on a GPU; --device cpu for a toy check

For K = 1 and K = --pack it reports, per round (one step of every model):
- trainer    the wall time of a round of Trainer.step() calls, as train_pack runs them;
- replay     the wall time of a round of bare graph replays, each on its model's stream (CUDA only): what
             is left once the trainer's own host work per step is gone;
- issue      the host's time to issue a round of Trainer.step() calls while the GPU is idle (a burst of
             rounds started after a synchronize, shorter than the launch queue): the host's cost alone;
- busy       from the profiled window: the time at least one kernel ran (the union of kernel intervals),
             the kernels' summed time, and their ratio (how many ran at once on average).
The profiled window's chrome trace (trace.json.gz), the top kernels and host calls (tables.txt) and every
figure (summary.json) are written to --out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ISSUE_ROUNDS = 20  # short enough that the launch queue never fills: what the host alone costs
PROFILED_ROUNDS = 20


def build_trainers(k: int, args: argparse.Namespace) -> list[Any]:
    """K trainers of the paper's induction recipe (seeds 0..K-1), each on its own stream, started (captured)."""
    from ssmbench.data.synthetic import fixed_batches, make_batch, seeded_generator
    from ssmbench.kinds.synthetic.task import Architecture
    from ssmbench.models.builder import build_model
    from ssmbench.train import Trainer, TrainSettings

    device, graphs = args.device, args.device == "cuda"
    architecture = Architecture(mixer=args.mixer, d_model=args.d_model)
    config = architecture.config(args.vocab_size, args.seq_len)
    steps = args.warmup + 2 * args.rounds + 2 * ISSUE_ROUNDS + PROFILED_ROUNDS + 10
    settings = TrainSettings(steps=steps, batch_size=args.batch, seq_len=args.seq_len, lr=1e-3,
                             eval_every=steps, cuda_graphs=graphs)
    validation = {args.seq_len: list(fixed_batches("induction_heads", 8, args.seq_len, 8, seed=0, purpose="validation",
                                                   device=device, vocab_size=args.vocab_size))}

    def draw(generator: Any) -> Any:
        return make_batch("induction_heads", args.batch, args.seq_len, generator=generator, device=device,
                          vocab_size=args.vocab_size)

    trainers = []
    for seed in range(k):
        module = build_model(config, device=device, seed=seed).module
        trainer = Trainer(module, draw, seeded_generator(seed, device), validation, settings, device, own_stream=True)
        trainer.start()
        trainers.append(trainer)
    return trainers


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def round_of_steps(trainers: list[Any]) -> None:
    for trainer in trainers:
        trainer.step()


def round_of_replays(trainers: list[Any]) -> None:
    for trainer in trainers:
        with trainer.on_stream():
            trainer.graphed.graph.replay()


def seconds_per_round(device: str, rounds: int, one_round: Any) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(rounds):
        one_round()
    synchronize(device)
    return (time.perf_counter() - start) / rounds


def issue_seconds(device: str, trainers: list[Any]) -> float:
    """Host time per round for a short burst issued onto an idle GPU (nothing waits on the device)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(ISSUE_ROUNDS):
        round_of_steps(trainers)
    issued = time.perf_counter() - start
    synchronize(device)
    return issued / ISSUE_ROUNDS


def merged_length(intervals: list[tuple[float, float]]) -> float:
    """The total length covered by the intervals (their union)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def profile_window(device: str, trainers: list[Any], out: Path, tag: str) -> dict[str, Any]:
    """One profiled window of PROFILED_ROUNDS rounds: the kernels' union and sum, and the top tables."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(PROFILED_ROUNDS):
            round_of_steps(trainers)
        synchronize(device)
        wall = time.perf_counter() - start
    trace = out / f"trace-{tag}.json"
    prof.export_chrome_trace(str(trace))
    with open(trace, "rb") as raw, gzip.open(f"{trace}.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    trace.unlink()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    intervals = [(e.time_range.start, e.time_range.end) for e in kernels]
    busy_us, summed_us = merged_length(intervals), sum(b - a for a, b in intervals)
    rounds = PROFILED_ROUNDS
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    with open(out / "tables.txt", "a") as tables:
        tables.write(f"== {tag}: {len(trainers)} model(s), {rounds} rounds, by {sort}\n")
        tables.write(prof.key_averages().table(sort_by=sort, row_limit=25) + "\n")
        tables.write(f"== {tag}: by self_cpu_time_total\n")
        tables.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25) + "\n")
    return {"profiled_wall_ms_per_round": 1e3 * wall / rounds,
            "kernels_per_model_step": len(kernels) / (rounds * len(trainers)),
            "gpu_busy_ms_per_round": busy_us / 1e3 / rounds,
            "kernel_sum_ms_per_round": summed_us / 1e3 / rounds,
            "kernels_running_at_once": summed_us / busy_us if busy_us else None}


def measure(k: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    device = args.device
    trainers = build_trainers(k, args)
    for _ in range(args.warmup):
        round_of_steps(trainers)
    first = trainers[0]
    figures: dict[str, Any] = {"pack": k,
                               "graph": first.graph_note or ("draw+step" if first.draw_in_graph else "eager")}
    figures["trainer_ms_per_round"] = 1e3 * seconds_per_round(device, args.rounds, lambda: round_of_steps(trainers))
    if device == "cuda":
        figures["replay_ms_per_round"] = 1e3 * seconds_per_round(device, args.rounds,
                                                                 lambda: round_of_replays(trainers))
    figures["issue_ms_per_round"] = 1e3 * issue_seconds(device, trainers)
    figures |= profile_window(device, trainers, out, f"k{k}")
    figures["model_steps_per_s"] = 1e3 * k / figures["trainer_ms_per_round"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--mixer", default="mamba")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=50, help="untimed rounds after the capture")
    parser.add_argument("--rounds", type=int, default=200, help="rounds per timed measurement")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.txt").unlink(missing_ok=True)
    from ssmbench.env import collect

    summary = {"settings": vars(args) | {"out": str(args.out)}, "env": collect(),
               "points": [measure(k, args, args.out) for k in sorted({1, args.pack})]}
    one, packed = summary["points"][0], summary["points"][-1]
    summary["wall_ratio"] = packed["trainer_ms_per_round"] / one["trainer_ms_per_round"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for point in summary["points"]:
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in point.items()}))
    print(f"K={args.pack} packed: {summary['wall_ratio']:.2f}x one model's wall time per round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
