"""kind: generate — every model's continuation of the suite's prompts, and how fast it came.

A point is (prompt, mode): greedy, or sampled with one seed. The prompt is encoded by the model's own
tokenizer, unpadded, batch 1, and continued for `max_new_tokens` through the backend's Decoder (the loop
the throughput kind times: fused kernels on CUDA, the decode step from a CUDA graph when asked, which
sampling never is: its generator would have to be registered with the graph). One record per point:

    generate_tok_s   new tokens / time of prefill + decode on the device's clock (median of `repeats`
                     greedy runs, after one untimed run that also captures the graph; one run when sampled)

with the continuation in `extra`: `text` cut at the first `until`, `raw` uncut, whether `until` appeared,
the prompt's token count and, when sampled, the seed, temperature and top_k. The tables set the models'
texts side by side per prompt.
"""

from __future__ import annotations

from typing import Any

from ssmbench.jobs import Point, point
from ssmbench.kinds.base import TextRunner
from ssmbench.kinds.generate.task import GenerateTask
from ssmbench.measure import timed_ms
from ssmbench.records import Record, summarised
from ssmbench.zoo import ResolvedModel


class GenerateRunner(TextRunner[GenerateTask]):
    @classmethod
    def points(cls, task: GenerateTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(prompt=name, mode=mode, **({"sample_seed": seed} if seed is not None else {}))
                for name in task.prompts for mode, seed in task.modes()]

    def measure(self, pt: Point) -> list[Record]:
        import torch

        from ssmbench.models.base import Sampler
        from ssmbench.models.generate import encode

        task, device = self.task, self.job.device
        text = task.prompts[pt.params["prompt"]]
        ids = encode(self.tokenizer, text)
        self.check_context(len(ids))
        sampled = pt.params["mode"] == "sampled"
        graphs = self.graphs() and not sampled
        decoder = self.model.decoder(1, len(ids) + task.max_new_tokens, graphs)
        prompt = torch.tensor([ids], dtype=torch.long, device=device)
        extra: dict[str, Any] = {"prompt": text, "prompt_tokens": len(ids),
                                 "new_tokens": task.max_new_tokens}
        if sampled:
            assert task.sampling is not None
            generator = torch.Generator(device=device).manual_seed(pt.params["sample_seed"])
            decoder.sample_with(Sampler(task.sampling.temperature, task.sampling.top_k, generator))
            extra |= {"temperature": task.sampling.temperature, "top_k": task.sampling.top_k}
            new, ms = self._generate(decoder, prompt)
            times = [ms]
        else:
            new, _ = self._generate(decoder, prompt)  # untimed: the graph's capture, the allocator's first sizes
            times = [self._generate(decoder, prompt)[1] for _ in range(task.repeats)]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        shown, found, _ = raw.partition(task.until) if task.until else (raw, "", "")
        extra |= {"text": shown, "raw": raw, "stopped": bool(found)}
        rates = [task.max_new_tokens / (ms / 1e3) for ms in times]
        return [self.record(pt, **summarised("generate_tok_s", rates, "tok/s", True), cuda_graphs=graphs,
                            extra=extra)]

    def _generate(self, decoder: Any, prompt: Any) -> tuple[list[int], float]:
        """The new tokens of one generation and its milliseconds on the device's clock (measure.timed_ms)."""
        import torch

        with torch.inference_mode():
            new, ms = timed_ms(lambda: decoder.generate(prompt, self.task.max_new_tokens), self.job.device)
        return new[0].tolist(), ms
