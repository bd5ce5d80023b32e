"""kind: throughput — greedy generation with prefill and decode timed apart.

Per point (batch, prompt length, CUDA graphs on/off): `warmup` untimed generations, then `repeats` timed
ones. Each repeat times the prompt pass (prefill) and the `new_tokens - 1` single-token steps that follow
(decode) as two regions on the device clock. Reported as medians with their spread:

- prefill_ms            time of the prompt pass, which also yields the first new token
- decode_tok_s          batch * (new_tokens - 1) / decode time: the steady-state generation rate
- decode_ms_per_token   decode time / (new_tokens - 1): per-token latency
- generate_tok_s        batch * new_tokens / (prefill + decode): end to end, the Mamba paper's measure
- achieved_gb_s, bandwidth_fraction, roofline_tok_s: decode seen as a memory-bound loop (see _roofline)

With `library_baseline`, extra points (impl=library) time the backend library's own generate() end to end
(mamba_ssm's `generate(cg=...)`, transformers' `generate`) on the same prompts, as the reference that
ssmbench's own loop must match.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PositiveInt

from ssmbench.env import device_label
from ssmbench.errors import JobError
from ssmbench.jobs import Point, TaskBase, point
from ssmbench.kinds.base import Kind, ModelRunner, SkipPoint
from ssmbench.measure import dtype_bytes, free_memory, peak_bandwidth, seeded_tokens, timed_ms
from ssmbench.models import choose_backend
from ssmbench.models.base import Decoder, NoGraphDecoding
from ssmbench.records import Record, summarised
from ssmbench.report.plots import Line, line_plot, model_colours, own_error_bars
from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    import pandas as pd


class ThroughputTask(TaskBase):
    """Greedy generation with prefill and decode timed apart, over a grid of batch sizes and prompt lengths.

    Exactly `new_tokens` tokens are generated (no early stop), the way the Mamba paper measures.
    """

    kind: Literal["throughput"]
    batch_sizes: list[PositiveInt] = [1]  # sequences decoded together, one point each
    prompt_lengths: list[PositiveInt] = [128]  # prompt tokens, one point each
    new_tokens: Annotated[int, Field(ge=2)] = 32  # tokens generated, exactly this many: no early stop
    warmup: Annotated[int, Field(ge=0)] = 1  # untimed generations before the timed ones
    repeats: Annotated[int, Field(ge=1)] = 5  # timed generations per point: the median and its spread are reported
    # auto: with and without graphs on CUDA, without on CPU
    cuda_graphs: Literal["auto"] | bool | list[bool] = "auto"
    # also time the library's own generate() (mamba_ssm cg=True, transformers generate) as a reference row
    library_baseline: bool = False


def graph_settings(task: ThroughputTask, device: str) -> list[bool]:
    """The CUDA-graph settings to sweep: 'auto' is both on CUDA and off on the CPU."""
    value = task.cuda_graphs
    if value == "auto":
        return [False, True] if device == "cuda" else [False]
    return list(value) if isinstance(value, list) else [bool(value)]


class ThroughputRunner(ModelRunner[ThroughputTask]):
    @classmethod
    def points(cls, task: ThroughputTask, model: ResolvedModel | None, device: str) -> list[Point]:
        graphs = graph_settings(task, device)
        grid = [(b, p) for b in task.batch_sizes for p in task.prompt_lengths]
        pts = [point(batch=b, prompt_len=p, cuda_graphs=g, impl="ssmbench") for b, p in grid for g in graphs]
        if task.library_baseline and model is not None:
            try:
                backend = choose_backend(model)[0]
            except JobError:  # the job will fail at setup with this error; its points still need naming
                backend = "hf"
            # transformers' generate has no graph path short of torch.compile: it is timed eager only.
            lib_graphs = [g for g in graphs if backend == "mamba_ssm" or not g]
            pts += [point(batch=b, prompt_len=p, cuda_graphs=g, impl="library") for b, p in grid for g in lib_graphs]
        return pts

    @classmethod
    def needs(cls, task: ThroughputTask, model: ResolvedModel | None, device: str) -> list[str]:
        return ["CUDA"] if True in graph_settings(task, device) else []

    def measure(self, pt: Point) -> list[Record]:
        import torch

        task = self.task
        batch, prompt_len, graphs = pt.params["batch"], pt.params["prompt_len"], pt.params["cuda_graphs"]
        self.check_length(prompt_len + task.new_tokens)
        ids = seeded_tokens((batch, prompt_len), self.model.vocab_size, self.job.seed, self.job.device)
        # A graph is captured during the first generation: that one is never timed.
        warmup = max(task.warmup, 1) if graphs else task.warmup
        # cuda_graphs stays in the slice alone: the point varies it
        fields = {"slice": {**pt.params, "new_tokens": task.new_tokens}}
        with torch.inference_mode():
            if pt.params["impl"] == "library":
                fields["extra"] = {"params": self.model.n_params, "library": self.model.library_generate_label}
                return self._time_library(pt, ids, warmup, fields)
            return self._time_decoder(pt, ids, warmup, fields)

    def _time_decoder(self, pt: Point, ids: Any, warmup: int, fields: dict[str, Any]) -> list[Record]:
        task = self.task
        batch, new = ids.shape[0], task.new_tokens
        try:
            decoder = self.model.decoder(batch, ids.shape[1] + new, pt.params["cuda_graphs"])
        except NoGraphDecoding as exc:
            raise SkipPoint(str(exc)) from None
        try:
            prefill_ms, decode_ms = self._repeat(decoder, ids, warmup)
        finally:
            del decoder  # its caches and graph go before the next point allocates its own
            free_memory(self.job.device)
        steps = new - 1
        decode_rates = [batch * steps / (t / 1e3) for t in decode_ms]
        end_to_end = [batch * new / ((p + d) / 1e3) for p, d in zip(prefill_ms, decode_ms, strict=True)]
        return [
            self.record(pt, **summarised("prefill_ms", prefill_ms, "ms", False), **fields),
            self.record(pt, **summarised("decode_tok_s", decode_rates, "tok/s", True), **fields),
            self.record(pt, **summarised("decode_ms_per_token", [t / steps for t in decode_ms], "ms", False),
                        **fields),
            self.record(pt, **summarised("generate_tok_s", end_to_end, "tok/s", True), **fields),
            *self._roofline(pt, [t / steps for t in decode_ms], fields),
        ]

    def _roofline(self, pt: Point, step_ms: list[float], fields: dict[str, Any]) -> list[Record]:
        """Decode as a memory-bound loop: the bytes one step must read (all weights, plus each sequence's KV
        cache or SSM state at the mean context of the decode) over the step time, against the GPU's
        datasheet bandwidth; `roofline_tok_s` is the rate at that peak (an analytic limit, not measured)."""
        spec, dtype = self.model.ref.spec, self.model.ref.dtype
        batch, new = pt.params["batch"], self.task.new_tokens
        context = pt.params["prompt_len"] + new // 2
        step_bytes = (self.model.n_params * dtype_bytes(dtype)
                      + batch * spec.decode_state_traffic_bytes(context, dtype_bytes(dtype)))
        fields = {**fields, "extra": {"bytes_per_step": step_bytes, "mean_context": context}}
        achieved = [step_bytes / (t / 1e3) / 1e9 for t in step_ms]
        out = [self.record(pt, **summarised("achieved_gb_s", achieved, "GB/s", True), **fields)]
        peak = peak_bandwidth(device_label(self.job.device))
        if peak is not None:
            out += [
                self.record(pt, **summarised("bandwidth_fraction", [a * 1e9 / peak for a in achieved], "of peak",
                                             True), **fields),
                self.record(pt, metric="roofline_tok_s", value=batch * peak / step_bytes, unit="tok/s",
                            higher_is_better=True, **fields | {"extra": fields["extra"] | {"peak_b_s": peak}}),
            ]
        return out

    def _repeat(self, decoder: Decoder, ids: Any, warmup: int) -> tuple[list[float], list[float]]:
        """Prefill and decode times (ms) of each timed repeat."""
        task = self.task
        prefill_ms: list[float] = []
        decode_ms: list[float] = []
        for i in range(warmup + task.repeats):
            decoder.start()
            first, t_prefill = timed_ms(lambda: decoder.prefill(ids), self.job.device)
            _, t_decode = timed_ms(lambda first=first: decoder.decode(first, task.new_tokens - 1), self.job.device)
            if i >= warmup:
                prefill_ms.append(t_prefill)
                decode_ms.append(t_decode)
            self.on_progress((i + 1) / (warmup + task.repeats))
        return prefill_ms, decode_ms

    def _time_library(self, pt: Point, ids: Any, warmup: int, fields: dict[str, Any]) -> list[Record]:
        task = self.task
        batch, new = ids.shape[0], task.new_tokens
        total_ms: list[float] = []
        for i in range(warmup + task.repeats):
            out, t = timed_ms(lambda: self.model.library_generate(ids, new, pt.params["cuda_graphs"]),
                              self.job.device)
            if out.shape[1] != new:
                raise RuntimeError(f"{self.model.library_generate_label} gave {out.shape[1]} tokens, not {new}")
            if i >= warmup:
                total_ms.append(t)
            self.on_progress((i + 1) / (warmup + task.repeats))
        free_memory(self.job.device)
        rates = [batch * new / (t / 1e3) for t in total_ms]
        return [self.record(pt, **summarised("generate_tok_s", rates, "tok/s", True), **fields)]


def plot_throughput(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Decode tok/s vs batch size, log-log, a colour per model, graphs on solid / off dashed (a library's
    own generate() dotted), one figure per prompt length."""
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == "decode_tok_s")]
    if ok.empty or "slice.batch" not in ok or "slice.impl" not in ok:
        return []
    colour = model_colours(frame)
    paths = []
    for prompt_len, by_prompt in ok.groupby("slice.prompt_len"):
        series = []
        for (model, graphs, impl), g in by_prompt.groupby(["model", "cuda_graphs", "slice.impl"], sort=False):
            g = g.sort_values("slice.batch")
            label = f"{model} ({'graphs' if graphs else 'eager'}{'' if impl == 'ssmbench' else ', ' + impl})"
            style = colour[model] + ("-" if graphs else "--" if impl == "ssmbench" else ":")
            series.append(Line(label, list(g["slice.batch"]), list(g["value"]), style, yerr=own_error_bars(g)))
        if series:
            paths.append(line_plot(out / f"{task}_decode_tok_s_prompt{int(prompt_len)}.png",
                                    f"{task}: decode throughput, prompt {int(prompt_len)}",
                                    "batch size", "decode tokens / s", series))
    return paths


KIND = Kind(
    name="throughput",
    task=ThroughputTask,
    runner=ThroughputRunner,
    description="prefill latency and decode throughput of greedy generation, eager and with CUDA graphs",
    metric_order=("decode_tok_s", "generate_tok_s", "prefill_ms", "decode_ms_per_token", "achieved_gb_s",
                  "bandwidth_fraction", "roofline_tok_s"),
    glossary={"decode_tok_s": "batch × (new tokens − 1) / decode time: the steady generation rate, prompt pass excluded",
              "generate_tok_s": "batch × new tokens / (prompt pass + decode): end to end, the Mamba paper's measure",
              "prefill_ms": "the prompt pass, which also yields the first new token",
              "decode_ms_per_token": "decode time / (new tokens − 1): the latency of one step",
              "achieved_gb_s": "the bytes one decode step must read (all weights, plus each sequence's KV cache or SSM "
                               "state at the decode's mean context) over the step's time: a lower bound on traffic",
              "bandwidth_fraction": "achieved_gb_s over the GPU's datasheet memory bandwidth",
              "roofline_tok_s": "the decode rate at the datasheet bandwidth for those bytes: an analytic limit, "
                                "not a measurement"},
    plotter=plot_throughput,
)
