"""The command line: parses, delegates, prints. No logic of its own.

Errors a user can cause end with one line and exit code 2; a run exits 1 when any point errored (OOM is a
result, not an error), 130 when interrupted with Ctrl-C and 143 on SIGTERM (resume it with --resume).
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer

from ssmbench import console
from ssmbench.errors import STORAGE_ERRNOS, UserError, cannot_write
from ssmbench.launch import LAUNCHERS
from ssmbench.rundir import TABLE_FORMATS, RunDir
from ssmbench.spec import Device, Weights

if TYPE_CHECKING:
    from ssmbench.jobs import Plan
    from ssmbench.report import Table
    from ssmbench.spec import Suite

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and compare selective state-space models (Mamba) with Transformers.")


def _choices(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A command-line choice whose values are the spec's literals, so the two cannot drift apart."""
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


DeviceChoice = _choices("DeviceChoice", get_args(Device))
WeightsChoice = _choices("WeightsChoice", get_args(Weights))
Format = _choices("Format", tuple(TABLE_FORMATS))
DiffFormat = _choices("DiffFormat", ("md", "json"))
LauncherChoice = _choices("LauncherChoice", tuple(LAUNCHERS))


class ListWhat(StrEnum):
    models = "models"
    tasks = "tasks"
    suites = "suites"


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one red line on stderr (one per fault, when it names several) and exit code 2
    (no traceback)."""

    from rich.markup import escape

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in str(exc).splitlines():  # "ssmbench[ray]" is no markup
                console.err.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # the storage refused a write the run's own writers do not wrap (a plot, a dir)
            if exc.errno not in STORAGE_ERRNOS:
                raise
            line = cannot_write(exc.filename or "a file of the run", exc, run_dir="RUN")
            console.err.print(f"[red]error:[/] {escape(str(line))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


DeviceOpt = Annotated[DeviceChoice | None, typer.Option("--device", help="Override the suite's device.")]
WeightsOpt = Annotated[WeightsChoice | None, typer.Option("--weights", help="Use these weights for every model.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Where run directories go: OUT/<suite>/<run-id>/.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the job plan and exit.")]
LimitOpt = Annotated[float | None, typer.Option(
    "--limit", help="Zero-shot tasks: evaluate N documents per lm-eval task (a fraction if below 1). Figures on a "
                    "subset are flagged against the paper by standard error, not by the full-set tolerance.")]
LauncherOpt = Annotated[LauncherChoice, typer.Option(
    "--launcher", help="Where jobs run: here (local), a Ray cluster (ray), or SLURM through submitit (slurm).")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="The Ray cluster to join (auto, HOST:PORT, ray://HOST:10001); default: start one here.")]
GpusOpt = Annotated[str | None, typer.Option(
    "--gpus", help="Local launcher: run up to N packs or jobs at once, a worker process per GPU (N or all).")]


@app.command()
@user_errors
def run(
    suite: Annotated[str | None, typer.Argument(help="Suite file, or the name of a packaged suite.")] = None,
    models: Annotated[str | None, typer.Option(
        "--models", help="Comma-separated models replacing the suite's (tasks that run no suite model are left out).")] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated task names: run only these.")] = None,
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    out: OutOpt = Path("results"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Finish an interrupted run in RUN_DIR.")] = None,
    dry_run: DryRunOpt = False,
    limit: LimitOpt = None,
    launcher: LauncherOpt = LauncherChoice.local,
    ray_address: RayAddressOpt = None,
    gpus: GpusOpt = None,
) -> None:
    """Run a suite: every task on every model, into results/<suite>/<run-id>/."""
    from ssmbench.plan import apply_overrides
    from ssmbench.spec import load_suite

    if resume is not None:
        if suite or models or tasks or device or weights or limit is not None:
            raise UserError("--resume takes the run's own suite.resolved.yaml; give no suite or overrides")
        run_dir = RunDir.existing(resume)
        _run_suite(load_suite(run_dir.resolved_suite_path)[0], out, dry_run, run_dir, launcher.value, ray_address, gpus)
        return
    if suite is None:
        raise UserError("give a suite file (e.g. suites/smoke.yaml) or --resume RUN_DIR")
    spec, _ = load_suite(suite)
    spec = apply_overrides(spec, _split(models), device.value if device else None,
                           weights.value if weights else None, _split(tasks), limit)
    _run_suite(spec, out, dry_run, launcher=launcher.value, ray_address=ray_address, gpus=gpus)


@app.command()
@user_errors
def compare(
    models: Annotated[list[str], typer.Argument(help="Two or more models, e.g. gpt2 mamba-130m.")],
    suite: Annotated[str, typer.Option("--suite", help="The comparison suite.")] = "compare",
    device: DeviceOpt = None,
    weights: WeightsOpt = None,
    out: OutOpt = Path("results"),
    dry_run: DryRunOpt = False,
    limit: LimitOpt = None,
) -> None:
    """The standard side-by-side comparison: models as columns, metrics as rows, grouped by task."""
    from ssmbench.plan import apply_overrides
    from ssmbench.spec import load_suite

    spec, _ = load_suite(suite)
    spec = apply_overrides(spec, models, device.value if device else None, weights.value if weights else None,
                           limit=limit, models_from="compare")
    _run_suite(spec, out, dry_run)


def _split(names: str | None) -> list[str] | None:
    return [n.strip() for n in names.split(",") if n.strip()] if names else None


def _run_suite(suite: Suite, out: Path, dry_run: bool, run_dir: RunDir | None = None, launcher: str = "local",
               ray_address: str | None = None, gpus: str | None = None) -> None:
    from ssmbench.env import resolve_device
    from ssmbench.execute import execute
    from ssmbench.kinds import all_kinds
    from ssmbench.launch import get_launcher, launcher_class
    from ssmbench.plan import build_plan
    from ssmbench.report import write_report

    with contextlib.ExitStack() as held:
        if run_dir is not None and not dry_run:
            held.enter_context(run_dir.lock())  # a second resume of this run ends here, before it reads anything
        if run_dir is not None:
            run_dir.read_records()  # a resumed run's records must be ours before anything starts
        launcher_cls = launcher_class(launcher)  # a missing extra ends here, before anything is planned
        plan = build_plan(suite, resolve_device(suite.defaults.device))
        for note in plan.notes:
            console.note(note)
        if dry_run:
            _print_plan(plan, out)
            for script in launcher_cls.dry_run(plan, out / suite.name / f"{launcher}-dry-run"):
                console.err.print(f"{launcher}: wrote {script} (not submitted)", soft_wrap=True)
            return
        launch = get_launcher(launcher, ray_address, gpus)
        if run_dir is None:
            run_dir = RunDir.create(out, suite.name)
            held.enter_context(run_dir.lock())  # and a resume of this run while it goes
        console.err.print(f"run directory: [bold]{run_dir}[/] ({plan.n_points} points in {len(plan.jobs)} jobs, "
                          f"device {plan.device})")
        with _sigterm_as_interrupt():
            summary = execute(plan, run_dir, launch)
        _print_tables(write_report(run_dir, all_kinds()).tables)
    counts = ", ".join(f"{n} {s}" for s, n in summary.statuses.items()) or "nothing to do"
    console.err.print(f"points: {counts}. Tables and plots: {run_dir}/table.md")
    if summary.interrupted:
        how = "terminated (SIGTERM)" if summary.terminated else "interrupted"
        console.err.print(f"[yellow]{how}[/]: finish with `ssmbench run --resume {run_dir}`")
        raise typer.Exit(143 if summary.terminated else 130)
    if summary.failed:
        raise typer.Exit(1)


_STOPPING_HANDLERS: set[Callable[..., None]] = set()  # the SIGTERM handlers a forked child must not inherit


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a run executes, SIGTERM stops it as Ctrl-C does: the point in progress is dropped, everything
    recorded stays, the tables are written, and the exit code (143) says it was terminated.

    Only this process is stopped that way: a forked child starts with SIGTERM's default meaning (see
    _fork_with_default_sigterm). lm-eval's bootstrap pool forks workers and ends them with SIGTERM at
    once; a worker that kept this handler could outlive the signal and its parent would wait forever."""
    from ssmbench.errors import Terminated

    def stop(signum: int, frame: Any) -> None:
        raise Terminated()

    _fork_with_default_sigterm()
    previous = signal.signal(signal.SIGTERM, stop)
    _STOPPING_HANDLERS.add(stop)
    try:
        yield
    finally:
        _STOPPING_HANDLERS.discard(stop)
        signal.signal(signal.SIGTERM, previous)


@functools.cache
def _fork_with_default_sigterm() -> None:
    """Once per process: around every os.fork made while a stopping handler is installed, SIGTERM is blocked
    in the forking thread; the child resets it to the default and unblocks it (a SIGTERM sent meanwhile
    then kills it), the parent unblocks it (one sent meanwhile then runs the handler).

    Resetting inside the child's handler instead (it used to check its pid) loses a SIGTERM that arrives in
    the instant after fork: Python clears the signals a child has caught but not yet handled, so the child
    lives on with no signal pending while Pool.terminate joins it. A loop of Pool(4) opened and closed under
    the handler hung within 100 iterations that way."""
    import os

    blocked = False

    def before() -> None:
        nonlocal blocked
        blocked = signal.getsignal(signal.SIGTERM) in _STOPPING_HANDLERS
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def after_in_child() -> None:
        if blocked:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def after_in_parent() -> None:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    os.register_at_fork(before=before, after_in_child=after_in_child, after_in_parent=after_in_parent)


def _print_plan(plan: Plan, out: Path) -> None:
    from rich.table import Table as RichTable

    from ssmbench.env import device_label
    from ssmbench.estimate import estimate, point_times
    from ssmbench.kinds import get_kind

    table = RichTable(title=f"{plan.suite_name}: {len(plan.jobs)} jobs, {plan.n_points} points on {plan.device}")
    for col in ("job", "kind", "points", "sweep", "weights", "needs", "note"):
        table.add_column(col)
    for job in plan.jobs:
        needs = get_kind(job.kind).runner.needs(job.task, job.model, job.device)
        if job.model is not None and job.model.weights == "pretrained":
            needs = [*needs, f"weights: {job.model.describe_source()}"]
        sweep = "; ".join(p.key for p in job.points[:3]) + (" …" if len(job.points) > 3 else "")
        table.add_row(job.id, job.kind, str(len(job.points)), sweep,
                      job.model.weights if job.model else "—", ", ".join(needs) or "—",
                      job.skip_reason or job.backend_note or "")
    console.out.print(table)
    device = device_label(plan.device)
    console.out.print(f"time: {estimate(plan, point_times(out, device)).describe()}", soft_wrap=True)


def _print_tables(tables: list[Table]) -> None:
    from rich.table import Table as RichTable

    for t in tables:
        rich_table = RichTable(title=t.title, title_justify="left")
        for col in t.frame.columns:
            rich_table.add_column(str(col), justify="left" if col in ("metric", "model") else "right")
        for row in t.frame.itertuples(index=False):
            rich_table.add_row(*[str(v) for v in row])
        console.out.print(rich_table)
        for note in t.notes:
            console.out.print(f"  [dim]{note}[/]", soft_wrap=True)


@app.command("list")
@user_errors
def list_(what: Annotated[ListWhat, typer.Argument(help="models, tasks or suites")]) -> None:
    """List the model zoo, the task kinds, or the packaged suites."""
    from rich.table import Table as RichTable

    if what is ListWhat.models:
        from ssmbench.zoo import MODELS

        table = RichTable("model", "family", "arch", "params", "hub id", "mamba_ssm id", "notes")
        for spec in MODELS.values():
            table.add_row(spec.name, spec.family, spec.arch, f"{spec.params_nominal / 1e6:,.0f}M" if spec.params_nominal
                          >= 1e7 else f"{spec.params_nominal / 1e6:.2f}M", spec.hf_id or "—",
                          spec.mamba_ssm_id or "—", spec.notes)
    elif what is ListWhat.tasks:
        from ssmbench.kinds import all_kinds

        table = RichTable("kind", "what it measures")
        for kind in all_kinds().values():
            table.add_row(kind.name, kind.description)
    else:
        from ssmbench.spec import load_suite, packaged_suites_dir

        table = RichTable("suite", "file", "description")
        for path in sorted(packaged_suites_dir().glob("*.yaml")):  # named as `run` and `validate` take them
            spec, _ = load_suite(path)
            table.add_row(path.stem, str(path), spec.description.strip().splitlines()[0] if spec.description else "")
    console.out.print(table)


@app.command()
@user_errors
def validate(files: Annotated[list[str], typer.Argument(help="Suite files to check.")]) -> None:
    """Check suite files without running them, as `run` checks them (the plan is built), offline: every error
    names the file and the field."""
    from ssmbench.env import resolve_device
    from ssmbench.models import hub
    from ssmbench.plan import build_plan
    from ssmbench.spec import load_suite

    with hub.offline("`ssmbench validate` reads the Hugging Face cache only, it never downloads"):
        for f in files:
            suite, path = load_suite(f)
            requested = suite.defaults.device  # a CUDA suite is checked for CUDA on any machine
            try:
                build_plan(suite, resolve_device("auto") if requested == "auto" else requested)
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from None
            console.out.print(f"[green]ok[/] {path}: {len(suite.models)} models, {len(suite.tasks)} tasks")


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/<suite>/<run-id>).")],
    fmt: Annotated[Format, typer.Option("--format", help="What to print.")] = Format.md,
    disagreements: Annotated[str | None, typer.Option(
        "--disagreements", metavar="LM_TASK",
        help="Instead: the documents of this lm-eval task on which two models disagree most (needs log_samples).")]
        = None,
    models: Annotated[str | None, typer.Option("--models", help="With --disagreements: the two models, A,B.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="With --disagreements: how many documents.")] = 10,
    html: Annotated[bool, typer.Option(
        "--html", help="Also write report.html: every table, interactive plots and provenance, one file that "
                       "opens offline.")] = False,
) -> None:
    """Rebuild every table and plot of a run from its records.jsonl, and print one format."""
    from ssmbench.kinds import all_kinds
    from ssmbench.report import render, write_report

    run = RunDir.existing(run_dir, need=RunDir.RECORDS)
    if disagreements is not None:
        from ssmbench.kinds.zero_shot.samples import disagreements as view

        table = view(run, run.read_records(), disagreements, _split(models), top)
        console.out.print(render([table], fmt.value if fmt.value != "csv" else "md"), markup=False,
                          highlight=False, soft_wrap=True)
        return
    if models is not None:
        raise UserError("--models goes with --disagreements")
    formats = tuple(dict.fromkeys(("md", "csv", "json", fmt.value)))
    report_ = write_report(run, all_kinds(), formats, html=html)
    console.out.print(report_.rendered[fmt.value], markup=False, highlight=False, soft_wrap=True)
    if report_.html is not None:
        console.err.print(f"HTML report: {report_.html}", soft_wrap=True)


@app.command()
@user_errors
def history(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, or folders of runs (e.g. results/nightly).")],
    out: Annotated[Path, typer.Option("--out", help="Where history.md, history.json and history.html go.")]
    = Path("history"),
) -> None:
    """Every figure the runs share over time, with the steps asv's step detection finds (and the commits)."""
    from ssmbench.report.history import history as build

    infos, rows, written = build(runs, out)
    changed = [r for r in rows if r["steps"] != "—"]
    console.out.print(f"{len(infos)} runs, {len(rows)} figures, {len(changed)} changed", soft_wrap=True)
    for row in changed:
        console.out.print(f"  {row['figure']} ({row['unit']}): {row['steps']}", markup=False, soft_wrap=True)
    console.err.print(f"history: {written['md']}, {written['html']}", soft_wrap=True)


@app.command()
@user_errors
def diff(
    base: Annotated[Path, typer.Argument(help="The baseline run directory.")],
    new: Annotated[Path, typer.Argument(help="The run to judge.")],
    max_regression: Annotated[list[str] | None, typer.Option(
        "--max-regression", help="PCT for every metric, or METRIC=PCT (repeatable); over the suite's `regression:`.")]
    = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Compare only these metrics (repeatable).")]
    = None,
    fmt: Annotated[DiffFormat, typer.Option("--format", help="What to print.")] = DiffFormat.md,
) -> None:
    """Compare two runs figure by figure; exit 1 when a figure regressed beyond its threshold and its noise."""
    from rich.markup import escape

    from ssmbench.errors import WriteError
    from ssmbench.report.diff import (
        diff_runs,
        no_overlap,
        render_json,
        render_markdown,
        thresholds,
        write_diff,
    )
    from ssmbench.spec import load_suite

    base_run, new_run = RunDir.existing(base, need=RunDir.RECORDS), RunDir.existing(new, need=RunDir.RECORDS)
    suite_thresholds = {}
    if new_run.resolved_suite_path.is_file():
        suite_thresholds = load_suite(new_run.resolved_suite_path)[0].regression
    base_records, new_records = base_run.read_records(), new_run.read_records()
    result = diff_runs(base_records, new_records,
                       thresholds(suite_thresholds, _parse_thresholds(max_regression or [])), metric or None,
                       base_run.read_env(), new_run.read_env())
    names = (str(base_run), str(new_run))
    if not result.compared:  # a PASS over nothing would say the runs agree
        raise UserError(no_overlap(base_records, new_records, *names, metric or None))
    markdown, data = render_markdown(result, *names), render_json(result, *names)
    try:
        console.err.print(write_diff(new_run, markdown, data), markup=False, highlight=False, soft_wrap=True)
    except WriteError as exc:  # names the file and the reason
        console.note(f"{escape(str(exc.path))}: diff not written ({exc.reason}); printing it only")
    if fmt.value == "json":
        console.out.print_json(json.dumps(data))
    else:
        console.out.print(markdown, markup=False, highlight=False, soft_wrap=True)
    if result.failed:
        raise typer.Exit(1)


def _parse_thresholds(values: list[str]) -> dict[str, float]:
    """--max-regression 5 (every metric) or decode_tok_s=10 (one metric)."""
    out = {}
    for value in values:
        metric, _, pct = value.rpartition("=")
        try:
            out[metric or "default"] = float(pct)
        except ValueError:
            raise UserError(f"--max-regression {value!r}: give a percentage, or METRIC=PERCENTAGE") from None
        if not out[metric or "default"] >= 0:  # NaN too
            raise UserError(f"--max-regression {value!r}: the largest tolerated regression is a percentage of 0 "
                            "or more")
    return out


@app.command()
@user_errors
def schema(out: Annotated[Path | None, typer.Option(
        "--out", help="Write it to this file (e.g. suites/suite.schema.json) instead of printing it.")] = None) -> None:
    """The JSON Schema of a suite file, from the suite's own models: editors check and complete suites with it."""
    from ssmbench.schema import write_schema

    text = write_schema(out)
    if out is None:
        typer.echo(text, nl=False)


@app.command()
def env(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What this machine has: GPU, driver, CUDA, library versions, fused kernels."""
    from ssmbench.env import collect

    info = collect()
    if as_json:
        console.out.print_json(json.dumps(info))
        return
    kernels = info["fused_mamba_kernels"]
    state = "available" if kernels["available"] else "unavailable"
    console.out.print(f"fused Mamba kernels: {state} ({kernels['detail']})", soft_wrap=True)
    for key, value in info.items():
        if key != "fused_mamba_kernels":
            console.out.print(f"[bold]{key}[/]: {value}", soft_wrap=True)


def main() -> None:
    app()
