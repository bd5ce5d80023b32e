"""How long a plan will take, from what earlier runs on the same device measured.

Every record keeps its point's wall time (`extra.point_s`). A dry run looks for the same (kind, task, model,
point) on the same device in the run directories under --out and adds up the medians; points never run
before are counted, not guessed: a figure with no measurement behind it would be worse than none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ssmbench.jobs import Plan
from ssmbench.records import ForeignRecord, read_records

# kind, task, model, point (on the one device asked about): two tasks of one kind may share point keys and
# take very different times (a short and a long prompt sweep, each named by its batch size)
PointKey = tuple[str, str, str | None, str]


@dataclass(frozen=True)
class Estimate:
    seconds: float  # over the points that ran before
    known: int
    total: int

    def describe(self) -> str:
        if not self.known:
            return f"no estimate: none of the {self.total} points has run on this device under this --out"
        unknown = self.total - self.known
        rest = f"; {unknown} points never ran here and are not counted" if unknown else ""
        return f"about {_duration(self.seconds)} from earlier runs ({self.known} of {self.total} points){rest}"


def point_times(out: Path, device: str) -> dict[PointKey, float]:
    """Median wall time of each point measured before on `device`, from every records.jsonl under `out`."""
    samples: dict[PointKey, list[float]] = {}
    for path in sorted(Path(out).rglob("records.jsonl")) if Path(out).is_dir() else []:
        try:
            records = read_records(path)
        except (ForeignRecord, OSError):
            continue
        for r in records:
            seconds = r.extra.get("point_s")
            if r.device == device and isinstance(seconds, int | float):
                samples.setdefault((r.kind, r.task, r.model, r.point), []).append(float(seconds))
    return {key: statistics.median(values) for key, values in samples.items()}


def estimate(plan: Plan, times: dict[PointKey, float]) -> Estimate:
    """The plan's time from `times` (point_times on the plan's device)."""
    total = known = 0
    seconds = 0.0
    for job in plan.jobs:
        model = job.model_name
        for p in job.points:
            total += 1
            measured = 0.0 if job.skip_reason else times.get((job.kind, job.task_name, model, p.key))
            if measured is not None:  # a refused job's points take no time
                known += 1
                seconds += measured
    return Estimate(seconds, known, total)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
