"""Train one cell of zoology's MQAR Figure 2 with zoology's own trainer, for a side-by-side with ssmbench.

Why: ssmbench's MQAR runs (suites/mqar_zoology.yaml) claim zoology's setting. The check is to run
zoology's code on the same cell, same GPU, several seeds, and see ssmbench's accuracy fall within zoology's
seed spread. zoology is not a dependency and is never committed: fetch HazyResearch/zoology into an
ignored folder (`.peer/zoology`), check out commit dbcb60d ("clean up pass"), and point --zoology at it.
That is the commit this script supports and ran end to end against: from d88d6f5 on, zoology's
LanguageModel.forward returns the hidden states by default and its trainer takes them as logits
("IndexError: Target ... is out of bounds"), so the script refuses a git checkout at any other commit.
zoology needs einops (`pip install einops`), which ssmbench does not: the script says so if it is missing.

    python scripts/zoology_reference.py --zoology .peer/zoology --task mqar-64 --model mamba-d128 \
        --lr 2.1544347e-3 --seeds 0 1 2 --out results/zoology_cell.json

The cell (vocab, length, pairs, batch, epochs, examples, optimizer, dropout) is read from the suite's task
and architecture, so both sides train what the suite says; `zoology_config` maps it to zoology's
TrainConfig fields exactly as zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py builds
them. zoology's seed (TrainConfig.seed) sets the initialisation; its data are drawn from DataConfig.seed,
123, the same for every seed, as in zoology's runs. Needs CUDA (zoology builds its embeddings on 'cuda').
wandb and torchvision are stood in for when missing (no logging; StochasticDepth at p = 0, what the
configs use); the script says so. Prints a table and writes JSON: each seed's validation accuracy per
epoch, its best and last, steps and wall time. Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Any

ZOOLOGY_VOCAB = 8192
ZOOLOGY_TEST_EXAMPLES = 3000
ZOOLOGY_COMMIT = "dbcb60d"  # the commit whose LanguageModel and trainer this script drives


def zoology_problem(checkout: Path) -> str | None:
    """Why `checkout` cannot be driven by this script, or None: not a zoology checkout, a git checkout at
    another commit than ZOOLOGY_COMMIT, or einops missing. A checkout without git metadata (an archive) is
    taken as it is; the caller says that its commit could not be checked."""
    import importlib.util
    import subprocess

    if not (checkout / "zoology" / "train.py").is_file():
        return f"--zoology {checkout}: not a checkout of HazyResearch/zoology"
    if (checkout / ".git").exists():
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = head.stdout.strip()
        if not commit.startswith(ZOOLOGY_COMMIT):
            return (f"--zoology {checkout}: at commit {commit[:7] or '?'}; this script supports zoology at "
                    f"{ZOOLOGY_COMMIT} (git -C {checkout} checkout {ZOOLOGY_COMMIT}): later commits return hidden "
                    "states from LanguageModel.forward, which the trainer takes as logits")
    if importlib.util.find_spec("einops") is None:
        return "zoology needs einops, which is not installed: pip install einops"
    return None


def zoology_config(task: Any, arch: Any, lr: float, seed: int) -> dict[str, Any]:
    """zoology's TrainConfig, as plain data, for one (task, architecture, learning rate, seed) of the suite."""
    train, params = task.train, task.task_params
    epochs = round(train.steps / math.ceil(train.examples / train.batch_size))
    # zoology's configs pass train_power_a/test_power_a, which MQARConfig (pydantic, extra keys ignored) drops
    # for its own power_a, 0.01 by default: power_a is what reaches the generator.
    factory = {"num_kv_pairs": params["num_kv_pairs"], "power_a": params.get("power_a", 0.01),
               "random_non_queries": params.get("random_non_queries", True)}
    segment = {"vocab_size": task.vocab_size, "input_seq_len": train.seq_len, **factory}
    if arch.mixer == "mamba":
        mixer, block = {"name": "zoology.mixers.mamba.Mamba", "kwargs": {}}, "MambaBlock"
    elif arch.mixer == "mha-abs" and arch.abs_positions == "learned":
        mixer = {"name": "zoology.mixers.attention.MHA",
                 "kwargs": {"dropout": arch.attn_dropout, "num_heads": arch.n_heads}}
        block = "TransformerBlock"
    else:
        raise ValueError(f"{arch.mixer}: zoology's Figure 2 has mamba and attention with learned positions only")
    return {
        "data": {"train_configs": [{"num_examples": train.examples, **segment}],
                 "test_configs": [{"num_examples": ZOOLOGY_TEST_EXAMPLES, **segment}],
                 "batch_size": train.batch_size},
        "model": {"d_model": arch.d_model, "n_layers": arch.n_layers, "block_type": block,
                  "max_position_embeddings": train.seq_len if block == "TransformerBlock" else 0,
                  "vocab_size": task.vocab_size, "sequence_mixer": mixer, "embed_dropout": arch.embed_dropout,
                  "state_mixer": {"name": "torch.nn.Identity", "kwargs": {}}},
        "learning_rate": lr, "weight_decay": train.weight_decay, "max_epochs": epochs,
        "early_stopping_threshold": train.early_stop_accuracy, "seed": seed,
        "run_id": f"{arch.mixer}-seqlen{train.seq_len}-dmodel{arch.d_model}-lr{lr}-kv{params['num_kv_pairs']}-seed{seed}",
    }


def _stand_ins() -> list[str]:
    """Modules zoology imports that this machine may lack and the Figure 2 cell does not use."""
    missing = []
    try:
        import wandb  # noqa: F401
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")
        missing.append("wandb (no logging)")
    try:
        from torchvision.ops import StochasticDepth  # noqa: F401
    except ImportError:
        import torch

        class StochasticDepth(torch.nn.Module):
            def __init__(self, p: float, mode: str):
                super().__init__()
                if p:
                    raise ValueError("this stand-in for torchvision's StochasticDepth runs p = 0 only")

            def forward(self, x):
                return x

        ops = types.ModuleType("torchvision.ops")
        ops.StochasticDepth = StochasticDepth
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = types.ModuleType("torchvision"), ops
        missing.append("torchvision (StochasticDepth at p = 0, an identity)")
    return missing


def run_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Train with zoology.train.train; its logger is replaced by one that keeps what it is given."""
    import zoology.train as zoology_train
    from zoology.config import TrainConfig
    from zoology.data.multiquery_ar import MQARConfig

    logs: list[dict[str, Any]] = []

    class Kept:
        def __init__(self, config):
            pass

        def log_config(self, config):
            pass

        def log_model(self, model, config):
            logs.append({"num_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})

        def log(self, metrics):
            if "valid/accuracy" in metrics:
                logs.append(dict(metrics))

        def finish(self):
            pass

    data = dict(config["data"])
    data["train_configs"] = [MQARConfig(**c) for c in data["train_configs"]]
    data["test_configs"] = [MQARConfig(**c) for c in data["test_configs"]]
    zoology_train.WandbLogger = Kept
    start = time.perf_counter()
    zoology_train.train(TrainConfig(**{**config, "data": data}))
    wall = time.perf_counter() - start
    accuracy = [m["valid/accuracy"] for m in logs if "valid/accuracy" in m]
    return {"run_id": config["run_id"], "seed": config["seed"], "epochs": len(accuracy),
            "valid_accuracy_by_epoch": accuracy, "best": max(accuracy, default=math.nan),
            "last": accuracy[-1] if accuracy else math.nan, "wall_s": round(wall, 1),
            "num_parameters": next((m["num_parameters"] for m in logs if "num_parameters" in m), None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoology", type=Path, required=True, help="a checkout of HazyResearch/zoology")
    parser.add_argument("--suite", default="suites/mqar_zoology.yaml")
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", required=True, help="an architecture of the task, e.g. mamba-d128")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from ssmbench.errors import UserError
    from ssmbench.spec import load_suite

    try:
        suite, _ = load_suite(args.suite)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tasks = {t.name: t for t in suite.tasks}
    task = tasks.get(args.task)
    if task is None or args.model not in getattr(task, "architectures", {}):
        print(f"error: {args.suite}: no task {args.task!r} with architecture {args.model!r}", file=sys.stderr)
        return 2
    problem = zoology_problem(args.zoology)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not (args.zoology / ".git").exists():
        print(f"note: {args.zoology} has no git metadata: its commit (this script supports {ZOOLOGY_COMMIT}) is not checked")
    sys.path.insert(0, str(args.zoology.resolve()))
    for note in _stand_ins():
        print(f"note: stand-in for {note}")
    results = [run_cell(zoology_config(task, task.architectures[args.model], args.lr, seed)) for seed in args.seeds]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"suite": args.suite, "task": args.task, "model": args.model, "lr": args.lr,
                                    "runs": results}, indent=1))
    print("| seed | epochs | best valid acc | last | wall (s) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {r['epochs']} | {100 * r['best']:.1f} | {100 * r['last']:.1f} | {r['wall_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
