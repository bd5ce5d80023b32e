"""The Ray launcher: each pack, and each job that does not pack, is one Ray task on a cluster, asking for
the GPUs its resources name (one on CUDA, none on the CPU), so a sweep spreads over every GPU the cluster has.

It connects to a running cluster (`--ray-address`, e.g. `auto` or `ray://head:10001`) or, without one,
starts a local cluster of this machine's CPUs and GPUs. A unit's task is a generator: it yields each point's
records as soon as they are measured, so the driver appends them point by point, as the local launcher does,
and a worker that dies loses only the points it had not finished. Jobs, not points, are the unit of work:
points of a job share the model their runner loaded once (and a synthetic job's training).

A task that packs (`pack: K`) is placed K jobs at a time: each pack is one Ray task that asks for one whole
GPU and runs worker.run_pack, its K models stepping side by side on CUDA streams in one process, as under
the local launcher (not K processes time-sliced on a shared GPU, each with a CUDA context of its own).

Ray is an optional extra (`pip install 'ssmbench[ray]'`), imported here and only here. Its own retries are
off (`max_retries=0`): a job is resubmitted by ssmbench, with only its unfinished points, `launch.retries`
times.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from ssmbench.errors import UserError, first_line
from ssmbench.jobs import Job
from ssmbench.launch import LOCAL_ENV, WORKER_ENV, Work, forwarded_env, unit_name
from ssmbench.launch.remote import RemoteLauncher, Update
from ssmbench.launch.worker import NoFeedback, run_unit, where

POLL_S = 1.0


def stream(unit: list[Work]) -> Iterator[tuple[Any, ...]]:
    """The Ray task of one pack or job: where it runs, then (job id, point key, records) for each point as
    it is measured."""
    yield ("started", where())
    for job_id, pt, records in run_unit(unit, NoFeedback()):
        yield ("point", job_id, pt.key, records)


class RayLauncher(RemoteLauncher):
    def __init__(self, address: str | None = None):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            self._connect(address)
        self.task = ray.remote(stream)

    def _connect(self, address: str | None) -> None:
        """Join the cluster at `address`, or start a local one that inherits this machine's environment;
        a cluster that cannot be reached is the user's to fix (one line)."""
        env = forwarded_env(WORKER_ENV + (LOCAL_ENV if address is None else ()))
        if address is None:  # a cluster of our own: Ray's usage reporting off unless the user turned it on
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            self.ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False,
                          logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise UserError(f"--ray-address {address}: cannot start or reach a Ray cluster "
                            f"({first_line(exc, 200)})") from None

    def describe(self) -> dict[str, Any]:
        """Ray's version and the cluster (its GCS address) as the driver sees it when the run starts."""
        resources = self.ray.cluster_resources()
        return {"name": "ray", "ray": self.ray.__version__, "cluster": self.ray.get_runtime_context().gcs_address,
                "nodes": sum(1 for node in self.ray.nodes() if node.get("Alive")),
                "gpus": int(resources.get("GPU", 0)), "cpus": int(resources.get("CPU", 0))}

    def places(self) -> int:
        """The cluster's GPUs as the run starts (its CPUs on a cluster without any)."""
        resources = self.ray.cluster_resources()
        return max(1, int(resources.get("GPU", 0) or resources.get("CPU", 1)))

    def submit(self, unit: list[Work]) -> Any:
        job = unit[0].job  # a pack's jobs are one task's: the same resources
        options: dict[str, Any] = {"num_cpus": job.resources.cpus or 1, "num_gpus": ray_gpus(job),
                                   "max_retries": 0, "name": f"ssmbench {unit_name(unit)}"}
        if job.resources.mem_gb:
            options["memory"] = int(job.resources.mem_gb * 2**30)
        return self.task.options(**options).remote(unit)

    def poll(self, handles: list[Any]) -> list[Update]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=POLL_S)
        news = {id(h) for h in ready}
        return [self._drain(h) if id(h) in news else Update() for h in handles]

    def cancel(self, handle: Any) -> None:
        self.ray.cancel(handle, force=True)

    def _drain(self, generator: Any) -> Update:
        """Everything the job has yielded so far; a task that raised (its worker died, its node was lost)
        ends the update with the reason."""
        update = Update()
        while not update.ended and self.ray.wait([generator], timeout=0)[0]:
            try:
                item = self.ray.get(next(generator))
            except StopIteration:
                update.ended = True
            except self.ray.exceptions.RayError as exc:
                update.ended, update.failure = True, why_task_ended(exc)
            else:
                if item[0] == "started":
                    update.started = item[1]
                else:
                    update.points.append((item[1], item[2], item[3]))
        return update


def ray_gpus(job: Job[Any]) -> int:
    """The GPUs a job's unit (its pack, or itself) asks Ray for: its resources' where they say, else one
    whole GPU on CUDA and none on the CPU. A pack shares its GPU among its own models, in one process."""
    return job.resources.gpus_for(job.device)


def why_task_ended(exc: BaseException) -> str:
    """One line for why a task ended: the cause raised inside it, or what Ray saw (a dead worker, a lost node)."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    return f"{type(shown).__name__}: {first_line(shown, 300)}" if str(shown).strip() else type(shown).__name__
