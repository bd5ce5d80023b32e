"""A run directory's layout, in one place.

    results/<suite>/<run-id>/
        suite.resolved.yaml   the suite with every override applied (what --resume reads back)
        env.json              hardware and software (env.resume<N>.json for each resumption)
        records.jsonl         one record a line, flushed point by point
        run.lock              held (flock) by the one process that runs or resumes the run
        plan.json             every point the run means to measure (a report names those without records)
        table.md/.csv/.json   rebuilt from records.jsonl (and table.tex on request)
        <task>_*.png          the kinds' plots
        artifacts/<job id>/   what a job keeps besides records: checkpoints, sample prompts, per-document logs
        launch/               a cluster launcher's own files: SLURM scripts and logs, its workers' spools

Everything that reads or writes these names goes through RunDir, so the layout can change in one file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.markup import escape

from ssmbench import console
from ssmbench.errors import UserError, cannot_write
from ssmbench.records import ForeignRecord, Record, read_records, torn_point

# Report format -> table file suffix: the one map of formats to files.
TABLE_FORMATS: dict[str, str] = {"md": "md", "csv": "csv", "json": "json", "latex": "tex"}


class RunDir:
    RECORDS = "records.jsonl"
    PLAN = "plan.json"
    RESOLVED_SUITE = "suite.resolved.yaml"
    ENV = "env.json"
    ARTIFACTS = "artifacts"
    LAUNCH = "launch"
    LOCK = "run.lock"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._torn_lines: set[int] = set()  # told once per command, however often the records are read
        self.torn_points: set[tuple[str, str]] = set()  # (job, point) of the torn lines that name theirs

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        """The run id (the directory's name, a timestamp)."""
        return self.path.name

    @classmethod
    def create(cls, out: Path, suite_name: str) -> RunDir:
        """A fresh directory under out/<suite>/; never an existing one. A place where none can be made
        (--out is a file, unwritable, on a read-only file system, full) is the user's to fix: UserError."""
        base = Path(out) / suite_name / datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"--out {out}: cannot create the run directory {path} "
                            f"({exc.strerror or type(exc).__name__})") from None
        return cls(path)

    @classmethod
    def existing(cls, path: Path, need: str = RESOLVED_SUITE) -> RunDir:
        """A run directory that must already hold `need` (the resolved suite to resume, the records to
        report); a UserError naming what is missing otherwise."""
        run = cls(path)
        if not run.path.is_dir():
            what = "not a directory" if run.path.exists() else "no such directory"
            raise UserError(f"{path}: {what}; give a run directory, results/<suite>/<run-id>")
        for name in {need, cls.RECORDS}:  # the records are read by every command that takes a run
            found = run.path / name
            if found.exists() and not found.is_file():
                raise UserError(f"{found}: is a {'directory' if found.is_dir() else 'special file'}, not a file; "
                                f"a run keeps its {name} as a file (move this one away)")
        if not (run.path / need).is_file():
            raise UserError(f"{path}: not a run directory (no {need}); give results/<suite>/<run-id>")
        return run

    # --- files -------------------------------------------------------------------------------------------

    @property
    def records_path(self) -> Path:
        return self.path / self.RECORDS

    @property
    def resolved_suite_path(self) -> Path:
        return self.path / self.RESOLVED_SUITE

    def table_path(self, fmt: str) -> Path:
        return self.path / f"table.{TABLE_FORMATS[fmt]}"

    def plot_path(self, name: str) -> Path:
        return self.path / name

    def artifacts(self, job_id: str) -> Path:
        """The folder of one job's files ("throughput/gpt2" -> artifacts/throughput/gpt2); made on first write."""
        return self.path / self.ARTIFACTS / job_id

    @property
    def launch_files(self) -> Path:
        """Where a cluster launcher keeps its files (submission scripts, logs, spools); never records."""
        return self.path / self.LAUNCH

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process while it runs or resumes the run: a second `run --resume`
        of the same run would measure the same points and append them twice. The lock is the kernel's (flock),
        so a holder that crashed or was killed holds nothing; the file says who holds it, for the error."""
        import fcntl

        path = self.path / self.LOCK
        try:
            file = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{path}: cannot open the run's lock file ({exc.strerror or exc})") from None
        with file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                raise UserError(f"{self.path}: another ssmbench run is writing this run directory ({holder}); "
                                f"wait for it to end (or stop it), then `ssmbench run --resume {self.path}`") from None
            file.seek(0)
            file.truncate()
            file.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{datetime.now().isoformat(sep=' ', timespec='seconds')}\n")
            file.flush()
            try:
                yield
            finally:  # explicitly: a forked helper process that inherited the descriptor must not keep it held
                fcntl.flock(file, fcntl.LOCK_UN)

    def read_records(self) -> list[Record]:
        """The run's records; a torn line is reported (once) and skipped, a foreign one or a records file that
        cannot be read is the user's error."""
        def torn(number: int, text: str) -> None:
            point = torn_point(text)
            if point is not None:
                self.torn_points.add(point)
            if number not in self._torn_lines:
                self._torn_lines.add(number)
                whose = f"a record of {console.point_name(*point)}" if point else escape(repr(text[:60]))
                console.note(f"{self.records_path}: line {number} is not JSON (a write cut short?); skipped: {whose}")

        try:
            return read_records(self.records_path, torn)
        except ForeignRecord as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"{self.records_path}: cannot read the records ({exc.strerror or exc})") from None

    def write_plan(self, points: list[tuple[str, str, str]]) -> None:
        """(task, job, point) of every point the run means to measure."""
        self.write_atomic(self.path / self.PLAN, json.dumps([list(p) for p in points]))

    def read_plan(self) -> list[tuple[str, str, str]] | None:
        """The planned points, or None for a run written before plans were kept (or unreadable)."""
        try:
            return [tuple(p) for p in json.loads((self.path / self.PLAN).read_text())]
        except (OSError, json.JSONDecodeError, TypeError):
            return None

    def suite_name(self) -> str:
        """The suite's name as the run resolved it; the parent directory's name if that file is unreadable.
        (A run with records names its suite in each; this serves one that has none yet.)"""
        import yaml

        try:
            return str(yaml.safe_load(self.resolved_suite_path.read_text())["name"])
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return self.path.parent.name

    def read_env(self) -> dict[str, Any]:
        """The first env.json (the run's start), or {} when missing or unreadable."""
        try:
            return json.loads((self.path / self.ENV).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_header(self, resolved_suite_yaml: str, env: dict[str, Any]) -> None:
        """The resolved suite, and the environment of this start (env.json first, env.resume<N>.json after)."""
        self.write_atomic(self.resolved_suite_path, resolved_suite_yaml)
        name, n = self.ENV, 0
        while (self.path / name).exists():
            n += 1
            name = f"env.resume{n}.json"
        self.write_atomic(self.path / name, json.dumps(env, indent=2))

    def write_atomic(self, path: Path, text: str) -> None:
        """Replace `path` in one step, so a reader never sees half a table; a write the storage refuses
        leaves the old file and ends the command with one line (WriteError)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise cannot_write(path, exc, self.path) from None
