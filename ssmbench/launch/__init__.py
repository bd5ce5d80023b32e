"""Launchers: where a plan's jobs run. The driver (ssmbench.execute) builds the work, a launcher runs it
somewhere and hands back each point's records; the driver alone appends them to records.jsonl.

    local   in the driver's own process, one job after another (the default); with --gpus N, one worker
            process per GPU, up to N packs or jobs at once (launch.pool)
    ray     one Ray task per pack or job, on an existing cluster (--ray-address) or a local one
    slurm   one SLURM job per job, through submitit

A pack is the unit of placement: the jobs of a task with `pack: K`, K at a time, run in one process on one
device (worker.run_pack), so where jobs spread over several devices (--gpus, Ray) each pack is placed whole,
on a GPU of its own; every other job is placed alone.

A launcher yields `(job id, point, records)` for every point it was given, exactly once: a point its runner
measured, or an error record when the job was lost (a worker or node that died, a time limit) and its
retries were spent. That contract lets the driver count, write and resume without knowing where jobs ran.

Like the kinds, launchers are named here and imported on first use, so ray and submitit (optional extras)
cost nothing unless asked for, and their absence is one line that says what to install.
"""

from __future__ import annotations

import importlib
import itertools
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


def packs(works: list[Work], places: int | None = None) -> list[list[Work]]:
    """The works in the order given, the jobs of a task that packs (`pack_width` K > 1) gathered in packs
    (each runs together in one process, worker.run_pack), every other job a group of its own.

    On one device (`places` None) a task's jobs are one pack: it starts the next run as soon as one ends,
    so the device always trains K. Spread over `places` devices, each task's jobs are cut into packs of at
    most K, as many as fill every device in as few rounds as K allows (96 jobs, K = 32, 8 GPUs: 8 packs of
    12, not 3 of 32 that leave 5 GPUs idle), and of sizes that differ by one at most. A pack holds
    consecutive jobs, which differ in seed or rate but not in model, so its runs tend to end together."""
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
    if places is None:
        return groups
    return [pack for group in groups for pack in _spread(group, group[0].job.task.pack_width(), places)]


def _spread(jobs: list[Work], width: int, places: int) -> list[list[Work]]:
    """`jobs` cut into packs of at most `width` for `places` devices: whole rounds of `places` packs."""
    rounds = -(-len(jobs) // (places * width))
    n = min(len(jobs), places * rounds)
    size, longer = divmod(len(jobs), n)
    cuts = [0]
    for i in range(n):
        cuts.append(cuts[-1] + size + (i < longer))
    return [jobs[a:b] for a, b in itertools.pairwise(cuts)]


def unit_name(unit: list[Work]) -> str:
    """A unit of placement as a note names it: its job, or its pack's first job and size."""
    first = unit[0].job.id
    return first if len(unit) == 1 else f"the pack of {first} and {len(unit) - 1} more"


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


def get_launcher(name: str, ray_address: str | None = None, gpus: str | None = None) -> Launcher:
    """The launcher, ready to run (ray: connected to its cluster; local with `gpus`: its GPUs counted)."""
    cls = launcher_class(name)
    if ray_address is not None and name != "ray":
        raise UserError(f"--ray-address applies to --launcher ray, not {name}")
    if gpus is not None and name != "local":
        raise UserError(f"--gpus applies to --launcher local, not {name} (a cluster places jobs on its own GPUs)")
    if name == "ray":
        return cls(address=ray_address)  # type: ignore[call-arg]
    return cls(gpus=gpus) if name == "local" else cls()  # type: ignore[call-arg]


def require(module: str, extra: str, what: str) -> None:
    """Import `module` or end with one line: what needs it and how to install it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{what} needs {module}, which is not installed ({exc}): "
                        f"pip install 'ssmbench[{extra}]'") from None
