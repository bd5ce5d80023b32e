"""Running one job's points, wherever that happens: in the driver (the local launcher) or in a worker process
on a cluster node. It returns records and never writes them: records.jsonl has one writer, the driver.

An OOM is a result (status oom); any other exception fails its point (status error, with the message) and
the job goes on with its next point. Every record says which host measured it, and on CUDA which GPU.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from rich.markup import escape

from ssmbench import console
from ssmbench.errors import JobError, UserError, first_line
from ssmbench.jobs import Job, Point
from ssmbench.kinds import KINDS, get_kind, register_kind
from ssmbench.kinds.base import JobContext, SkipPoint
from ssmbench.launch import Work
from ssmbench.measure import free_memory, is_oom
from ssmbench.records import Record


def run_work(work: Work, **callbacks: Callable[..., None]) -> Iterator[tuple[Point, list[Record]]]:
    """A worker's entry: the driver's environment and kinds first, then the job's points one by one.
    `callbacks` (on_progress, on_status) go to the job's JobContext."""
    os.environ.update(work.env)
    yield from run_job(work.job, work.points, _context(work, **callbacks))


def _context(work: Work, **callbacks: Callable[..., None]) -> JobContext:
    """The JobContext of `work`, its kind registered first if this process does not know it yet;
    `callbacks` (on_progress, on_status) as JobContext takes them, its no-op defaults where absent."""
    if work.job.kind not in KINDS:
        register_kind(work.job.kind, work.kind_target)
    return JobContext(work.run_id, work.suite, work.artifacts, **callbacks)


def run_job(job: Job[Any], pending: list[Point], context: JobContext) -> Iterator[tuple[Point, list[Record]]]:
    """Yield (point, records) for each pending point of one job, stamped with where they were measured;
    never raises for a job's failure."""
    stamp = provenance(job.device)
    for pt, records in _measure_job(job, pending, context):
        yield pt, [r.model_copy(update={"host": stamp["host"], "extra": r.extra | stamp["extra"]}) for r in records]


def lost_records(work: Work, points: list[Point], message: str) -> list[tuple[Point, list[Record]]]:
    """Error records for the points of a job that a launcher lost (its worker or node died, it ran out of
    time), made in the driver: no host, since nothing was measured."""
    runner = get_kind(work.job.kind).runner(work.job, _context(work))
    return [(pt, [runner.record(pt, status="error", message=message)]) for pt in points]


def where() -> str:
    """This worker, as a progress line names it: its host, and the GPUs a cluster gave it."""
    return socket.gethostname() + (f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})"
                                   if os.environ.get("CUDA_VISIBLE_DEVICES") else "")


@functools.cache
def provenance(device: str) -> dict[str, Any]:
    """The host, and on CUDA the GPU's UUID (the device's name alone does not tell two cards of a node
    apart, and a cluster launcher decides which card a job gets)."""
    extra = {}
    if device == "cuda":
        import torch

        uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None)
        if uuid is not None:
            extra["gpu_uuid"] = f"GPU-{uuid}"
    return {"host": socket.gethostname(), "extra": extra}


def _measure_job(job: Job[Any], pending: list[Point], context: JobContext) -> Iterator[tuple[Point, list[Record]]]:
    runner = get_kind(job.kind).runner(job, context)
    if job.skip_reason:
        console.note(f"{job.id}: skipped: {job.skip_reason}")
        for pt in pending:
            yield pt, [runner.record(pt, status="skipped", message=job.skip_reason)]
        return
    if job.backend_note:
        console.note(job.backend_note)
    try:
        runner.setup()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        status, message = classify(exc)
        console.failure(f"{job.id}: {message}")
        for pt in pending:
            yield pt, [runner.record(pt, status=status, message=message)]
        runner.teardown()
        return
    told: set[str] = set()  # a message said once per job: a kind that loads the model for each point (memory,
    # in a fresh process each) fails every point with the same one, and the records keep them all
    try:
        for pt in pending:
            started = time.perf_counter()
            try:
                records = runner.measure(pt)
                elapsed = round(time.perf_counter() - started, 3)
                records = [r.model_copy(update={"extra": r.extra | {"point_s": elapsed}}) for r in records]
            except KeyboardInterrupt:
                raise
            except SkipPoint as exc:
                records = [runner.record(pt, status="skipped", message=str(exc))]
            except Exception as exc:
                status, message = classify(exc)
                free_memory(job.device)
                if status == "error" and message not in told:
                    told.add(message)
                    console.failure(f"{console.point_name(job.id, pt.key)}: {escape(message)}")
                records = [runner.record(pt, status=status, message=message)]
            yield pt, records
    finally:
        runner.teardown()


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, message) of a point's exception: an OOM is a result, anything else an error."""
    if is_oom(exc):
        return "oom", f"out of memory: {first_line(exc, 200)}"
    if isinstance(exc, (JobError, UserError)):
        return "error", str(exc)
    tb = traceback.format_exception(exc)
    frame = next((line.strip() for line in reversed(tb) if 'File "' in line), "")
    return "error", f"{type(exc).__name__}: {exc} ({frame.splitlines()[0] if frame else 'no traceback'})"
