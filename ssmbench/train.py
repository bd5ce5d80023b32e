"""The one training loop: small models trained from scratch on batches drawn fresh every step.

Everything that decides a training run's outcome is a field of TrainSettings (steps, batch, length, LR and
its schedule, optimizer, clipping, mixed precision, evaluation cadence, early stop), so a suite sets it and
a record can say it. The loop never waits on the device between log points: the loss is accumulated on the
device and read once per `eval_every` steps, together with the held-out accuracy, so a small model's
step rate is bounded by its kernels, not by host round trips.

The schedules are transformers' (`get_constant_schedule_with_warmup`, `get_cosine_schedule_with_warmup`);
the optimizers torch's (Adam, AdamW).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from ssmbench.data.synthetic import Batch

Forward = Callable[["torch.Tensor"], "torch.Tensor"]  # token ids [B, L] -> logits [B, L, V]


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    autocast: Literal["bfloat16", "float16"] | None = "bfloat16"  # mixed precision on CUDA; CPU runs float32
    eval_every: int = 100
    eval_samples: int = 256  # held-out examples at the training length per evaluation
    early_stop_accuracy: float | None = None  # stop at the first evaluation reaching it (e.g. 0.99)
    # Capture the whole step (forward, backward, clipping, optimizer) once and replay it: a 2-layer model
    # of 66K parameters is bound by kernel launches, not by its arithmetic. CUDA only, constant LR.
    cuda_graphs: bool = False


@dataclass(frozen=True)
class LogPoint:
    """The state of training at one evaluation: what the curves plot."""

    step: int
    loss: float  # mean training loss over the steps since the previous log point
    accuracy: float  # held-out per-answer accuracy at the training length
    example_accuracy: float  # held-out share of examples with every answer right
    elapsed_s: float
    steps_per_s: float  # since the previous log point


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool
    train_s: float  # wall time of the training steps and the periodic evaluations
    curve: list[LogPoint] = field(default_factory=list)

    @property
    def final(self) -> LogPoint:
        return self.curve[-1]

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_s if self.train_s > 0 else math.nan


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # correct answers / answer positions
    example_accuracy: float  # examples with every answer right / examples
    n_examples: int
    n_answers: int  # answer positions scored
    by_answer_index: list[float]  # accuracy of each example's 1st, 2nd, ... answer


def autocast(device: str, dtype: str | None, cache: bool = True) -> contextlib.AbstractContextManager[None]:
    """Mixed precision where it exists: autocast to `dtype` on CUDA; nothing (float32) on the CPU or with None.
    `cache=False` under CUDA-graph capture, where a cast cached at capture would go stale."""
    import torch

    from ssmbench.models.common import torch_dtype

    if dtype is None or device != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch_dtype(dtype), cache_enabled=cache)


def make_optimizer(params: Iterator[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    import torch

    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[settings.optimizer]
    return cls(params, lr=settings.lr, weight_decay=settings.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LambdaLR:
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if settings.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    return get_constant_schedule_with_warmup(optimizer, settings.warmup_steps)


def answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the answer positions only (targets are IGNORE elsewhere), in float32."""
    import torch.nn.functional as F

    from ssmbench.data.synthetic import IGNORE

    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def training_step(loss_fn: Callable[[], torch.Tensor], module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  grad_clip: float | None, precision: contextlib.AbstractContextManager[None]) -> torch.Tensor:
    """One forward + backward + optimizer step; returns the loss, detached, still on the device."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    with precision:
        loss = loss_fn()
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


class GraphedStep:
    """One training step captured as a CUDA graph and replayed on each new batch.

    The batch is copied into fixed input buffers, then the graph replays forward, backward, gradient
    clipping and the optimizer step with no launch from Python. As PyTorch's whole-network capture recipe
    prescribes, the step first runs `warmup_steps` times eagerly on a side stream, gradients are set to None
    so that backward allocates them in the graph's memory pool, the optimizer is capturable, and autocast
    keeps no cache of cast weights. The warm-up steps changed the weights and the optimizer's state: both
    are put back in place (same tensors, which the graph points at), so training starts from the same
    initialisation as the eager loop. The learning rate must be constant: the captured kernels read the
    value it had at capture.
    """

    warmup_steps = 3

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings,
                 first: Batch):
        import torch

        if settings.schedule != "constant" or settings.warmup_steps:
            raise ValueError("training with cuda_graphs needs a constant learning rate (schedule: constant, "
                             "warmup_steps: 0)")
        for group in optimizer.param_groups:
            group["capturable"] = True
        self.inputs, self.targets = first.inputs.clone(), first.targets.clone()
        precision = autocast("cuda", settings.autocast, cache=False)

        def step() -> torch.Tensor:
            with precision:
                loss = answer_loss(module(self.inputs), self.targets)
            loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
            optimizer.step()
            return loss.detach()

        initial = [p.detach().clone() for p in module.parameters()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                optimizer.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step()
        with torch.no_grad():  # capture ran nothing; undo the warm-up's updates in place
            for p, value in zip(module.parameters(), initial, strict=True):
                p.copy_(value)
            for state in optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    def __call__(self, batch: Batch) -> torch.Tensor:
        self.inputs.copy_(batch.inputs)
        self.targets.copy_(batch.targets)
        self.graph.replay()
        return self.loss.clone()


def train(module: torch.nn.Module, draw: Callable[[], Batch], held_out: Callable[[], Batch],
          settings: TrainSettings, device: str,
          on_log: Callable[[LogPoint], None] = lambda log: None,
          on_step: Callable[[int], None] = lambda step: None) -> TrainResult:
    """Train `module` (token ids -> logits) on `draw()` batches for `settings.steps` steps.

    Every `eval_every` steps (and at the last one) the mean loss is read back and the model is evaluated on
    `held_out()` (a fixed set of examples drawn from seeds never used for training); `on_log` gets the
    result. Training stops early at the first evaluation whose per-answer accuracy reaches
    `early_stop_accuracy`. `on_step(step)` is called every step without touching the device (progress).
    """
    import torch

    optimizer = make_optimizer(module.parameters(), settings)
    schedule = make_schedule(optimizer, settings)
    precision = autocast(device, settings.autocast)
    step_fn = GraphedStep(module, optimizer, settings, draw()) if settings.cuda_graphs else None
    result = TrainResult(steps=0, stopped_early=False, train_s=0.0)
    loss_sum = torch.zeros((), device=device)
    started = last_log_time = time.perf_counter()
    last_log_step = 0
    for step in range(1, settings.steps + 1):
        module.train()
        batch = draw()
        if step_fn is not None:
            loss = step_fn(batch)
        else:
            loss = training_step(lambda batch=batch: answer_loss(module(batch.inputs), batch.targets), module,
                                 optimizer, settings.grad_clip, precision)
        schedule.step()
        loss_sum += loss
        result.steps = step
        on_step(step)
        if step % settings.eval_every and step != settings.steps:
            continue
        evaluation = evaluate(module, [held_out()], device, settings.autocast)
        now = time.perf_counter()
        log = LogPoint(step=step, loss=float(loss_sum) / (step - last_log_step), accuracy=evaluation.accuracy,
                       example_accuracy=evaluation.example_accuracy, elapsed_s=now - started,
                       steps_per_s=(step - last_log_step) / (now - last_log_time))
        result.curve.append(log)
        on_log(log)
        loss_sum.zero_()
        last_log_step, last_log_time = step, now
        if settings.early_stop_accuracy is not None and evaluation.accuracy >= settings.early_stop_accuracy:
            result.stopped_early = step < settings.steps
            break
    result.train_s = time.perf_counter() - started
    return result


def evaluate(module: torch.nn.Module, batches: Iterable[Batch], device: str, dtype: str | None,
             n_answers: int | None = None) -> EvalResult:
    """Greedy accuracy at the answer positions over `batches` (drawn lazily, so long sequences are held one
    batch at a time), read back from the device once at the end. With `n_answers` (the answers per example),
    also the accuracy of each example's 1st, 2nd, ... answer."""
    import torch

    from ssmbench.data.synthetic import accuracy_by_answer_index

    module.eval()
    right = torch.zeros((), device=device)
    scored = torch.zeros((), device=device)
    examples_right = torch.zeros((), device=device)
    examples = 0
    by_index = []
    with torch.inference_mode(), autocast(device, dtype):
        for batch in batches:
            predictions = module(batch.inputs).argmax(-1)
            mask = batch.answer_mask
            correct = (predictions == batch.targets) & mask
            right += correct.sum()
            scored += mask.sum()
            examples_right += ((correct | ~mask).all(dim=1) & mask.any(dim=1)).sum()
            examples += batch.inputs.shape[0]
            if n_answers:
                by_index.append(accuracy_by_answer_index(predictions, batch.targets, n_answers) * len(predictions))
    n_scored = int(scored)
    index_mean = (torch.stack(by_index).sum(0) / examples).tolist() if by_index else []
    return EvalResult(accuracy=float(right) / max(n_scored, 1), example_accuracy=float(examples_right) / examples,
                      n_examples=examples, n_answers=n_scored, by_answer_index=index_mean)
