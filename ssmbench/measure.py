"""Measurement primitives: device-clock timing, peak-memory probes, OOM detection, unit conversions.

Timing on CUDA uses events recorded on the stream around the region, so what is measured is the device's
time from the first launch to the last kernel's end (launch gaps included, host noise after it not);
on the CPU it is the wall clock. Each call times one region and synchronises once, after it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
MIB = 2**20


def timed_ms(fn: Callable[[], T], device: str) -> tuple[T, float]:
    """Run `fn` once; its result and its duration in milliseconds on the device's clock."""
    if device == "cuda":
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return out, start.elapsed_time(end)
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory and host MemoryError: a result (the paper's ✗), not a failure."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower() and isinstance(exc, RuntimeError)


def free_memory(device: str) -> None:
    """Return cached blocks after a point (and after an OOM) so the next point starts clean."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass
class PeakMemory:
    """Peak memory while the `with` block runs.

    CUDA: torch's peak allocated and reserved bytes (reset at entry), and, when NVML is present, the device's
    used memory at exit (includes the CUDA context and other processes). CPU: the process RSS, sampled
    every `interval_s` by a background thread (a peak between samples can be missed).
    """

    device: str
    interval_s: float = 0.001
    base_bytes: int = 0
    peak_bytes: int = 0
    peak_reserved_bytes: int | None = None
    nvml_used_bytes: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_bytes = torch.cuda.memory_allocated()
        else:
            self.base_bytes = self.peak_bytes = _rss()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss())
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
            self.peak_reserved_bytes = torch.cuda.max_memory_reserved()
            self.nvml_used_bytes = nvml_used_bytes()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss())

    def then(self, later: PeakMemory) -> PeakMemory:
        """The peaks over this region followed by `later` (probes reset torch's counter, so they cannot
        nest): the larger peaks, measured from this region's base."""
        return PeakMemory(self.device, base_bytes=self.base_bytes, peak_bytes=max(self.peak_bytes, later.peak_bytes),
                          peak_reserved_bytes=_max_or_none(self.peak_reserved_bytes, later.peak_reserved_bytes),
                          nvml_used_bytes=_max_or_none(self.nvml_used_bytes, later.nvml_used_bytes))

    @property
    def growth_bytes(self) -> int:
        """Peak minus what was held at entry: what the measured work itself needed."""
        return self.peak_bytes - self.base_bytes


def _max_or_none(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else max(a or 0, b or 0)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def nvml_used_bytes() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:
        return None


# Datasheet peak memory bandwidth (bytes/s) by GPU name, for the decode roofline. Sources: NVIDIA's H100,
# H200 and A100 datasheets. A GPU not listed gets no roofline rather than a guess.
PEAK_BANDWIDTH: dict[str, float] = {
    "H100 80GB HBM3": 3.35e12,  # H100 SXM5
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "H200": 4.8e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100 80GB PCIe": 1.935e12,
}


def peak_bandwidth(device_name: str) -> float | None:
    """The datasheet bandwidth of the named GPU (bytes/s), or None when it is not in the table."""
    return next((bw for key, bw in PEAK_BANDWIDTH.items() if key in device_name), None)


def dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]


def mib(n_bytes: float) -> float:
    return n_bytes / MIB


def seeded_tokens(shape: tuple[int, ...], vocab: int, seed: int, device: str) -> Any:
    """Prompt token ids drawn from a seeded generator, independent of the global RNG."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=gen).to(device)
