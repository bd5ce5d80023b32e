"""Reliability: bad input is one line and exit 2, a report says what it is missing and how sure its numbers
are, SIGTERM stops a run as Ctrl-C does, and a CPU run says which lighter settings it chose and why."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_cli import TINY_SUITE, assert_user_error, invoke, unwrapped, write

from ssmbench.kinds import all_kinds
from ssmbench.records import (
    Record,
    RecordWriter,
    duplicate_identities,
    latest_attempts,
    point_attempts,
    read_records,
    summarised,
)
from ssmbench.report import write_report
from ssmbench.rundir import RunDir

# --- the run directory and its records --------------------------------------------------------------------


def test_out_that_is_a_file(tmp_path: Path):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    blocker = write(tmp_path / "results", "not a directory")
    assert_user_error(invoke("run", suite, "--out", blocker), f"--out {blocker}: cannot create the run directory")


def test_out_on_a_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)

    def read_only(self: Path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert_user_error(invoke("run", suite, "--out", tmp_path / "ro"), "(Read-only file system)")


def test_a_full_disk_ends_the_run_in_one_line_and_resume_loses_and_doubles_nothing(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    """The storage refuses the third point's records (ENOSPC at fsync, after its bytes went out): the file
    is cut back to the second point, the run ends with one line naming records.jsonl and the reason, exit 2;
    once there is room, --resume measures the third and fourth points, and every point has one record set."""
    from test_cli import GRID_SUITE

    from ssmbench import records as records_module

    real_fsync, calls = os.fsync, {"n": 0}

    def fills_up(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(records_module.os, "fsync", fills_up)
    suite = write(tmp_path / "grid.yaml", GRID_SUITE)
    result = invoke("run", suite, "--out", tmp_path / "out")
    (run_dir,) = (tmp_path / "out" / "grid").iterdir()
    line = "error: " + unwrapped(result.stderr).rsplit("error: ", 1)[-1].strip()  # after the progress bars
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert line == (f"error: {run_dir}/records.jsonl: cannot write (No space left on device); free space (or fix "
                    f"the folder), then `ssmbench run --resume {run_dir}`")
    kept = read_records(run_dir / "records.jsonl")
    assert {r.slice["batch"] for r in kept} == {1, 2}  # the first two points, whole
    assert (run_dir / "records.jsonl").read_bytes().endswith(b"\n")  # nothing of the refused point remains
    monkeypatch.setattr(records_module.os, "fsync", real_fsync)
    result = invoke("run", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    done = [r for r in read_records(run_dir / "records.jsonl") if r.metric == "decode_tok_s"]
    assert sorted(r.slice["batch"] for r in done) == [1, 2, 3, 4]  # each point once: none lost, none doubled


def test_a_report_that_cannot_be_written_is_printed_and_says_why(finished_run: Path, monkeypatch: pytest.MonkeyPatch):
    """`report` on a full disk (or someone else's read-only results) still prints every table, with one note
    naming the file it could not write and why; the run itself is untouched."""
    def full(self: Path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = (finished_run / "table.md").read_text()
    monkeypatch.setattr(Path, "write_text", full)
    result = invoke("report", finished_run)
    assert result.exit_code == 0 and "decode_tok_s" in result.stdout
    assert "table.md: cannot write (No space left on device); tables printed only" in unwrapped(result.stderr)
    monkeypatch.undo()
    assert (finished_run / "table.md").read_text() == before


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run")
    result = invoke("run", write(base / "tiny.yaml", TINY_SUITE), "--out", base / "out")
    assert result.exit_code == 0, result.output
    (run_dir,) = (base / "out" / "tiny").iterdir()
    return run_dir


@pytest.fixture
def finished_run(one_run: Path, tmp_path: Path) -> Path:
    """A copy of one finished tiny run, laid out as a run leaves it: tmp/tiny.yaml, tmp/out/tiny/<run-id>."""
    write(tmp_path / "tiny.yaml", TINY_SUITE)
    return Path(shutil.copytree(one_run, tmp_path / "out" / "tiny" / one_run.name))


@pytest.mark.parametrize("line", ['{"hello": "world"}', "[1, 2, 3]", '{"task": "t", "kind": 3}'])
def test_report_and_resume_refuse_a_foreign_line(finished_run: Path, line: str):
    lines = (finished_run / "records.jsonl").read_text().splitlines()
    (finished_run / "records.jsonl").write_text("\n".join([*lines[:3], line, *lines[3:]]) + "\n")
    for args in (("report", finished_run), ("run", "--resume", finished_run)):
        assert_user_error(invoke(*args), f"{finished_run / 'records.jsonl'}: line 4 is not a")


def test_a_torn_line_is_reported_and_skipped(finished_run: Path):
    lines = (finished_run / "records.jsonl").read_text().splitlines()
    (finished_run / "records.jsonl").write_text("\n".join([*lines[:5], lines[5][:40], *lines[6:]]) + "\n")
    result = invoke("report", finished_run)
    assert result.exit_code == 0
    assert "records.jsonl: line 6 is not JSON (a write cut short?); skipped" in result.stderr


def test_a_torn_tail_is_found_and_its_point_redone(finished_run: Path):
    """A kill mid-write leaves the point's first lines and half its last: the point is not done (each record
    says how many the point wrote), the report and the resume say so by name, and the resume redoes it."""
    path = finished_run / "records.jsonl"
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    job, point = last["job"], last["point"]
    written = sum(1 for line in lines if json.loads(line)["job"] == job and json.loads(line)["point"] == point)
    assert written > 1 and last["point_records"] == written
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:len(lines[-1]) // 2])  # no newline: cut mid-line

    report = invoke("report", finished_run)
    assert report.exit_code == 0
    assert f"Torn: 1 points have only part of their records (a write cut short: {job} [{point}])" in \
        unwrapped(report.stderr)
    assert "**Torn: 1 points" in (finished_run / "table.md").read_text()

    result = invoke("run", "--resume", finished_run)
    assert result.exit_code == 0, result.output
    err = unwrapped(result.stderr)
    assert err.count(f"line {len(lines)} is not JSON (a write cut short?); skipped: a record of {job} [{point}]") == 1
    assert f"resuming: {job} [{point}] has {written - 1} of its {written} records (a write cut short): redone" in err
    assert "resuming: 5 of 6 points already done" in err and "points: 1 ok" in err
    records = read_records(path)
    again = [r for r in latest_attempts(records) if r.point_id == (job, point)]
    assert len(again) == written and {r.attempt for r in again} == {1}
    assert point_attempts(records)[(job, point)] == (1, True)
    assert "Torn" not in (finished_run / "table.md").read_text()
    assert "nothing to do" in invoke("run", "--resume", finished_run).stderr


@pytest.mark.parametrize("command", ["report", "resume", "diff"])
def test_records_that_are_a_directory(finished_run: Path, command: str):
    records = finished_run / "records.jsonl"
    records.unlink()
    records.mkdir()
    args = {"report": ("report", finished_run), "resume": ("run", "--resume", finished_run),
            "diff": ("diff", finished_run, finished_run)}[command]
    assert_user_error(invoke(*args), f"{records}: is a directory, not a file")


HOLD_THE_LOCK = """
import sys, time
from ssmbench.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_resume_of_one_run_is_refused_until_the_holder_is_gone(finished_run: Path):
    path = finished_run / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-5]) + "\n")  # a point to do, which two resumes would both measure
    before = path.read_text()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(finished_run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert_user_error(invoke("run", "--resume", finished_run),
                          f"{finished_run}: another ssmbench run is writing this run directory (pid {holder.pid} on ",
                          f"then `ssmbench run --resume {finished_run}`")
        assert path.read_text() == before  # nothing measured, nothing written
    finally:
        holder.kill()  # a holder that dies without a word: the kernel drops its lock
        holder.wait()
    result = invoke("run", "--resume", finished_run)
    assert result.exit_code == 0, result.output
    assert "points: 1 ok" in result.stderr
    assert duplicate_identities(read_records(path)) == {}


def test_a_report_warns_of_figures_recorded_twice_in_one_attempt(finished_run: Path):
    path = finished_run / "records.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    again = [line for line in lines if json.loads(line)["point"] == first["point"]
             and json.loads(line)["job"] == first["job"]]
    path.write_text("\n".join([*lines, *again]) + "\n")  # what two resumes at once wrote before the lock
    result = invoke("report", finished_run)
    assert result.exit_code == 0
    warning = f"Duplicates: {len(again)} records repeat a figure of the same attempt ({first['job']} [{first['point']}])"
    assert warning in unwrapped(result.stderr) and "warning:" in result.stderr
    assert f"**{warning}" in (finished_run / "table.md").read_text()


def test_a_report_says_which_points_are_missing(finished_run: Path):
    records = (finished_run / "records.jsonl").read_text().splitlines()
    kept = [line for line in records if '"kind":"memory"' not in line and '"point":"batch=2' not in line]
    (finished_run / "records.jsonl").write_text("\n".join(kept) + "\n")
    plan = json.loads((finished_run / "plan.json").read_text())
    report = write_report(RunDir(finished_run), all_kinds())
    md = report.rendered["md"]
    assert len(plan) == 6 and "**Incomplete: 4 of 6 planned points have no record**" in md
    assert f"ssmbench run --resume {finished_run}" in md
    throughput = next(t for t in report.tables if t.task == "throughput")
    assert "2 of 4 planned points of this task have no record: blank cells are points not measured" in throughput.notes
    memory = next(t for t in report.tables if t.task == "memory")  # no record at all: still a table
    assert memory.title == "memory (not run)" and memory.notes == ["none of its 2 planned points has a record"]


def test_unstable_medians_are_flagged(tmp_path: Path):
    run = RunDir(tmp_path / "s" / "r")
    run.path.mkdir(parents=True)
    with RecordWriter(run.records_path) as out:
        for batch, samples in ((1, [100.0, 101.0, 99.0]), (2, [100.0, 300.0, 60.0])):
            out.write([Record(task="t", kind="throughput", job="t/m", point=f"b={batch}", model="m",
                              slice={"batch": batch}, **summarised("decode_tok_s", samples, "tok/s", True))])
    (table,) = write_report(run, all_kinds()).tables[1:]
    assert list(table.frame["m"]) == ["100 ±0.5%", "100 ±60.0% ⚠"]
    assert any(n.startswith("⚠ unstable (1 of 2 figures)") for n in table.notes)


# --- suite files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragment"), [
    (TINY_SUITE.replace("batch_sizes: [1, 2]", "batch_sizes: [1, 2]\n    batch_sizes: [4]"),
     "key 'batch_sizes' appears twice (first on line"),
    (TINY_SUITE.replace("name: tiny", "name: ../elsewhere"), "name: '../elsewhere' cannot name a directory"),
    (TINY_SUITE.replace("  - kind: throughput", "  - kind: throughput\n    name: a/b"),
     "tasks[0].name: 'a/b' cannot name a directory"),
    (TINY_SUITE.replace("name: tiny", "name: tiny\n---\nname: two"), "invalid YAML"),
    (TINY_SUITE.replace("name: tiny", "name: " + "x" * 300), "is 300 characters; a name becomes a directory"),
    (TINY_SUITE.replace("models: [tiny-gpt2, tiny-mamba]", "models: [{name: " + "m" * 120 + ", base: tiny-gpt2}]"),
     "models[0].name: 'mmmmmmmmmmmmmmmmmmmmmmmm'... is 120 characters"),
    (TINY_SUITE.replace("tasks:", "tasks: []\nunused:"), "unknown key 'unused'"),
])
def test_yaml_that_cannot_mean_what_was_meant(tmp_path: Path, text: str, fragment: str):
    assert_user_error(invoke("validate", write(tmp_path / "s.yaml", text)), fragment)


def test_merge_keys_override_what_they_merge_and_a_written_twice_key_is_still_refused():
    """`<<: *anchor` with a key beside it is YAML's "this, with that changed" (suites/mqar_zoology.yaml's
    recipes): the key beside it wins, and is not a key written twice; two explicit copies still are."""
    from ssmbench.spec import _StrictLoader

    text = "base: &b {steps: 10, lr: 1.0e-3}\nlonger: {<<: *b, steps: 20}\n"
    assert yaml.load(text, Loader=_StrictLoader)["longer"] == {"steps": 20, "lr": 1e-3}  # noqa: S506
    with pytest.raises(yaml.constructor.ConstructorError, match="key 'steps' appears twice"):
        yaml.load(text.replace("steps: 20}", "steps: 20, steps: 30}"), Loader=_StrictLoader)  # noqa: S506


def test_a_suite_file_that_is_not_text(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    assert_user_error(invoke("validate", path), f"{path}: cannot read the suite (not UTF-8 text)")


def test_a_suite_without_tasks(tmp_path: Path):
    text = TINY_SUITE[:TINY_SUITE.index("tasks:")] + "tasks: []\n"
    assert_user_error(invoke("validate", write(tmp_path / "s.yaml", text)), "tasks: the suite has no tasks")


# --- CPU settings ------------------------------------------------------------------------------------------

CPU_SUITE = TINY_SUITE.replace("    batch_sizes: [1, 2]", """    batch_sizes: [1, 2]
    on_cpu: {because: two cores are slow, batch_sizes: [1]}""")


def test_on_cpu_settings_replace_the_tasks_and_say_why(tmp_path: Path):
    result = invoke("run", write(tmp_path / "s.yaml", CPU_SUITE), "--dry-run", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "throughput: on the CPU, batch_sizes [1, 2] -> [1] (because two cores are slow)" in result.stderr
    assert "tiny: 4 jobs, 4 points on cpu" in result.stdout


def test_on_cpu_changes_read_as_the_fields_a_suite_writes_only_where_they_differ():
    """A nested change is its dotted path with YAML's values (null, lists), an architecture dropped is one
    change, and what on_cpu restates unchanged is not printed (the synthetic paper suite's)."""
    from ssmbench.spec import load_suite

    tasks = {t.task_name: t for t in load_suite("suites/synthetic_paper.yaml")[0].tasks}
    changes = tasks["mqar"].cpu_changes()
    assert changes.startswith("task_params.num_kv_pairs 16 -> 4; vocab_size 8192 -> 64; "
                              "architectures.mamba.d_model 128 -> 16; architectures.attention dropped; ")
    assert "train.optimizer" not in changes and "Architecture(" not in changes  # unchanged; no Python reprs
    assert "seeds [0, 1, 2] -> [0] (because the paper's scale takes hours" in changes
    assert "architectures.mamba.seeds [0, 1, 2, 3, 4, 5, 6, 7] -> null" in tasks["induction-heads-early"].cpu_changes()


def test_on_cpu_settings_are_validated(tmp_path: Path):
    bad = CPU_SUITE.replace("batch_sizes: [1]}", "batch_size: [1]}")
    assert_user_error(invoke("validate", write(tmp_path / "s.yaml", bad)),
                      "tasks[0].on_cpu: 'batch_size' is not a setting of throughput (did you mean 'batch_sizes'?)")
    bad = CPU_SUITE.replace("batch_sizes: [1]}", "batch_sizes: [0]}")
    assert_user_error(invoke("validate", write(tmp_path / "s.yaml", bad)), "tasks[0].on_cpu.batch_sizes[0]:")


def test_the_dry_run_estimates_from_earlier_runs(finished_run: Path):
    out = finished_run.parent.parent
    result = invoke("run", finished_run.parent.parent.parent / "tiny.yaml", "--dry-run", "--out", out)
    assert result.exit_code == 0, result.output
    assert "time: about " in result.stdout and "from earlier runs (6 of 6 points)" in result.stdout
    fresh = invoke("run", finished_run.parent.parent.parent / "tiny.yaml", "--dry-run", "--out", out / "none")
    assert "time: no estimate: none of the 6 points has run on this device" in fresh.stdout


# --- stopping ---------------------------------------------------------------------------------------------


def test_sigterm_keeps_what_is_done_and_exits_143(tmp_path: Path):
    slow = yaml.safe_load(TINY_SUITE)
    slow["tasks"] = [{"kind": "throughput", "batch_sizes": [1, 2, 3, 4, 5, 6], "prompt_lengths": [64],
                      "new_tokens": 16, "warmup": 0, "repeats": 40}]
    write(tmp_path / "slow.yaml", yaml.safe_dump(slow))
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench", "run", str(tmp_path / "slow.yaml"), "--out",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    records = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list((tmp_path / "out").rglob("records.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            records = found[0]
            break
        time.sleep(0.2)
    assert records is not None, "no point finished in time"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "terminated (SIGTERM): finish with `ssmbench run --resume" in stderr
    run_dir = records.parent
    assert (run_dir / "table.md").is_file() and "Incomplete:" in (run_dir / "table.md").read_text()


def test_a_forked_child_still_dies_of_sigterm():
    """lm-eval's bootstrap pool forks workers and ends them with SIGTERM; a worker that turned SIGTERM into
    ssmbench's Terminated could outlive that, and the run hung in Pool.terminate (seen in CI)."""
    import multiprocessing

    from ssmbench.cli import _sigterm_as_interrupt
    from ssmbench.errors import Terminated

    ctx = multiprocessing.get_context("fork")
    with _sigterm_as_interrupt():
        child = ctx.Process(target=time.sleep, args=(60,))
        child.start()
        time.sleep(0.2)
        child.terminate()
        child.join(timeout=10)
        assert child.exitcode == -signal.SIGTERM
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_forked_child_starts_with_the_default_sigterm_and_the_parent_keeps_its_handler():
    import multiprocessing

    from ssmbench.cli import _sigterm_as_interrupt

    def report(conn) -> None:
        conn.send((signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
                   signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, set())))

    ctx = multiprocessing.get_context("fork")
    with _sigterm_as_interrupt():
        handler = signal.getsignal(signal.SIGTERM)
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=report, args=(theirs,))
        child.start()
        assert ours.recv() == (True, False)  # default meaning, not blocked
        child.join(timeout=10)
        assert signal.getsignal(signal.SIGTERM) is handler
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


POOLS_UNDER_THE_HANDLER = """
import multiprocessing
from ssmbench.cli import _sigterm_as_interrupt
with _sigterm_as_interrupt():
    for _ in range(300):
        with multiprocessing.get_context("fork").Pool(4):
            pass  # leaving the block terminates the workers with SIGTERM, some of them just forked
print("ok")
"""


def test_pools_ended_at_once_never_hang():
    """A SIGTERM that reached a worker in the instant after fork used to be lost (Python drops a child's
    caught-but-unhandled signals), and Pool.terminate joined that worker forever: lm-eval's bootstrap pool
    hung a CI run this way. Before the fix this loop hung within its first 100 pools."""
    proc = subprocess.Popen([sys.executable, "-c", POOLS_UNDER_THE_HANDLER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pool's stuck workers too
        proc.communicate()
        pytest.fail("a pool ended at once under the run's SIGTERM handler hung")
    assert proc.returncode == 0 and stdout.strip() == "ok", stderr


def test_env_says_whether_the_fused_kernels_run():
    result = invoke("env")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "fused Mamba kernels: unavailable (no CUDA device)"


def test_copies_of_the_committed_runs_still_report(tmp_path: Path):
    """A report is rebuilt from records alone; older runs without plan.json report nothing as missing."""
    older = [p.parent for p in sorted((REPO / "results" / "reference").rglob("records.jsonl"))
             if not (p.parent / "plan.json").exists()]
    assert older
    for committed in older:
        copy = Path(shutil.copytree(committed, tmp_path / committed.name))
        assert "Incomplete" not in write_report(RunDir(copy), all_kinds()).rendered["md"], committed
