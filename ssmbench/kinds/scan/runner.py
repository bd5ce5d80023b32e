"""kind: scan — the sequence-mixing kernels alone, without a model around them (Mamba paper §4.5, Fig. 8 left).

Three ways to mix `d_inner` channels along `seq_len` tokens, at batch `batch`, in the task's dtype:

- selective_scan_cuda  mamba_ssm's fused kernel, called as Mamba's block calls it:
                       `selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)` with
                       selective (per-token) B and C and the z gate fused in. Kernel label
                       `mamba_ssm.selective_scan_cuda`. Needs CUDA and mamba_ssm's extension, else skipped.
- attention_sdpa       causal `scaled_dot_product_attention` over the same channels: d_inner / head_dim heads
                       of head_dim. The backend is pinned so the record can say what ran: flash on CUDA
                       (`torch.sdpa-flash`, FlashAttention-2 inside torch), the math path on the CPU
                       (`torch.sdpa-math`).
- scan_reference       `reference_scan` below: mamba_ssm's `selective_scan_ref`, sequential over L in plain
                       PyTorch (the "standard PyTorch scan"), `torch.reference-scan`. It costs tens of
                       microseconds of launches per token, so lengths above `reference_max_len` are skipped.

Inputs are fresh random tensors for each point (seeded, never zeros), shaped and scaled as in mamba_ssm's
own tests: u, delta, z (batch, d_inner, L) and B, C (batch, d_state, L) in the task's dtype; A (d_inner,
d_state) negative, D and delta_bias (d_inner,) in float32. Attention gets q, k, v (batch, heads, L,
head_dim). `forward` times one call; `forward_backward` times the call plus the gradients of every input
for a random output gradient (torch.autograd.grad, so nothing accumulates between repeats).

Per point, `warmup` untimed calls, then `repeats` calls timed one by one with measure.timed_ms (CUDA
events: a call's time includes its own host-side launch latency, which matters only at the shortest
lengths). Metrics, as medians with their spread:

- ms    time of one pass
- gb_s  achieved bandwidth: the least number of bytes the pass must move, over its time. The byte model
        is the same for all three implementations, counted from the actual tensors:
          forward           read every input once, write the output once.
                            scan: u, delta, z (B·D·L each) and B, C (B·N·L each), in the dtype; A (D·N),
                            D and delta_bias (D each), float32; out (B·D·L).
                            attention: q, k, v (B·L·D each, as heads·head_dim = D); o (B·L·D).
          forward_backward  the forward's bytes, plus a backward that reads every input and the output's
                            gradient once and writes one gradient per input (each the size of its input).
        Real kernels move more (the fused scan also writes the ungated output and chunk states for its
        backward; flash attention re-reads K and V for every block of queries and is compute bound at
        long lengths), so gb_s is a lower bound of the traffic: a roofline position, not a kernel's count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ssmbench.jobs import Point, point
from ssmbench.kinds.base import Runner, SkipPoint
from ssmbench.kinds.scan.task import ScanTask
from ssmbench.measure import free_memory, timed_ms
from ssmbench.records import Record, summarised
from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    from torch import Tensor

KERNELS = {"selective_scan_cuda": "mamba_ssm.selective_scan_cuda", "scan_reference": "torch.reference-scan"}
SDPA_KERNELS = {"cuda": "torch.sdpa-flash", "cpu": "torch.sdpa-math"}


@dataclass
class Workload:
    """One point's prepared work: the call to time, what runs it, and the bytes it must at least move."""

    kernel: str
    n_bytes: int
    run: Callable[[], None]
    # entered once around all the calls (the SDPA backend pin), so its cost stays out of the timings
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    extra: dict[str, Any] = field(default_factory=dict)


class ScanRunner(Runner[ScanTask]):
    @classmethod
    def points(cls, task: ScanTask, model: ResolvedModel | None, device: str) -> list[Point]:
        # Impls innermost: a partial run still has complete rows of the table.
        return [point(impl=impl, **{"pass": mode}, d_inner=d, seq_len=length)
                for mode in task.passes for d in task.d_inner for length in task.seq_lengths
                for impl in task.impls]

    @classmethod
    def needs(cls, task: ScanTask, model: ResolvedModel | None, device: str) -> list[str]:
        return ["CUDA", "mamba_ssm kernels"] if "selective_scan_cuda" in task.impls else []

    def record(self, point: Point, **fields: Any) -> Record:
        """Every record of this kind, failures included, carries the whole shape in its slice (the dtype,
        fixed for the task, in its field)."""
        task = self.task
        fields.setdefault("slice", {**point.params, "batch": task.batch, "d_state": task.d_state})
        fields.setdefault("dtype", task.dtype)
        return super().record(point, **fields)

    def measure(self, pt: Point) -> list[Record]:
        self._check_runs_here(pt.params["impl"], pt.params["seq_len"])
        work = self._workload(pt.params)
        samples = self._time(work)
        kernel, n_bytes, extra = work.kernel, work.n_bytes, work.extra | {"bytes": work.n_bytes}
        del work  # its closures hold the tensors: drop them before handing the cache back
        free_memory(self.job.device)
        gb_s = [n_bytes / ms / 1e6 for ms in samples]
        return [self.record(pt, **summarised("ms", samples, "ms", False), kernel=kernel, extra=extra),
                self.record(pt, **summarised("gb_s", gb_s, "GB/s", True), kernel=kernel, extra=extra)]

    def _check_runs_here(self, impl: str, seq_len: int) -> None:
        from ssmbench.models.kernels import fused_mamba_kernels

        task = self.task
        device = self.job.device
        if impl == "scan_reference" and seq_len > task.reference_max_len:
            raise SkipPoint(f"scan_reference: L={seq_len} is above reference_max_len={task.reference_max_len} "
                            "(a Python loop over L, tens of microseconds a step)")
        if impl == "selective_scan_cuda":
            kernels = fused_mamba_kernels()
            if not kernels:
                raise SkipPoint(f"needs CUDA and mamba_ssm's kernels: {kernels.reason}")
            if device != "cuda":
                raise SkipPoint(f"needs CUDA and mamba_ssm's kernels: the suite runs on {device}")
        if impl == "attention_sdpa" and device == "cuda" and task.dtype == "float32":
            raise SkipPoint("attention_sdpa: torch's flash attention has no float32 kernel; "
                            "use dtype bfloat16 or float16")

    def _workload(self, params: dict[str, Any]) -> Workload:
        task = self.task
        impl, backward = params["impl"], params["pass"] == "forward_backward"
        shape = dict(batch=task.batch, d_inner=params["d_inner"], seq_len=params["seq_len"])
        seed = self.job.seed
        common = dict(dtype=task.dtype, device=self.job.device, seed=seed, requires_grad=backward)
        if impl == "attention_sdpa":
            return attention_workload(attention_inputs(**shape, head_dim=task.head_dim, **common), backward, seed)
        fn = fused_scan_fn() if impl == "selective_scan_cuda" else reference_scan
        inputs = scan_inputs(**shape, d_state=task.d_state, **common)
        return scan_workload(fn, KERNELS[impl], inputs, backward, seed)

    def _time(self, work: Workload) -> list[float]:
        task = self.task
        total = task.warmup + task.repeats
        samples = []
        with work.context():
            for i in range(total):
                _, ms = timed_ms(work.run, self.job.device)
                if i >= task.warmup:
                    samples.append(ms)
                self.on_progress((i + 1) / total)
        return samples


# --- inputs -------------------------------------------------------------------------------------------

def _generator(device: str, seed: int) -> Any:
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def scan_inputs(batch: int, d_inner: int, d_state: int, seq_len: int, dtype: str, device: str, seed: int,
                requires_grad: bool = False) -> dict[str, Tensor]:
    """selective_scan_fn's arguments by name, drawn as mamba_ssm's tests/ops/test_selective_scan.py draws
    them: A = -0.5·U(0,1) (a stable decay), delta and delta_bias 0.5·U(0,1), the rest standard normal."""
    import torch

    gen = _generator(device, seed)
    half = getattr(torch, dtype)

    def draw(kind: Callable[..., Tensor], *size: int, scale: float = 1.0, dt: Any = half) -> Tensor:
        return (scale * kind(*size, generator=gen, device=device, dtype=dt)).requires_grad_(requires_grad)

    return {
        "u": draw(torch.randn, batch, d_inner, seq_len),
        "delta": draw(torch.rand, batch, d_inner, seq_len, scale=0.5),
        "A": draw(torch.rand, d_inner, d_state, scale=-0.5, dt=torch.float32),
        "B": draw(torch.randn, batch, d_state, seq_len),
        "C": draw(torch.randn, batch, d_state, seq_len),
        "D": draw(torch.randn, d_inner, dt=torch.float32),
        "z": draw(torch.randn, batch, d_inner, seq_len),
        "delta_bias": draw(torch.rand, d_inner, scale=0.5, dt=torch.float32),
    }


def attention_inputs(batch: int, d_inner: int, head_dim: int, seq_len: int, dtype: str, device: str, seed: int,
                     requires_grad: bool = False) -> list[Tensor]:
    """q, k, v of shape (batch, d_inner / head_dim heads, seq_len, head_dim): attention over d_inner channels."""
    import torch

    if d_inner % head_dim:
        raise ValueError(f"d_inner {d_inner} is not a multiple of head_dim {head_dim}")
    gen = _generator(device, seed)
    shape = (batch, d_inner // head_dim, seq_len, head_dim)
    return [torch.randn(*shape, generator=gen, device=device, dtype=getattr(torch, dtype)).requires_grad_(requires_grad)
            for _ in range(3)]


# --- the three implementations ------------------------------------------------------------------------

def fused_scan_fn() -> Callable[..., Tensor]:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def reference_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False) -> Tensor:
    """mamba_ssm's `selective_scan_ref` for real A and selective B, C of shape (batch, d_state, L): the same
    operations in the same order and precision (float32 inside, the output cast back to u's dtype).

    One change, for the backward's sake only: it walks the sequence over `unbind` views where
    selective_scan_ref indexes `deltaA[:, :, i]`. The backward of each index materialises a zero tensor
    as large as deltaA (batch, d_inner, L, d_state), so selective_scan_ref's backward is quadratic in L
    (49 s against 0.4 s here at L=2048, d_inner=256 on a CPU); unbind's backward is one stack. Timing that
    artefact would flatter the fused kernel. mamba_ssm stays the oracle: tests/gpu/test_scan_gpu.py
    checks this function against selective_scan_ref, forward and backward.
    """
    import torch
    import torch.nn.functional as F

    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    # Zero-order hold for A, Euler for B: both (batch, d_inner, L, d_state), materialised up front.
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    x = A.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
    ys = []
    for a, b_u, c in zip(delta_a.unbind(2), delta_b_u.unbind(2), C.float().unbind(2), strict=True):
        x = a * x + b_u
        ys.append(torch.einsum("bdn,bn->bd", x, c))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out.to(dtype_in)


def pass_bytes(inputs: Sequence[Tensor], output: int, backward: bool) -> int:
    """The byte model of the module docstring: inputs read and output written, and for the backward the
    inputs and the output gradient read again and one gradient written per input."""
    read = sum(t.nbytes for t in inputs)
    return read + output + ((read + output + read) if backward else 0)


def _one_pass(forward: Callable[[], Tensor], leaves: Sequence[Tensor], grad_out: Tensor | None) -> Callable[[], None]:
    """The call to time: `forward` alone, or followed by the gradients of all leaves for `grad_out`."""
    import torch

    def run() -> None:
        out = forward()
        if grad_out is not None:
            torch.autograd.grad(out, leaves, grad_out)

    return run


def _grad_like(t: Tensor, seed: int) -> Tensor:
    import torch

    return torch.randn(t.shape, generator=_generator(t.device.type, seed + 1), device=t.device, dtype=t.dtype)


def scan_workload(fn: Callable[..., Tensor], kernel: str, inputs: dict[str, Tensor], backward: bool,
                  seed: int) -> Workload:
    u = inputs["u"]
    grad_out = _grad_like(u, seed) if backward else None  # the output has u's shape and dtype
    run = _one_pass(lambda: fn(**inputs, delta_softplus=True), list(inputs.values()), grad_out)
    return Workload(kernel, pass_bytes(list(inputs.values()), u.nbytes, backward), run,
                    extra={"gate_z": True, "delta_softplus": True})


def attention_workload(qkv: list[Tensor], backward: bool, seed: int) -> Workload:
    """Causal SDPA with its backend pinned: flash on CUDA, math on the CPU (never a silent fallback)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = qkv
    device = q.device.type
    backend = SDPBackend.FLASH_ATTENTION if device == "cuda" else SDPBackend.MATH
    grad_out = _grad_like(q, seed) if backward else None
    run = _one_pass(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), qkv, grad_out)
    return Workload(SDPA_KERNELS[device], pass_bytes(qkv, q.nbytes, backward), run,
                    context=lambda: sdpa_kernel(backend),
                    extra={"heads": q.shape[1], "head_dim": q.shape[3], "causal": True})
