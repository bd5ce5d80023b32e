"""The command line end to end, in process, on tiny models: what a run writes, how user errors end (one
line, exit code 2), and how a run survives a model that does not load, an OOM, a failed point and Ctrl-C."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import Result
from conftest import REPO
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.kinds.throughput import ThroughputRunner
from ssmbench.records import Record, read_records
from ssmbench.spec import load_suite

TINY_SUITE = """\
name: tiny
defaults: {device: cpu, weights: random, seed: 0}
models: [tiny-gpt2, tiny-mamba]
tasks:
  - kind: throughput
    batch_sizes: [1, 2]
    prompt_lengths: [8]
    new_tokens: 4
    repeats: 2
  - kind: memory
    batch_sizes: [1]
    prompt_lengths: [16]
    new_tokens: 4
"""

# One cheap job of four points, for the failure paths.
GRID_SUITE = """\
name: grid
defaults: {device: cpu, seed: 0}
models: [tiny-gpt2]
tasks:
  - kind: throughput
    name: decode
    batch_sizes: [1, 2, 3, 4]
    prompt_lengths: [8]
    new_tokens: 4
    warmup: 0
    repeats: 2
"""


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and one line on stderr that says it all; no traceback anywhere."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def unwrapped(text: str) -> str:
    """stderr without the line breaks rich inserts at 80 columns (it breaks at spaces, which it keeps)."""
    return text.replace("\n", "")


def only_run_dir(out: Path, suite: str) -> Path:
    (run_dir,) = (out / suite).iterdir()
    return run_dir


def points_of(records: list[Record]) -> Counter:
    """How many times each (job, point, metric) was recorded."""
    return Counter((r.job, r.point, r.metric) for r in records)


# --- commands that run nothing ----------------------------------------------------------------------------

def test_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "compare", "list", "validate", "report", "env"):
        assert command in result.stdout
    assert "--resume" in invoke("run", "--help").stdout


def test_help_does_not_import_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom ssmbench.cli import app\n"
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
            "assert CliRunner().invoke(app, ['run', '--help']).exit_code == 0\n"
            "heavy = sorted({'torch', 'transformers', 'lm_eval', 'pandas'} & set(sys.modules))\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_list_models():
    result = invoke("list", "models")
    assert result.exit_code == 0
    for name in ("gpt2", "pythia-1.4b", "mamba-130m", "mamba2-2.7b", "tiny-mamba", "state-spaces/mamba-130m-hf"):
        assert name in result.stdout


def test_list_tasks():
    result = invoke("list", "tasks")
    assert result.exit_code == 0
    for kind in ("throughput", "memory", "scan", "zero_shot"):
        assert kind in result.stdout


def test_list_suites_prints_the_names_run_and_validate_take(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`list suites` printed each suite's `name:` (train-speed), which `run` refused (it took train_speed):
    it prints the name `run` takes, every one of them is taken, and so is the `name:` spelling."""
    monkeypatch.chdir(tmp_path)  # names, not paths: nothing here to find but the packaged suites
    result = invoke("list", "suites")
    assert result.exit_code == 0
    printed = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│ ")]
    names = [n for n in printed if n]  # a description's continuation lines leave the first cell empty
    assert names == sorted(p.stem for p in (REPO / "suites").glob("*.yaml"))
    assert "train_speed" in names and "train-speed" not in names
    checked = invoke("validate", *names, "train-speed", "synthetic-mixers-cpu", "hybrid-recall")
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.count("ok ") == len(names) + 3
    dry = invoke("run", "train-speed", "--device", "cpu", "--dry-run", "--out", tmp_path / "out")
    assert dry.exit_code == 0, dry.output


def test_list_something_else_is_a_usage_error():
    assert invoke("list", "kernels").exit_code == 2


def test_env_json():
    result = invoke("env", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["gpus"] == [] and info["packages"]["torch"] and "fused_mamba_kernels" in info


def test_validate_ok(tmp_path: Path):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    result = invoke("validate", suite, REPO / "suites" / "smoke.yaml", REPO / "suites" / "nightly.yaml")
    assert result.exit_code == 0, result.output
    assert f"ok {suite}: 2 models, 2 tasks" in result.stdout
    assert "smoke.yaml: 6 models, 5 tasks" in result.stdout
    assert "nightly.yaml: 7 models, 10 tasks" in result.stdout  # a CUDA suite is checked on a CPU-only machine


def test_validate_checks_what_run_checks_when_it_plans(tmp_path: Path):
    """Checks made when the plan is built (not when the file is read) fail validate too, as they fail run."""
    text = TINY_SUITE.replace("models: [tiny-gpt2, tiny-mamba]",
                              "models: [tiny-gpt2, {name: big, base: gpt2, overrides: {n_layer: 2}, weights: pretrained}]")
    bad = write(tmp_path / "bad.yaml", text)
    message = "models: 'big' sets overrides, which change the architecture of random weights only"
    assert_user_error(invoke("validate", bad), f"error: {bad}: {message}")
    assert_user_error(invoke("run", bad, "--out", tmp_path / "out"), message)


def test_validate_failing(tmp_path: Path):
    good = write(tmp_path / "good.yaml", TINY_SUITE)
    bad = write(tmp_path / "bad.yaml", TINY_SUITE.replace("prompt_lengths: [16]", "prompt_lengths: [sixteen]"))
    result = invoke("validate", good, bad)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"ok {good}" in result.stdout  # files before the bad one are checked
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: tasks[1].prompt_lengths[0]: ")
    assert "valid integer" in line


@pytest.mark.parametrize(("text", "fragment"), [
    (TINY_SUITE.replace("kind: memory", "kind: memroy"), "tasks[1].kind: unknown task kind 'memroy' (did you mean"),
    (TINY_SUITE.replace("tiny-mamba]", "tiny-mambo]"), "models[1].name: unknown model 'tiny-mambo'"),
    (TINY_SUITE.replace("    repeats: 2", "    repeat: 2"), "tasks[0].repeat: unknown key 'repeat' (did you mean"),
    (TINY_SUITE.replace("  - kind: memory\n", "  - kind: memory\n   oops: [\n"), "invalid YAML (line"),
], ids=["kind", "model", "key", "yaml"])
def test_validate_errors_name_file_and_field(tmp_path: Path, text: str, fragment: str):
    bad = write(tmp_path / "bad.yaml", text)
    assert_user_error(invoke("validate", bad), f"error: {bad}: ", fragment)


def test_an_error_every_point_of_a_job_repeats_is_said_once(tmp_path: Path):
    """The memory kind loads the model in each point's own process: weights that cannot load fail every
    point, with one message on screen (the records and the table keep every point)."""
    suite = write(tmp_path / "s.yaml", """\
name: absent
defaults: {device: cpu, seed: 0}
models: [{name: gone, base: tiny-gpt2, hf_id: nobody/not-cached-anywhere, weights: pretrained}]
tasks:
  - kind: memory
    batch_sizes: [1, 2]
    prompt_lengths: [8]
    new_tokens: 2
""")
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: memory/gone [mode=inference,batch=1,prompt_len=8]: ")
    assert "nobody/not-cached-anywhere" in unwrapped(result.stderr)
    records = read_records(only_run_dir(tmp_path / "out", "absent") / "records.jsonl")
    assert [(r.point, r.status) for r in records] == [("mode=inference,batch=1,prompt_len=8", "error"),
                                                      ("mode=inference,batch=2,prompt_len=8", "error")]


def test_a_mamba_fallback_is_said_once_per_model_by_ssmbench_not_four_times_by_transformers(tmp_path: Path):
    """transformers says, for each of four functions and in every process, that its Mamba falls back to
    PyTorch, and `kernels` (offline) that it skips three trust checks: ssmbench's own note says the path once
    per model (it said it once per job: two tasks, twice), and the records say it; the libraries' lines are
    gone. In a real process: their handlers write to the process's stderr."""
    suite = write(tmp_path / "s.yaml", TINY_SUITE.replace("models: [tiny-gpt2, tiny-mamba]", "models: [tiny-mamba]")
                  .replace("batch_sizes: [1, 2]", "batch_sizes: [1]"))
    done = subprocess.run([sys.executable, "-m", "ssmbench", "run", str(suite), "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    note = "note: tiny-mamba: fused Mamba kernels unavailable (on CPU); running transformers' PyTorch path"
    assert unwrapped(done.stderr).count(note) == 1  # two jobs, throughput and memory, one model
    assert "falling back to its reference PyTorch implementation" not in done.stderr
    assert "Skipping publisher trust check" not in done.stderr
    records = read_records(only_run_dir(tmp_path / "out", "tiny") / "records.jsonl")
    assert {r.kernel for r in records} == {"hf-torch"}


def test_run_missing_file(tmp_path: Path):
    assert_user_error(invoke("run", tmp_path / "nope.yaml", "--out", tmp_path / "out"), str(tmp_path / "nope.yaml"),
                      "no such suite file")
    assert not (tmp_path / "out").exists()


def test_run_without_a_suite():
    assert_user_error(invoke("run"), "give a suite file")


def test_run_unknown_models_suggests(tmp_path: Path):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    assert_user_error(invoke("run", suite, "--models", "tiny-gpt2,mamba-13m", "--out", tmp_path / "out"),
                      "--models: unknown model 'mamba-13m' (did you mean 'mamba-130m'")
    assert_user_error(invoke("run", suite, "--tasks", "memroy", "--out", tmp_path / "out"),
                      "--tasks: the suite has no task 'memroy' (did you mean 'memory'")
    assert not (tmp_path / "out").exists()


def test_run_cuda_without_a_gpu(tmp_path: Path):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    assert_user_error(invoke("run", suite, "--device", "cuda", "--dry-run"), "no CUDA device is available")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path):
    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    out = tmp_path / "out"
    result = invoke("run", suite, "--out", out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "tiny: 4 jobs, 6 points on cpu" in result.stdout
    for job in ("throughput/tiny-gpt2", "throughput/tiny-mamba", "memory/tiny-gpt2", "memory/tiny-mamba"):
        assert job in result.stdout
    assert "batch=1,prompt_len=8,cuda_graphs=off,impl=ssmbench" in result.stdout
    assert "fused Mamba kernels unavailable" in result.stdout
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_compare_dry_run_refuses_quality_on_random_weights(tmp_path: Path):
    result = invoke("compare", "tiny-gpt2", "tiny-mamba", "--device", "cpu", "--weights", "random", "--dry-run",
                    "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "compare: 8 jobs" in result.stdout
    assert "zero-shot/tiny-gpt2" in result.stdout and "phonebook/tiny-mamba" in result.stdout and "memory/tiny-mamba" in result.stdout
    assert "zero_shot on random weights measures" in result.stdout  # the note, wrapped in its cell
    assert not (tmp_path / "out").exists()


def test_compare_names_the_models_as_they_were_typed(tmp_path: Path):
    """`compare tiny-mamba tiny-pyhtia` said "--models: unknown model", an option nobody typed."""
    result = invoke("compare", "tiny-mamba", "tiny-pyhtia", "--dry-run", "--out", tmp_path / "out")
    assert_user_error(result, "error: compare: unknown model 'tiny-pyhtia' (did you mean 'tiny-pythia'")
    assert "--models" not in result.stderr


def test_compare_prints_models_side_by_side(tmp_path: Path):
    suite = tmp_path / "cmp.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "cmp", "defaults": {"device": "cpu", "weights": "random"}, "models": ["gpt2"],
        "tasks": [{"kind": "throughput", "batch_sizes": [1], "prompt_lengths": [8], "new_tokens": 4,
                   "warmup": 0, "repeats": 2}]}))
    result = invoke("compare", "tiny-gpt2", "tiny-mamba", "--suite", suite, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "metric" in line and "tiny-gpt2" in line)
    assert header.index("tiny-gpt2") < header.index("tiny-mamba")  # models are the columns, in order
    columns = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    assert columns == ["metric", "tiny-gpt2", "tiny-mamba"]  # the suite's own gpt2 was replaced
    assert "decode_tok_s (tok/s)" in result.stdout


# --- an end-to-end run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("e2e")
    suite = write(tmp / "tiny.yaml", TINY_SUITE)
    result = invoke("run", suite, "--out", tmp / "results")
    assert result.exit_code == 0, result.output
    assert "points: 6 ok." in unwrapped(result.stderr)
    return only_run_dir(tmp / "results", "tiny")


def test_run_writes_records_tables_and_plots(e2e: Path):
    names = {p.name for p in e2e.iterdir()}
    assert {"records.jsonl", "env.json", "suite.resolved.yaml", "table.md", "table.csv", "table.json"} <= names
    assert "throughput_decode_tok_s_prompt8.png" in names
    assert not [n for n in names if n.endswith(".tmp")]
    env = json.loads((e2e / "env.json").read_text())
    assert env["gpus"] == [] and env["packages"]["torch"] and env["fused_mamba_kernels"]["available"] is False
    table = (e2e / "table.md").read_text()
    assert table.startswith(f"# tiny — run {e2e.name}")
    for heading in ("### Models", "### throughput (throughput)", "### memory (memory)"):
        assert heading in table
    assert "| metric " in table and "| tiny-gpt2 " in table and "| tiny-mamba " in table
    assert "decode_tok_s (tok/s)" in table and "state_mib (MiB)" in table
    assert "| ERR " not in table and "| OOM " not in table
    assert [t["title"] for t in json.loads((e2e / "table.json").read_text())] == [
        "Models", "throughput (throughput)", "memory (memory)"]


def test_every_record_says_how_it_ran(e2e: Path):
    records = read_records(e2e / "records.jsonl")
    assert {r.status for r in records} == {"ok"}
    for r in records:
        assert r.kernel == ("hf-torch" if r.model == "tiny-mamba" else "hf-sdpa")
        assert (r.device, r.dtype, r.weights, r.seed, r.graphs) == ("cpu", "float32", "random", 0, False)
        assert "cuda_graphs" not in r.slice or r.cuda_graphs is None  # stored once: the slice or the field
        assert r.run_id == e2e.name and r.suite == "tiny" and r.attempt == 0
        assert r.value is not None and r.unit and r.extra["params"] > 0
    points = points_of(records)
    assert set(points.values()) == {1}
    jobs = Counter(r.job for r in records)
    assert set(jobs) == {"throughput/tiny-gpt2", "throughput/tiny-mamba", "memory/tiny-gpt2", "memory/tiny-mamba"}
    throughput = [r for r in records if r.kind == "throughput"]
    assert {r.point for r in throughput} == {"batch=1,prompt_len=8,cuda_graphs=off,impl=ssmbench",
                                              "batch=2,prompt_len=8,cuda_graphs=off,impl=ssmbench"}
    assert {r.metric for r in throughput} == {"prefill_ms", "decode_tok_s", "decode_ms_per_token", "generate_tok_s",
                                              "achieved_gb_s"}  # no roofline: the CPU has no datasheet bandwidth
    assert all(r.stats.n == 2 and r.slice["new_tokens"] == 4 for r in throughput)
    memory = {(r.model, r.metric): r.value for r in records if r.kind == "memory"}
    # The analytic state: tiny-gpt2 keeps K and V (2 x 4 layers x 128) for 16 + 4 tokens, tiny-mamba a fixed
    # 8 layers x 256 x (16 + 4); float32.
    assert memory[("tiny-gpt2", "state_mib")] == pytest.approx(2 * 4 * 128 * 20 * 4 / 2**20)
    assert memory[("tiny-mamba", "state_mib")] == pytest.approx(8 * 256 * 20 * 4 / 2**20)
    assert memory[("tiny-gpt2", "peak_rss_mib")] > memory[("tiny-gpt2", "weights_mib")] > 0


def test_resolved_suite_is_the_suite_as_run(e2e: Path, tmp_path: Path):
    resolved, _ = load_suite(e2e / "suite.resolved.yaml")
    original, _ = load_suite(write(tmp_path / "tiny.yaml", TINY_SUITE))
    assert resolved == original  # the device was already explicit


def test_runs_never_overwrite_each_other(e2e: Path):
    before = {p.name: p.read_bytes() for p in e2e.iterdir() if p.is_file()}
    result = invoke("run", e2e.parent.parent.parent / "tiny.yaml", "--out", e2e.parent.parent,
                    "--models", "tiny-gpt2", "--tasks", "memory")
    assert result.exit_code == 0, result.output
    runs = sorted((e2e.parent).iterdir())
    assert len(runs) == 2 and e2e in runs
    (second,) = [r for r in runs if r != e2e]
    assert {p.name: p.read_bytes() for p in e2e.iterdir() if p.is_file()} == before
    records = read_records(second / "records.jsonl")
    assert {r.job for r in records} == {"memory/tiny-gpt2"}
    resolved = yaml.safe_load((second / "suite.resolved.yaml").read_text())
    assert [m["name"] for m in resolved["models"]] == ["tiny-gpt2"]
    assert [t["kind"] for t in resolved["tasks"]] == ["memory"]


@pytest.mark.parametrize(("fmt", "suffix"), [("md", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")])
def test_report_rebuilds_from_records_alone(e2e: Path, tmp_path: Path, fmt: str, suffix: str):
    run_dir = tmp_path / "copy"
    shutil.copytree(e2e, run_dir)
    original = (e2e / "table.md").read_text()
    for path in [*run_dir.glob("table.*"), *run_dir.glob("*.png"), run_dir / "env.json"]:
        path.unlink()
    result = invoke("report", run_dir, "--format", fmt)
    assert result.exit_code == 0, result.output
    written = (run_dir / f"table.{suffix}").read_text()
    assert result.stdout.strip() == written.strip()
    assert {p.name for p in run_dir.glob("table.*")} == {"table.md", "table.csv", "table.json"} | (
        {"table.tex"} if fmt == "latex" else set())
    assert (run_dir / "throughput_decode_tok_s_prompt8.png").is_file()
    # The tables are the same as the run's own (only the header's environment lines differ without env.json).
    rebuilt = (run_dir / "table.md").read_text()
    assert rebuilt.split("### Models", 1)[1] == original.split("### Models", 1)[1]
    if fmt == "csv":
        assert len(written.strip().splitlines()) == 1 + len(read_records(run_dir / "records.jsonl"))
    elif fmt == "json":
        assert json.loads(written)[1]["title"] == "throughput (throughput)"
    elif fmt == "latex":
        assert written.count("\\begin{tabular}") == 3


def test_new_run_dir_never_reuses_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import ssmbench.rundir as rundir

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(rundir, "datetime", FrozenClock)
    made = [rundir.RunDir.create(tmp_path, "tiny").path for _ in range(3)]  # three runs in one second
    assert [p.name for p in made] == ["20260102-030405", "20260102-030405-2", "20260102-030405-3"]
    assert all(p.is_dir() and p.parent == tmp_path / "tiny" and not list(p.iterdir()) for p in made)


def test_report_on_a_directory_that_is_not_a_run(tmp_path: Path):
    assert_user_error(invoke("report", tmp_path), str(tmp_path), "not a run directory (no records.jsonl)")


# --- failures during a run ------------------------------------------------------------------------------

def test_a_model_that_does_not_load_fails_its_job_only(tmp_path: Path):
    suite = write(tmp_path / "mixed.yaml", GRID_SUITE.replace(
        "models: [tiny-gpt2]",
        "models: [tiny-gpt2, {name: gpt2, weights: pretrained, hf_id: ssmbench-tests/never-cached}]").replace(
        "[1, 2, 3, 4]", "[1, 2]"))
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    run_dir = only_run_dir(tmp_path / "out", "grid")
    records = read_records(run_dir / "records.jsonl")
    failed = [r for r in records if r.model == "gpt2"]
    assert len(failed) == 2 and {r.status for r in failed} == {"error"}  # one status record per point
    for r in failed:
        assert r.metric is None and r.value is None and r.weights == "pretrained"
        assert r.message.startswith("model 'gpt2': weights 'ssmbench-tests/never-cached' could not be loaded")
        assert "Remedies: download them first (`hf download ssmbench-tests/never-cached`)" in r.message
        assert "`weights: random`" in r.message
    ok = [r for r in records if r.model == "tiny-gpt2"]
    assert ok and {r.status for r in ok} == {"ok"}
    assert "error: decode/gpt2: model 'gpt2': weights" in unwrapped(result.stderr)
    assert "points: 2 ok, 2 error." in unwrapped(result.stderr)
    table = (run_dir / "table.md").read_text()
    assert "| ERR " in table and "> ERR gpt2 (2 points): model 'gpt2': weights" in table


def run_grid_failing_at_batch_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> Result:
    """Run the batch 1-3 grid with ThroughputRunner.measure raising `error` on the batch-2 point."""
    measure = ThroughputRunner.measure

    def fail_at_batch_2(self, pt):
        if pt.params["batch"] == 2:
            raise error
        return measure(self, pt)

    monkeypatch.setattr(ThroughputRunner, "measure", fail_at_batch_2)
    suite = write(tmp_path / "grid.yaml", GRID_SUITE.replace("[1, 2, 3, 4]", "[1, 2, 3]"))
    return invoke("run", suite, "--out", tmp_path / "out")


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, MemoryError], ids=["cuda-oom", "host-oom"])
def test_oom_is_a_result_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type):
    result = run_grid_failing_at_batch_2(tmp_path, monkeypatch, error("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert result.exit_code == 0, result.output
    assert "points: 2 ok, 1 oom." in unwrapped(result.stderr)
    records = read_records(only_run_dir(tmp_path / "out", "grid") / "records.jsonl")
    by_batch = {b: [r for r in records if r.slice["batch"] == b] for b in (1, 2, 3)}
    (oom,) = by_batch[2]
    assert oom.status == "oom" and oom.metric is None
    assert oom.message == "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert oom.kernel == "hf-sdpa" and oom.model == "tiny-gpt2"  # said by the loaded model
    assert by_batch[1] and by_batch[3] and {r.status for r in by_batch[1] + by_batch[3]} == {"ok"}
    table = json.loads((only_run_dir(tmp_path / "out", "grid") / "table.json").read_text())[1]
    assert {row["tiny-gpt2"] for row in table["rows"] if row["batch"] == 2} == {"OOM"}


def test_a_point_too_long_for_the_positions_is_skipped(tmp_path: Path):
    suite = write(tmp_path / "grid.yaml", GRID_SUITE.replace("[1, 2, 3, 4]", "[1]").replace(
        "prompt_lengths: [8]", "prompt_lengths: [8, 1021]"))
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output  # a skip is not a failure
    assert "points: 1 ok, 1 skipped." in unwrapped(result.stderr)
    run_dir = only_run_dir(tmp_path / "out", "grid")
    (skipped,) = [r for r in read_records(run_dir / "records.jsonl") if r.slice["prompt_len"] == 1021]
    assert skipped.status == "skipped" and skipped.metric is None
    assert skipped.message.startswith("1025 tokens exceed tiny-gpt2's 1024 positions")
    assert "> — tiny-gpt2 (1 point): 1025 tokens exceed" in (run_dir / "table.md").read_text()
    resumed = invoke("run", "--resume", run_dir)  # a skipped point is done: nothing to redo
    assert resumed.exit_code == 0 and "points: nothing to do." in unwrapped(resumed.stderr)


def test_interrupt_then_resume_finishes_only_the_missing_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    measure = ThroughputRunner.measure
    calls = []

    def ctrl_c_on_the_third_point(self, pt):
        calls.append(pt.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return measure(self, pt)

    monkeypatch.setattr(ThroughputRunner, "measure", ctrl_c_on_the_third_point)
    suite = write(tmp_path / "grid.yaml", GRID_SUITE)
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 130, result.output
    run_dir = only_run_dir(tmp_path / "out", "grid")
    assert f"interrupted: finish with `ssmbench run --resume {run_dir}`" in unwrapped(result.stderr)
    partial_text = (run_dir / "records.jsonl").read_text()
    partial = read_records(run_dir / "records.jsonl")
    assert sorted({r.slice["batch"] for r in partial}) == [1, 2]
    assert (run_dir / "table.md").is_file()  # the report of what is done is written anyway

    monkeypatch.undo()
    calls.clear()
    assert_user_error(invoke("run", "--resume", run_dir, suite), "--resume takes the run's own suite.resolved.yaml")
    assert_user_error(invoke("run", "--resume", run_dir, "--models", "tiny-mamba"), "--resume")
    assert_user_error(invoke("run", "--resume", tmp_path), "not a run directory")

    resumed = invoke("run", "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 2 of 4 points already done" in unwrapped(resumed.stderr)
    assert "points: 2 ok." in unwrapped(resumed.stderr)
    text = (run_dir / "records.jsonl").read_text()
    assert text.startswith(partial_text)  # appended: the first points' records untouched
    records = read_records(run_dir / "records.jsonl")
    assert records[:len(partial)] == partial
    assert sorted({r.slice["batch"] for r in records[len(partial):]}) == [3, 4]
    counts = points_of(records)
    assert len(counts) == 4 * 5 and set(counts.values()) == {1}  # each point's metrics exactly once
    assert {r.attempt for r in records} == {0}
    assert (run_dir / "env.resume1.json").is_file() and (run_dir / "env.json").is_file()
    assert len(list((tmp_path / "out" / "grid").iterdir())) == 1  # no new run directory

    again = invoke("run", "--resume", run_dir)
    assert again.exit_code == 0, again.output
    assert "points: nothing to do." in unwrapped(again.stderr)
    assert (run_dir / "records.jsonl").read_text() == text
    assert (run_dir / "env.resume2.json").is_file()


def test_a_failed_point_is_retried_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    result = run_grid_failing_at_batch_2(tmp_path, monkeypatch, RuntimeError("flaky"))
    assert result.exit_code == 1, result.output
    run_dir = only_run_dir(tmp_path / "out", "grid")
    (failed,) = [r for r in read_records(run_dir / "records.jsonl") if r.status != "ok"]
    assert failed.status == "error" and failed.attempt == 0 and failed.slice["batch"] == 2
    assert failed.message.startswith("RuntimeError: flaky (File ") and "test_cli.py" in failed.message
    assert "| ERR " in (run_dir / "table.md").read_text()
    first_text = (run_dir / "records.jsonl").read_text()

    monkeypatch.undo()
    resumed = invoke("run", "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 2 of 3 points already done" in unwrapped(resumed.stderr)
    assert (run_dir / "records.jsonl").read_text().startswith(first_text)
    records = read_records(run_dir / "records.jsonl")
    retried = [r for r in records if r.slice["batch"] == 2]
    assert [(r.attempt, r.status) for r in retried][0] == (0, "error")
    assert {(r.attempt, r.status) for r in retried[1:]} == {(1, "ok")} and len(retried) == 1 + 5
    assert {r.attempt for r in records if r.slice["batch"] != 2} == {0}
    table = (run_dir / "table.md").read_text()
    assert "| ERR " not in table and "flaky" not in table
    rows = json.loads((run_dir / "table.json").read_text())[1]["rows"]
    assert all(row["tiny-gpt2"] not in ("", "ERR") for row in rows if row["batch"] == 2)


def test_training_memory_step_records_fp32_master_weights(tmp_path: Path):
    suite = write(tmp_path / "train.yaml", yaml.safe_dump({
        "name": "train", "defaults": {"device": "cpu", "dtype": "bfloat16"}, "models": ["tiny-gpt2", "tiny-mamba"],
        "tasks": [{"kind": "memory", "mode": "training", "batch_sizes": [2], "prompt_lengths": [32]}]}))
    result = invoke("run", suite, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    records = read_records(only_run_dir(tmp_path / "out", "train") / "records.jsonl")
    for model in ("tiny-gpt2", "tiny-mamba"):
        mine = {r.metric: r for r in records if r.model == model}
        assert set(mine) == {"peak_rss_mib", "work_rss_mib", "weights_mib"}  # no inference-only metrics
        weights = mine["weights_mib"]
        assert weights.dtype == "float32" and weights.extra["autocast"] == "bfloat16"
        assert weights.value == pytest.approx(weights.extra["params"] * 4 / 2**20)
        assert mine["peak_rss_mib"].value > 0 and mine["peak_rss_mib"].slice["mode"] == "training"
