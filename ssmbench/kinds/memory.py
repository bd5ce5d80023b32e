"""kind: memory — peak memory of generation or of one training step, beside the analytic state size.

Inference: one untimed generation warms the allocator up, then the peak is taken over a second one
(`new_tokens` greedy tokens after a prompt). On CUDA that is torch's peak allocated and reserved memory and
NVML's view of the device; on the CPU the process RSS. Beside it, the analytic inference state for the
batch: keys and values for every token for a Transformer, the fixed conv + SSM state for Mamba.

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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, ModelRunner
from ssmbench.measure import PeakMemory, dtype_bytes, free_memory, mib, seeded_tokens
from ssmbench.models.common import torch_dtype
from ssmbench.records import Record
from ssmbench.report.plots import line_plot, model_colours
from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    import pandas as pd


class MemoryTask(TaskBase):
    """Peak memory of generation (inference) or of one training step, beside the analytic state size."""

    kind: Literal["memory"]
    mode: Literal["inference", "training"] = "inference"
    batch_sizes: list[PositiveInt] = [1]
    prompt_lengths: list[PositiveInt] = [128]
    new_tokens: Annotated[int, Field(ge=1)] = 8


class MemoryRunner(ModelRunner[MemoryTask]):
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

    def measure(self, pt: Point) -> list[Record]:
        task = self.task
        batch, prompt_len = pt.params["batch"], pt.params["prompt_len"]
        self.check_length(prompt_len + (task.new_tokens if task.mode == "inference" else 0))
        ids = seeded_tokens((batch, prompt_len), self.model.vocab_size, self.job.seed, self.job.device)
        try:
            if task.mode == "training":
                values = self._measured(self._training_step_peak(ids))
            else:
                whole, decode = self._generation_peaks(ids, task.new_tokens)
                context = prompt_len + task.new_tokens
                state = self.model.ref.spec.state_bytes_per_sequence(context, dtype_bytes(self.model.ref.dtype))
                values = self._measured(whole) | {f"decode_{k}": v for k, v in self._measured(decode).items()
                                                  if k.startswith("peak_")} | {"state_mib": mib(state * batch)}
        finally:
            free_memory(self.job.device)
        values["weights_mib"] = mib(self.model.n_params * dtype_bytes(self.model.ref.dtype))
        fields: dict[str, Any] = {"cuda_graphs": False, "slice": dict(pt.params)}
        if task.mode == "inference":
            fields["slice"]["new_tokens"] = task.new_tokens
        else:
            fields["extra"] = {"autocast": self.autocast_dtype, "optimizer": "AdamW"}
        return [self.record(pt, metric=name, value=value, unit="MiB", higher_is_better=False, **fields)
                for name, value in values.items()]

    def _measured(self, probe: PeakMemory) -> dict[str, float]:
        if self.job.device == "cuda":
            out = {"peak_alloc_mib": mib(probe.peak_bytes), "work_alloc_mib": mib(probe.growth_bytes),
                   "peak_reserved_mib": mib(probe.peak_reserved_bytes or 0)}
            if probe.nvml_used_bytes is not None:
                out["nvml_used_mib"] = mib(probe.nvml_used_bytes)
            return out
        return {"peak_rss_mib": mib(probe.peak_bytes), "work_rss_mib": mib(probe.growth_bytes)}

    def _generation_peaks(self, ids: Any, new_tokens: int) -> tuple[PeakMemory, PeakMemory]:
        """Peaks over the whole generation and over its decode steps alone. The prompt pass's activations
        (which grow with the prompt for both families) dominate the first; the second is weights plus the
        KV cache or SSM state plus one step's activations: where the two families differ."""
        import torch

        device = self.job.device
        with torch.inference_mode():
            decoder = self.model.decoder(ids.shape[0], ids.shape[1] + new_tokens, cuda_graphs=False)
            if device == "cuda":
                # Warm up so lazy one-off buffers are counted at their steady size; torch's peak counter is
                # exact whatever the caching allocator holds. (On the CPU, RSS only grows when memory comes
                # from the OS, so the cold first generation is the one that shows its needs.)
                decoder.generate(ids, new_tokens)
                self.on_progress(0.5)
            decoder.start()
            with PeakMemory(device) as prefill:
                first = decoder.prefill(ids)
            with PeakMemory(device) as decode:
                decoder.decode(first, new_tokens - 1)
            del decoder
        return prefill.then(decode), decode

    def _training_step_peak(self, ids: Any) -> PeakMemory:
        import torch

        module = self.model.module
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        half = self.autocast_dtype in ("float16", "bfloat16")
        autocast = (torch.autocast(device_type=self.job.device, dtype=torch_dtype(self.autocast_dtype))
                    if half else contextlib.nullcontext())
        try:
            with PeakMemory(self.job.device) as probe:
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


def plot_memory(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Peak memory of the decode steps vs prompt length, a line per model (a figure per batch size), the
    analytic state size dotted beside it."""
    ok = frame[frame["status"] == "ok"]
    # The decode-only peak is where the families differ (KV cache vs fixed state); older runs lack it.
    present = set(ok["metric"])
    measured = next((m for m in ("decode_peak_alloc_mib", "peak_alloc_mib", "decode_peak_rss_mib", "peak_rss_mib")
                     if m in present), "peak_rss_mib")
    lines = ((measured, "-", measured.removesuffix("_mib").replace("_", " ")), ("state_mib", ":", "analytic state"))
    colour = model_colours(frame)
    paths = []
    for batch, by_batch in ok.groupby("slice.batch"):
        series = []
        for model, g in by_batch.groupby("model", sort=False):
            for metric, style, suffix in lines:
                m = g[g["metric"] == metric].sort_values("slice.prompt_len")
                if not m.empty:
                    series.append((f"{model} {suffix}", list(m["slice.prompt_len"]), list(m["value"]),
                                   colour[model] + style))
        if series and by_batch["slice.prompt_len"].nunique() > 1:
            paths.append(line_plot(out / f"{task}_memory_batch{int(batch)}.png",
                                    f"{task}: memory vs prompt length, batch {int(batch)}",
                                    "prompt length (tokens)", "MiB", series))
    return paths


KIND = Kind(
    name="memory",
    task=MemoryTask,
    runner=MemoryRunner,
    description="peak memory of generation or of a training step, beside the analytic KV-cache/SSM-state size",
    metric_order=("peak_alloc_mib", "decode_peak_alloc_mib", "work_alloc_mib", "peak_reserved_mib",
                  "decode_peak_reserved_mib", "nvml_used_mib", "peak_rss_mib", "decode_peak_rss_mib",
                  "work_rss_mib", "state_mib", "weights_mib"),
    plotter=plot_memory,
)
