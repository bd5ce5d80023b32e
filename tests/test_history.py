"""`ssmbench history`: figures over many runs, ordered by when each ran, with asv's step detection. Built on
synthetic histories of sixteen nightly runs whose figures hold a step, a slow drift, one bad night, and
pure noise: the step and the drift are found with the commits around them, the outlier and the noise are
not. The page is checked in headless Chromium like the run report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_cli import invoke
from test_html_report import browse

from ssmbench.records import Record, RecordWriter, summarised

NIGHTS = 16


def histories() -> dict[str, list[float]]:
    rng = random.Random(0)

    def noise(n: int, level: float = 100.0, sd: float = 1.0) -> list[float]:
        return [level + rng.gauss(0, sd) for _ in range(n)]

    return {"step": noise(10) + noise(6, 80.0),  # tok/s falls 20% from night 11 on
            "drift": [100 * 0.98 ** i + rng.gauss(0, 0.5) for i in range(NIGHTS)],  # 2% slower each night
            "outlier": noise(7) + [60.0] + noise(8),  # one bad night
            "noise": noise(NIGHTS, sd=2.0)}


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/nightly/<run>/ for sixteen nights, written out of order (the history orders them by time)."""
    base = tmp_path_factory.mktemp("nightly")
    series = histories()
    for night in reversed(range(NIGHTS)):
        run = base / "nightly" / f"run{night:02d}"
        run.mkdir(parents=True)
        (run / "env.json").write_text(json.dumps({"time": f"2026-11-{night + 1:02d}T03:17:00+00:00",
                                                  "git": f"c{night:02d}abcdef123"}))
        with RecordWriter(run / "records.jsonl") as out:
            for name, values in series.items():
                samples = [values[night] * f for f in (0.995, 1.0, 1.005)]
                out.write([Record(task="decode", kind="throughput", job=f"decode/{name}", point="batch=1",
                                  model=name, slice={"batch": 1}, **summarised("decode_tok_s", samples, "tok/s", True))])
    return base / "nightly"


@pytest.fixture(scope="module")
def history_run(nights: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("history")
    result = invoke("history", nights, "--out", out)
    assert result.exit_code == 0, result.output
    return result, out


def test_the_step_and_the_drift_are_found_and_the_outlier_and_the_noise_are_not(history_run):
    result, out = history_run
    data = {f["figure"].split(" · ")[1]: f for f in json.loads((out / "history.json").read_text())["figures"]}
    (step,) = data["step"]["changes"]
    assert (step["kind"], step["before"], step["after"]) == ("worse", 9, 10) and step["relative"] == pytest.approx(-0.2, abs=0.03)
    (drift,) = data["drift"]["changes"]
    assert drift["kind"] == "drift worse" and drift["relative"] == pytest.approx(0.98 ** 15 - 1, abs=0.03)
    assert data["outlier"]["changes"] == [] and data["noise"]["changes"] == []
    assert "16 runs, 4 figures, 2 changed" in result.stdout
    assert "worse by 2" in result.stdout and "between c09abcdef1 and c10abcdef1" in result.stdout


def test_the_runs_are_in_time_order_with_their_spread(history_run):
    _, out = history_run
    data = json.loads((out / "history.json").read_text())
    assert [r["git"][:3] for r in data["runs"]] == [f"c{n:02d}" for n in range(NIGHTS)]
    step = next(f for f in data["figures"] if " · step · " in f["figure"])
    assert step["values"][0] == pytest.approx(histories()["step"][0])
    assert all(s is not None and s > 0 for s in step["spreads"])  # half the repeats' interquartile range


def test_the_page_draws_a_plot_per_figure_without_errors(history_run):
    _, out = history_run
    page = (out / "history.html").read_text()
    assert "https://" not in page.split("<script>")[0]
    dom = browse(out / "history.html", "--dump-dom")
    assert 'data-plots="4"' in dom and 'data-errors="0"' in dom


def test_one_run_is_not_a_history(nights: Path, tmp_path: Path):
    result = invoke("history", nights / "run00", "--out", tmp_path)
    assert result.exit_code == 2 and "history needs two runs or more, got 1" in result.stderr
