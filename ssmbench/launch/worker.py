"""Running one job's points, wherever that happens: in the driver (the local launcher) or in a worker process
on a cluster node. It returns records and never writes them: records.jsonl has one writer, the driver.

An OOM is a result (status oom); any other exception fails its point (status error, with the message) and
the job goes on with its next point. Every record says which host measured it, and on CUDA which GPU.

A pack (run_pack) is several jobs run together in one process: their training points share the device
(ssmbench.train.train_pack), and each job's records are what it would have written alone.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from ssmbench import console
from ssmbench.errors import JobError, UserError, first_line
from ssmbench.jobs import Job, Point
from ssmbench.kinds import KINDS, get_kind, register_kind
from ssmbench.kinds.base import JobContext, Runner, SkipPoint
from ssmbench.launch import Feedback, Work
from ssmbench.measure import free_memory, is_oom
from ssmbench.records import Record


class NoFeedback:
    """A worker's feedback where no one watches its bars (a Ray task): its driver hears of it otherwise."""

    def started(self, job_id: str, where: str) -> None:
        pass

    def progress(self, job_id: str, fraction: float) -> None:
        pass

    def status(self, job_id: str, text: str) -> None:
        pass


def run_unit(unit: list[Work], feedback: Feedback) -> Iterator[tuple[str, Point, list[Record]]]:
    """What a launcher places (launch.packs): a pack of several jobs together (run_pack), or one job's
    points. Yields (job id, point, records) as each point is measured."""
    if len(unit) > 1:
        yield from run_pack(unit, unit[0].job.task.pack_width(), feedback)
        return
    (work,) = unit
    job_id = work.job.id
    feedback.started(job_id, "")
    for pt, records in run_work(work, on_progress=lambda f: feedback.progress(job_id, f),
                                on_status=lambda text: feedback.status(job_id, text)):
        yield job_id, pt, records


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
        yield pt, _stamped(records, stamp)


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
    failed = _set_up(runner, pending)
    if failed is not None:
        yield from failed
        return
    yield from _measure_points(runner, pending)


def _set_up(runner: Runner[Any], pending: list[Point]) -> list[tuple[Point, list[Record]]] | None:
    """Set the job's runner up. None when its points can be measured; for a job that is skipped, or whose
    setup failed (it is torn down then), the records of all its points."""
    job = runner.job
    if job.skip_reason:
        console.note(f"{job.id}: skipped: {job.skip_reason}")
        return [(pt, [runner.record(pt, status="skipped", message=job.skip_reason)]) for pt in pending]
    try:
        runner.setup()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        status, message = classify(exc)
        console.failure(f"{job.id}: {message}")
        records = [(pt, [runner.record(pt, status=status, message=message)]) for pt in pending]
        runner.teardown()
        return records
    return None


def _measure_points(runner: Runner[Any], pending: list[Point]) -> Iterator[tuple[Point, list[Record]]]:
    """Measure a set-up runner's points one by one, then tear it down."""
    told: set[str] = set()  # a message said once per job: a kind that loads the model for each point (memory,
    # in a fresh process each) fails every point with the same one, and the records keep them all
    try:
        for pt in pending:
            started = time.perf_counter()
            try:
                records = _timed(runner.measure(pt), started)
            except KeyboardInterrupt:
                raise
            except SkipPoint as exc:
                records = [runner.record(pt, status="skipped", message=str(exc))]
            except Exception as exc:
                records = _failed(runner, pt, exc, told)
            yield pt, records
    finally:
        runner.teardown()


def _timed(records: list[Record], started: float) -> list[Record]:
    """The point's records with its wall time (extra.point_s), what --dry-run's estimates are made of."""
    elapsed = round(time.perf_counter() - started, 3)
    return [r.model_copy(update={"extra": r.extra | {"point_s": elapsed}}) for r in records]


def _failed(runner: Runner[Any], pt: Point, exc: Exception, told: set[str]) -> list[Record]:
    """The record of a point that raised: an OOM is a result, anything else an error, said on screen once."""
    status, message = classify(exc)
    free_memory(runner.job.device)
    if status == "error" and message not in told:
        told.add(message)
        console.failure(f"{console.point_name(runner.job.id, pt.key)}: {escape(message)}")
    return [runner.record(pt, status=status, message=message)]


@dataclass
class _Member:
    """One job of a pack: its runner, set up, and the point it trains beside the others' (None: none)."""

    work: Work
    runner: Runner[Any]
    training: Point | None
    started: float = 0.0
    failure: Exception | None = None  # its training run could not even be made

    @property
    def job_id(self) -> str:
        return self.work.job.id


def run_pack(works: list[Work], width: int, feedback: Feedback) -> Iterator[tuple[str, Point, list[Record]]]:
    """Several jobs in this process, their training points side by side on one device (train.train_pack:
    up to `width` at once), each job's other points (its tests) measured as soon as its training ends, as
    run_job measures them.

    Every job keeps what it would have alone: its runner, records, artifacts and checkpoint. A job whose
    training fails (out of memory, say) gets its error or OOM record and the pack goes on; its other points
    then fail as they would after a failed training. Yields (job id, point, records) as run_work does.
    """
    from ssmbench.train import train_pack

    members: list[_Member] = []
    for work in works:
        os.environ.update(work.env)
        job_id = work.job.id
        context = _context(work, on_progress=lambda f, j=job_id: feedback.progress(j, f),
                           on_status=lambda text, j=job_id: feedback.status(j, text))
        runner = get_kind(work.job.kind).runner(work.job, context)
        feedback.started(job_id, "")
        failed = _set_up(runner, work.points)
        if failed is not None:
            for pt, records in failed:
                yield job_id, pt, _stamped(records, provenance(work.job.device))
            continue
        members.append(_Member(work, runner, next((pt for pt in work.points if runner.packable(pt)), None)))
    by_run: dict[int, _Member] = {}

    def runs() -> Iterator[Any]:
        """Each member's training run, made when the pack has room for it."""
        for member in members:
            if member.training is None:
                continue
            member.started = time.perf_counter()
            try:
                trainer = member.runner.pack_trainer(member.training)
            except Exception as exc:  # noqa: BLE001 - this job's failure, recorded after the pack
                member.failure = exc
                continue
            by_run[id(trainer)] = member
            yield trainer

    for member in members:  # jobs with nothing left to train are tested first
        if member.training is None:
            yield from _rest(member)
    for trainer, outcome in train_pack(runs(), width):
        member = by_run.pop(id(trainer))
        yield member.job_id, member.training, _training_records(member, trainer, outcome)
        yield from _rest(member)  # at once: a run stopped later keeps every finished job whole
    for member in members:
        if member.failure is not None:
            yield member.job_id, member.training, _failed(member.runner, member.training, member.failure, set())
            yield from _rest(member)


def _rest(member: _Member) -> Iterator[tuple[str, Point, list[Record]]]:
    """A pack member's points other than its training, measured as run_job measures them; then its teardown.
    The others' runs wait meanwhile (nothing is issued for them), which costs the pack no more than testing
    each job after all of them have trained."""
    rest = [pt for pt in member.work.points if pt is not member.training]
    for pt, records in _measure_points(member.runner, rest):
        yield member.job_id, pt, _stamped(records, provenance(member.work.job.device))


def _training_records(member: _Member, trainer: Any, outcome: Any) -> list[Record]:
    """A packed training point's records, as `measure` would have made them (its failure's, if it failed)."""
    try:
        records = _timed(member.runner.training_records(member.training, trainer, outcome), member.started)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        records = _failed(member.runner, member.training, exc, set())
    return _stamped(records, provenance(member.work.job.device))


def _stamped(records: list[Record], stamp: dict[str, Any]) -> list[Record]:
    return [r.model_copy(update={"host": stamp["host"], "extra": r.extra | stamp["extra"]}) for r in records]


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, message) of a point's exception: an OOM is a result, anything else an error."""
    if is_oom(exc):
        return "oom", f"out of memory: {first_line(exc, 200)}"
    if isinstance(exc, (JobError, UserError)):
        return "error", str(exc)
    tb = traceback.format_exception(exc)
    frame = next((line.strip() for line in reversed(tb) if 'File "' in line), "")
    return "error", f"{type(exc).__name__}: {exc} ({frame.splitlines()[0] if frame else 'no traceback'})"
