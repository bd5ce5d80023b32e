"""kind: finetune — one fine-tuning step of a zoo model, full and LoRA, timed and measured.

A point is (method, batch, seq_len). The model is held in float32 (master weights) and the step runs under
autocast to the suite's dtype where that is half precision, as models of this size are fine-tuned: forward,
next-token cross-entropy over random tokens, backward, AdamW over the trainable parameters. After
`warmup_steps` untimed steps (the optimizer's state is made in the first), `steps` steps are timed on the
device's clock. LoRA wraps the model with peft (`LoraConfig(target_modules=<the family's targets>)`), and
before it is timed every target is checked to reach the output: an adapter the kernel path never calls (a
fused kernel that reads a projection's weight directly) would be trained for nothing and cost nothing, so
that point fails and says which target, rather than report a cost that is not LoRA's.

Records per point: step_ms and train_tok_s (over the timed steps), peak_alloc_mib (CUDA: the allocator's
peak over the timed steps, weights, gradients, optimizer state and activations), trainable_params; the
record's dtype is the step's precision (the autocast dtype; the master weights are float32, said in
extra), extra says the method, the model's class, LoRA's targets, rank and alpha; the kernel field says
which path the mixer ran. Full fine-tuning changes the weights the later points start from:
the cost does not depend on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from ssmbench.errors import JobError
from ssmbench.jobs import Point, point
from ssmbench.kinds.base import ModelRunner
from ssmbench.kinds.finetune.task import FinetuneTask
from ssmbench.measure import free_memory, mib, seeded_tokens, timed_ms
from ssmbench.records import Record, summarised
from ssmbench.zoo import ResolvedModel


class FinetuneRunner(ModelRunner[FinetuneTask]):
    _peft: Any = None  # the peft wrapper while the model carries LoRA adapters

    @classmethod
    def points(cls, task: FinetuneTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(method=m, batch=b, seq_len=n) for m in task.methods for b in task.batch_sizes for n in task.seq_lens]

    def model_to_load(self) -> ResolvedModel:
        """float32 master weights; the suite's dtype becomes the autocast dtype."""
        return dataclasses.replace(super().model_to_load(), dtype="float32")

    @property
    def autocast_dtype(self) -> str:
        assert self.job.model is not None
        return self.job.model.dtype

    def measure(self, pt: Point) -> list[Record]:
        batch, seq_len, method = pt.params["batch"], pt.params["seq_len"], pt.params["method"]
        self.check_length(seq_len)
        module = self._prepare(method)
        trainable = [p for p in module.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in trainable)
        ids = seeded_tokens((batch, seq_len), self.model.vocab_size, self.job.seed, self.job.device)
        try:
            times, peak = self._steps(module, trainable, ids)
        finally:
            free_memory(self.job.device)
        tokens = batch * seq_len
        extra = {"method": method, "model_class": type(self.model.module).__name__, "master_weights": "float32",
                 "optimizer": "AdamW", "lr": self.task.lr, "total_params": self.model.n_params,
                 "trainable_pct": round(100 * n_trainable / self.model.n_params, 4)}
        if method == "lora":
            lora = self.task.lora
            extra |= {"lora_targets": self._targets(), "lora_r": lora.r, "lora_alpha": lora.alpha}
        common = {"cuda_graphs": False, "dtype": self.autocast_dtype, "extra": extra}  # the step's precision
        records = [self.record(pt, **summarised("step_ms", times, "ms", False), **common),
                   self.record(pt, **summarised("train_tok_s", [tokens / (t / 1e3) for t in times], "tok/s", True),
                               **common),
                   self.record(pt, metric="trainable_params", value=float(n_trainable),
                               unit="params", higher_is_better=None, **common)]
        if peak is not None:
            records.append(self.record(pt, metric="peak_alloc_mib", value=mib(peak), unit="MiB",
                                       higher_is_better=False, **common))
        return records

    def _targets(self) -> list[str]:
        assert self.job.model is not None
        arch = self.job.model.spec.arch
        targets = self.task.lora.targets_for(arch)
        if not targets:
            raise JobError(f"{self.job.id}: lora.targets names no modules for architecture {arch!r}; "
                           f"add e.g. `lora: {{targets: {{{arch}: [...]}}}}` to the task")
        return targets

    def _prepare(self, method: str) -> Any:
        """The module to train for `method`: the bare model with every weight trainable, or the model with
        LoRA adapters (peft) where only they train; switching unloads or adds the adapters."""
        if method == "full":
            if self._peft is not None:
                self.model.module = self._peft.unload()
                self._peft = None
            for p in self.model.module.parameters():
                p.requires_grad_(True)
            return self.model.module
        if self._peft is None:
            from peft import LoraConfig, get_peft_model

            lora = self.task.lora
            config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=self._targets(), bias="none")
            self._peft = get_peft_model(self.model.module, config)
            self._check_adapters_reach_the_output()
        return self._peft

    def _check_adapters_reach_the_output(self) -> None:
        """Each target's adapters, switched on alone (their B made non-zero), must change the logits."""
        import torch

        ids = seeded_tokens((1, 16), self.model.vocab_size, self.job.seed, self.job.device)
        peft_model = self._peft
        peft_model.eval()
        with torch.no_grad():
            with peft_model.disable_adapter():
                base = peft_model(ids).logits
            bypassed = []
            for target in self._targets():
                b_weights = [m.lora_B["default"].weight for name, m in peft_model.named_modules()
                             if hasattr(m, "lora_B") and "default" in m.lora_B and name.split(".")[-1] == target]
                for weight in b_weights:
                    weight.normal_(0, 0.02)
                changed = bool(b_weights) and not torch.equal(peft_model(ids).logits, base)
                for weight in b_weights:
                    weight.zero_()  # peft's own initialisation: B = 0, the adapted model starts as the base
                if not changed:
                    bypassed.append(target)
        if bypassed:
            raise JobError(f"{self.job.id}: LoRA on {', '.join(bypassed)} never reaches the output on this kernel "
                           f"path ({self.model.kernel}): the fused kernel reads the weight directly, so the adapter "
                           "would cost nothing and learn nothing; leave it out of lora.targets for this family")

    def _steps(self, module: Any, trainable: list[Any], ids: Any) -> tuple[list[float], int | None]:
        import torch

        from ssmbench.models.common import torch_dtype

        device = self.job.device
        optimizer = torch.optim.AdamW(trainable, lr=self.task.lr)
        half = self.autocast_dtype in ("float16", "bfloat16")
        precision = (torch.autocast(device_type=device, dtype=torch_dtype(self.autocast_dtype))
                     if half else contextlib.nullcontext())
        module.train()

        def step() -> None:
            with precision:
                logits = module(ids).logits
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            for _ in range(self.task.warmup_steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times = [timed_ms(step, device)[1] for _ in range(self.task.steps)]
            peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        finally:
            module.eval()  # the optimizer and its state go with this frame, before the caller frees memory
        return times, peak

    def teardown(self) -> None:
        self._peft = None
        super().teardown()
