"""The one training loop: small models trained from scratch on batches drawn fresh every step.

Everything that decides a training run's outcome is a field of TrainSettings (steps, batch, length, LR and
its schedule, optimizer, clipping, mixed precision, evaluation cadence, early stop), so a suite sets it and
a record can say it. The loop never waits on the device between log points: the loss is accumulated on the
device and read once per `eval_every` steps, together with the validation accuracy at each validation
length, so a small model's step rate is bounded by its kernels, not by host round trips.

A run longer than one sitting is resumable exactly. With a checkpoint path, the whole training state (the
weights, the optimizer's moments, the schedule, the data stream's generator, the loss accumulated since the
last log point, the curve, the early-stop streak) is written between steps, every `checkpoint_every_s`
seconds and when SIGINT or SIGTERM arrives; the next call with the same path continues from that step and
draws the same batches the uninterrupted run would have drawn. A signal that arrives during a step is held
until the step is over, so a checkpoint never holds half an update.

The schedules are transformers' (`get_constant_schedule_with_warmup`, `get_cosine_schedule_with_warmup`);
the optimizers torch's (Adam, AdamW).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from ssmbench.data.synthetic import Batch

Forward = Callable[["torch.Tensor"], "torch.Tensor"]  # token ids [B, L] -> logits [B, L, V]
Draw = Callable[["torch.Generator"], "Batch"]  # one training batch from the generator it is given
CHECKPOINT_FORMAT = 1
CAPTURE_SEED = 0x5EED  # the example batch a CUDA graph is captured on: never drawn from the training stream
# Settings that may differ between the run that wrote a checkpoint and the one resuming it.
OPERATIONAL_SETTINGS = frozenset({"checkpoint_every_s"})


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
    eval_samples: int = 256  # validation examples per validation length (the runner draws them)
    # Stop once the validation accuracy reaches this at every validation length, `patience` evaluations
    # in a row ("until validation holds"); None: train every step.
    early_stop_accuracy: float | None = None
    patience: int = 1
    # Capture the whole step (forward, backward, clipping, optimizer) once and replay it: a 2-layer model
    # of 66K parameters is bound by kernel launches, not by its arithmetic. CUDA only, constant LR.
    cuda_graphs: bool = False
    checkpoint_every_s: float = 60.0  # with a checkpoint path: how often the training state is written


@dataclass(frozen=True)
class LogPoint:
    """The state of training at one evaluation: what the curves plot."""

    step: int
    loss: float  # mean training loss over the steps since the previous log point
    accuracy: float  # validation per-answer accuracy at the training length
    example_accuracy: float  # validation share of examples with every answer right, at the training length
    elapsed_s: float  # training time so far, over every sitting of a resumed run
    steps_per_s: float  # since the previous log point
    by_length: dict[int, float] = field(default_factory=dict)  # validation accuracy at each validation length


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool
    train_s: float  # wall time of the training steps and the periodic evaluations, over every sitting
    curve: list[LogPoint] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)  # the steps a checkpoint was resumed from

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


class CheckpointMismatch(ValueError):
    """A checkpoint written with other settings than the run resuming it: continuing would mix two runs."""


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
    are put back as they were (in place: the graph points at these tensors), so training goes on from the
    same state as the eager loop would, a fresh one or one loaded from a checkpoint. The capture runs on
    an example batch of its own, so the training stream is not touched. The learning rate must be
    constant: the captured kernels read the value it had at capture.
    """

    warmup_steps = 3

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings,
                 example: Batch):
        import torch

        if settings.schedule != "constant" or settings.warmup_steps:
            raise ValueError("training with cuda_graphs needs a constant learning rate (schedule: constant, "
                             "warmup_steps: 0)")
        for group in optimizer.param_groups:
            group["capturable"] = True
        for param, state in optimizer.state.items():  # a loaded state's step counter goes where capture needs it
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)
        self.inputs, self.targets = example.inputs.clone(), example.targets.clone()
        precision = autocast("cuda", settings.autocast, cache=False)

        def step() -> torch.Tensor:
            with precision:
                loss = answer_loss(module(self.inputs), self.targets)
            loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
            optimizer.step()
            return loss.detach()

        weights = [p.detach().clone() for p in module.parameters()]
        moments = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in optimizer.state.items()}
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
            for p, value in zip(module.parameters(), weights, strict=True):
                p.copy_(value)
            for p, state in optimizer.state.items():
                before = moments.get(p, {})
                for key, value in state.items():
                    if not torch.is_tensor(value):
                        continue
                    if key in before:
                        value.copy_(before[key])
                    else:
                        value.zero_()

    def __call__(self, batch: Batch) -> torch.Tensor:
        self.inputs.copy_(batch.inputs)
        self.targets.copy_(batch.targets)
        self.graph.replay()
        return self.loss.clone()


@dataclass
class _Progress:
    """What the loop carries from step to step, and what a checkpoint keeps of it."""

    step: int = 0
    loss_sum: float = 0.0  # over the steps since the last log point (on the device while training)
    last_log_step: int = 0
    last_log_s: float = 0.0  # training time at the last log point
    train_s: float = 0.0  # training time before this sitting
    streak: int = 0  # evaluations in a row at which validation held
    stopped_early: bool = False
    curve: list[LogPoint] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)


def train(module: torch.nn.Module, draw: Draw, stream: torch.Generator,
          validation: Mapping[int, Sequence[Batch]], settings: TrainSettings, device: str,
          checkpoint: Path | None = None,
          on_log: Callable[[LogPoint], None] = lambda log: None,
          on_step: Callable[[int], None] = lambda step: None) -> TrainResult:
    """Train `module` (token ids -> logits) on `draw(stream)` batches for `settings.steps` steps.

    Every `eval_every` steps (and at the last one) the mean loss is read back and the model is evaluated on
    each fixed validation set (`validation`: length -> batches, the training length among them); `on_log`
    gets the result. With `early_stop_accuracy`, training stops once every validation length has reached
    it at `patience` evaluations in a row. With `checkpoint`, the training state is written there (see the
    module's docstring) and a state found there is resumed; a state written with other settings raises
    CheckpointMismatch. `on_step(step)` is called every step without touching the device (progress).
    """
    import torch

    if settings.seq_len not in validation:
        raise ValueError(f"validation has no set at the training length {settings.seq_len}")
    optimizer = make_optimizer(module.parameters(), settings)
    schedule = make_schedule(optimizer, settings)
    progress = _Progress()
    if checkpoint is not None and checkpoint.is_file():
        progress = load_checkpoint(checkpoint, module, optimizer, schedule, stream, settings, device)
    if progress.step >= settings.steps or progress.stopped_early:
        return _result(progress)
    precision = autocast(device, settings.autocast)
    step_fn = None
    if settings.cuda_graphs:
        step_fn = GraphedStep(module, optimizer, settings, draw(torch.Generator(device).manual_seed(CAPTURE_SEED)))
    loss_sum = torch.full((), progress.loss_sum, device=device)
    sitting_start = last_save = time.perf_counter()

    def save() -> None:
        progress.loss_sum = float(loss_sum)
        save_checkpoint(checkpoint, module, optimizer, schedule, stream, settings,
                        dataclasses.replace(progress, train_s=progress.train_s + time.perf_counter() - sitting_start))

    with held_signals() as held:
        while progress.step < settings.steps and not progress.stopped_early:
            module.train()
            batch = draw(stream)
            if step_fn is not None:
                loss = step_fn(batch)
            else:
                loss = training_step(lambda batch=batch: answer_loss(module(batch.inputs), batch.targets), module,
                                     optimizer, settings.grad_clip, precision)
            schedule.step()
            loss_sum += loss
            progress.step += 1
            on_step(progress.step)
            if progress.step % settings.eval_every == 0 or progress.step == settings.steps:
                elapsed = progress.train_s + time.perf_counter() - sitting_start
                log = _log_point(module, validation, settings, device, progress, float(loss_sum), elapsed)
                loss_sum.zero_()
                on_log(log)
            if checkpoint is not None and (held.signal is not None or progress.step == settings.steps
                                           or progress.stopped_early
                                           or time.perf_counter() - last_save >= settings.checkpoint_every_s):
                save()
                last_save = time.perf_counter()
            held.raise_if_any()
    progress.train_s += time.perf_counter() - sitting_start
    return _result(progress)


def _log_point(module: torch.nn.Module, validation: Mapping[int, Sequence[Batch]], settings: TrainSettings,
               device: str, progress: _Progress, loss_sum: float, elapsed_s: float) -> LogPoint:
    """Evaluate on every validation set, append the log point to the curve and update the early stop."""
    results = {length: evaluate(module, batches, device, settings.autocast) for length, batches in validation.items()}
    at_train = results[settings.seq_len]
    steps = progress.step - progress.last_log_step
    log = LogPoint(step=progress.step, loss=loss_sum / steps, accuracy=at_train.accuracy,
                   example_accuracy=at_train.example_accuracy, elapsed_s=elapsed_s,
                   steps_per_s=steps / max(elapsed_s - progress.last_log_s, 1e-9),
                   by_length={length: r.accuracy for length, r in results.items()})
    progress.curve.append(log)
    progress.last_log_step, progress.last_log_s = progress.step, elapsed_s
    threshold = settings.early_stop_accuracy
    if threshold is not None:
        holds = all(accuracy >= threshold for accuracy in log.by_length.values())
        progress.streak = progress.streak + 1 if holds else 0
        progress.stopped_early = progress.streak >= settings.patience and progress.step < settings.steps
    return log


def _result(progress: _Progress) -> TrainResult:
    return TrainResult(steps=progress.step, stopped_early=progress.stopped_early, train_s=progress.train_s,
                       curve=list(progress.curve), resumed_at=list(progress.resumed_at))


# --- checkpoints ---------------------------------------------------------------------------------------


def save_checkpoint(path: Path | None, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LambdaLR, stream: torch.Generator,
                    settings: TrainSettings, progress: _Progress) -> None:
    """The whole training state, written to a temporary file and renamed, so a crash mid-write leaves
    the previous checkpoint whole."""
    import torch

    if path is None:
        return
    state = {"format": CHECKPOINT_FORMAT, "settings": dataclasses.asdict(settings),
             "progress": dataclasses.asdict(progress), "module": module.state_dict(),
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "stream": stream.get_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LambdaLR, stream: torch.Generator,
                    settings: TrainSettings, device: str) -> _Progress:
    """Put the state saved at `path` back in place; returns the loop's progress, this resumption noted."""
    import torch

    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    saved, now = state["settings"], dataclasses.asdict(settings)
    changed = sorted(k for k in now.keys() - OPERATIONAL_SETTINGS if saved.get(k) != now[k])
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointMismatch(f"{path}: written with other training settings ({what}); delete it to train "
                                 "from scratch, or resume with the settings it was written with")
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    stream.set_state(state["stream"].cpu())
    fields = state["progress"]
    curve = [LogPoint(**(log | {"by_length": {int(k): v for k, v in log["by_length"].items()}}))
             for log in fields.pop("curve")]
    progress = _Progress(**fields, curve=curve)
    if progress.step < settings.steps and not progress.stopped_early:
        progress.resumed_at.append(progress.step)
    return progress


class _HeldSignals:
    """SIGINT and SIGTERM caught and kept until the loop is between steps (see held_signals)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def hold(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def raise_if_any(self) -> None:
        """The held signal, raised as the process would have raised it: Ctrl-C, or SIGTERM as Terminated."""
        from ssmbench.errors import Terminated

        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal == signal.SIGTERM:
            raise Terminated()


@contextlib.contextmanager
def held_signals() -> Iterator[_HeldSignals]:
    """While training, SIGINT and SIGTERM are held until the step in progress has ended (then the loop saves
    its checkpoint and raises them). Only the main thread can install handlers: elsewhere nothing is held,
    and a signal interrupts as usual."""
    held = _HeldSignals()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {s: signal.signal(s, held.hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield held
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
