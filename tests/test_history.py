"""`ssmbench history`: figures over many runs, ordered by when each ran, with asv's step detection. Built on
synthetic histories of sixteen nightly runs whose figures hold a step, a slow drift, one bad night, and
pure noise: the step and the drift are found with the commits around them, the outlier and the noise are
not. The page is checked in headless Chromium like the run report, on those nights and on the two committed
nightly runs (88 figures): a table of every figure, the changed first, linked to its plot; the plots in an
even grid under a heading per task, titles clear of the toolbar; a filter that hides what does not match."""

from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import invoke
from test_html_report import browse, layout_problems, page_layout, screenshot

from ssmbench.records import Record, RecordWriter, summarised

NIGHTS = 16
COMMITTED = [REPO / "results/reference/h100/nightly", REPO / "results/reference/h100/nightly_second"]


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


def figure_rows(page: str) -> list[tuple[str, str, bool]]:
    """The figure table's rows: (figure, the anchor it links to, hidden) in the order the page lists them."""
    return [(html.unescape(key), anchor, bool(hidden)) for key, hidden, anchor in
            re.findall(r"<tr data-key=[\"']([^\"']*)[\"']( hidden=\"\")?><td><a href=[\"']#([^\"']*)[\"']", page)]


def test_the_table_lists_the_changed_figures_first_each_linked_to_its_plot(history_run):
    _, out = history_run
    page = (out / "history.html").read_text()
    rows = figure_rows(page)
    assert [key.split(" · ")[1] for key, _, _ in rows] == ["drift", "step", "outlier", "noise"]  # -26%, -20%
    assert all(f"id='{anchor}'" in page for _, anchor, _ in rows)
    table = page[page.index("<table class='data' id='figures'>"):].split("</table>")[0].split("</tr>")
    assert "(worse)" in table[1] and "between c09abcdef1 and c10abcdef1" in table[2]


@pytest.fixture(scope="module")
def committed_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The history of the two committed nightly runs (results/reference/h100), written into a tmp folder."""
    out = tmp_path_factory.mktemp("committed")
    result = invoke("history", *COMMITTED, "--out", out)
    assert result.exit_code == 0 and "2 runs, 88 figures" in result.stdout, result.output
    return out / "history.html"


def test_the_committed_history_tiles_88_plots_by_task_with_titles_clear_of_the_toolbar(committed_history: Path):
    dom, plots = page_layout(committed_history)
    assert 'data-plots="88"' in dom and 'data-errors="0"' in dom and len(plots) == 88
    assert layout_problems(plots, across_grids=True) == []
    assert len({p["cell"][0] for p in plots}) == 2  # two columns at 1300 px, the left as full as the right
    figures = json.loads(committed_history.with_name("history.json").read_text())["figures"]
    tasks = re.findall(r"<section class=\"task\"><h2>([^<]*)</h2>", dom)
    assert sorted(tasks) == sorted({f["figure"].split(" · ")[0] for f in figures}), tasks  # a heading each
    screenshot(committed_history, "history.png", 6000)


def test_the_filter_hides_the_rows_and_plots_that_do_not_match(committed_history: Path, tmp_path: Path):
    """Typing 'memory 8192' keeps the memory figures at prompt_len=8192, in the table and the grid alike,
    and the grid closes up around them."""
    typed = tmp_path / "typed.html"
    typed.write_text(committed_history.read_text().replace(
        "</body>", "<script>filterFigures('memory 8192');</script></body>"))
    dom, plots = page_layout(typed)
    shown = [key for key, _, hidden in figure_rows(dom) if not hidden]
    assert shown and len(shown) < 88 and all(key.startswith("memory ·") and "8192" in key for key in shown)
    assert len(plots) == len(shown) and layout_problems(plots, across_grids=True) == []
    assert re.findall(r"<section class=\"task\"><h2>([^<]*)</h2>", dom) == ["memory"]  # other tasks hidden
    assert f">{len(shown)} shown<" in dom


def test_one_run_is_not_a_history(nights: Path, tmp_path: Path):
    result = invoke("history", nights / "run00", "--out", tmp_path)
    assert result.exit_code == 2 and "history needs two runs or more, got 1" in result.stderr
