"""`ssmbench report RUN --html`: one page that opens offline, checked in a real browser (headless Chromium,
Debian's package; .ci/run installs it): every table is in the rendered DOM, plotly drew every plot, and no
script or console error was raised. A screenshot is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_cli import GRID_SUITE, invoke, write

ARTIFACTS = REPO / "test-artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("SSMBENCH_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(page: Path, *args: str) -> str:
    """The DOM after the page's scripts ran, from headless Chromium."""
    result = subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--virtual-time-budget=15000", *args, page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


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
    dom = browse(html_run / "report.html", "--dump-dom")
    specs = list(html_run.glob("*.plot.json"))
    assert specs and re.search(rf'data-plots="{len(specs)}"', dom), re.findall(r"data-plots=\"\d+\"", dom)
    assert 'data-errors="0"' in dom and re.search(r"<pre id=\"page-errors\"></pre>", dom)
    assert dom.count("<table") == (html_run / "report.html").read_text().count("<table")
    assert "How these figures were obtained: <b>tiny-gpt2</b>: kernel hf-sdpa" in dom
    bars = sum(1 for spec in specs for line in json.loads(spec.read_text())["lines"]
               for above in line["err_above"] or [] if above > 0)
    assert bars and dom.count('class="yerror"') == bars  # each repeated point drew its quartiles' error bar
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    browse(html_run / "report.html", "--window-size=1280,2000", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


def test_the_page_reports_its_own_script_errors(html_run: Path, tmp_path: Path):
    """The check above can fail: a page whose script throws says so in the DOM."""
    broken = tmp_path / "broken.html"
    broken.write_text((html_run / "report.html").read_text().replace("<pre id='page-errors'></pre>",
                                                                      "<pre id='page-errors'></pre><script>noSuchFunction();</script>"))
    dom = browse(broken, "--dump-dom")
    assert 'data-errors="1"' in dom and "noSuchFunction" in dom
