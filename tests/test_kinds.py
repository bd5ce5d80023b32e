"""The task kind is the one unit of extension: every registered kind is complete and consistent, a new
kind is one module and one registration line, and the modules import in one direction only."""

from __future__ import annotations

import ast
import shutil
import typing
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

import ssmbench.kinds as kinds
from ssmbench.cli import app
from ssmbench.errors import UserError
from ssmbench.jobs import TaskBase
from ssmbench.kinds import all_kinds, get_kind, kind_names
from ssmbench.kinds.base import JobContext, Kind, Runner
from ssmbench.plan import build_plan
from ssmbench.records import read_records
from ssmbench.report import write_report
from ssmbench.report.tables import records_frame
from ssmbench.rundir import RunDir
from ssmbench.spec import parse_suite

# --- every kind is complete ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", kind_names())
def test_every_kind_entry_is_complete_and_agrees_with_itself(name: str, tmp_path: Path):
    kind = get_kind(name)
    assert isinstance(kind, Kind) and kind.name == name
    assert kind.description and "\n" not in kind.description
    # The spec: a TaskBase whose `kind` literal is the registered name, valid with its defaults alone.
    assert issubclass(kind.task, TaskBase)
    assert typing.get_args(kind.task.model_fields["kind"].annotation) == (name,)
    assert isinstance(kind.task.model_validate({"kind": name}), kind.task)
    # The runner: typed by that very task model.
    assert issubclass(kind.runner, Runner)
    (runner_base,) = [b for b in kind.runner.__orig_bases__ if typing.get_origin(b)]
    assert typing.get_args(runner_base) == (kind.task,)
    # The plan builds its points before anything loads, and its views render the records its runner makes.
    (job,) = build_plan(parse_suite(_suite(name)), "cpu").jobs
    assert job.points and len({p.key for p in job.points}) == len(job.points)
    runner = kind.runner(job, JobContext("run", "s", tmp_path))
    metric = kind.metric_order[0] if kind.metric_order else "m"
    records = [runner.record(p, metric=metric, value=1.0, unit="u") for p in job.points]
    tables = kind.tables(name, records_frame(records))
    assert tables and all(t.task == name for t in tables)
    assert all(isinstance(m, str) for m in kind.metric_order)


def _suite(kind: str) -> dict:
    return {"name": "s", "models": ["tiny-gpt2"], "tasks": [{"kind": kind}], "defaults": {"device": "cpu"}}


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(UserError, match="unknown task kind 'throughpt' \\(did you mean 'throughput'\\?\\)"):
        get_kind("throughpt")


# --- a new kind: one module, one registration line --------------------------------------------------------


@pytest.fixture
def toy_registered():
    saved = dict(kinds.KINDS)
    kinds.register_kind("toy", "toy_kind:KIND")  # the one registration line
    yield
    kinds.KINDS.clear()
    kinds.KINDS.update(saved)


def test_a_new_kind_needs_one_module_and_one_line(toy_registered, tmp_path: Path):
    suite = tmp_path / "toy.yaml"
    suite.write_text("name: toy-suite\ndefaults: {device: cpu}\nmodels: [tiny-gpt2, tiny-mamba]\n"
                     "tasks:\n  - {kind: toy, repeats: 3}\n")
    cli = CliRunner()
    validated = cli.invoke(app, ["validate", str(suite)])
    assert validated.exit_code == 0, validated.output
    assert "toy" in cli.invoke(app, ["list", "tasks"]).stdout
    result = cli.invoke(app, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "toy-suite").iterdir()
    records = read_records(run_dir / "records.jsonl")
    assert sorted((r.model, r.point, r.value) for r in records) == [
        (m, f"copy={i}", float(len(m))) for m in ("tiny-gpt2", "tiny-mamba") for i in range(3)]
    # The generic table, and each job's own artifact folder.
    assert "### toy (toy)" in (run_dir / "table.md").read_text()
    assert (run_dir / "artifacts" / "toy" / "tiny-mamba" / "copy2.txt").read_text() == "tiny-mamba"


def test_a_suite_with_a_kind_not_registered_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="unknown task kind 'toy'"):
        parse_suite(_suite("toy"))


# --- one direction of imports ---------------------------------------------------------------------------

# Each top-level module or package of ssmbench, by layer: a module imports only from lower layers.
LAYERS: list[set[str]] = [
    {"errors", "console", "ssmbench"},
    {"zoo", "measure", "reference", "records"},
    {"jobs", "rundir", "models", "data"},
    {"report", "env", "train", "estimate"},
    {"kinds"},
    {"spec"},
    {"launch"},
    {"plan", "execute", "schema"},
    {"cli"},
    {"__main__"},
]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> set[tuple[str, str]]:
    pairs = set()
    for path in (REPO / "ssmbench").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            pairs |= {(_top(module), _top(n)) for n in names if n.split(".")[0] == "ssmbench"}
    return {(a, b) for a, b in pairs if a != b}


def test_modules_import_in_one_direction():
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    tops = {_top(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in (REPO / "ssmbench").glob("*")
            if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops - {"__init__"} <= set(layer), f"give these a layer: {tops - set(layer) - {'__init__'}}"
    upward = sorted((a, b) for a, b in _imports() if layer[b] >= layer[a])
    assert upward == [], "imports must go to a lower layer (tests/test_kinds.py LAYERS)"


def test_runners_do_not_import_the_planner():
    assert ("kinds", "plan") not in _imports() and ("kinds", "spec") not in _imports()


# --- reports -------------------------------------------------------------------------------------------

REFERENCE_RUNS = sorted(p.parent for p in (REPO / "results" / "reference").rglob("records.jsonl"))


@pytest.mark.parametrize("committed", REFERENCE_RUNS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_reference_runs_rerender_to_identical_tables(committed: Path, tmp_path: Path):
    copy = Path(shutil.copytree(committed, tmp_path / committed.name))
    for name in ("table.md", "table.json"):
        (copy / name).unlink()
    write_report(RunDir(copy), all_kinds())
    # An incomplete run's remedy names its directory: the copy's, where the committed table names its own.
    where = str(committed.relative_to(REPO))
    for name in ("table.md", "table.json"):
        assert (copy / name).read_text().replace(str(copy), where) == (committed / name).read_text(), name


def test_report_of_a_read_only_run_prints_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    committed = REFERENCE_RUNS[0]
    copy = Path(shutil.copytree(committed, tmp_path / committed.name))

    def read_only(self: RunDir, path: Path, text: str) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(RunDir, "write_atomic", read_only)
    result = CliRunner().invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (committed / "table.md").read_text() + "\n"
    assert "tables and plots not written (Read-only file system)" in result.stderr


def test_plans_and_records_carry_no_untyped_task():
    suite = parse_suite({"name": "s", "models": ["tiny-gpt2"], "tasks": [{"kind": "throughput"}]})
    (job,) = build_plan(suite, "cpu").jobs
    assert type(job.task).__name__ == "ThroughputTask" and job.task.new_tokens == 32
