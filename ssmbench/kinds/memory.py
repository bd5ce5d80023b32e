"""kind: memory — peak memory of generation or of one training step, beside the analytic state size.

Inference: one untimed generation warms up, then the peak is taken over a second one (`new_tokens` greedy
tokens after a prompt). Beside it, the analytic inference state for the batch: keys and values for every
token for a Transformer, the fixed conv + SSM state for Mamba.

On CUDA: torch's peak allocated and reserved memory (exact whatever the process held before) and NVML's view
of the device, measured in this process on the model loaded once for the job.

On the CPU: the resident set (RSS; its peak as the kernel keeps it, VmHWM, reset before each region), which
counts whatever the process holds, and the allocator keeps what it has held. So each point runs in a fresh
process (measure.in_fresh_process: forked from a helper that imported torch and transformers and did nothing
else), which loads the model itself; this process loads nothing. In it, glibc malloc maps every block of
64 KiB or more on its own and unmaps it when freed, so RSS follows the tensors, and the baseline is taken
after the model is loaded, one warm-up generation (or training step) has run and the freed memory has been
handed back to the OS: one-off costs (thread pools, lazy imports and caches of the first call) are part of
the baseline, not of the work. peak_rss_mib is that process's peak: interpreter, torch and transformers, the
model and the work; work_rss_mib is the peak less the baseline: what the work itself holds at its peak (for
a Transformer, its KV cache and more). Neither depends on what ran before in the run.

Training: one forward + backward + AdamW step on `batch` sequences of `prompt_len` tokens, with fp32
master weights and autocast to the suite's dtype when that is half precision (mixed precision, as models of
this size are trained). This is the setting of the Mamba paper's training-memory table (125M models, 2048).

Metrics: peak_alloc_mib (all of it, weights included), work_alloc_mib (the peak less what was held before:
cache, activations, gradients, optimizer state), peak_reserved_mib and nvml_used_mib on CUDA, peak_rss_mib
and work_rss_mib on the CPU; for inference also decode_peak_* (the peak over the decode steps alone, after
the prompt pass: weights + KV cache or SSM state + one step); weights_mib and (inference) state_mib from
the architecture.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveInt

from ssmbench.errors import JobError
from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, ModelRunner
from ssmbench.measure import (
    PeakMemory,
    dtype_bytes,
    free_memory,
    in_fresh_process,
    mib,
    release_freed_memory,
    rss_follows_allocations,
    seeded_tokens,
)
from ssmbench.models.common import torch_dtype
from ssmbench.records import Record
from ssmbench.report.plots import Line, bar_plot, line_plot, model_colours
from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    import pandas as pd

    from ssmbench.models import LoadedModel


class MemoryTask(TaskBase):
    """Peak memory of generation (inference) or of one training step, beside the analytic state size."""

    kind: Literal["memory"]
    # inference: one generation; training: one forward + backward + AdamW step in mixed precision
    mode: Literal["inference", "training"] = "inference"
    batch_sizes: list[PositiveInt] = [1]  # sequences at once, one point each
    prompt_lengths: list[PositiveInt] = [128]  # prompt tokens (training: sequence tokens), one point each
    new_tokens: Annotated[int, Field(ge=1)] = 8  # tokens generated in inference mode


class MemoryRunner(ModelRunner[MemoryTask]):
    """On CUDA the model is loaded once and torch's allocator counters measure each point. On the CPU each point
    runs in a fresh process (`_measure_point`), which loads the model itself: this process loads nothing."""

    _job_error: Exception | None = None  # CPU: the model could not load in a measuring process (a JobError)
    _warned = False  # CPU: transformers' warnings (a kernel falling back, ...) were shown, by the first point

    @classmethod
    def points(cls, task: MemoryTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(mode=task.mode, batch=b, prompt_len=p) for b in task.batch_sizes for p in task.prompt_lengths]

    def model_to_load(self) -> ResolvedModel:
        """Mixed-precision training keeps fp32 master weights; the suite's dtype becomes the autocast dtype."""
        ref = super().model_to_load()
        return dataclasses.replace(ref, dtype="float32") if self.task.mode == "training" else ref

    @property
    def autocast_dtype(self) -> str:
        assert self.job.model is not None
        return self.job.model.dtype

    def setup(self) -> None:
        if self.job.device == "cuda":
            self.held_before = _held_on_cuda()
            super().setup()
            return
        from ssmbench.models import choose_backend

        choose_backend(self.model_to_load())  # what refuses the whole job (e.g. fused kernels demanded) still does

    def measure(self, pt: Point) -> list[Record]:
        task = self.task
        batch, prompt_len = pt.params["batch"], pt.params["prompt_len"]
        self.check_length(prompt_len + (task.new_tokens if task.mode == "inference" else 0))
        ref = self.model_to_load()
        if self.job.device == "cuda":
            values = self._measure_here(batch, prompt_len)
        else:
            values = self._measure_in_fresh_process(ref, batch, prompt_len)
        if task.mode == "inference":
            state = ref.spec.state_bytes_per_sequence(prompt_len + task.new_tokens, dtype_bytes(ref.dtype))
            values["state_mib"] = mib(state * batch)
        values["weights_mib"] = mib(self.model.n_params * dtype_bytes(ref.dtype))
        fields: dict[str, Any] = {"cuda_graphs": False, "slice": dict(pt.params), "extra": {}}
        if task.mode == "inference":
            fields["slice"]["new_tokens"] = task.new_tokens
        else:
            fields["extra"] = {"autocast": self.autocast_dtype, "optimizer": "AdamW"}
        if self.job.device == "cuda":
            fields["extra"]["held_before_load_mib"] = mib(self.held_before[0])
        return [self.record(pt, metric=name, value=value, unit="MiB", higher_is_better=False, **fields)
                for name, value in values.items()]

    def _measure_here(self, batch: int, prompt_len: int) -> dict[str, float]:
        """CUDA: torch's peak allocated and reserved bytes, less what the process held before this job loaded
        its model. Earlier jobs of the run can leave memory behind (a nightly run measured 166 MiB more for
        mamba-130m after the throughput jobs than the memory suite alone): the peaks here are this model's
        own, and what was held before is kept in `extra.held_before_load_mib` so a leak stays visible."""
        ids = seeded_tokens((batch, prompt_len), self.model.vocab_size, self.job.seed, self.job.device)
        try:
            if self.task.mode == "training":
                values = _cuda_values(training_step_peak(self.model, ids, self.autocast_dtype))
            else:
                whole, decode = generation_peaks(self.model, ids, self.task.new_tokens, self.on_progress)
                values = _cuda_values(whole) | {f"decode_{k}": v for k, v in _cuda_values(decode).items()
                                                if k.startswith("peak_")}
        finally:
            free_memory(self.job.device)
        allocated, reserved = (mib(n) for n in self.held_before)
        for name in values:
            if name.endswith("peak_alloc_mib"):
                values[name] -= allocated
            elif name.endswith("peak_reserved_mib"):
                values[name] = max(values[name] - reserved, 0.0)
        return values

    def _measure_in_fresh_process(self, ref: ResolvedModel, batch: int, prompt_len: int) -> dict[str, float]:
        """CPU: RSS is the process's, whatever it held before (other models, other jobs), so each point is
        measured in a process of its own; what the model said about itself there comes back for the records."""
        if self._job_error is not None:  # the model cannot load (weights missing, ...): no point trying again
            raise self._job_error
        try:
            out = in_fresh_process(_measure_point, ref, self.task.mode, batch, prompt_len, self.task.new_tokens,
                                   self.job.seed, self.autocast_dtype, self._warned, preload=_preload)
        except JobError as exc:
            self._job_error = exc
            raise
        finally:
            self._warned = True
        self.model = _LoadedElsewhere(**out["model"])  # type: ignore[assignment]  # all ModelRunner.record reads
        return out["values"]


@dataclasses.dataclass(frozen=True)
class _LoadedElsewhere:
    """What a model loaded in a measuring process said about itself: what ModelRunner.record reads of it."""

    n_params: int
    backend: str
    fields: dict[str, Any]

    def record_fields(self) -> dict[str, Any]:
        return dict(self.fields)


def _preload() -> None:
    """What every measuring process imports, done once in the process they are forked from: torch,
    transformers' model code for every architecture of the zoo (seconds), ssmbench's loaders."""
    from ssmbench.models.common import silence_trust_checks

    silence_trust_checks()
    import torch  # noqa: F401
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    import ssmbench.models.hf  # noqa: F401
    from ssmbench.zoo import MODELS

    for model_type in sorted({spec.config["model_type"] for spec in MODELS.values()}):
        MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.for_model(model_type))]  # imports the modeling module


def _measure_point(ref: ResolvedModel, mode: str, batch: int, prompt_len: int, new_tokens: int, seed: int,
                   autocast: str, quiet: bool) -> dict[str, Any]:
    """One CPU point, in a fresh process: load the model, run the work once to warm up, hand freed memory back
    to the OS, then measure the work again. Returns plain numbers and what the model says about itself."""
    from transformers.utils import logging

    from ssmbench.models import load_model

    rss_follows_allocations()
    if quiet:  # a fresh process would repeat the warnings every point of the job
        logging.set_verbosity_error()
    model = load_model(ref)
    ids = seeded_tokens((batch, prompt_len), model.vocab_size, seed, "cpu")
    if mode == "training":
        training_step_peak(model, ids, autocast)  # warm-up
        release_freed_memory()
        values = _rss_values(training_step_peak(model, ids, autocast))
    else:
        whole, decode = generation_peaks(model, ids, new_tokens)
        values = _rss_values(whole) | {"decode_peak_rss_mib": mib(decode.peak_bytes)}
    return {"values": values, "model": {"n_params": model.n_params, "backend": model.backend,
                                        "fields": model.record_fields()}}


def _held_on_cuda() -> tuple[int, int]:
    """Bytes torch holds on the GPU (allocated, reserved) with nothing of this job loaded yet."""
    import torch

    free_memory("cuda")
    return torch.cuda.memory_allocated(), torch.cuda.memory_reserved()


def _cuda_values(probe: PeakMemory) -> dict[str, float]:
    out = {"peak_alloc_mib": mib(probe.peak_bytes), "work_alloc_mib": mib(probe.growth_bytes),
           "peak_reserved_mib": mib(probe.peak_reserved_bytes or 0)}
    if probe.nvml_used_bytes is not None:
        out["nvml_used_mib"] = mib(probe.nvml_used_bytes)
    return out


def _rss_values(probe: PeakMemory) -> dict[str, float]:
    return {"peak_rss_mib": mib(probe.peak_bytes), "work_rss_mib": mib(probe.growth_bytes)}


def generation_peaks(model: LoadedModel, ids: Any, new_tokens: int,
                     on_progress: Callable[[float], None] = lambda fraction: None) -> tuple[PeakMemory, PeakMemory]:
    """Peaks over the whole generation and over its decode steps alone, after one untimed warm-up generation
    (lazy one-off buffers, thread pools and imports are then in the baseline, not in the work). The prompt
    pass's activations (which grow with the prompt for both families) dominate the first; the second is
    weights plus the KV cache or SSM state plus one step's activations: where the two families differ."""
    import torch

    device = model.ref.device
    with torch.inference_mode():
        decoder = model.decoder(ids.shape[0], ids.shape[1] + new_tokens, cuda_graphs=False)
        decoder.generate(ids, new_tokens)
        on_progress(0.5)
        decoder.start()  # drops the warm-up's cache
        if device != "cuda":
            release_freed_memory()  # torch's peak counter is exact on CUDA; RSS needs freed memory handed back
        with PeakMemory(device) as prefill:
            first = decoder.prefill(ids)
        if device != "cuda":
            release_freed_memory()  # what the prompt pass left in the allocator's heap (small blocks) is not decode's
        with PeakMemory(device) as decode:
            decoder.decode(first, new_tokens - 1)
        del decoder
    return prefill.then(decode), decode


def training_step_peak(model: LoadedModel, ids: Any, autocast_dtype: str) -> PeakMemory:
    """The peak of one forward + backward + AdamW step (a new optimizer: its state is part of the step)."""
    import torch

    device = model.ref.device
    module = model.module
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    half = autocast_dtype in ("float16", "bfloat16")
    autocast = (torch.autocast(device_type=device, dtype=torch_dtype(autocast_dtype))
                if half else contextlib.nullcontext())
    try:
        with PeakMemory(device) as probe:
            with autocast:
                logits = module(ids).logits
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        del optimizer
        module.eval()
    return probe


# What the memory plot draws of each point: the first of these metrics the run holds, and its legend's name.
# On CUDA the decode steps' peak, where the families differ (KV cache vs fixed state; older runs lack it). On
# the CPU the work's RSS, the peak less what the process held after load and warm-up: its peak RSS counts the
# interpreter, torch and transformers (about 360 MiB, alike for every model), which hides the difference the
# task measures. Older CPU runs, without work_rss_mib, fall back to their peaks.
PLOTTED = {"decode_peak_alloc_mib": "decode peak (allocated)", "peak_alloc_mib": "peak (allocated)",
           "work_rss_mib": "work RSS (peak less baseline)", "decode_peak_rss_mib": "decode peak RSS",
           "peak_rss_mib": "peak RSS"}
STATE = "analytic state"


def plot_memory(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Each model's memory (PLOTTED) beside its analytic state, along what the task varied: against prompt
    length, a figure per batch size; with one prompt length, against batch size; with one of each, a bar
    per model, so that a run of one prompt length draws its figure too."""
    ok = frame[frame["status"] == "ok"]
    measured = next((m for m in PLOTTED if (ok["metric"] == m).any()), None)
    if measured is None:
        return []
    ok = ok[ok["metric"].isin([measured, "state_mib"])]
    length = "sequence length" if "slice.mode" in ok and (ok["slice.mode"] == "training").any() else "prompt length"
    lengths, batches = sorted(ok["slice.prompt_len"].unique()), sorted(ok["slice.batch"].unique())
    if len(lengths) > 1:
        return [_memory_lines(out / f"{task}_memory_batch{int(b)}.png", f"{task}: memory vs {length}, batch {int(b)}",
                              g, measured, "slice.prompt_len", f"{length} (tokens)")
                for b, g in ok.groupby("slice.batch")]
    at = f"{length} {int(lengths[0])}"
    if len(batches) > 1:
        return [_memory_lines(out / f"{task}_memory_prompt{int(lengths[0])}.png",
                              f"{task}: memory vs batch size, {at}", ok, measured, "slice.batch", "batch size")]
    models = list(dict.fromkeys(ok["model"]))
    series = [Line(label, models, [_value(ok, model, metric) for model in models], colour)
              for metric, label, colour in ((measured, PLOTTED[measured], "C0"), ("state_mib", STATE, "C7"))
              if (ok["metric"] == metric).any()]
    return [bar_plot(out / f"{task}_memory_batch{int(batches[0])}_prompt{int(lengths[0])}.png",
                     f"{task}: memory at batch {int(batches[0])}, {at}", "model", "MiB", models, series)]


def _memory_lines(path: Path, title: str, ok: pd.DataFrame, measured: str, x: str, xlabel: str) -> Path:
    """A line per model of its memory against `x`, its analytic state dotted beside it (log-log)."""
    colour = model_colours(ok)
    series = []
    for model, g in ok.groupby("model", sort=False):
        for metric, style, suffix in ((measured, "-", PLOTTED[measured]), ("state_mib", ":", STATE)):
            m = g[g["metric"] == metric].sort_values(x)
            if not m.empty:
                series.append((f"{model} {suffix}", list(m[x]), list(m["value"]), colour[model] + style))
    return line_plot(path, title, xlabel, "MiB", series)


def _value(ok: pd.DataFrame, model: str, metric: str) -> float:
    """One model's value of `metric` at the one point measured; NaN where it has none (its point failed)."""
    values = ok.loc[(ok["model"] == model) & (ok["metric"] == metric), "value"]
    return float(values.iloc[0]) if len(values) else float("nan")


KIND = Kind(
    name="memory",
    task=MemoryTask,
    runner=MemoryRunner,
    description="peak memory of generation or of a training step, beside the analytic KV-cache/SSM-state size",
    metric_order=("peak_alloc_mib", "decode_peak_alloc_mib", "work_alloc_mib", "peak_reserved_mib",
                  "decode_peak_reserved_mib", "nvml_used_mib", "peak_rss_mib", "decode_peak_rss_mib",
                  "work_rss_mib", "state_mib", "weights_mib"),
    glossary={"peak_alloc_mib": "the peak of torch's allocations over the whole generation or step, weights included",
              "decode_peak_alloc_mib": "the peak over the decode steps alone: weights + KV cache or state + one step",
              "work_alloc_mib": "the peak less what was held before the work: cache, activations, gradients, optimizer",
              "peak_reserved_mib": "the peak that torch's allocator reserved from the device (≥ allocated)",
              "decode_peak_reserved_mib": "the reserved peak over the decode steps alone",
              "nvml_used_mib": "device memory in use as the driver reports it, every context included",
              "peak_rss_mib": "the process's peak resident set: interpreter, torch and transformers (~350 MiB), the "
                              "model and the work",
              "decode_peak_rss_mib": "the peak resident set over the decode steps alone",
              "work_rss_mib": "the peak less the baseline taken after loading and a warm-up: what the work itself "
                              "holds (the figure to compare on a CPU)",
              "state_mib": "the analytic size of the KV cache (attention) or the SSM and conv state (Mamba) at the "
                           "point's batch and length",
              "weights_mib": "the analytic size of the weights in the run's dtype"},
    plotter=plot_memory,
)
