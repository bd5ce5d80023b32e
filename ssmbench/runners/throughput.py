"""kind: throughput — greedy generation with prefill and decode timed apart.

Per point (batch, prompt length, CUDA graphs on/off): `warmup` untimed generations, then `repeats` timed
ones. Each repeat times the prompt pass (prefill) and the `new_tokens - 1` single-token steps that follow
(decode) as two regions on the device clock. Reported as medians with their spread:

- prefill_ms            time of the prompt pass, which also yields the first new token
- decode_tok_s          batch * (new_tokens - 1) / decode time: the steady-state generation rate
- decode_ms_per_token   decode time / (new_tokens - 1): per-token latency
- generate_tok_s        batch * new_tokens / (prefill + decode): end to end, the Mamba paper's measure

With `library_baseline`, extra points (impl=library) time the backend library's own generate() end to end
(mamba_ssm's `generate(cg=...)`, transformers' `generate`) on the same prompts, as the reference that
ssmbench's own loop must match.
"""

from __future__ import annotations

from typing import Any

from ssmbench.measure import free_memory, seeded_tokens, timed_ms
from ssmbench.plan import Point, point
from ssmbench.records import Record, summarised
from ssmbench.registry import ResolvedModel
from ssmbench.runners.base import ModelRunner
from ssmbench.spec import ThroughputTask


def graph_settings(task: ThroughputTask, device: str) -> list[bool]:
    """The CUDA-graph settings to sweep: 'auto' is both on CUDA and off on the CPU."""
    value = task.cuda_graphs
    if value == "auto":
        return [False, True] if device == "cuda" else [False]
    return list(value) if isinstance(value, list) else [bool(value)]


class ThroughputRunner(ModelRunner):
    kind = "throughput"

    @classmethod
    def points(cls, task: ThroughputTask, model: ResolvedModel | None, device: str) -> list[Point]:
        from ssmbench.models import choose_backend

        graphs = graph_settings(task, device)
        grid = [(b, p) for b in task.batch_sizes for p in task.prompt_lengths]
        pts = [point(batch=b, prompt_len=p, cuda_graphs=g, impl="ssmbench") for b, p in grid for g in graphs]
        if task.library_baseline and model is not None:
            try:
                backend = choose_backend(model)[0]
            except Exception:
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

        task: ThroughputTask = self.job.task
        batch, prompt_len, graphs = pt.params["batch"], pt.params["prompt_len"], pt.params["cuda_graphs"]
        self.check_length(prompt_len + task.new_tokens)
        ids = seeded_tokens((batch, prompt_len), self.model.vocab_size, self.job.seed, self.job.device)
        # A graph is captured during the first generation: that one is never timed.
        warmup = max(task.warmup, 1) if graphs else task.warmup
        fields = {"slice": {**pt.params, "new_tokens": task.new_tokens}, "cuda_graphs": graphs}
        with torch.inference_mode():
            if pt.params["impl"] == "library":
                fields["extra"] = {"params": self.model.n_params, "library": self.model.library_generate_label}
                return self._time_library(pt, ids, warmup, fields)
            return self._time_decoder(pt, ids, warmup, fields)

    def _time_decoder(self, pt: Point, ids: Any, warmup: int, fields: dict[str, Any]) -> list[Record]:
        task: ThroughputTask = self.job.task
        batch, new, device = ids.shape[0], task.new_tokens, self.job.device
        decoder = self.model.decoder(batch, ids.shape[1] + new, pt.params["cuda_graphs"])
        prefill_ms: list[float] = []
        decode_ms: list[float] = []
        try:
            for i in range(warmup + task.repeats):
                decoder.start()
                first, t_prefill = timed_ms(lambda: decoder.prefill(ids), device)
                _, t_decode = timed_ms(lambda first=first: decoder.decode(first, new - 1), device)
                if i >= warmup:
                    prefill_ms.append(t_prefill)
                    decode_ms.append(t_decode)
                self.on_progress((i + 1) / (warmup + task.repeats))
        finally:
            del decoder
            free_memory(device)
        steps = new - 1
        return [
            self.record(pt, **summarised("prefill_ms", prefill_ms, "ms", False), **fields),
            self.record(pt, **summarised("decode_tok_s", [batch * steps / (t / 1e3) for t in decode_ms],
                                         "tok/s", True), **fields),
            self.record(pt, **summarised("decode_ms_per_token", [t / steps for t in decode_ms], "ms", False),
                        **fields),
            self.record(pt, **summarised("generate_tok_s", [batch * new / ((p + d) / 1e3)
                                                            for p, d in zip(prefill_ms, decode_ms)],
                                         "tok/s", True), **fields),
        ]

    def _time_library(self, pt: Point, ids: Any, warmup: int, fields: dict[str, Any]) -> list[Record]:
        task: ThroughputTask = self.job.task
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
