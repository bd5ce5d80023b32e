"""Launchers: where a plan's jobs run. The driver (ssmbench.execute) builds the work, a launcher runs it
somewhere and hands back each point's records; the driver alone appends them to records.jsonl.

    local   in the driver's own process, one job after another (the default)
    ray     one Ray task per job, on an existing cluster (--ray-address) or a local one
    slurm   one SLURM job per job, through submitit

A launcher yields `(job id, point, records)` for every point it was given, exactly once: a point its runner
measured, or an error record when the job was lost (a worker or node that died, a time limit) and its
retries were spent. That contract lets the driver count, write and resume without knowing where jobs ran.

Like the kinds, launchers are named here and imported on first use, so ray and submitit (optional extras)
cost nothing unless asked for, and their absence is one line that says what to install.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ssmbench.errors import UserError, did_you_mean
from ssmbench.models.hub import OFFLINE_VARS, PROBE_FAILED_VAR

if TYPE_CHECKING:
    from ssmbench.jobs import Job, Plan, Point
    from ssmbench.records import Record

# name -> ("module:class", the module it needs, the extra that installs it)
LAUNCHERS: dict[str, tuple[str, str | None, str | None]] = {
    "local": ("ssmbench.launch.local:LocalLauncher", None, None),
    "ray": ("ssmbench.launch.ray:RayLauncher", "ray", "ray"),
    "slurm": ("ssmbench.launch.slurm:SlurmLauncher", "submitit", "slurm"),
}

# What a worker process must see as the driver does, on any node: the Hugging Face offline switches (a worker
# must not try downloads the driver would not) and the source's commit.
WORKER_ENV = (*OFFLINE_VARS, PROBE_FAILED_VAR, "SSMBENCH_GIT_SHA")
# What holds only on the driver's own machine (a Hugging Face cache, where extra modules such as a kind of
# one's own live): forwarded to a cluster a launcher starts there, never to other nodes.
LOCAL_ENV = ("HF_HOME", "PYTHONPATH")


@dataclass(frozen=True)
class Work:
    """One job's pending points and everything a worker needs to run them, in a picklable form."""

    job: Job[Any]
    points: list[Point]
    run_id: str
    suite: str
    artifacts: Path  # the job's folder in the run directory (on a cluster: a path every node can reach)
    kind_target: str  # the kind's "module:object", so a worker knows kinds registered only in the driver
    env: dict[str, str] = field(default_factory=dict)  # WORKER_ENV as the driver has it


class Feedback(Protocol):
    """What a launcher tells the driver besides records: for its progress bars and notes."""

    def started(self, job_id: str, where: str) -> None: ...

    def progress(self, job_id: str, fraction: float) -> None: ...

    def status(self, job_id: str, text: str) -> None: ...


class Launcher(Protocol):
    @staticmethod
    def dry_run(plan: Plan, folder: Path) -> list[Path]:
        """Write what would be submitted (SLURM's batch scripts) under `folder`; the files written."""
        ...

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        """Run every work item; yield each of its points once, with its records. `retries`: how often a
        lost job is resubmitted; `folder`: the run directory's place for the launcher's own files."""
        ...

    def describe(self) -> dict[str, Any]:
        """How this start's jobs were launched (name, engine version, cluster), for env.json: the env there
        is the driver's machine, and this says whether the jobs ran on it."""
        ...


def packs(works: list[Work]) -> list[list[Work]]:
    """The works in the order given, the jobs of a task that packs (`pack_width` > 1) gathered in one group
    (they run together, worker.run_pack), every other job a group of its own."""
    groups: list[list[Work]] = []
    by_task: dict[str, list[Work]] = {}
    for work in works:
        if work.job.task.pack_width() < 2:
            groups.append([work])
        elif work.job.task_name in by_task:
            by_task[work.job.task_name].append(work)
        else:
            by_task[work.job.task_name] = [work]
            groups.append(by_task[work.job.task_name])
    return groups


def forwarded_env(names: tuple[str, ...] = WORKER_ENV) -> dict[str, str]:
    return {name: os.environ[name] for name in names if name in os.environ}


def launcher_class(name: str) -> type[Launcher]:
    """The launcher called `name`. Its optional dependency missing is the user's to fix: a UserError that
    names the extra to install."""
    if name not in LAUNCHERS:
        raise UserError(f"--launcher: unknown launcher {name!r}{did_you_mean(name, LAUNCHERS)}; "
                        f"launchers: {', '.join(LAUNCHERS)}")
    target, needs, extra = LAUNCHERS[name]
    if needs is not None:
        require(needs, extra or needs, f"--launcher {name}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def get_launcher(name: str, ray_address: str | None = None) -> Launcher:
    """The launcher, ready to run (ray: connected to its cluster)."""
    cls = launcher_class(name)
    if ray_address is not None and name != "ray":
        raise UserError(f"--ray-address applies to --launcher ray, not {name}")
    return cls(address=ray_address) if name == "ray" else cls()  # type: ignore[call-arg]


def require(module: str, extra: str, what: str) -> None:
    """Import `module` or end with one line: what needs it and how to install it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{what} needs {module}, which is not installed ({exc}): "
                        f"pip install 'ssmbench[{extra}]'") from None
