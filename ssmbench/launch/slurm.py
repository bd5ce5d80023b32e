"""The SLURM launcher: each job is one SLURM job, submitted through submitit with the resources the suite
gives it (partition, GPUs, CPUs, memory, time).

A SLURM cluster shares a file system, so a job reports as the local launcher would, through a file: its
worker appends each point's records, as measured, to a spool file in the run directory (launch/spool/),
and the driver reads them from there and appends them to records.jsonl, the one file of truth. A job killed
by its time limit, a lost node or `scancel` thus loses only the point it was measuring.

`--dry-run` writes the batch scripts submitit would submit (one per job) and submits nothing. The
environment variable SSMBENCH_SLURM_CLUSTER=local runs the same path through submitit's local executor (one
process per job on this machine): what the tests do, and a way to try a suite before a cluster sees it.

submitit is an optional extra (`pip install 'ssmbench[slurm]'`), imported here and only here.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ssmbench import console
from ssmbench.errors import UserError
from ssmbench.jobs import Job, Point
from ssmbench.launch import Feedback, Work
from ssmbench.launch.remote import RemoteLauncher, Update
from ssmbench.launch.worker import run_work, where
from ssmbench.records import Record

if TYPE_CHECKING:
    from ssmbench.jobs import Plan

POLL_S = 1.0
SPOOL_GRACE_S = 2.0
SLURM_DEFAULT_TIME_MIN = 120  # a job's --time when its resources name none (sbatch's own default is often minutes)
CLUSTER_VAR = "SSMBENCH_SLURM_CLUSTER"


@dataclass(frozen=True)
class SpoolingJob:
    """What a SLURM job runs: one job's points, each point's records appended to the spool as measured."""

    work: Work
    spool: Path

    def __call__(self) -> int:
        """Run the points; how many were recorded."""
        done = 0
        with self.spool.open("a", encoding="utf-8") as out:
            _append(out, {"started": where()})
            for pt, records in run_work(self.work):
                _append(out, {"point": pt.key, "records": [r.model_dump(mode="json") for r in records]})
                done += 1
            _append(out, {"finished": done})
        return done


def _append(out: TextIO, entry: dict[str, Any]) -> None:
    out.write(json.dumps(entry) + "\n")
    out.flush()
    os.fsync(out.fileno())


@dataclass
class Submitted:
    """A submitted job and how far the driver has read its spool."""

    job: Any  # submitit.Job
    spool: Path
    job_id: str  # ssmbench's job
    offset: int = 0
    finished: bool = False  # the worker wrote its last line
    ended_at: float | None = None  # when SLURM (or the local executor) first said the job is over

    def news(self) -> list[dict[str, Any]]:
        """The spool's complete lines written since the last call (a line still being written waits)."""
        if not self.spool.exists():
            return []
        with self.spool.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class SlurmLauncher(RemoteLauncher):
    def __init__(self) -> None:
        self.cluster = os.environ.get(CLUSTER_VAR, "slurm")
        if self.cluster not in ("slurm", "local"):
            raise UserError(f"{CLUSTER_VAR}={self.cluster}: give slurm or local")
        self.executor: Any = None

    def describe(self) -> dict[str, Any]:
        import submitit

        return {"name": "slurm", "submitit": submitit.__version__, "cluster": self.cluster}

    def start(self, folder: Path) -> None:
        """Make the executor: submitit's files (pickled jobs, logs) and the spools go under `folder`."""
        import submitit

        try:
            self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        except RuntimeError as exc:  # no srun on this machine
            raise UserError(f"--launcher slurm: {exc} (SLURM's srun and sbatch are needed on this machine; "
                            f"{CLUSTER_VAR}=local runs the jobs here)") from None
        self.spools = folder / "spool"
        self.spools.mkdir(parents=True, exist_ok=True)

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        packing = sorted({w.job.task_name for w in works if w.job.task.pack_width() > 1})
        if packing:
            console.note(f"{', '.join(packing)}: pack does not apply under SLURM, where each job has an allocation of "
                         "its own (the local launcher and Ray run each pack of K jobs in one process on one GPU)")
        yield from super().run(works, feedback, retries, folder)

    def units(self, works: list[Work]) -> list[list[Work]]:
        return [[work] for work in works]  # one SLURM job per job: see run's note

    def submit(self, unit: list[Work]) -> Submitted:
        (work,) = unit
        self.executor.update_parameters(**executor_parameters(work.job))
        spool = self.spools / f"{work.job.id.replace('/', '__')}.{uuid.uuid4().hex[:8]}.jsonl"
        return Submitted(self.executor.submit(SpoolingJob(work, spool)), spool, work.job.id)

    def poll(self, handles: list[Submitted]) -> list[Update]:
        updates = [self._update(h) for h in handles]
        if not any(u.started or u.points or u.ended for u in updates):
            time.sleep(POLL_S)
        return updates

    def cancel(self, handle: Submitted) -> None:
        handle.job.cancel(check=False)

    def _update(self, handle: Submitted) -> Update:
        over = handle.job.done()  # asked before reading, so that nothing written before the end is missed
        update = Update()
        for entry in handle.news():
            if "started" in entry:
                update.started = f"{entry['started']} (SLURM job {handle.job.job_id})"
            elif "finished" in entry:
                handle.finished = True
            else:
                update.points.append((handle.job_id, entry["point"], [Record.model_validate(r) for r in entry["records"]]))
        if over and handle.ended_at is None:
            handle.ended_at = time.monotonic()
        # A shared file system may show the spool's last lines a little after the job ends: a job over without
        # its last line is given SPOOL_GRACE_S before its missing points count as lost.
        update.ended = handle.finished or (over and time.monotonic() - (handle.ended_at or 0) >= SPOOL_GRACE_S)
        if update.ended and not handle.finished:
            update.failure = why_it_ended(handle.job)
        return update

    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        """The batch script of each job, as submitit would submit it, written under `folder`; nothing submitted."""
        from submitit.slurm.slurm import _convert_mem, _make_sbatch_string

        folder.mkdir(parents=True, exist_ok=True)
        command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder / "%j"))])
        paths = []
        for job in plan.jobs:
            p = executor_parameters(job)
            text = _make_sbatch_string(command=command, folder=folder / "%j", job_name=p["name"],
                                       partition=p.get("slurm_partition"), time=p["timeout_min"],
                                       gpus_per_node=p.get("gpus_per_node"), cpus_per_task=p.get("cpus_per_task"),
                                       mem=_convert_mem(p["mem_gb"]) if "mem_gb" in p else None)
            path = folder / f"{job.id.replace('/', '__')}.sbatch"
            path.write_text(text)
            paths.append(path)
        return paths


def why_it_ended(job: Any) -> str:
    """One line for a job that ended before its worker finished: the exception it raised when there is a
    result to say so, else SLURM's state (a time limit, a lost node, a killed process) and where its log is.
    submitit's own answer (job.exception()) waits 15 s for a result that a killed job never writes."""
    where = f"SLURM job {job.job_id} ({job.state})"
    if job.paths.result_pickle.exists() and (exc := job.exception()) is not None:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return f"{where}: {type(exc).__name__}: {(lines[-1] if lines else '')[:300]}"
    return f"{where} ended before its worker finished (killed, out of time or memory, or its node lost); see {job.paths.stderr}"


def executor_parameters(job: Job[Any]) -> dict[str, Any]:
    """submitit's parameters for one job, from its resources."""
    res = job.resources
    params: dict[str, Any] = {"name": f"ssmbench-{job.id}", "timeout_min": res.time_min or SLURM_DEFAULT_TIME_MIN}
    if res.gpus_for(job.device):  # no GPU line at all on the CPU: some clusters refuse --gpus-per-node=0
        params["gpus_per_node"] = res.gpus_for(job.device)
    if res.cpus:
        params["cpus_per_task"] = res.cpus
    if res.mem_gb:
        params["mem_gb"] = res.mem_gb
    if res.partition:
        params["slurm_partition"] = res.partition
    return params
