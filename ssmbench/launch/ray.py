"""The Ray launcher: each job is one Ray task on a cluster, asking for the GPUs its resources name (one per
job on CUDA, none on the CPU), so a sweep spreads over every GPU the cluster has.

It connects to a running cluster (`--ray-address`, e.g. `auto` or `ray://head:10001`) or, without one,
starts a local cluster of this machine's CPUs and GPUs. A job's task is a generator: it yields each point's
records as soon as they are measured, so the driver appends them point by point, as the local launcher does,
and a worker that dies loses only the point it was measuring. Jobs, not points, are the unit of work:
points of a job share the model their runner loaded once (and a synthetic job's training).

A task that packs (`pack: K`) asks 1/K of a GPU for each job, so Ray puts K of its jobs on each GPU, each
in a process of its own (the local launcher packs them in one process instead, on CUDA streams).

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
from ssmbench.launch import LOCAL_ENV, WORKER_ENV, Work, forwarded_env
from ssmbench.launch.remote import RemoteLauncher, Update
from ssmbench.launch.worker import run_work, where

POLL_S = 1.0


def stream(work: Work) -> Iterator[tuple[Any, ...]]:
    """The Ray task of one job: where it runs, then (point key, records) for each point as it is measured."""
    yield ("started", where())
    for pt, records in run_work(work):
        yield ("point", pt.key, records)


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

    def submit(self, work: Work) -> Any:
        resources = work.job.resources
        options: dict[str, Any] = {"num_cpus": resources.cpus or 1, "num_gpus": ray_gpus(work.job),
                                   "max_retries": 0, "name": f"ssmbench {work.job.id}"}
        if resources.mem_gb:
            options["memory"] = int(resources.mem_gb * 2**30)
        return self.task.options(**options).remote(work)

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
                    update.points.append((item[1], item[2]))
        return update


def ray_gpus(job: Job[Any]) -> float:
    """The GPUs a job asks Ray for: its resources' where they say, else one on CUDA, shared by the jobs of a
    task that packs (`pack: K` asks 1/K of a GPU, so Ray runs K of them on each GPU, a process each)."""
    if job.resources.gpus is not None or job.device != "cuda":
        return job.resources.gpus_for(job.device)
    return 1 / job.task.pack_width()


def why_task_ended(exc: BaseException) -> str:
    """One line for why a task ended: the cause raised inside it, or what Ray saw (a dead worker, a lost node)."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    return f"{type(shown).__name__}: {first_line(shown, 300)}" if str(shown).strip() else type(shown).__name__
