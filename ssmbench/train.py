"""The one training loop: small models trained from scratch on batches drawn fresh every step.

Everything that decides a training run's outcome is a field of TrainSettings (steps, batch, length, LR and
its schedule, optimizer, clipping, mixed precision, evaluation cadence, early stop, collapse watch), so a
suite sets it and a record can say it. The loop never waits on the device between log points: the loss is
accumulated on the device and read once per `eval_every` steps, together with the validation accuracy at
each validation length, so a small model's step rate is bounded by its kernels, not by host round trips.

A run longer than one sitting is resumable exactly. With a checkpoint path, the whole training state (the
weights, the optimizer's moments, the schedule, the data stream's generator, the loss accumulated since the
last log point, the curve, the early-stop streak) is written between steps, every `checkpoint_every_s`
seconds and when SIGINT or SIGTERM arrives; the next call with the same path continues from that step and
draws the same batches the uninterrupted run would have drawn. A signal that arrives during a step is held
until the step is over, so a checkpoint never holds half an update.

Many small runs can share one device (train_pack): a 66K-parameter model's step is a few hundred tiny
kernels that leave a GPU almost idle, so seed and learning-rate sweeps train side by side, each run on its
own CUDA stream replaying its own captured step, and each with its own weights, optimizer, data stream,
checkpoint and curve: a packed run computes what it would compute alone. A run whose loss never leaves
chance is told apart from one that learned (`collapse_evals`).

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
CHANCE_TOLERANCE = 0.99  # a loss at or above this share of the chance loss is "at chance" (at_chance)
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
    # A run whose training loss sits at chance (at_chance: within 1% of chance_loss, the loss of a uniform
    # guess over the task's possible answers) at this many evaluations in a row has collapsed: it stops, and
    # says so. None: never declared (a slow learner and a dead model look alike for a while).
    collapse_evals: int | None = None
    chance_loss: float | None = None
    # The training data: None, fresh examples every step; N, a fixed set of N examples sampled with
    # replacement (the caller's draw does it; kept here because it decides the outcome, and a checkpoint
    # of one must not resume as the other).
    examples: int | None = None
    # With examples: walk the fixed set in this many epochs (every example once an epoch, in a seeded order:
    # the caller's draw, ssmbench.data.synthetic.EpochWalk) instead of sampling it. None: sampled.
    epochs: int | None = None
    # The cosine schedule's floor (MAD: 1e-6); None: down to 0. (None, not 0, so older checkpoints still match.)
    min_lr: float | None = None
    # Stop once this run's training time (over every sitting, evaluations included) reaches this many
    # seconds, with a last evaluation: Table 1 "within 10 minutes of training". None: steps alone decide.
    # A wall-clock limit, so a run in a pack (sharing the device) gets less done in it than one alone.
    budget_s: float | None = None
    # A run whose mean training loss between two evaluations is not finite, or above this bound, has
    # diverged: it stops at that evaluation and says so. Non-finite always counts; None: no bound besides.
    max_loss: float | None = None


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
    collapsed: bool = False  # stopped with the loss at chance for collapse_evals evaluations in a row
    out_of_time: bool = False  # stopped when its training time reached budget_s
    diverged_at: int | None = None  # the step of the evaluation that found the loss non-finite or past max_loss
    diverged_loss: float | None = None  # the mean training loss it found there (nan, inf or a number)
    set_aside: list[str] = field(default_factory=list)  # a line per damaged checkpoint set aside on resuming

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final(self) -> LogPoint | None:
        """The last evaluation; None for a run that diverged before its first."""
        return self.curve[-1] if self.curve else None

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


class UnreadableCheckpoint(ValueError):
    """A checkpoint or weights file that cannot be loaded safely: truncated, overwritten, not a tensors-only
    torch file. The message names the file and the cause in one line, never torch's own advice (which
    suggests `weights_only=False`: loading a file that way can run code from it)."""


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

    if settings.schedule == "cosine" and settings.min_lr:
        from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps,
                                                           min_lr=settings.min_lr)
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
    """One whole training step captured as a CUDA graph and replayed: the batch's draw from the training
    stream, forward, backward, gradient clipping, the optimizer step and the loss's running sum.

    With the draw inside the graph, a replay is one launch from Python: what lets many small models share
    one GPU (train_pack), each a replay on its own stream. The stream is a generator registered with the
    graph, so every replay advances it as the eager draw would (PyTorch's graph-safe RNG: captured random
    kernels read the generator's offset when replayed, bitwise the eager numbers); a checkpoint's stream
    state means the same under both. Where the torch build cannot register a generator with a graph, or
    the task's draw cannot be captured, the batch is drawn eagerly and copied into the graph's input
    buffers instead; `draw_in_graph` and `note` say which ran, and the records carry it.

    As PyTorch's whole-network capture recipe prescribes, the step first runs `warmup_steps` times eagerly
    on a side stream, gradients are set to None so that backward allocates them in the graph's memory
    pool, the optimizer is capturable, and autocast keeps no cache of cast weights. The warm-up changed the
    weights, the optimizer's state, the stream and the loss sum: all are put back as they were (in place:
    the graph points at these tensors), so training goes on from the same state as the eager loop would.

    A constant learning rate is a number the captured kernels hold. A scheduled one (warm-up, cosine) lives
    in a one-element tensor on the device instead, which the optimizer reads on every replay and
    `follow_schedule` refills after each scheduler step: zoology's cosine recipe replays from a graph too.
    (Arithmetic on a float32 LR tensor rounds differently from a Python float: such a run is not bitwise
    the eager one, only as close as float32 makes it.)
    """

    warmup_steps = 3

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings,
                 draw: Draw, stream: torch.Generator, loss_sum: torch.Tensor):
        import torch

        for group in optimizer.param_groups:
            group["capturable"] = True
        self.lr_tensors: list[torch.Tensor] = []
        if settings.schedule != "constant" or settings.warmup_steps:
            device = next(module.parameters()).device
            for group in optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
                self.lr_tensors.append(group["lr"])
        for param, state in optimizer.state.items():  # a loaded state's step counter goes where capture needs it
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)
        self.module, self.optimizer, self.settings = module, optimizer, settings
        self.draw, self.stream, self.loss_sum = draw, stream, loss_sum
        self.note = ""
        self.draw_in_graph = hasattr(torch.cuda.CUDAGraph, "register_generator_state")
        if not self.draw_in_graph:
            self.note = "this torch cannot register a generator with a CUDA graph: batches drawn eagerly"
        try:
            self.graph = self._capture()
        except RuntimeError as exc:
            if not self.draw_in_graph:
                raise
            self.draw_in_graph = False
            self.note = f"the draw could not be captured ({str(exc).splitlines()[0][:160]}): batches drawn eagerly"
            self.graph = self._capture()

    def _step(self, batch: Batch | None = None) -> None:
        """The step as captured: draw (unless given), loss, backward, clip, update, add the loss to the sum."""
        import torch

        batch = batch if batch is not None else self.draw(self.stream)
        with autocast("cuda", self.settings.autocast, cache=False):
            loss = answer_loss(self.module(batch.inputs), batch.targets)
        loss.backward()
        if self.settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.loss_sum.add_(loss.detach())

    def _capture(self) -> torch.cuda.CUDAGraph:
        import torch

        weights = [p.detach().clone() for p in self.module.parameters()]
        moments = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in self.optimizer.state.items()}
        stream_state, loss_sum = self.stream.get_state(), self.loss_sum.clone()
        example = None
        if not self.draw_in_graph:  # fixed input buffers, filled before each replay; never the training stream
            example = self.draw(torch.Generator(self.loss_sum.device).manual_seed(CAPTURE_SEED))
            self.inputs, self.targets = example.inputs.clone(), example.targets.clone()
            example = type(example)(self.inputs, self.targets)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self.optimizer.zero_grad(set_to_none=True)
                self._step(example)
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            if self.draw_in_graph:
                graph.register_generator_state(self.stream)
            with torch.cuda.graph(graph):
                self._step(example)
        finally:
            with torch.no_grad():  # capture ran nothing; undo the warm-up's updates in place
                for p, value in zip(self.module.parameters(), weights, strict=True):
                    p.copy_(value)
                for p, state in self.optimizer.state.items():
                    before = moments.get(p, {})
                    for key, value in state.items():
                        if not torch.is_tensor(value):
                            continue
                        if key in before:
                            value.copy_(before[key])
                        else:
                            value.zero_()
                self.loss_sum.copy_(loss_sum)
            self.stream.set_state(stream_state)
        return graph

    def follow_schedule(self) -> None:
        """Put the scheduler's new learning rate where the graph reads it. Recent torch schedulers fill a
        tensor LR in place; older ones replace it with a float, which is copied into the tensor and the
        tensor put back (a graph that kept reading a stale tensor would train at a constant LR unseen)."""
        if not self.lr_tensors:  # a constant LR is held by the captured kernels themselves
            return
        for group, tensor in zip(self.optimizer.param_groups, self.lr_tensors, strict=True):
            if group["lr"] is not tensor:
                tensor.fill_(float(group["lr"]))
                group["lr"] = tensor

    def __call__(self) -> None:
        if not self.draw_in_graph:
            batch = self.draw(self.stream)
            self.inputs.copy_(batch.inputs)
            self.targets.copy_(batch.targets)
        self.graph.replay()


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
    chance_streak: int = 0  # evaluations in a row with the training loss at chance
    collapsed: bool = False
    out_of_time: bool = False  # stopped at the settings' budget_s
    diverged_at: int | None = None
    diverged_loss: float | None = None
    curve: list[LogPoint] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """Ended before its last step: early stop, collapse, divergence or time budget (a resumed run stays
        ended)."""
        return self.stopped_early or self.collapsed or self.out_of_time or self.diverged_at is not None


class Trainer:
    """One model's training run, advanced a step at a time: `train` runs one alone, `train_pack` several
    side by side on one device.

    Every `eval_every` steps (and at the last one) the mean loss is read back and the model is evaluated on
    each fixed validation set (`validation`: length -> batches, the training length among them); `on_log`
    gets the result. With `early_stop_accuracy`, training stops once every validation length has reached
    it at `patience` evaluations in a row; with `collapse_evals`, once the training loss has sat at chance
    for that many evaluations in a row (the run has collapsed). With `checkpoint`, the training state is
    written there (see the module's docstring) and a state found there is resumed; a state written with
    other settings raises CheckpointMismatch. `on_step(step)` is called every step without touching the
    device (progress).

    `own_stream`: on CUDA, issue all of this run's work on a CUDA stream of its own (else the current
    one). In a pack each run has its own, so the device overlaps the runs' kernels; nothing is shared
    between runs but the device, and each run's numbers are what it would compute alone.
    """

    def __init__(self, module: torch.nn.Module, draw: Draw, stream: torch.Generator,
                 validation: Mapping[int, Sequence[Batch]], settings: TrainSettings, device: str,
                 checkpoint: Path | None = None, on_log: Callable[[LogPoint], None] = lambda log: None,
                 on_step: Callable[[int], None] = lambda step: None, own_stream: bool = False):
        if settings.seq_len not in validation:
            raise ValueError(f"validation has no set at the training length {settings.seq_len}")
        self.module, self.draw, self.stream, self.validation = module, draw, stream, validation
        self.settings, self.device, self.checkpoint = settings, device, checkpoint
        self.on_log, self.on_step, self.own_stream = on_log, on_step, own_stream
        self.cuda_stream: Any = None
        self.progress = _Progress()
        self.graphed: GraphedStep | None = None
        self.loss_sum: torch.Tensor | None = None  # on the device, from start() (none for a finished run)
        self.sitting_start: float | None = None  # when this sitting's training began

    def on_stream(self) -> contextlib.AbstractContextManager[Any]:
        """Issue the work inside on this run's CUDA stream."""
        import torch

        return torch.cuda.stream(self.cuda_stream) if self.cuda_stream is not None else contextlib.nullcontext()

    @property
    def done(self) -> bool:
        p = self.progress
        return p.step >= self.settings.steps or p.stopped

    @property
    def graph_note(self) -> str:
        """How the step runs, when that is worth saying: the graph's batches drawn eagerly, and why."""
        return self.graphed.note if self.graphed is not None else ""

    @property
    def draw_in_graph(self) -> bool | None:
        """Whether the CUDA graph draws the batches itself (None: no graph)."""
        return self.graphed.draw_in_graph if self.graphed is not None else None

    def start(self) -> None:
        """Put a saved state back if there is one, and capture the step when it runs from a CUDA graph."""
        import torch

        if self.own_stream and self.device == "cuda":
            self.cuda_stream = torch.cuda.Stream()
            self.cuda_stream.wait_stream(torch.cuda.current_stream())  # the weights were made there
        with self.on_stream():
            self.optimizer = make_optimizer(self.module.parameters(), self.settings)
            self.schedule = make_schedule(self.optimizer, self.settings)
            if self.checkpoint is not None:
                self.progress = self._resume(self.checkpoint)
            if self.done:
                return
            self.loss_sum = torch.full((), self.progress.loss_sum, device=self.device)
            self.module.train()
            if self.settings.cuda_graphs:
                self.graphed = GraphedStep(self.module, self.optimizer, self.settings, self.draw, self.stream,
                                           self.loss_sum)
            seek = getattr(self.draw, "seek", None)  # a draw that walks a fixed order (EpochWalk) keeps its place
            if seek is not None:
                seek(self.progress.step)
        self.sitting_start = self.last_save = time.perf_counter()

    def _resume(self, checkpoint: Path) -> _Progress:
        """The progress to continue from: the newest saved state that loads (the checkpoint, else the one
        before it). A damaged or mismatched one is set aside (renamed, never deleted) with a line saying
        which file and why, and the next is tried; with none left, the run starts from step 0 as it was
        built. The lines stay in the progress, so the records say what happened."""
        import torch

        built = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        stream_state, notes = self.stream.get_state(), []
        for path in (checkpoint, previous_checkpoint(checkpoint)):
            if not path.is_file():
                continue
            try:
                progress = load_checkpoint(path, self.module, self.optimizer, self.schedule, self.stream,
                                           self.settings, self.device)
            except (UnreadableCheckpoint, CheckpointMismatch) as exc:
                notes.append(f"{exc}; set aside as {set_aside(path).name}")
                with torch.no_grad():  # a load that failed half way leaves nothing of itself behind
                    self.module.load_state_dict(built)
                self.stream.set_state(stream_state)
                self.optimizer = make_optimizer(self.module.parameters(), self.settings)
                self.schedule = make_schedule(self.optimizer, self.settings)
                continue
            if notes:
                notes.append(f"resumed from {path.name} at step {progress.step:,}")
            progress.set_aside += notes
            return progress
        if notes:
            notes.append("trained from step 0")
        return _Progress(set_aside=notes)

    def step(self) -> None:
        """One training step, issued without waiting for the device; then the evaluation and the checkpoint
        that are due."""
        p, settings = self.progress, self.settings
        with self.on_stream():
            if self.graphed is not None:
                self.graphed()
            else:
                batch = self.draw(self.stream)
                self.loss_sum += training_step(lambda: answer_loss(self.module(batch.inputs), batch.targets),
                                               self.module, self.optimizer, settings.grad_clip,
                                               autocast(self.device, settings.autocast))
            self.schedule.step()
            if self.graphed is not None:
                self.graphed.follow_schedule()
            p.step += 1
            self.on_step(p.step)
            budget = settings.budget_s
            if budget is not None and p.step < settings.steps and self.elapsed() >= budget:
                p.out_of_time = True
            if p.step % settings.eval_every == 0 or p.step == settings.steps or p.out_of_time:
                self._log()
            if self.checkpoint is not None and (self.done or
                                                time.perf_counter() - self.last_save >= settings.checkpoint_every_s):
                self.save()

    def save(self) -> None:
        """Write the whole training state to the checkpoint (a no-op without one, or before the run started)."""
        if self.checkpoint is None or self.loss_sum is None:
            return
        with self.on_stream():
            self.progress.loss_sum = float(self.loss_sum)
            save_checkpoint(self.checkpoint, self.module, self.optimizer, self.schedule, self.stream, self.settings,
                            dataclasses.replace(self.progress, train_s=self.elapsed()))
        self.last_save = time.perf_counter()

    def elapsed(self) -> float:
        """Training time over every sitting, this one included."""
        sitting = time.perf_counter() - self.sitting_start if self.sitting_start is not None else 0.0
        return self.progress.train_s + sitting

    def finish(self) -> TrainResult:
        """The run's result, its work on the device complete (the default stream may use the weights now)."""
        import torch

        if self.cuda_stream is not None:
            self.cuda_stream.synchronize()
            torch.cuda.current_stream().wait_stream(self.cuda_stream)
        self.progress.train_s = self.elapsed()
        self.sitting_start = time.perf_counter()
        return _result(self.progress)

    def _log(self) -> None:
        """The evaluation that is due: the loss read back (the one host sync in `eval_every` steps), the
        divergence check on it, then validation."""
        p = self.progress
        loss = float(self.loss_sum) / (p.step - p.last_log_step)
        self.loss_sum.zero_()
        if diverged(loss, self.settings.max_loss):  # weights past saving: no validation, no more steps
            p.diverged_at, p.diverged_loss = p.step, loss
            return
        log = _log_point(self.module, self.validation, self.settings, self.device, p, loss, self.elapsed())
        self.module.train()  # evaluation left it in eval mode (set here, not every step: it walks every module)
        self.on_log(log)


def train(module: torch.nn.Module, draw: Draw, stream: torch.Generator,
          validation: Mapping[int, Sequence[Batch]], settings: TrainSettings, device: str,
          checkpoint: Path | None = None,
          on_log: Callable[[LogPoint], None] = lambda log: None,
          on_step: Callable[[int], None] = lambda step: None) -> TrainResult:
    """Train `module` (token ids -> logits) on `draw(stream)` batches for `settings.steps` steps, alone:
    see Trainer for what happens along the way."""
    trainer = Trainer(module, draw, stream, validation, settings, device, checkpoint, on_log, on_step)
    ((_, outcome),) = train_pack([trainer], width=1)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def train_pack(trainers: Iterable[Trainer], width: int) -> Iterator[tuple[Trainer, TrainResult | Exception]]:
    """Train up to `width` runs at once, each a step in turn, and yield each run with its result as it ends,
    or with the exception that ended it: a run that fails (out of memory, a bad checkpoint) is that run's
    outcome, and the others go on. A run that ends makes room for the next of `trainers`, which are taken
    only when there is room (so models can be built as they are needed).

    On CUDA, give each Trainer a stream of its own (`own_stream`): a step is then one graph replay (or a
    few launches) issued on that stream, and the device runs the runs' kernels side by side. On the CPU
    the runs simply take turns. SIGINT and SIGTERM are held until the round of steps in progress is over;
    then every run writes its checkpoint and the signal is raised. While the caller has a finished run in
    hand (testing it, which can take minutes at 2^20), the others' states are saved first and a signal acts
    at once: nothing waits on the caller's work, and nothing trained is lost.
    """
    pending = iter(trainers)
    active: list[Trainer] = []
    with held_signals() as held:
        while True:
            while len(active) < width and (trainer := next(pending, None)) is not None:
                try:
                    trainer.start()
                except Exception as exc:  # noqa: BLE001 - this run's outcome, not the pack's
                    yield from _hand_over(held, active, (trainer, exc))
                    continue
                if trainer.done:
                    yield from _hand_over(held, active, (trainer, trainer.finish()))
                else:
                    active.append(trainer)
            if not active:
                return
            for trainer in list(active):
                try:
                    trainer.step()
                except Exception as exc:  # noqa: BLE001
                    active.remove(trainer)
                    yield from _hand_over(held, active, (trainer, exc))
                    continue
                if trainer.done:
                    active.remove(trainer)
                    yield from _hand_over(held, active, (trainer, trainer.finish()))
            if held.signal is not None:
                for trainer in active:
                    trainer.save()
                held.raise_if_any()


def _hand_over(held: _HeldSignals, active: list[Trainer], outcome: tuple[Trainer, TrainResult | Exception]
               ) -> Iterator[tuple[Trainer, TrainResult | Exception]]:
    """Yield one run's outcome to train_pack's caller with every still-active run saved and signals acted on
    at once (held again when the caller hands control back)."""
    for trainer in active:
        trainer.save()
    held.holding = False
    try:
        held.raise_if_any()  # one that came during the steps before
        yield outcome
    finally:
        held.holding = True


def _log_point(module: torch.nn.Module, validation: Mapping[int, Sequence[Batch]], settings: TrainSettings,
               device: str, progress: _Progress, loss: float, elapsed_s: float) -> LogPoint:
    """Evaluate on every validation set, append the log point (with `loss`, the mean training loss since the
    last one) to the curve, and update the early stop and the collapse watch."""
    results = {length: evaluate(module, batches, device, settings.autocast) for length, batches in validation.items()}
    at_train = results[settings.seq_len]
    steps = progress.step - progress.last_log_step
    log = LogPoint(step=progress.step, loss=loss, accuracy=at_train.accuracy,
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
    if settings.collapse_evals is not None and settings.chance_loss is not None:
        progress.chance_streak = progress.chance_streak + 1 if at_chance(log.loss, settings.chance_loss) else 0
        progress.collapsed = progress.chance_streak >= settings.collapse_evals
    return log


def diverged(loss: float, max_loss: float | None) -> bool:
    """Whether a mean training loss says the run has diverged: not finite (a NaN or inf in any step since
    the last check makes the sum so), or above the settings' bound."""
    return not math.isfinite(loss) or (max_loss is not None and loss > max_loss)


def at_chance(loss: float, chance_loss: float) -> bool:
    """Whether a training loss says the model has learned nothing: within 1% of the loss of a uniform
    guess over the answers (ln of their number), or above it. A model that has begun to learn is well
    below it (the induction models that learned left ln 15 = 2.71 for 0.3 and less)."""
    return loss >= CHANCE_TOLERANCE * chance_loss


def _result(progress: _Progress) -> TrainResult:
    return TrainResult(steps=progress.step, stopped_early=progress.stopped_early, train_s=progress.train_s,
                       curve=list(progress.curve), resumed_at=list(progress.resumed_at),
                       collapsed=progress.collapsed, out_of_time=progress.out_of_time,
                       diverged_at=progress.diverged_at, diverged_loss=progress.diverged_loss,
                       set_aside=list(progress.set_aside))


# --- checkpoints ---------------------------------------------------------------------------------------


def save_checkpoint(path: Path | None, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LambdaLR, stream: torch.Generator,
                    settings: TrainSettings, progress: _Progress) -> None:
    """The whole training state, written atomically (save_atomically); the state it replaces is kept as
    the previous checkpoint, the last good state to fall back on if this one is ever damaged."""
    import torch

    if path is None:
        return
    optimizer_state = optimizer.state_dict()
    for group in optimizer_state["param_groups"]:  # a graphed run's LR tensor is saved as the number it holds
        if torch.is_tensor(group["lr"]):
            group["lr"] = float(group["lr"])
    state = {"format": CHECKPOINT_FORMAT, "settings": dataclasses.asdict(settings),
             "progress": dataclasses.asdict(progress), "module": module.state_dict(),
             "optimizer": optimizer_state, "schedule": schedule.state_dict(), "stream": stream.get_state()}
    save_atomically(state, path, keep_previous=True)


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LambdaLR, stream: torch.Generator,
                    settings: TrainSettings, device: str) -> _Progress:
    """Put the state saved at `path` back in place; returns the loop's progress, this resumption noted.
    UnreadableCheckpoint or CheckpointMismatch (one line each, naming the file) when it cannot be used."""
    state = load_safely(path, device)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatch(f"{path}: checkpoint format {found!r}, expected {CHECKPOINT_FORMAT}")
    saved, now = state["settings"], dataclasses.asdict(settings)
    changed = sorted(k for k in now.keys() - OPERATIONAL_SETTINGS if saved.get(k) != now[k])
    if changed:
        what = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointMismatch(f"{path}: written with other training settings ({what})")
    try:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stream.set_state(state["stream"].cpu())
        fields = dict(state["progress"])
        curve = [LogPoint(**(log | {"by_length": {int(k): v for k, v in log["by_length"].items()}}))
                 for log in fields.pop("curve")]
        progress = _Progress(**fields, curve=curve)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        cause = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointMismatch(f"{path}: does not fit this run ({cause})") from None
    if progress.step < settings.steps and not progress.stopped:
        progress.resumed_at.append(progress.step)
    return progress


def previous_checkpoint(path: Path) -> Path:
    """Where save_checkpoint keeps the state before the newest."""
    return path.with_name(path.name + ".prev")


def save_atomically(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """torch.save `obj` to `path` so that no crash, kill or full disk leaves a half-written file there: the
    bytes go to a temporary file, are flushed to the disk (fsync), and the file is renamed over `path` (an
    atomic step). With `keep_previous`, the file it replaces becomes `previous_checkpoint(path)`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.is_file():
        os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the renames themselves reach the disk
    finally:
        os.close(directory)


def load_safely(path: Path, device: str) -> Any:
    """torch.load with `weights_only=True`, always: tensors and plain containers, never code. A file that
    cannot be loaded so raises UnreadableCheckpoint naming it and the cause in words of ours."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        cause = "not a tensors-only torch file (overwritten, or written by something else)"
    except EOFError:
        cause = "truncated (it ends before its data does)"
    except OSError as exc:
        cause = f"truncated or damaged (reading it failed: {exc.strerror or type(exc).__name__})"
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        cause = ("truncated or damaged (its zip archive cannot be read)" if "zip archive" in first or "PytorchStreamReader" in first
                 else f"cannot be loaded ({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - any other way a damaged file fails to load
        cause = f"cannot be loaded ({type(exc).__name__})"
    raise UnreadableCheckpoint(f"{path}: {cause}")


def set_aside(path: Path) -> Path:
    """Rename a damaged file out of the way (never delete it: it may be all that is left of a run) to
    `<name>.bad`, or `<name>.bad2`, ... when that is taken; returns the new path."""
    n, target = 1, path.with_name(path.name + ".bad")
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.bad{n}")
    os.replace(path, target)
    return target


class _HeldSignals:
    """SIGINT and SIGTERM caught and kept until the loop is between steps (see held_signals); while
    `holding` is off (the loop has handed a finished run to its caller), acted on at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.holding = True

    def hold(self, signum: int, frame: Any) -> None:
        self.signal = signum
        if not self.holding:
            self.raise_if_any()

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
