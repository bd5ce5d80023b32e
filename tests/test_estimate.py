"""The dry run's time estimate: from earlier runs' measured point times, matched point for point."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_ref

from ssmbench.estimate import estimate, point_times
from ssmbench.jobs import Job, Plan, point
from ssmbench.kinds.throughput import ThroughputTask
from ssmbench.records import Record, RecordWriter


def test_points_are_matched_by_task_too(tmp_path: Path):
    """Two tasks of one kind share point keys (a short and a long prompt sweep, both by batch): each task's
    points take their own task's time, not the other's."""
    run = tmp_path / "out" / "s" / "r1"
    run.mkdir(parents=True)
    with RecordWriter(run / "records.jsonl") as out:
        for task, seconds in (("short", 1.0), ("long", 100.0)):
            out.write([Record(task=task, kind="throughput", job=f"{task}/tiny-gpt2", point="batch=1", model="tiny-gpt2",
                              metric="decode_tok_s", value=1.0, device="cpu", extra={"point_s": seconds})])
    times = point_times(tmp_path / "out", "cpu")
    assert times == {("throughput", "short", "tiny-gpt2", "batch=1"): 1.0,
                     ("throughput", "long", "tiny-gpt2", "batch=1"): 100.0}

    def plan(*tasks: str) -> Plan:
        jobs = [Job(f"{t}/tiny-gpt2", ThroughputTask(kind="throughput", name=t), tiny_ref(), "cpu", 0,
                    points=[point(batch=1)]) for t in tasks]
        return Plan("s", "cpu", jobs, "")

    assert estimate(plan("short"), times).seconds == 1.0
    assert estimate(plan("long"), times).seconds == 100.0
    other = estimate(plan("medium"), times)  # never ran: counted, not guessed from a namesake
    assert (other.known, other.total, other.seconds) == (0, 1, 0.0)
