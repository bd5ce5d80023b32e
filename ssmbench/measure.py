"""Measurement primitives: device-clock timing, peak-memory probes, OOM detection, unit conversions, and a
fresh process to measure host memory in.

Timing on CUDA uses events recorded on the stream around the region, so what is measured is the device's
time from the first launch to the last kernel's end (launch gaps included, host noise after it not);
on the CPU it is the wall clock. Each call times one region and synchronises once, after it.

Host memory (RSS) is the process's, whatever it held before: a measurement means something only in a process
that held nothing else (`in_fresh_process`), whose allocator shows what it allocates and frees
(`rss_follows_allocations`, `release_freed_memory`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
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
    """True for CUDA out-of-memory, host MemoryError and torch's CPU allocator failing (a RuntimeError that says
    "can't allocate memory"): a result (the paper's ✗), not a failure."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


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
    used memory at exit (includes the CUDA context and other processes). CPU: the process's peak RSS as the
    kernel keeps it (VmHWM, reset to the current RSS at entry through /proc/self/clear_refs; Linux): every
    page counts, however briefly held. Where that cannot be reset, RSS sampled every `interval_s` by a
    background thread (a peak between samples can be missed).
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
            if not _reset_peak_rss():
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
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss())
        else:
            self.peak_bytes = max(self.peak_bytes, _rss(), _peak_rss())

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


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (VmHWM) to its current RSS (Linux 4.0+); False if it can't."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The kernel's peak RSS of this process since the last reset (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# --- host memory that RSS can see ---------------------------------------------------------------------------

_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024


def _glibc() -> Any:
    import ctypes
    import platform

    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def rss_follows_allocations() -> bool:
    """Make this process's RSS follow what it allocates, from now on (glibc; False where it cannot).

    glibc malloc keeps freed blocks for reuse and raises its mmap threshold as large blocks are freed, so RSS
    stays at its high-water mark while memory is reused out of sight. With a fixed 64 KiB threshold, every
    block of that size or more (a tensor of 16K floats) gets a mapping of its own, unmapped when freed: RSS
    rises and falls with the tensors. Call it early in a process that measures RSS.
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Collect garbage and hand what the allocator holds free back to the OS (glibc's malloc_trim), so that RSS
    is the memory in use: take an RSS baseline after this."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# --- a fresh process ----------------------------------------------------------------------------------------


class FreshProcessError(RuntimeError):
    """The measuring process failed, other than by running out of memory: its exception, or how it died."""


@dataclass
class _Forker:
    """A spawned process that has run `preload` (imports) and nothing else; it forks one child per call."""

    key: tuple[Any, ...]
    process: Any  # multiprocessing.Process
    conn: Any  # multiprocessing.connection.Connection
    forks: bool
    child: int | None = None  # the pid of the running child

    def stop(self) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(self.child, signal.SIGKILL)
        self.conn.close()
        self.process.kill()
        self.process.join(5)


_forker: _Forker | None = None
_ENV_IGNORED = {"PYTEST_CURRENT_TEST"}  # changes with every test, means nothing to a measuring process


def in_fresh_process(fn: Callable[..., T], *args: Any, preload: Callable[[], None] | None = None) -> T:
    """`fn(*args)` run in a process of its own, that has held nothing else; its result (both picklable: `fn`
    and `preload` module-level functions).

    On Linux the process is forked from a helper that was spawned (a new interpreter with this process's
    current environment), ran `preload` and nothing else: the seconds an import of torch and transformers
    takes are paid once, and no call sees what an earlier one, or this process, allocated. A new helper
    starts when the environment, sys.path or `preload` changed. Elsewhere every call spawns its own process.

    Failures come back as exceptions: an out-of-memory error in the child, or its death by SIGKILL (the
    kernel's OOM killer), as MemoryError; a JobError as itself; anything else as FreshProcessError with the
    child's exception type, message and line, or the signal or exit code it died of.
    """
    global _forker
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k not in _ENV_IGNORED))
    key = (preload and f"{preload.__module__}.{preload.__qualname__}", environment, tuple(sys.path), os.getcwd())
    if _forker is not None and (_forker.key != key or not _forker.process.is_alive()):
        _forker.stop()
        _forker = None
    if _forker is None:
        _forker = _start_forker(key, preload)
    forker = _forker
    try:
        try:
            forker.conn.send((fn, args))
        except OSError:
            pass  # the helper died: _await_child says so
        outcome, exit_code = _await_child(forker)
    except BaseException:  # Ctrl-C, SIGTERM, a helper that died: leave no process behind
        forker.stop()
        _forker = None
        raise
    if not forker.forks:
        forker.stop()
        _forker = None
    if outcome is not None and outcome[0] == "ok":
        return outcome[1]
    if outcome is not None:
        raise _parent_side(outcome[1])
    if exit_code == -signal.SIGKILL:
        raise MemoryError("the measuring process was killed by SIGKILL, most likely by the kernel's "
                          "out-of-memory killer")
    died = f"signal {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exit code {exit_code}"
    raise FreshProcessError(f"the measuring process died ({died}) before it reported")


def _start_forker(key: tuple[Any, ...], preload: Callable[[], None] | None) -> _Forker:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    forks = sys.platform == "linux"
    process = ctx.Process(target=_forker_main, args=(theirs, preload, forks), daemon=True,
                          name="ssmbench-fresh-processes")
    process.start()
    theirs.close()
    return _Forker(key, process, mine, forks)


def _await_child(forker: _Forker) -> tuple[tuple[str, Any] | None, int]:
    """Messages from the child ('started', its result or error) until the helper reports its exit code."""
    outcome = None
    while True:
        try:
            tag, payload = forker.conn.recv()
        except (EOFError, OSError):
            forker.process.join(5)
            raise FreshProcessError("the process that starts measuring processes died (exit code "
                                    f"{forker.process.exitcode}; what it said is on stderr)") from None
        if tag == "started":
            forker.child = payload
        elif tag == "exit":
            forker.child = None
            return outcome, payload
        else:
            outcome = (tag, payload)


def _parent_side(error: dict[str, Any]) -> BaseException:
    from ssmbench.errors import JobError

    if error["oom"]:
        return MemoryError(error["message"] or error["type"])
    if error["job_error"]:
        return JobError(error["message"])
    return FreshProcessError(f"{error['type']} in the measuring process: {error['message']} (at {error['where']})")


def _forker_main(conn: Any, preload: Callable[[], None] | None, forks: bool) -> None:
    """The helper: preload, then for each call fork a child that runs it; report each child's exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops what it started
    if preload is not None:
        preload()
    gc.collect()
    gc.freeze()  # what was imported is permanent: children's collections skip it (tenths of a second each)
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        if not forks:
            _child_main(conn, fn, args)
            conn.send(("exit", 0))
            return
        pid = os.fork()
        if pid == 0:
            try:
                _child_main(conn, fn, args)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        conn.send(("exit", os.waitstatus_to_exitcode(status)))


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    conn.send(("started", os.getpid()))
    try:
        outcome: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:
        outcome = ("error", _describe(exc))
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send(outcome)


def _describe(exc: BaseException) -> dict[str, Any]:
    """What the parent needs of an exception, as plain values (the exception itself may not pickle)."""
    import traceback
    from pathlib import Path

    from ssmbench.errors import JobError, UserError

    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return {"type": type(exc).__name__, "message": str(exc), "oom": is_oom(exc),
            "job_error": isinstance(exc, (JobError, UserError)), "where": where}


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
