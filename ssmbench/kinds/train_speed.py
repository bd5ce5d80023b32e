"""kind: train_speed — steps per second of the synthetic trainer against a plain mamba_ssm training loop.

The synthetic tables are only as cheap as the trainer behind them, and a suite's step budget (the
paper's 204,800 induction steps) is planned from its step rate. This benchmark trains one small model
several ways on the same batches and times only steady-state steps:

- ssmbench-graphs  ssmbench.train.train as a synthetic task runs it, the whole step replayed from a CUDA
                   graph (CUDA only; skipped elsewhere).
- ssmbench-eager   the same loop with the step launched from Python.
- mamba_ssm-plain  mamba_ssm's own MambaLMHeadModel holding the very same weights (the builder's state
                   dict loads into it), trained the way its README's users write a loop: draw a batch,
                   forward, answer-position cross-entropy, backward, clip, Adam step. Mamba models on CUDA
                   with mamba_ssm installed only; skipped with the reason elsewhere.

Each loop draws its batches on the device from one seeded generator, in the task's autocast dtype (None:
float32), and runs `warmup_steps` untimed steps (a CUDA graph's capture happens before them), then
`repeats` windows of `steps` steps, the device synchronised at each window's edges only. Records, per
(loop, batch):

    steps_per_s   median over the windows, with their spread (higher is better)
    ms_per_step   the same windows as milliseconds per step
    train_tok_s   steps_per_s x batch x length

With `packs: [1, 4, 8, 16]` the task times packing instead (ssmbench.train.train_pack): K models of the
architecture (seeds seed .. seed+K-1) trained side by side on one device, each on its own CUDA stream
replaying its graphed step (eager on the CPU), against the same K models trained one after another. The
windows are counted in the first model's steps (K x steps model-steps a window); one after another, window
i is the sum of the K models' i-th windows. Records, per (order, pack, batch):

    aggregate_steps_per_s   model-steps per second over all K models (higher is better)
    aggregate_tok_s         aggregate_steps_per_s x batch x length
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, Runner, SkipPoint
from ssmbench.kinds.synthetic.task import Architecture, SyntheticName, check_task_params
from ssmbench.models.mixers import mixer_family
from ssmbench.records import Record, Stats, summarised
from ssmbench.report.tables import Table, cpu_notes, format_figure
from ssmbench.zoo import ResolvedModel

Loop = Literal["ssmbench-graphs", "ssmbench-eager", "mamba_ssm-plain"]
PLAIN = "mamba_ssm-plain"
ORDERS = ("packed", "one-after-another")  # how the K models of a packing point train


class TrainSpeedTask(TaskBase):
    """One small model trained by each loop in `loops`, at each batch size, for timing only."""

    uses_models: ClassVar[bool] = False

    kind: Literal["train_speed"]
    task: SyntheticName = "induction_heads"  # the synthetic task whose batches are trained on
    # the task's own parameters, as in a synthetic task
    task_params: dict[str, int | float | bool] = Field(default_factory=dict)
    vocab_size: PositiveInt = 16  # tokens of the task's vocabulary
    # the one small model every loop trains
    architecture: Architecture = Field(default_factory=lambda: Architecture(mixer="mamba", d_model=64))
    # ssmbench's trainer with CUDA graphs, eagerly, and mamba_ssm's MambaLMHeadModel in a plain loop
    loops: list[Loop] = ["ssmbench-graphs", "ssmbench-eager", PLAIN]
    batch_sizes: list[PositiveInt] = [8, 64]  # sequences per step, one point each
    seq_len: PositiveInt = 256  # tokens per training sequence
    lr: PositiveFloat = 1e-3  # Adam's learning rate
    autocast: Literal["bfloat16", "float16"] | None = None  # on CUDA; None trains in float32, as the paper's recipe
    warmup_steps: Annotated[int, Field(ge=1)] = 50  # untimed steps before the timed windows
    steps: PositiveInt = 500  # per timed window
    repeats: PositiveInt = 5  # timed windows: the median and its spread are reported
    # Time packing instead of the loops: K models side by side vs one after another, for each K here.
    packs: list[PositiveInt] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_params(self) -> TrainSpeedTask:
        check_task_params(self.task, self.task_params)
        if len(set(self.packs)) != len(self.packs):
            raise ValueError(f"packs: give distinct pack sizes, got {self.packs}")
        return self

    def variants(self) -> list[str]:
        return [self.architecture.mixer]


class TrainSpeedRunner(Runner[TrainSpeedTask]):
    @classmethod
    def points(cls, task: TrainSpeedTask, model: ResolvedModel | None, device: str) -> list[Point]:
        if task.packs:
            return [point(order=order, pack=k, batch=batch) for batch in task.batch_sizes for k in task.packs
                    for order in ORDERS]
        return [point(loop=loop, batch=batch) for batch in task.batch_sizes for loop in task.loops]

    @classmethod
    def needs(cls, task: TrainSpeedTask, model: ResolvedModel | None, device: str) -> list[str]:
        return ["CUDA and mamba_ssm (graphs, plain loop)"] if device != "cuda" else []

    def measure(self, pt: Point) -> list[Record]:
        if "pack" in pt.params:
            return self._measure_pack(pt)
        loop, batch = pt.params["loop"], pt.params["batch"]
        device = self.job.device
        if loop == "ssmbench-graphs" and device != "cuda":
            raise SkipPoint("CUDA graphs need CUDA")
        if loop == PLAIN:
            self._check_plain(device)
        built = self._build()
        if loop == PLAIN:
            run, kernel = self._plain(built, batch), "mamba_ssm.MambaLMHeadModel"
        else:
            run, kernel = self._ssmbench(built, batch, graphs=loop == "ssmbench-graphs"), built.kernel
        rates = [self.task.steps / seconds for seconds in run()]
        stats = Stats.of(rates)
        common = {"kernel": kernel, "cuda_graphs": loop == "ssmbench-graphs",
                  "dtype": self.task.autocast if device == "cuda" and self.task.autocast else "float32",
                  "family": mixer_family(self.task.architecture.mixer),
                  "extra": {"params": built.n_params, "steps_per_window": self.task.steps,
                            "warmup_steps": self.task.warmup_steps}}
        tokens = batch * self.task.seq_len
        return [self.record(pt, **summarised("steps_per_s", rates, "steps/s", True), **common),
                self.record(pt, **summarised("ms_per_step", [1e3 / r for r in rates], "ms", False), **common),
                self.record(pt, metric="train_tok_s", value=stats.median * tokens, unit="tok/s",
                            higher_is_better=True, **common)]

    def _build(self, seed: int | None = None) -> Any:
        from ssmbench.models.builder import build_model

        return build_model(self.task.architecture.config(self.task.vocab_size, self.task.seq_len),
                           device=self.job.device, seed=self.job.seed if seed is None else seed)

    # --- packing ------------------------------------------------------------------------------------

    def _measure_pack(self, pt: Point) -> list[Record]:
        k, batch, order = pt.params["pack"], pt.params["batch"], pt.params["order"]
        graphs = self.job.device == "cuda"
        seeds = [self.job.seed + i for i in range(k)]
        built = [self._build(seed) for seed in seeds]
        runs = [self._trainer(batch, seed, b.module, graphs, packed=order == "packed") for seed, b in zip(seeds, built, strict=True)]
        windows = self._pack_windows(runs) if order == "packed" else self._one_after_another(runs)
        rates = [k * self.task.steps / seconds for seconds in windows]
        held = {run.draw_in_graph for run in runs}
        common = {"kernel": built[0].kernel, "cuda_graphs": graphs, "family": mixer_family(self.task.architecture.mixer),
                  "dtype": self.task.autocast if graphs and self.task.autocast else "float32",
                  "extra": {"params": built[0].n_params, "steps_per_window": self.task.steps,
                            "warmup_steps": self.task.warmup_steps, "seeds": seeds,
                            **({"graph": "draw+step" if held == {True} else "step (batches drawn eagerly)"}
                               if graphs else {})}}
        tokens = batch * self.task.seq_len
        return [self.record(pt, **summarised("aggregate_steps_per_s", rates, "steps/s", True), **common),
                self.record(pt, metric="aggregate_tok_s", value=Stats.of(rates).median * tokens, unit="tok/s",
                            higher_is_better=True, **common)]

    def _trainer(self, batch: int, seed: int, module: Any, graphs: bool, packed: bool) -> Any:
        """`module`'s training run on a data stream of its own, for the warm-up and every window (evaluated
        once, after the last window)."""
        from ssmbench.data.synthetic import seeded_generator
        from ssmbench.train import Trainer, TrainSettings

        task, device = self.task, self.job.device
        edges = self._windows()
        settings = TrainSettings(steps=edges[-1], batch_size=batch, seq_len=task.seq_len, lr=task.lr,
                                 autocast=task.autocast, eval_every=edges[-1], cuda_graphs=graphs)
        return Trainer(module, self._draw(batch), seeded_generator(seed, device), self._validation(), settings, device,
                       own_stream=packed)

    def _validation(self) -> dict[int, list[Any]]:
        from ssmbench.data.synthetic import fixed_batches

        task = self.task
        return {task.seq_len: list(fixed_batches(task.task, 8, task.seq_len, 8, seed=0, purpose="validation",
                                                 device=self.job.device, vocab_size=task.vocab_size,
                                                 **task.task_params))}

    def _pack_windows(self, runs: list[Any]) -> list[float]:
        """Seconds of each timed window with the runs packed, counted in the first run's steps (the device
        synchronised at its window edges)."""
        from ssmbench.train import train_pack

        marks = self._marks(runs[0])
        outcomes = [outcome for _, outcome in train_pack(runs, width=len(runs))]
        self._raise_any(outcomes)
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]

    def _one_after_another(self, runs: list[Any]) -> list[float]:
        """Seconds of each timed window with the runs trained one after another: window i of all of them."""
        from ssmbench.train import train_pack

        per_run = []
        for run in runs:
            marks = self._marks(run)
            self._raise_any([outcome for _, outcome in train_pack([run], width=1)])
            per_run.append([b - a for a, b in zip(marks, marks[1:], strict=False)])
        return [sum(times) for times in zip(*per_run, strict=True)]

    def _marks(self, run: Any) -> list[float]:
        """A list that fills with the wall-clock time of each window edge `run` reaches."""
        edges, marks = set(self._windows()), []
        device = self.job.device

        def on_step(step: int) -> None:
            if step in edges:
                _synchronize(device)
                marks.append(time.perf_counter())

        run.on_step = on_step
        return marks

    @staticmethod
    def _raise_any(outcomes: list[Any]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    def _draw(self, batch: int) -> Callable[[Any], Any]:
        from ssmbench.data.synthetic import make_batch

        task = self.task
        return lambda generator: make_batch(task.task, batch, task.seq_len, generator=generator,
                                            device=self.job.device, vocab_size=task.vocab_size, **task.task_params)

    def _windows(self) -> list[int]:
        """The steps at which a timed window starts or ends."""
        task = self.task
        return [task.warmup_steps + i * task.steps for i in range(task.repeats + 1)]

    def _ssmbench(self, built: Any, batch: int, graphs: bool) -> Callable[[], list[float]]:
        """ssmbench's own loop as a synthetic task runs it, timed from its step callback (the device
        synchronised at window edges)."""
        return lambda: self._one_after_another([self._trainer(batch, self.job.seed, built.module, graphs, packed=False)])

    def _check_plain(self, device: str) -> None:
        from ssmbench.models.kernels import fused_mamba_kernels

        config = self.task.architecture.config(self.task.vocab_size, self.task.seq_len)
        if config.mixer != "mamba" or config.layers is not None or config.head != "tied":  # MambaLMHeadModel's
            raise SkipPoint("the plain mamba_ssm loop trains Mamba models only (Mamba in every layer, tied head)")
        if device != "cuda":
            raise SkipPoint("the plain mamba_ssm loop needs CUDA")
        kernels = fused_mamba_kernels()
        if not kernels:
            raise SkipPoint(f"the plain mamba_ssm loop needs mamba_ssm: {kernels.reason}")

    def _plain(self, built: Any, batch: int) -> Callable[[], list[float]]:
        """mamba_ssm's MambaLMHeadModel with the built model's weights, in a loop as plain as it gets."""
        import torch
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        from ssmbench.data.synthetic import seeded_generator
        from ssmbench.train import answer_loss, autocast

        arch, device = self.task.architecture, self.job.device
        config = MambaConfig(d_model=arch.d_model, n_layer=arch.n_layers, vocab_size=self.task.vocab_size,
                             d_intermediate=0, ssm_cfg={"d_state": arch.d_state, "d_conv": arch.d_conv,
                                                        "expand": arch.expand})
        model = MambaLMHeadModel(config, device=device)
        model.load_state_dict(built.module.state_dict(), strict=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.task.lr)
        draw, generator, edges = self._draw(batch), seeded_generator(self.job.seed, device), self._windows()

        def run() -> list[float]:
            marks = []
            for step in range(1, edges[-1] + 1):
                data = draw(generator)
                with autocast(device, self.task.autocast):
                    loss = answer_loss(model(data.inputs).logits, data.targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if step in edges:
                    _synchronize(device)
                    marks.append(time.perf_counter())
            return [b - a for a, b in zip(marks, marks[1:], strict=False)]

        return run

    def record(self, point: Point, **fields: Any) -> Record:
        fields["slice"] = {**fields.get("slice", point.params), "synthetic_task": self.task.task,
                           "seq_len": self.task.seq_len}
        return super().record(point, **fields)


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def speed_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    """The loops' table and the packing table, for whichever of the two the task measured."""
    tables = []
    if "slice.loop" in frame and frame["slice.loop"].notna().any():
        tables.append(loops_table(task, frame[frame["slice.loop"].notna()]))
    if "slice.pack" in frame and frame["slice.pack"].notna().any():
        tables += [pack_table(task, group) for _, group in frame[frame["slice.pack"].notna()].groupby("slice.batch")]
    return tables


def pack_table(task: str, frame: pd.DataFrame) -> Table:
    """Packing at one batch size: a column per pack size K, the aggregate steps/s of K models packed and
    one after another, the packed gain, and the wall time of K packed models over one model's alone (the
    issue's target: 8 packed in at most 2x the time of one)."""
    batch = int(frame["slice.batch"].iloc[0])
    rates = frame[(frame["metric"] == "aggregate_steps_per_s") & (frame["status"] == "ok")]
    value = {(r["slice.order"], int(r["slice.pack"])): r for r in rates.to_dict("records")}
    packs = sorted({int(k) for k in frame["slice.pack"].dropna()})
    columns = [f"K = {k}" for k in packs]
    rows = []
    for order in ORDERS:
        row = {"": f"{order}, steps/s"}
        for k, column in zip(packs, columns, strict=True):
            r = value.get((order, k))
            failed = frame[(frame["slice.order"] == order) & (frame["slice.pack"] == k) & (frame["status"] != "ok")]
            row[column] = format_figure(r) if r else (failed["status"].iloc[0].upper() if len(failed) else "")
        rows.append(row)
    alone = value.get(("packed", 1)) or value.get(("one-after-another", 1))
    gain, wall = {"": "packed ÷ one after another"}, {"": "wall time ÷ one model's"}
    for k, column in zip(packs, columns, strict=True):
        packed, serial = value.get(("packed", k)), value.get(("one-after-another", k))
        gain[column] = f"{packed['value'] / serial['value']:.2f}×" if packed and serial else ""
        wall[column] = f"{k * alone['value'] / packed['value']:.2f}×" if packed and alone else ""
    rows += [gain, wall]
    graph = {str(e.get("graph")) for e in rates["extra"] if isinstance(e, dict) and e.get("graph")}
    kernels = ", ".join(sorted(set(rates["kernel"].dropna())))
    notes = [f"Model-steps per second over all K models (median of the timed windows ± half their interquartile "
             f"range), batch {batch}; K models of one architecture, seeds seed .. seed+K-1, each with its own "
             "data stream and optimizer",
             ("packed: side by side on one GPU, each on a CUDA stream of its own (ssmbench.train.train_pack); "
              if graph else "packed: taking turns in one thread (on the CPU nothing runs side by side); ")
             + "one after another: the same K models trained alone in turn",
             "wall time ÷ one model's: how much longer K packed models take than one alone for the same steps "
             "(K × the K = 1 rate ÷ the packed rate); 1× would be perfect overlap",
             f"kernel: {kernels}" + (f"; CUDA graph per model: {', '.join(sorted(graph))}" if graph else
                                     "; eager steps (no CUDA graphs)"), *cpu_notes(rates)]
    return Table(f"{task}: packed training, aggregate steps per second (batch {batch})",
                 pd.DataFrame(rows).reindex(columns=["", *columns]).fillna(""), notes, task)


def loops_table(task: str, frame: pd.DataFrame) -> Table:
    """A row per loop, a column per batch size: steps/s (median ± half the IQR) and, beside it, the ratio
    to the plain mamba_ssm loop at the same batch where that ran."""
    rates = frame[(frame["metric"] == "steps_per_s") & (frame["status"] == "ok")]
    plain = {int(r["slice.batch"]): r["value"] for r in rates.to_dict("records") if r["slice.loop"] == PLAIN}
    rows = []
    for loop, group in frame.groupby("slice.loop", sort=False):
        row: dict[str, str] = {"loop": str(loop)}
        for r in group.to_dict("records"):
            batch = int(r["slice.batch"])
            if r["status"] != "ok":
                row[f"batch {batch}"] = "—" if r["status"] == "skipped" else r["status"].upper()
            elif r["metric"] == "steps_per_s":
                row[f"batch {batch}"] = format_figure(r)
                row[f"× plain, batch {batch}"] = f"{r['value'] / plain[batch]:.2f}" if batch in plain else ""
        kernels = sorted(set(group["kernel"].dropna()))
        row["kernel"] = ", ".join(kernels)
        rows.append(row)
    skipped = frame[frame["status"] == "skipped"].drop_duplicates("slice.loop")
    windows = sorted({int(n) for n in rates.get("n", pd.Series(dtype=float)).dropna()})
    notes = [f"Training steps per second (median of {', '.join(map(str, windows)) or 'no'} timed windows ± half "
             "their interquartile range); × plain = the rate over mamba_ssm's own model in a plain loop",
             *(f"— {r['slice.loop']}: {r['message']}" for r in skipped.to_dict("records")), *cpu_notes(rates)]
    batches = sorted({int(b) for b in frame["slice.batch"].dropna()})
    columns = ["loop", "kernel", *(c for b in batches for c in (f"batch {b}", f"× plain, batch {b}"))]
    table = pd.DataFrame(rows).reindex(columns=columns).fillna("")
    return Table(f"{task}: training steps per second", table, notes, task)


KIND = Kind(
    name="train_speed",
    task=TrainSpeedTask,
    runner=TrainSpeedRunner,
    description="steps/s of the synthetic trainer (CUDA graphs, eager) against a plain mamba_ssm training loop, "
                "and of K models packed on one device against K one after another",
    metric_order=("steps_per_s", "ms_per_step", "train_tok_s", "aggregate_steps_per_s", "aggregate_tok_s"),
    views=speed_tables,
)
