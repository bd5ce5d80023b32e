"""`ssmbench report RUN --html`: one page that opens offline, checked in a real browser (headless Chromium,
Debian's package; .ci/run installs it): every table is in the rendered DOM, plotly drew every plot, and no
script or console error was raised. The layout is checked as a reader sees it, from the boxes the page
measures of itself (`data-layout`): the plots tile an even grid with no overlap and no hole, and no title
lies under plotly's toolbar. Screenshots are kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import GRID_SUITE, invoke, write
from test_memory_plots import cpu_run
from test_records_report import run_dir_with

from ssmbench.report.html import powers_of_two

ARTIFACTS = REPO / "test-artifacts"
PAPER_RUN = REPO / "results/reference/h100/synthetic_paper/20261207-013845"  # induction heads: 3 of 8 seeds hold
WIDTH = 1300  # the reader's window, in CSS pixels


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("SSMBENCH_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(page: Path | str, *args: str) -> str:
    """The DOM after the page's scripts ran, from headless Chromium (a file, or a URL as a string)."""
    result = subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--virtual-time-budget=15000", *args, page if isinstance(page, str) else page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def page_layout(page: Path) -> tuple[str, list[dict]]:
    """The DOM after the page's scripts ran in a WIDTH-wide window, and each shown plot's boxes as the page
    measured them once loaded: cell, drawing (svg), title and modebar, each [left, top, width, height]."""
    dom = browse(page, f"--window-size={WIDTH},2000", "--dump-dom")
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, "the page did not measure its layout"
    return dom, json.loads(html.unescape(found.group(1)))


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] - 0.5 and b[0] < a[0] + a[2] - 0.5 and a[1] < b[1] + b[3] - 0.5 and b[1] < a[1] + a[3] - 0.5


def layout_problems(plots: list[dict], across_grids: bool = False) -> list[str]:
    """What a reader would see wrong: cells of differing sizes or a drawing that does not fill its cell, two
    plots overlapping, a row left short while a later row of its grid holds plots (the half-empty page),
    a gap between neighbours wider than one plot (across grids too, where only a heading lies between),
    and a title under the modebar or running out of its cell."""
    assert plots, "no plot was laid out"
    width, height = plots[0]["cell"][2:]
    problems = [f"{p['id']}: cell {p['cell'][2:]}, drawing {p['svg'] and p['svg'][2:]}, not {[width, height]}"
                for p in plots if p["cell"][2:] != [width, height] or not p["svg"] or p["svg"] != p["cell"]]
    problems += [f"{a['id']} overlaps {b['id']}" for i, a in enumerate(plots) for b in plots[i + 1:]
                 if _overlap(a["cell"], b["cell"])]
    rows: dict[tuple[int, float], list[list[float]]] = {}
    for p in plots:
        rows.setdefault((p["grid"], round(p["cell"][1])), []).append(p["cell"])
    ordered = sorted(rows.items())
    columns = max(len(cells) for cells in rows.values())
    for i, ((grid, top), cells) in enumerate(ordered):
        cells.sort()
        problems += [f"grid {grid} row at {top}: {b[0] - a[0] - width:.0f} px between plots"
                     for a, b in zip(cells, cells[1:], strict=False) if b[0] - a[0] - width >= width]
        later = ordered[i + 1][0] if i + 1 < len(ordered) else None
        if later and later[0] == grid and len(cells) < columns:
            problems.append(f"grid {grid} row at {top}: {len(cells)} of {columns} columns, with plots below it")
        if later and (later[0] == grid or across_grids) and later[1] - top - height >= height:
            problems.append(f"grid {grid} row at {top}: {later[1] - top - height:.0f} px before the next row")
    for p in plots:
        title, modebar, cell = p["title"], p["modebar"], p["cell"]
        if title is None or modebar is None:
            problems.append(f"{p['id']}: no title or no modebar drawn")
        elif _overlap(title, modebar):
            problems.append(f"{p['id']}: title {title} under the modebar {modebar}")
        elif title[0] < cell[0] or title[0] + title[2] > cell[0] + cell[2] or title[1] < cell[1]:
            problems.append(f"{p['id']}: title {title} runs out of its cell {cell}")
    return problems


def screenshot(page: Path, name: str, height: int) -> Path:
    """A WIDTH-wide screenshot of the page's top `height` pixels, kept in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    browse(page, f"--window-size={WIDTH},{height}", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    return shot


@pytest.fixture(scope="module")
def html_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("html")
    result = invoke("run", write(base / "grid.yaml", GRID_SUITE), "--out", base / "out")
    assert result.exit_code == 0, result.output
    (run_dir,) = (base / "out" / "grid").iterdir()
    report = invoke("report", run_dir, "--html")
    assert report.exit_code == 0, report.output
    assert f"HTML report: {run_dir / 'report.html'}" in report.stderr.replace("\n", "")
    return run_dir


def test_the_page_is_one_file_that_fetches_nothing(html_run: Path):
    page = (html_run / "report.html").read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    assert "Plotly" in page and "torch" in page  # plotly's JS inside; the run's versions in the header
    assert page.count("<table") == len(re.findall(r"^### ", (html_run / "table.md").read_text(), re.M))


def test_a_browser_shows_every_table_and_plot_without_errors(html_run: Path):
    dom, plots = page_layout(html_run / "report.html")
    specs = list(html_run.glob("*.plot.json"))
    assert specs and re.search(rf'data-plots="{len(specs)}"', dom), re.findall(r"data-plots=\"\d+\"", dom)
    assert 'data-errors="0"' in dom and re.search(r"<pre id=\"page-errors\"></pre>", dom)
    assert dom.count("<table") == (html_run / "report.html").read_text().count("<table")
    assert "How these figures were obtained: <b>tiny-gpt2</b>: kernel hf-sdpa" in dom
    bars = sum(1 for spec in specs for line in json.loads(spec.read_text())["lines"]
               for above in line["err_above"] or [] if above > 0)
    assert bars and dom.count('class="yerror"') == bars  # each repeated point drew its quartiles' error bar
    assert len(plots) == len(specs) and layout_problems(plots) == []
    screenshot(html_run / "report.html", "report.png", 2000)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed first-16 induction-heads run (8 Mamba seeds: 3 hold 100%, 5 collapse at chance),
    copied, its report and page rebuilt in the copy: results/reference is never written."""
    run_dir = tmp_path_factory.mktemp("paper") / PAPER_RUN.name
    shutil.copytree(PAPER_RUN, run_dir)
    report = invoke("report", run_dir, "--html")
    assert report.exit_code == 0, report.output
    return run_dir


def test_split_seeds_are_drawn_as_seeds_and_k_of_n_with_no_median_bar_across_the_split(paper_run: Path):
    """At every length three seeds sit at 100% and five near chance: no median line, no error bar that
    spans the gap between them, but each seed's line and 3/8 (how many hold 99%) above each length."""
    spec = json.loads((paper_run / "induction-heads-early_accuracy_by_length.plot.json").read_text())
    lines = {line["label"]: line for line in spec["lines"]}
    seeds = [line for label, line in lines.items() if " seed " in label]
    assert len(seeds) == 8 and not any("median" in label for label in lines)
    for x in seeds[0]["x"]:
        values = sorted(line["y"][line["x"].index(x)] for line in seeds)
        low_top, high_bottom = values[4], values[5]  # the chance group's top and the holding group's bottom
        assert low_top < 20 and high_bottom > 99, values
        for line in spec["lines"]:
            if line["err_above"] and x in line["x"]:
                j = line["x"].index(x)
                assert not line["y"][j] - line["err_below"][j] <= low_top < high_bottom <= line["y"][j] + line["err_above"][j]
    (held,) = [line for line in spec["lines"] if "texts" in line]
    assert held["texts"] == ["3/8"] * len(held["x"]) and held["label"] == "mamba: k/n seeds ≥ 99%"
    assert "seeds split, so no median" in spec["title"]


def test_the_paper_run_page_lays_out_its_plots_with_titles_clear_of_the_toolbar(paper_run: Path):
    dom, plots = page_layout(paper_run / "report.html")
    assert 'data-errors="0"' in dom and 'data-plots="3"' in dom
    assert len(plots) == 3 and layout_problems(plots) == []
    assert dom.count('class="yerror"') == 0  # the seeds split: no bar on the page either
    assert dom.count(">3/8<") >= 15  # k/n above each of the 15 lengths, as in the PNG
    screenshot(paper_run / "report.html", "report-synthetic-paper.png", 2600)


def test_the_training_length_marker_stands_at_its_tick_and_the_log2_axis_ticks_powers_of_two(paper_run: Path):
    """Issue 36: the dotted training-length line stood at L = 2.4 (log10 of 256, as plotly wants for an
    annotation, taken as a length by a shape) and the axis said log2 but ticked 100, 10k, 1M. As the page is
    drawn: the line's pixel x is that of the axis's tick for 256, and every tick is a power of two labelled
    2^k, as on the PNG."""
    spec = json.loads((paper_run / "induction-heads-early_accuracy_by_length.plot.json").read_text())
    assert spec["marker_x"] == [256, "training length 256"]
    dom, plots = page_layout(paper_run / "report.html")
    (plot,) = [p for p in plots if p["id"] == "fig-induction-heads-early_accuracy_by_length"]
    ticks = plot["xticks"]
    assert len(ticks) >= 5, ticks
    for tick in ticks:
        power = round(math.log2(tick["value"]))
        assert tick["value"] == pytest.approx(2**power) and tick["label"] == f"2<sup>{power}</sup>", tick
    (at_256,) = [t for t in ticks if t["label"] == "2<sup>8</sup>"]
    (marker,) = plot["vlines"]
    assert marker == pytest.approx(at_256["x"], abs=1.0), (marker, ticks)
    assert ticks[0]["x"] < marker < ticks[-1]["x"]  # inside the axis, not at its end
    assert 'data-unformatted="training length 256"' in dom  # named in the legend, as on the PNG


@pytest.mark.parametrize(("xs", "anchor", "powers"), [
    ([32, 64, 128, 1024], 32, [5, 6, 7, 8, 9, 10]),  # up to MAX_TICKS: every power
    ([64, 2**20], 256, [6, 8, 10, 12, 14, 16, 18, 20]),  # 15 powers: every second, the training length's among them
    ([32, 2**20], 128, [5, 7, 9, 11, 13, 15, 17, 19]),  # counted from the training length, not the axis's start
    ([100, 300], 200, [6, 7, 8, 9]),  # a training length that is no power of two: counted from the axis's start
    ([48, 96], None, [5, 6, 7]),  # the powers around the values
])
def test_a_log_axis_ticks_powers_of_two_labelled_2_to_the_k(xs: list[float], anchor: float | None, powers: list[int]):
    ticks = powers_of_two(xs, anchor)
    assert ticks["tickvals"] == [2.0**k for k in powers]
    assert ticks["ticktext"] == [f"2<sup>{k}</sup>" for k in powers]


def test_a_bar_plot_is_drawn_as_bars_with_the_pngs_values(tmp_path: Path):
    """A memory run of one prompt length and one batch draws a bar per model (issue 36); the page draws the
    same bars with the values printed over them on the PNG (1.12 where plotly's own rounding says 1.13)."""
    run_dir = run_dir_with(tmp_path, cpu_run())
    report = invoke("report", run_dir, "--html")
    assert report.exit_code == 0, report.output
    dom, plots = page_layout(run_dir / "report.html")
    assert 'data-errors="0"' in dom and 'data-plots="1"' in dom and layout_problems(plots) == []
    printed = re.findall(r'class="bartext[^"]*"[^>]*>([^<]*)<', dom)
    assert printed == ["3.73", "15.3", "1.12", "0.625"]
    assert [t["label"] for t in plots[0]["xticks"]] == ["tiny-gpt2", "tiny-mamba"]


def test_the_layout_check_finds_holes_and_overlaps(paper_run: Path, tmp_path: Path):
    """The check above can fail: plots pushed a page apart, or drawn over one another, are named."""
    page = (paper_run / "report.html").read_text()
    apart, over = tmp_path / "apart.html", tmp_path / "over.html"
    apart.write_text(page.replace("</style>", ".plot:first-child { margin-bottom: 600px; } "
                                              ".plots { grid-auto-rows: auto; }</style>"))
    over.write_text(page.replace("</style>", ".plot + .plot { margin-left: -300px; }</style>"))
    assert any("px before the next row" in p for p in layout_problems(page_layout(apart)[1]))
    assert any(" overlaps " in p for p in layout_problems(page_layout(over)[1]))


def test_the_page_reports_its_own_script_errors(html_run: Path, tmp_path: Path):
    """The check above can fail: a page whose script throws says so in the DOM."""
    broken = tmp_path / "broken.html"
    broken.write_text((html_run / "report.html").read_text().replace("<pre id='page-errors'></pre>",
                                                                      "<pre id='page-errors'></pre><script>noSuchFunction();</script>"))
    dom = browse(broken, "--dump-dom")
    assert 'data-errors="1"' in dom and "noSuchFunction" in dom
