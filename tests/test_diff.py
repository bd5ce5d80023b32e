"""`ssmbench diff`: figures paired by identity, judged in their own direction against a threshold and the
runs' own noise; failures, missing figures and machine differences reported; exit 1 on a regression."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import invoke

from ssmbench.errors import cannot_write
from ssmbench.records import Record, RecordWriter, read_records, summarised
from ssmbench.report.diff import DEFAULT_MAX_REGRESSION_PCT, diff_runs, render_markdown, thresholds
from ssmbench.rundir import RunDir


def rec(metric: str, samples: list[float] | None, batch: int = 1, higher: bool = True, status: str = "ok",
        stderr: float | None = None, model: str = "m", device: str = "NVIDIA H100 80GB HBM3") -> Record:
    figures = summarised(metric, samples, "tok/s", higher) if samples else {"metric": None if status != "ok" else metric}
    return Record(task="t", kind="throughput", job=f"t/{model}", point=f"batch={batch}", model=model,
                  slice={"batch": batch}, status=status, stderr=stderr, device=device, **figures)


def verdicts(base: list[Record], new: list[Record], **limits: float) -> dict[tuple[str | None, int], str]:
    result = diff_runs(base, new, thresholds({}, limits))
    return {(c.metric, c.slice["batch"]): c.verdict for c in result.changes}


def test_direction_threshold_and_noise():
    base = [rec("decode_tok_s", [100, 100, 100]), rec("prefill_ms", [10, 10, 10], higher=False),
            rec("decode_tok_s", [100, 100, 100], batch=2), rec("decode_tok_s", [100, 60, 140], batch=4)]
    new = [rec("decode_tok_s", [90, 90, 90]),  # 10% slower: beyond 5%, no noise
           rec("prefill_ms", [9, 9, 9], higher=False),  # faster prefill: better
           rec("decode_tok_s", [97, 97, 97], batch=2),  # 3% slower: within the threshold
           rec("decode_tok_s", [80, 50, 110], batch=4)]  # 20% slower, but the runs wobble by far more
    assert verdicts(base, new) == {("decode_tok_s", 1): "regression", ("prefill_ms", 1): "improvement",
                                   ("decode_tok_s", 2): "unchanged", ("decode_tok_s", 4): "unchanged"}
    # a looser threshold for the metric lets the first pass
    assert verdicts(base, new, decode_tok_s=12)[("decode_tok_s", 1)] == "unchanged"


def test_accuracies_use_their_standard_error():
    base = [rec("acc", [0.50], stderr=0.05)]
    assert verdicts(base, [rec("acc", [0.44], stderr=0.05)]) == {("acc", 1): "unchanged"}  # 12% < 2 x noise
    assert verdicts(base, [rec("acc", [0.30], stderr=0.05)]) == {("acc", 1): "regression"}


def test_failures_and_missing_figures():
    base = [rec("decode_tok_s", [100]), rec("decode_tok_s", [100], batch=2), rec("decode_tok_s", [100], batch=3),
            rec("x", None, batch=5, status="error")]
    new = [rec("decode_tok_s", None, status="oom"), rec("decode_tok_s", [100], batch=4)]
    result = diff_runs(base, new, thresholds({}, {}))
    by = {(c.metric, c.slice["batch"]): c for c in result.changes}
    # one measurement, so never gated on its value; but turning into an OOM is a regression all the same
    assert by[("decode_tok_s", 1)].verdict == "regression" and by[("decode_tok_s", 1)].new_status == "oom"
    assert by[("decode_tok_s", 2)].verdict == "missing in new"
    assert by[("decode_tok_s", 4)].verdict == "missing in base"
    assert result.failed


def test_only_what_can_show_its_spread_is_gated():
    tight = [100, 100.5, 99.5]
    base = [rec("decode_tok_s", tight), rec("decode_tok_s", [100, 101], batch=2), rec("decode_tok_s", [100], batch=3),
            rec("decode_tok_s", tight, batch=4, device="cpu"), rec("decode_tok_s", [100], batch=5)]
    half = [50, 50.25, 49.75]
    new = [rec("decode_tok_s", half), rec("decode_tok_s", [50, 50.5], batch=2), rec("decode_tok_s", [50], batch=3),
           rec("decode_tok_s", half, batch=4, device="cpu"), rec("decode_tok_s", [100], batch=5)]
    result = diff_runs(base, new, thresholds({}, {}))
    by = {c.slice["batch"]: c for c in result.changes}
    assert by[1].verdict == "regression"  # halved, three tight repeats on a GPU in both runs
    assert [(by[b].verdict, by[b].why_not_gated) for b in (2, 3, 4)] == [
        ("not gated", "2 repeats"), ("not gated", "one measurement"),
        ("not gated", "a CPU timing: runs swing more than repeats show")]
    assert all(by[b].change_pct == -50 for b in (2, 3, 4))  # listed with the change all the same
    assert by[5].verdict == "unchanged"  # one measurement that did not move
    # A threshold that names the metric gates them all: whoever named it said how much it may move.
    named = diff_runs(base, new, thresholds({}, {"decode_tok_s": 20}))
    assert [c.verdict for c in named.changes] == ["regression"] * 4 + ["unchanged"]


def table_rows(markdown: str, section: str) -> list[list[str]]:
    """The header and rows of one section's table in diff.md."""
    body = markdown[markdown.index(f"## {section}\n"):].split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("|:")]


def test_where_names_only_the_slice_values_that_vary_and_the_rest_once_under_the_table():
    def point(batch: int, samples: list[float], task: str = "t") -> Record:
        return rec("decode_tok_s", samples, batch=batch).model_copy(update={"task": task, "slice": {
            "batch": batch, "prompt_len": 128, "impl": "ssmbench"}})

    base = [point(1, [100] * 3), point(2, [100] * 3), point(1, [100] * 3, task="u")]
    new = [point(1, [50] * 3), point(2, [50] * 3), point(1, [50] * 3, task="u")]
    markdown = render_markdown(diff_runs(base, new, thresholds({}, {})), "BASE", "NEW")
    header, *rows = table_rows(markdown, "Regressions")
    assert header[:4] == ["task", "model", "metric", "where"]
    assert [row[:4] for row in rows] == [["t", "m", "decode_tok_s (tok/s)", "batch=1"],
                                         ["t", "m", "decode_tok_s (tok/s)", "batch=2"],
                                         ["u", "m", "decode_tok_s (tok/s)", ""]]
    assert markdown.count("> t, in every row: impl=ssmbench, prompt_len=128\n") == 1
    assert markdown.count("> u, in every row: batch=1, impl=ssmbench, prompt_len=128\n") == 1
    # where no row has a varying value, the table has no `where` column
    alone = render_markdown(diff_runs(base[2:], new[2:], thresholds({}, {})), "BASE", "NEW")
    assert "where" not in table_rows(alone, "Regressions")[0]


def test_thresholds_layer():
    assert thresholds({}, {})["default"] == DEFAULT_MAX_REGRESSION_PCT
    assert thresholds({"default": 3, "ms": 9}, {"ms": 20}) == {"default": 3, "ms": 20}


# --- the command ------------------------------------------------------------------------------------------

NIGHTLY = REPO / "results" / "reference" / "h100"
BASELINE = next((NIGHTLY / "nightly").iterdir())  # what the nightly workflow diffs against
SECOND = next((NIGHTLY / "nightly_second").iterdir())  # the same commit, run again on the same H100


def perturbed_copy(tmp_path: Path, factor: float, metric: str = "decode_tok_s") -> Path:
    """The committed run with every figure of `metric` multiplied by `factor` (repeats and all)."""
    copy = Path(shutil.copytree(BASELINE, tmp_path / "new"))
    records = read_records(copy / "records.jsonl")
    changed = []
    for r in records:
        if r.metric == metric and r.value is not None:
            stats = r.stats and r.stats.model_copy(update={k: getattr(r.stats, k) * factor for k in (
                "median", "mean", "std", "min", "max", "p10", "p90")})
            r = r.model_copy(update={"value": r.value * factor, "stats": stats})
        changed.append(r)
    (copy / "records.jsonl").unlink()
    with RecordWriter(copy / "records.jsonl") as out:
        out.write(changed)
    return copy


def test_a_run_against_itself_passes(tmp_path: Path):
    same = Path(shutil.copytree(BASELINE, tmp_path / "same"))
    result = invoke("diff", BASELINE, same)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# ssmbench diff: base {BASELINE} → new {same}\n")  # as the arguments read
    assert "PASS: 0 regressions, 0 improvements, 0 missing" in result.stdout
    assert json.loads((same / "diff.json").read_text())["failed"] is False
    assert result.stderr == f"diff written to {same / 'diff.md'} and {same / 'diff.json'}\n"


def test_a_second_diff_says_which_diff_it_replaced(tmp_path: Path):
    new = Path(shutil.copytree(SECOND, tmp_path / "new"))
    for name in ("diff.md", "diff.json"):
        (new / name).unlink(missing_ok=True)
    first = invoke("diff", BASELINE, new)
    assert first.exit_code == 0 and "replacing" not in first.stderr
    again = invoke("diff", new, new, "--format", "json")
    assert again.exit_code == 0, again.output
    assert again.stderr == (f"diff written to {new / 'diff.md'} and {new / 'diff.json'}, replacing the earlier "
                            f"diff (base {BASELINE} → new {new})\n")
    assert json.loads(again.stdout)["base"] == str(new)  # stdout stays the JSON alone
    (new / "diff.json").unlink()
    assert invoke("diff", BASELINE, new).stderr.endswith(", replacing an earlier diff\n")  # diff.md alone


def test_a_diff_that_cannot_be_written_is_printed_all_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    same = Path(shutil.copytree(BASELINE, tmp_path / "same"))

    def full_disk(self: RunDir, path: Path, text: str) -> None:
        raise cannot_write(path, OSError(28, "No space left on device"), self.path)

    monkeypatch.setattr(RunDir, "write_atomic", full_disk)
    result = invoke("diff", BASELINE, same)
    assert result.exit_code == 0 and result.stdout.startswith("# ssmbench diff: ")
    assert result.stderr.replace("\n", " ").startswith(
        f"note: {same / 'diff.md'}: diff not written (No space left on device); printing it only")


def test_the_committed_second_run_passes_against_the_baseline(tmp_path: Path):
    second = Path(shutil.copytree(SECOND, tmp_path / "second"))
    result = invoke("diff", BASELINE, second)
    assert result.exit_code == 0, result.output
    # Zero-shot could not load its weights on that machine (no cache, no network): every point failed in both
    # runs, and is listed as such rather than left out.
    assert "PASS: 0 regressions, 0 improvements, 0 missing, 4 failing in both, 105 unchanged" in result.stdout
    assert result.stdout.count("| — (the point failed) | lm_eval_task=") == 4


def test_a_constructed_slowdown_fails(tmp_path: Path):
    slower = perturbed_copy(tmp_path, 0.7)  # every decode rate 30% lower
    result = invoke("diff", BASELINE, slower)
    assert result.exit_code == 1
    assert "FAIL: " in result.stdout and "## Regressions" in result.stdout
    data = json.loads((slower / "diff.json").read_text())
    regressed = {c["metric"] for c in data["changes"] if c["verdict"] == "regression"}
    assert regressed == {"decode_tok_s"}
    assert (slower / "diff.md").read_text().startswith("# ssmbench diff")
    # a threshold the slowdown stays within lets it through
    assert invoke("diff", BASELINE, slower, "--max-regression", "decode_tok_s=40").exit_code == 0


def test_different_machines_are_flagged(tmp_path: Path):
    other = Path(shutil.copytree(BASELINE, tmp_path / "other"))
    env = json.loads((other / "env.json").read_text())
    env["packages"]["torch"] = "9.9.9"
    env["driver"] = "999.1"
    (other / "env.json").write_text(json.dumps(env))
    result = invoke("diff", BASELINE, other, "--format", "json")
    assert result.exit_code == 0
    differences = json.loads(result.stdout)["env_differences"]
    assert any(d.startswith("driver: ") and d.endswith("-> 999.1") for d in differences)
    assert any(d.startswith("torch: ") and d.endswith("-> 9.9.9") for d in differences)


def test_a_change_of_launcher_is_flagged_and_no_launcher_means_local(tmp_path: Path):
    def with_launcher(name: str, launcher: dict | None) -> Path:
        run = Path(shutil.copytree(BASELINE, tmp_path / name))
        env = json.loads((run / "env.json").read_text())
        env.pop("launcher", None)
        (run / "env.json").write_text(json.dumps(env if launcher is None else {**env, "launcher": launcher}))
        return run

    def differences(base: Path, new: Path) -> list[str]:
        return json.loads(invoke("diff", base, new, "--format", "json").stdout)["env_differences"]

    before_the_field = with_launcher("old", None)
    local = with_launcher("local", {"name": "local"})
    ray = with_launcher("ray", {"name": "ray", "ray": "2.60.0", "nodes": 1})
    assert differences(before_the_field, local) == []
    assert differences(local, ray) == ["launcher: local -> ray (ray 2.60.0, nodes 1)"]


@pytest.mark.parametrize("bad", ["fast", "x=fast"])
def test_bad_thresholds_are_one_line(tmp_path: Path, bad: str):
    result = invoke("diff", BASELINE, BASELINE, "--max-regression", bad)
    assert result.exit_code == 2 and "give a percentage" in result.stderr


# --- two real runs on the CPU -------------------------------------------------------------------------------

BACK_TO_BACK = """\
name: backtoback
defaults: {device: cpu, weights: random, seed: 0}
smoke_test: true
models: [tiny-gpt2, tiny-mamba]
tasks:
  - kind: throughput
    batch_sizes: [1, 2]
    prompt_lengths: [8]
    new_tokens: 4
    repeats: 3
  - kind: memory
    batch_sizes: [1]
    prompt_lengths: [16]
    new_tokens: 4
  - kind: phonebook
    book_sizes: [5]
    positions: [start]
    queries: 2
    max_new_tokens: 12
"""


@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs of one suite, one after the other, on this machine's CPU: what `make smoke` twice leaves."""
    base = tmp_path_factory.mktemp("backtoback")
    (base / "s.yaml").write_text(BACK_TO_BACK)
    for _ in range(2):
        result = invoke("run", base / "s.yaml", "--out", base / "out")
        assert result.exit_code == 0, result.output
    first, second = sorted((base / "out" / "backtoback").iterdir())
    return first, second


def test_two_back_to_back_cpu_runs_pass(cpu_runs: tuple[Path, Path], tmp_path: Path):
    first, second = (Path(shutil.copytree(run, tmp_path / run.name)) for run in cpu_runs)
    result = invoke("diff", first, second)
    assert result.exit_code == 0, result.output
    assert "PASS: 0 regressions" in result.stdout
    changes = json.loads((second / "diff.json").read_text())["changes"]
    verdicts = {(c["kind"], c["verdict"]) for c in changes}
    # the CPU's timings and the single memory peaks are listed with their change, not gated
    assert ("throughput", "not gated") in verdicts and ("memory", "regression") not in verdicts
    assert {c["why_not_gated"] for c in changes if c["kind"] == "throughput" and c["verdict"] == "not gated"} <= {
        "a CPU timing: runs swing more than repeats show"}
    # the phonebook's accuracies carry their standard error: gated, and the same seeds give the same answers
    assert {c["verdict"] for c in changes if c["kind"] == "phonebook"} == {"unchanged"}


def halved(run: Path, out: Path, metric: str = "decode_tok_s", factor: float = 0.5) -> tuple[Path, str]:
    """A copy of `run` with the first `metric` figure halved (times `factor`), its repeats tight (0.5%
    apart): a clear regression of one figure. Returns the copy and the figure's point."""
    copy = Path(shutil.copytree(run, out))
    records = read_records(copy / "records.jsonl")
    target = next(r for r in records if r.metric == metric and r.stats is not None and r.stats.n >= 3)
    slower = target.model_copy(update=summarised(metric, [target.value * factor * f for f in (0.995, 1, 1.005)],
                                                 target.unit, True))
    (copy / "records.jsonl").unlink()
    with RecordWriter(copy / "records.jsonl") as writer:
        writer.write([slower if r is target else r for r in records])
    return copy, target.point


def test_a_halved_figure_fails(cpu_runs: tuple[Path, Path], tmp_path: Path):
    # On a GPU (the committed H100 run), at the default threshold.
    slower, point = halved(BASELINE, tmp_path / "gpu")
    result = invoke("diff", BASELINE, slower, "--format", "json")
    assert result.exit_code == 1
    regressed = [c for c in json.loads(result.stdout)["changes"] if c["verdict"] == "regression"]
    assert [(c["metric"], round(c["change_pct"])) for c in regressed] == [("decode_tok_s", -50)]
    # On the CPU a timing is gated once its metric has a threshold of its own. The base's repeats are made
    # tight too: a busy CPU can spread a real run's repeats so far that half the figure is within its noise.
    first, _ = halved(cpu_runs[0], tmp_path / "base", factor=1.0)
    slower, point = halved(first, tmp_path / "cpu")
    listed = invoke("diff", first, slower)
    assert listed.exit_code == 0 and "not gated: a CPU timing" in listed.stdout and "-50.0%" in listed.stdout
    gated = invoke("diff", first, slower, "--max-regression", "decode_tok_s=20", "--format", "json")
    assert gated.exit_code == 1
    regressed = [c for c in json.loads(gated.stdout)["changes"] if c["verdict"] == "regression"]
    assert [(c["metric"], round(c["change_pct"])) for c in regressed] == [("decode_tok_s", -50)]


def test_runs_with_no_figure_in_common_fail(cpu_runs: tuple[Path, Path], tmp_path: Path):
    other = Path(shutil.copytree(cpu_runs[0], tmp_path / "cpu"))
    result = invoke("diff", BASELINE, other)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"error: {BASELINE} and {other} have no figure in common (suites: backtoback, nightly): "
                    "nothing to compare; diff two runs of one suite")
    assert not (other / "diff.md").exists()
    same = invoke("diff", other, other, "--metric", "no_such_metric")
    assert same.exit_code == 2 and "have no figure of --metric no_such_metric in common" in same.stderr


@pytest.mark.parametrize("bad", ["-5", "decode_tok_s=-1", "nan"])
def test_a_negative_threshold_is_refused(bad: str):
    result = invoke("diff", BASELINE, BASELINE, "--max-regression", bad)
    assert result.exit_code == 2 and "is a percentage of 0 or more" in result.stderr
