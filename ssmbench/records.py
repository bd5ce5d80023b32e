"""Result records: the unit of truth of a run, one JSON object a line in records.jsonl.

Runners emit records; tables and plots are pure functions of them. A record carries everything needed to
judge its number: which code path produced it (`kernel`, `cuda_graphs`), on what (`device`, `dtype`,
`weights`), the sweep point (`slice`), and summary statistics over repeats (`stats`). A job that failed is a
record too, with `status` and `message` and no value, so a table can show OOM or ERR in its cell.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssmbench.errors import cannot_write

# 2: a value lives in the slice when the point varies it, else in the record's field, never in both
# (version 1 wrote throughput's cuda_graphs and scan's dtype twice; read_records converts).
# 3: induction heads' records name their training layout in the slice (`layout`); every earlier one was
# trained in the uniform layout, which read_records fills in.
SCHEMA_VERSION = 3
Status = Literal["ok", "oom", "error", "skipped"]
# A job's point counts as done (not redone on --resume) once it has records with these statuses.
DONE_STATUSES = frozenset({"ok", "oom", "skipped"})


class Stats(BaseModel):
    """Summary of repeated measurements; `value` of the record is the median.

    The spread a table shows is the interquartile range (q1, q3): the standard deviation of three repeats
    is one outlier away from "±170%". Quantiles interpolate linearly between sorted samples.
    """

    model_config = ConfigDict(extra="forbid")
    n: int
    median: float
    mean: float
    std: float
    min: float
    max: float
    p10: float
    p90: float
    q1: float | None = None  # absent from records written before they were kept: see quartiles()
    q3: float | None = None

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        xs = sorted(float(x) for x in samples)
        if not xs:
            raise ValueError("no samples to summarise")
        return cls(n=len(xs), median=statistics.median(xs), mean=statistics.fmean(xs),
                   std=statistics.stdev(xs) if len(xs) > 1 else 0.0, min=xs[0], max=xs[-1],
                   p10=_quantile(xs, 0.1), p90=_quantile(xs, 0.9), q1=_quantile(xs, 0.25), q3=_quantile(xs, 0.75))

    def quartiles(self) -> tuple[float, float] | None:
        """(q1, q3). Older records kept min, p10, median, p90 and max only; for up to five samples those
        determine the quartiles exactly (the second and second-to-last samples are recovered from p10 and
        p90), beyond five they do not, and there is no answer."""
        if self.q1 is not None and self.q3 is not None:
            return self.q1, self.q3
        n = self.n
        if n == 1:
            return self.median, self.median
        if n > 5:
            return None
        pos10, pos90 = 0.1 * (n - 1), 0.9 * (n - 1)
        second = self.min + (self.p10 - self.min) / pos10
        frac90 = pos90 - (n - 2)
        second_last = (self.p90 - frac90 * self.max) / (1 - frac90) if n > 2 else self.min
        low = [self.min, second] if n > 2 else [self.min, self.max]
        high = [second_last, self.max] if n > 2 else [self.min, self.max]
        q1 = low[0] + (low[1] - low[0]) * 0.25 * (n - 1)
        q3 = high[0] + (high[1] - high[0]) * (0.75 * (n - 1) - (n - 2 if n > 2 else 0))
        return q1, q3

    @property
    def relative_iqr(self) -> float | None:
        """(q3 - q1) / |median|: the spread a table shows, and what marks a point unstable."""
        quartiles = self.quartiles()
        if quartiles is None or not self.median:
            return None
        return (quartiles[1] - quartiles[0]) / abs(self.median)


def _quantile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    suite: str = ""
    task: str  # the suite's name for the task
    kind: str  # task kind: throughput, memory, scan, zero_shot, ...
    job: str  # "<task>/<model>", the unit of planning and resuming
    point: str  # the sweep point within the job, e.g. "batch=1,prompt=128,graphs=off"
    attempt: int = 0  # 0 on the first try; a resumed run retries failed points with attempt + 1
    # How many records this point's attempt wrote (in one write). Fewer on disk: the write was cut short, the
    # point is not done and --resume redoes it. None in records written before it was kept (taken as whole).
    point_records: int | None = None
    model: str | None = None
    family: str | None = None  # transformer | ssm | rnn (zoo.Family)
    metric: str | None = None  # None on a failed point's status record
    value: float | None = None
    unit: str = ""
    higher_is_better: bool | None = None
    stats: Stats | None = None  # over repeated measurements (timings)
    stderr: float | None = None  # standard error of an estimate from samples (accuracies), same unit as value
    # The sweep point's coordinates and the settings that define the figure. A value the job varies from
    # point to point (throughput's cuda_graphs) lives here; one that holds for the whole job lives in its
    # field below (memory's cuda_graphs, every dtype). Never in both.
    slice: dict[str, Any] = Field(default_factory=dict)
    kernel: str | None = None  # the code path that ran, e.g. mamba_ssm-cuda, hf-torch
    cuda_graphs: bool | None = None  # None when the slice says (or when graphs do not apply)
    weights: str | None = None  # pretrained | random
    dtype: str | None = None
    device: str | None = None  # cpu, or the GPU's name
    # The machine that measured the record (its GPU: `device`, and extra.gpu_uuid on CUDA), so that the records
    # of a run spread over a cluster say where each came from. None in records written before it was kept,
    # and in the error record of a job whose worker was lost.
    host: str | None = None
    seed: int | None = None
    status: Status = "ok"
    message: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)  # anything else worth keeping (params, n_samples...)
    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def graphs(self) -> bool | None:
        """Whether the step ran from a CUDA graph, wherever the record keeps it."""
        return self.slice.get("cuda_graphs", self.cuda_graphs)

    @property
    def error_bar(self) -> tuple[float, float] | None:
        """How far the figure's error bar reaches below and above its value: to the quartiles of its repeats
        (the value is their median, so the two add up to the IQR), else one standard error of an estimate
        (an accuracy over test examples); None for a single measurement."""
        if self.value is None:
            return None
        if self.stats is not None and self.stats.n > 1:
            quartiles = self.stats.quartiles()
            if quartiles is not None:
                return self.value - quartiles[0], quartiles[1] - self.value
        if self.stderr is not None:
            return self.stderr, self.stderr
        return None

    @property
    def point_id(self) -> tuple[str, str]:
        """The unit of recording and resuming: a job's sweep point. All records of a point share it."""
        return (self.job, self.point)

    @property
    def identity(self) -> RecordKey:
        """What the figure measures, independent of the run that measured it: (kind, task, model, slice,
        metric). Two runs' records with equal identities measure the same thing, which is how runs are
        compared; within a run's latest attempts, an identity appears once (shared_identities finds the
        exceptions). The fields outside it add nothing within a run: a job's own sweep axes (a synthetic
        task's `seed` and `lr`) are in its slice, so the `seed` field equals slice.seed where seeds vary and
        is the suite's one seed elsewhere; `job` and `point` follow from the task, the model and the slice;
        `attempt` is the latest. Across runs the seed field is left out on purpose: a throughput run with
        another suite seed still times the same thing."""
        slice_items = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in self.slice.items()))
        return (self.kind, self.task, self.model, slice_items, self.metric)


RecordKey = tuple[str, str, str | None, tuple[tuple[str, str], ...], str | None]


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record as read from disk, in the current schema. Version 1 stored throughput's cuda_graphs and
    scan's dtype both in the slice and in the field: the field of a swept value and the slice copy of a
    fixed one go. Before version 3 every induction-heads model trained in the uniform layout: its slice says
    so, as a new record's does, so old and new runs still pair figure by figure."""
    version = data.get("schema_version", 1)
    if version >= SCHEMA_VERSION:
        return data
    data = dict(data, slice=dict(data.get("slice") or {}), schema_version=SCHEMA_VERSION)
    if version < 2:
        if "cuda_graphs" in data["slice"]:
            data["cuda_graphs"] = None
        if "dtype" in data["slice"] and data["slice"]["dtype"] == data.get("dtype"):
            del data["slice"]["dtype"]
    if data.get("kind") == "synthetic" and data["slice"].get("synthetic_task") == "induction_heads":
        data["slice"].setdefault("layout", "uniform")
    return data


# Why a CPU timing's spread is no measure of its precision, in the words `ssmbench diff` and the tables share:
# two back-to-back runs of one commit on a 2-core machine gave figures 20% to 2x apart (+51% for one decode
# rate) while each run's repeats agreed within a few percent (±0.2%).
CPU_SWING = "runs swing more than repeats show"


def is_cpu_timing(r: Record) -> bool:
    """A figure timed on the CPU with repeats (not an estimate with a standard error): its spread is that of
    one run's repeats, and a rerun moves it by far more (CPU_SWING)."""
    return r.device == "cpu" and r.stderr is None and r.stats is not None and r.stats.n > 1


def summarised(metric: str, samples: Sequence[float], unit: str, higher_is_better: bool) -> dict[str, Any]:
    """Record fields for repeated samples of one metric: the median as value, with the statistics."""
    stats = Stats.of(samples)
    return {"metric": metric, "value": stats.median, "unit": unit, "higher_is_better": higher_is_better,
            "stats": stats}


class RecordWriter:
    """Appends records to records.jsonl, written and fsynced point by point, so a crash loses nothing.

    A write the storage refuses (a full disk, a quota) is taken back whole: the file is cut to where it
    stood before the point's records, so it holds every earlier point and nothing of this one, and the
    WriteError names the file and the reason; `--resume` redoes the point once there is room."""

    def __init__(self, path: Path):
        self.path = path
        try:
            # A run killed mid-write leaves a last line without its newline: end it, so that what is appended
            # next starts on its own line (the reader drops the broken one and its point is redone).
            ends_cleanly = not path.exists() or path.stat().st_size == 0 or path.read_bytes().endswith(b"\n")
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if not ends_cleanly:
                self._append(b"\n")
        except OSError as exc:
            raise cannot_write(path, exc, path.parent) from None

    def write(self, records: Iterable[Record]) -> None:
        """Write one point's records, so a point is either all there or not at all."""
        data = "".join(r.model_dump_json() + "\n" for r in records).encode()
        if data:
            try:
                self._append(data)
            except OSError as exc:
                raise cannot_write(self.path, exc, self.path.parent) from None

    def _append(self, data: bytes) -> None:
        """All of `data` at the end of the file, synced; on failure the file is cut back to its old end."""
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # cutting a file back needs no space
                os.ftruncate(self._fd, start)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ForeignRecord(ValueError):
    """A records.jsonl line that is JSON but not a ssmbench record: something else wrote it."""


def read_records(path: Path, on_torn_line: Callable[[int, str], None] | None = None) -> list[Record]:
    """All records of a run.

    A line that is not JSON is a write cut short (a killed process; a disk that filled): it is dropped,
    its point has no complete records, so --resume redoes it; `on_torn_line(line_number, text)` hears of
    it. A JSON line that is not a valid record raises ForeignRecord naming the line: nothing of ours
    writes it, and guessing at its meaning could corrupt the tables.
    """
    return list(iter_records(path, on_torn_line))


def iter_records(path: Path, on_torn_line: Callable[[int, str], None] | None = None) -> Iterator[Record]:
    if not path.exists():
        return
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if on_torn_line is not None:
                on_torn_line(number, line)
            continue
        if not isinstance(data, dict):
            raise ForeignRecord(f"{path}: line {number} is not a record (a JSON {type(data).__name__})")
        try:
            yield Record.model_validate(upgrade(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(the record)"
            raise ForeignRecord(f"{path}: line {number} is not a ssmbench record ({where}: {first['msg']})") from None


def latest_attempts(records: Iterable[Record]) -> list[Record]:
    """The records of each point's latest attempt: what a table shows after retries on resume. A point is
    retried as a whole (a failed point has a status record and no metrics), so attempts are compared point
    by point, not measurement by measurement."""
    records = list(records)
    last: dict[tuple[str, str], int] = {}
    for r in records:
        last[r.point_id] = max(last.get(r.point_id, 0), r.attempt)
    return [r for r in records if r.attempt == last[r.point_id]]


def incomplete_points(records: Iterable[Record]) -> dict[tuple[str, str], tuple[int, int]]:
    """(job, point) -> (records found, records written) for each point whose latest attempt has fewer records
    on disk than it wrote: a write cut short (a killed run, a full disk) left the first lines of the point."""
    found: Counter[tuple[str, str]] = Counter()
    written: dict[tuple[str, str], int] = {}
    for r in latest_attempts(records):
        found[r.point_id] += 1
        if r.point_records is not None:
            written[r.point_id] = max(written.get(r.point_id, 0), r.point_records)
    return {pid: (found[pid], n) for pid, n in written.items() if found[pid] < n}


def duplicate_identities(records: Iterable[Record]) -> dict[tuple[str, str, int], int]:
    """(job, point, attempt) -> how many of its records repeat an identity already recorded in that attempt.
    One attempt measures each figure once: a repeat means two processes ran the same point (two resumes of
    one run at once), and the tables would show one of the two figures at random."""
    seen: set[tuple[tuple[str, str], int, RecordKey]] = set()
    repeats: Counter[tuple[str, str, int]] = Counter()
    for r in records:
        key = (r.point_id, r.attempt, r.identity)
        if key in seen:
            repeats[(r.job, r.point, r.attempt)] += 1
        seen.add(key)
    return dict(repeats)


def shared_identities(records: Iterable[Record]) -> dict[RecordKey, list[tuple[str, str]]]:
    """identity -> the (job, point)s of the latest attempts that recorded it, for each identity recorded by
    more than one point. A run measures each figure at one point: two points with one identity differ only
    in a field outside it (a seed a kind left out of the slice), and every table, the tidy CSV's identity
    columns and `diff` would take them for one figure."""
    points: dict[RecordKey, list[tuple[str, str]]] = {}
    for r in latest_attempts(records):
        if r.metric is not None and r.point_id not in points.setdefault(r.identity, []):
            points[r.identity].append(r.point_id)
    return {key: where for key, where in points.items() if len(where) > 1}


def point_attempts(records: Iterable[Record]) -> dict[tuple[str, str], tuple[int, bool]]:
    """(job, point) -> (latest attempt, done). Done: every record of the point's latest attempt is on disk,
    and each has a done status (ok, oom, skipped); other points are redone on resume."""
    records = list(records)
    torn = incomplete_points(records)
    out: dict[tuple[str, str], tuple[int, bool]] = {}
    for r in latest_attempts(records):
        _, done = out.get(r.point_id, (r.attempt, r.point_id not in torn))
        out[r.point_id] = (r.attempt, done and r.status in DONE_STATUSES)
    return out


_JOB_AND_POINT = re.compile(r'"job":("(?:[^"\\]|\\.)*"),"point":("(?:[^"\\]|\\.)*")')


def torn_point(line: str) -> tuple[str, str] | None:
    """The (job, point) a torn line belonged to, when the cut came after them (they are among a record's
    first fields), else None."""
    match = _JOB_AND_POINT.search(line)
    return (json.loads(match[1]), json.loads(match[2])) if match else None
