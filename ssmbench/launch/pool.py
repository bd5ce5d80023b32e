"""The local launcher on several GPUs (`ssmbench run SUITE --gpus N`): one worker process per GPU, up to N
packs or jobs at once, on one machine with no cluster to set up.

Each unit (a pack of K jobs, or a job that does not pack: launch.packs) runs in a fresh process of its own,
`python -m ssmbench.launch.pool`, pinned to one GPU with CUDA_VISIBLE_DEVICES before Python starts, so its
torch sees that GPU alone as cuda:0. When a unit ends its GPU takes the next unit, until the plan is done.
A fresh process per unit costs a Python and torch start and a CUDA context (a few seconds, ~500 MiB of that
GPU's memory) and buys what a cluster task has: a crash, a leak or a fragmented allocator costs one unit.

The driver stays the one writer of records.jsonl. A worker sends each point's records back over a pipe as
soon as they are measured (and its progress, its live status and its notes for the driver's screen, which
shows them above the same bars as a run in one process); its own stdout and stderr go to a log under the
run directory (launch/workers/), named when the worker dies. The loop is the cluster launchers' (launch.remote):
a worker that dies (the kernel's OOM killer, a segfault) loses only its unfinished points, recorded as errors
or resubmitted while `launch.retries` lasts, and `--resume` finishes the rest.

Ctrl-C or SIGTERM stops the driver, which sends SIGINT to every worker (they run in sessions of their own, so
a terminal's Ctrl-C reaches them only this way, once): a training pack saves its runs' states at the end of
the step in progress, as train_pack does in one process; the driver writes every point that still comes in
and exits (130 or 143). `ssmbench run --resume RUN --gpus N` continues from the saved states.

Test hook: SSMBENCH_FAKE_GPUS=N says this machine has N GPUs without asking torch, so the whole path (the
processes, the pinning, the one writer, a stop and its resume) runs on the CPU with a CPU suite.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ssmbench import console
from ssmbench.errors import UserError
from ssmbench.jobs import Point
from ssmbench.launch import Feedback, Work, unit_name
from ssmbench.launch.remote import RemoteLauncher, Update
from ssmbench.records import Record

FAKE_GPUS_VAR = "SSMBENCH_FAKE_GPUS"
POLL_S = 1.0
STOP_GRACE_S = 120.0  # how long a stopping worker may take to save its training states before it is killed


def device_slots(gpus: str) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each worker for `--gpus` (a count or `all`): this machine's GPUs, those
    of the driver's own CUDA_VISIBLE_DEVICES where it has one. Asking for more than there are is the
    user's to fix: one line."""
    count = gpu_count()
    if gpus != "all" and not (gpus.isdigit() and int(gpus) > 0):
        raise UserError(f"--gpus {gpus}: give a number of GPUs (1 or more) or all")
    if count == 0:
        raise UserError(f"--gpus {gpus}: this machine has no CUDA GPU; run without --gpus")
    wanted = count if gpus == "all" else int(gpus)
    if wanted > count:
        raise UserError(f"--gpus {gpus}: this machine has {count} GPU{'s' if count > 1 else ''}; "
                        f"give at most {count}, or all")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(count)]
    return ids[:wanted]


def gpu_count() -> int:
    """The GPUs torch sees (the driver's CUDA_VISIBLE_DEVICES applies), or the test hook's number."""
    fake = os.environ.get(FAKE_GPUS_VAR)
    if fake is not None:
        if not fake.isdigit():
            raise UserError(f"{FAKE_GPUS_VAR}={fake}: give a number of GPUs")
        return int(fake)
    import torch

    return torch.cuda.device_count()


@dataclass
class _Worker:
    """One unit, waiting for a GPU, running in its process, or over."""

    unit: list[Work]
    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    device: str | None = None
    log: Path | None = None
    finished: bool = False  # the worker said it measured everything it was given
    ended: bool = False  # its process is gone (or it was dropped before it started)
    stopping: bool = False  # told to stop: its end is no failure of its own

    @property
    def running(self) -> bool:
        return self.process is not None and not self.ended


class GpuPool(RemoteLauncher):
    time_limits = False  # the local launcher ignores resources, time_min included

    def __init__(self, devices: list[str]):
        self.devices = devices
        self.free = list(devices)
        self.workers: list[_Worker] = []  # every unit submitted (a unit's points may all be in before it exits)

    def describe(self) -> dict[str, Any]:
        return {"gpus": len(self.devices), "devices": ",".join(self.devices)}

    def places(self) -> int:
        return len(self.devices)

    def start(self, folder: Path) -> None:
        self.logs = folder / "workers"
        self.logs.mkdir(parents=True, exist_ok=True)

    def submit(self, unit: list[Work]) -> _Worker:
        """Queue the unit; it starts when poll finds a GPU free."""
        worker = _Worker(unit)
        self.workers.append(worker)
        return worker

    def poll(self, handles: list[_Worker]) -> list[Update]:
        """Start what fits on the free GPUs, then read every running worker that has something to say (those
        whose points are all in included: they hold a GPU until they exit)."""
        updates = {id(h): Update() for h in handles}
        self._fill()
        running = [w for w in self.workers if w.running]
        ready = wait([w.conn for w in running if w.conn is not None], timeout=POLL_S)
        for worker in running:
            if worker.conn in ready:
                self._read(worker, updates.get(id(worker), Update()))
        return [updates[id(h)] for h in handles]

    def run(self, works: list[Work], feedback: Feedback, retries: int,
            folder: Path) -> Iterator[tuple[str, Point, list[Record]]]:
        try:
            yield from super().run(works, feedback, retries, folder)
        except BaseException:  # interrupted, or closed early: every worker is told to stop, and waited for
            self.stop([w for w in self.workers if not w.ended])
            raise
        # Done: a worker whose points are all in may still be tearing down; it holds its GPU until it exits.
        self._drain([w for w in self.workers if not w.ended], {})

    def cancel(self, handle: _Worker) -> None:
        """Tell the worker to stop (SIGINT: a pack saves its training states first); stop() waits for it."""
        handle.stopping = True
        if handle.process is None:
            handle.ended = True  # never started
        elif handle.running:
            handle.process.send_signal(signal.SIGINT)

    def stop(self, handles: list[_Worker]) -> list[Update]:
        """Tell every worker to stop, then take everything they send until they exit; one still running
        after STOP_GRACE_S is killed."""
        updates = {id(h): Update() for h in handles}
        for worker in handles:
            self.cancel(worker)
        self._drain(handles, updates)
        return [updates[id(h)] for h in handles]

    def _drain(self, workers: list[_Worker], updates: dict[int, Update]) -> None:
        """Read the workers (into `updates`, by handle) until they exit; one still running after STOP_GRACE_S
        is killed."""
        deadline = time.monotonic() + STOP_GRACE_S
        while (running := [w for w in workers if w.running]) and time.monotonic() < deadline:
            for conn in wait([w.conn for w in running if w.conn is not None], timeout=POLL_S):
                worker = next(w for w in running if w.conn is conn)
                self._read(worker, updates.get(id(worker), Update()))
        for worker in workers:
            if worker.running:
                worker.process.kill()  # type: ignore[union-attr]
                self._ended(worker, updates.get(id(worker), Update()))

    def _fill(self) -> None:
        """Start waiting units, in order, on the GPUs that are free."""
        for worker in self.workers:
            if not self.free:
                return
            if worker.process is None and not worker.ended:
                self._spawn(worker, self.free.pop(0))

    def _spawn(self, worker: _Worker, device: str) -> None:
        """The unit's process, pinned to `device`, reading its unit from stdin and answering on a pipe of its
        own; its stdout and stderr go to its log."""
        name = worker.unit[0].job.id.replace("/", "__")
        worker.device, worker.log = device, self.logs / f"{name}.{uuid.uuid4().hex[:8]}.log"
        read, write = os.pipe()
        with worker.log.open("wb") as log:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "ssmbench.launch.pool", str(write)], stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(write,), start_new_session=True,
                env=os.environ | {"CUDA_VISIBLE_DEVICES": device})
        os.close(write)
        worker.conn = Connection(read, writable=False)
        try:
            with worker.process.stdin:  # type: ignore[union-attr]
                worker.process.stdin.write(pickle.dumps(worker.unit))  # type: ignore[union-attr]
        except BrokenPipeError:
            pass  # it died at once: its log says why, and its pipe's end says it is over

    def _read(self, worker: _Worker, update: Update) -> None:
        """Everything the worker has sent, into `update`; at its pipe's end, the worker is over."""
        assert worker.conn is not None
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                _take_message(message, update, worker)
        except (EOFError, OSError):
            self._ended(worker, update)

    def _ended(self, worker: _Worker, update: Update) -> None:
        """The worker's process is gone: its GPU is free, and unless it finished or was told to stop, why it
        died is the unit's failure."""
        assert worker.process is not None and worker.conn is not None
        code = worker.process.wait()
        worker.conn.close()
        worker.ended = update.ended = True
        self.free.append(worker.device)  # type: ignore[arg-type]
        self.free.sort(key=self.devices.index)
        if not worker.finished and not worker.stopping:
            died = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            update.failure = (f"its worker process (GPU {worker.device}) died ({died}) before it finished; "
                              f"see {worker.log}")


def _take_message(message: tuple[Any, ...], update: Update, worker: _Worker) -> None:
    """One message of a worker (see main), into the driver's update."""
    what = message[0]
    if what == "started":
        update.started = message[1]
    elif what == "point":
        update.points.append((message[1], message[2], message[3]))
    elif what == "progress":
        update.progress[message[1]] = message[2]
    elif what == "status":
        update.status[message[1]] = message[2]
    elif what == "say":
        console.err.print(message[1], end="", markup=False, highlight=False, soft_wrap=True)
    elif what == "finished":
        worker.finished = True


class _Told:
    """The worker's feedback and screen, sent to the driver: its bars and its notes are the driver's."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def started(self, job_id: str, where: str) -> None:
        pass  # the driver heard where the unit runs when it started

    def progress(self, job_id: str, fraction: float) -> None:
        self.conn.send(("progress", job_id, fraction))

    def status(self, job_id: str, text: str) -> None:
        self.conn.send(("status", job_id, text))

    def write(self, text: str) -> int:
        self.conn.send(("say", text))
        return len(text)

    def flush(self) -> None:
        pass


def main(fd: int) -> None:
    """A worker: the unit from stdin, each point's records sent on `fd` as measured, then 'finished'. SIGINT
    (from the driver) stops it as Ctrl-C stops a run in one process: a training pack saves its states first."""
    from ssmbench.launch.worker import run_unit, where

    conn = Connection(fd, readable=False)
    unit = pickle.load(sys.stdin.buffer)
    told = _Told(conn)
    console.err.file = told  # type: ignore[assignment]
    conn.send(("started", where()))
    try:
        for job_id, pt, records in run_unit(unit, told):
            conn.send(("point", job_id, pt.key, records))
    except KeyboardInterrupt:
        print(f"{socket.gethostname()}: {unit_name(unit)} stopped by the driver", file=sys.stderr)
        sys.exit(130)
    conn.send(("finished",))


if __name__ == "__main__":
    main(int(sys.argv[1]))
