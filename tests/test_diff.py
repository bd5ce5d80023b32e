"""`ssmbench diff`: figures paired by identity, judged in their own direction against a threshold and the
runs' own noise; failures, missing figures and machine differences reported; exit 1 on a regression."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import invoke

from ssmbench.records import Record, RecordWriter, read_records, summarised
from ssmbench.report.diff import DEFAULT_MAX_REGRESSION_PCT, diff_runs, thresholds


def rec(metric: str, samples: list[float] | None, batch: int = 1, higher: bool = True, status: str = "ok",
        stderr: float | None = None, model: str = "m") -> Record:
    figures = summarised(metric, samples, "tok/s", higher) if samples else {"metric": None if status != "ok" else metric}
    return Record(task="t", kind="throughput", job=f"t/{model}", point=f"batch={batch}", model=model,
                  slice={"batch": batch}, status=status, stderr=stderr, **figures)


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
    assert by[("decode_tok_s", 1)].verdict == "regression" and by[("decode_tok_s", 1)].new_status == "oom"
    assert by[("decode_tok_s", 2)].verdict == "missing in new"
    assert by[("decode_tok_s", 4)].verdict == "missing in base"
    assert result.failed


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
    assert result.stdout.startswith(f"# ssmbench diff: {same} against {BASELINE}")
    assert "PASS: 0 regressions, 0 improvements, 0 missing" in result.stdout
    assert json.loads((same / "diff.json").read_text())["failed"] is False


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
