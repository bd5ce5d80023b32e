"""The documentation site (mkdocs.yml, docs/): it builds with `mkdocs build --strict` (a broken link, a
missing page or anchor fails), offline and fetching nothing when read; its generated references cover every
command, option and suite field; its pages render in headless Chromium; and the README stays a landing page
that CI's command comes from."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml
from conftest import REPO
from test_html_report import ARTIFACTS, browse

from ssmbench.cli import app
from ssmbench.kinds import all_kinds

README = REPO / "README.md"
WORKFLOW = REPO / ".github" / "workflows" / "nightly-gpu.yml"


def hooks():
    """docs/hooks.py, the generator of the site's references and result pages, imported as mkdocs does."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(site: Path, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1", **env})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    result = build(out)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    return out


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_of_the_nav_is_built(site: Path):
    pages = nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    assert {"getting-started.md", "suites.md", "papers.md", "clusters.md", "nightly.md", "troubleshooting.md",
            "extending.md", "mad.md", "multi_gpu.md", "reference/cli.md", "reference/suite.md"} <= set(pages)
    assert [k for k in all_kinds() if f"kinds/{k}.md" not in pages and f"{k}.md" not in pages] == []
    missing = [p for p in pages if not (site / p.replace(".md", ".html")).is_file()]
    assert missing == []


def test_a_broken_link_fails_the_build(tmp_path: Path):
    """In a copy of the docs (the repository's are never written), with no reference runs to render."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "troubleshooting.md").write_text("# Broken\n\n[nowhere](no-such-page.md)\n")
    (tmp_path / "runs").mkdir()
    result = build(tmp_path / "site", cwd=tmp_path, SSMBENCH_DOCS_RESULTS=str(tmp_path / "runs"))
    assert result.returncode != 0 and "no-such-page.md" in result.stderr, result.stderr[-2000:]


def test_the_site_fetches_nothing_when_read(site: Path):
    outside = re.compile(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""")
    offenders = [str(p.relative_to(site)) for p in site.rglob("*.html") if outside.search(p.read_text())]
    assert offenders == []
    assert "fonts.googleapis" not in (site / "index.html").read_text()  # theme.font: false


def test_the_cli_reference_has_every_command_and_option(site: Path):
    page = (site / "reference" / "cli.html").read_text()
    assert "into results/&lt;suite&gt;/&lt;run-id&gt;/." in page  # help text is text, not HTML
    group = typer.main.get_command(app)
    assert len(group.commands) >= 9
    for name, command in group.commands.items():
        assert f"ssmbench {name}" in page, name
        for param in command.params:
            for opt in param.opts if param.param_type_name == "option" else []:
                assert f"<code>{opt}" in page, f"{name} {opt}"


def documented_commands() -> list[tuple[str, str]]:
    """Every `ssmbench ...` line of a code block in the docs and the README, with its file."""
    found = []
    for page in [*sorted((REPO / "docs").rglob("*.md")), README]:
        fence = False
        for line in page.read_text().splitlines():
            if line.strip().startswith("```"):
                fence = not fence
            elif (fence or line.startswith("    ")) and re.match(r"(\.venv/bin/)?ssmbench \w", line.strip()):
                found.append((page.name, re.sub(r"\s+#.*$", "", line.strip())))
    return found


def test_every_documented_command_line_parses_as_the_cli_has_it():
    """An example names commands and options the CLI has, with values it takes: run as written."""
    group = typer.main.get_command(app)
    examples = documented_commands()
    assert len(examples) >= 10
    for page, line in examples:
        name, *args = shlex.split(line)[1:]
        assert name in group.commands, f"{page}: {line}"
        group.commands[name].make_context(name, args)  # raises on an unknown option or a bad choice


def test_every_suite_example_in_the_docs_passes_the_suite_schema():
    """A suite, a list of tasks or a `models:` list in a yaml block is checked as part of a suite, against the
    schema `ssmbench validate`'s models give (tests/test_schema.py keeps the two in step)."""
    schema = json.loads((REPO / "suites" / "suite.schema.json").read_text())
    checked = 0
    for page in sorted((REPO / "docs").rglob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            data = yaml.safe_load(block)
            if isinstance(data, list):  # tasks, as a suite's `tasks:` holds them
                data = {"name": "example", "models": ["gpt2"], "tasks": data}
            elif isinstance(data, dict) and "tasks" not in data and "models" in data:
                data = {"name": "example", "tasks": [{"kind": "scan"}], **data}
            if isinstance(data, dict) and "tasks" in data:
                errors = [f"{list(e.absolute_path)}: {e.message}" for e in
                          jsonschema.Draft202012Validator(schema).iter_errors(data)]
                assert errors == [], f"{page.relative_to(REPO)}: {errors}"
                checked += 1
    assert checked >= 6


def test_the_suite_reference_has_every_field_of_every_kind_with_its_default():
    text = hooks().suite_reference()
    for name, kind in all_kinds().items():
        section = text.split(f"### `kind: {name}`", 1)[1].split("\n### ", 1)[0]
        for field, info in kind.task.model_fields.items():
            assert f"| `{field}` |" in section, f"{name}.{field}"
            if not info.is_required() and info.default is not None and info.default_factory is None:
                assert f"`{json.dumps(info.default)}`" in section, f"{name}.{field} default"
    assert "the run directory is results/&lt;name&gt;/&lt;run-id&gt;/" in text  # text, not a tag
    throughput = text.split("### `kind: throughput`", 1)[1].split("\n### ", 1)[0]
    assert "| `new_tokens` | int ≥ 2 | `32` |" in throughput
    assert '`"auto"` or bool or list of bool' in throughput


def test_the_type_of_a_field_reads_as_a_person_says_it():
    type_of = hooks().type_of
    assert type_of({"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0}}) == "list of int > 0"
    assert type_of({"enum": ["auto", "cpu"]}) == 'one of `"auto"`, `"cpu"`'
    assert type_of({"anyOf": [{"$ref": "#/$defs/Train"}, {"type": "null"}]}) == "[Train](#def-train) or null"


def test_the_history_page_holds_the_nightly_history_when_given(tmp_path: Path):
    statics: dict[str, Path] = {}
    assert "This build has no history" in hooks().history_page(None, statics) and statics == {}
    (tmp_path / "history.md").write_text("# History\n\n| figure | runs |\n|---|---|\n| a | 3 |\n")
    (tmp_path / "history.html").write_text("<html></html>")
    page = hooks().history_page(str(tmp_path), statics)
    assert "| a | 3 |" in page and "[The interactive history](history.html)" in page
    assert statics == {"history/history.html": tmp_path / "history.html"}


def test_the_notes_links_point_at_run_pages_or_become_paths(tmp_path: Path):
    """The reference README is written for the repository; the site holds only pages, so a link to a run
    goes to its page and any other relative link becomes its path as text (a strict build stays green)."""
    run = tmp_path / "h100" / "scan" / "20261124-180439"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text("")
    (tmp_path / "h100" / "README.md").write_text(
        "# Notes\n\n[the scan](scan/20261124-180439/table.md), [all](../../README.md), [web](https://a.b/c), "
        "[here](#notes)\n\n| scan/20261124-180439 | `scan/20261124-180439` |\n")
    page = hooks().gpu_page(tmp_path / "h100", [run])
    assert "[the scan](scan/20261124-180439.md)" in page and "all (`../../README.md`)" in page
    assert "[web](https://a.b/c)" in page and "[here](#notes)" in page
    assert "| [scan/20261124-180439](scan/20261124-180439.md) | `scan/20261124-180439` |" in page  # not in code
    assert "| scan | [20261124-180439](scan/20261124-180439.md) | 0 |" in page


def test_the_reference_runs_are_pages_with_their_tables_plots_and_notes(site: Path):
    runs = sorted(p.parent for p in (REPO / "results" / "reference").glob("*/*/*/records.jsonl"))
    assert runs
    for run in runs:
        gpu, suite = run.parent.parent.name, run.parent.name
        page = site / "results" / gpu / suite / f"{run.name}.html"
        assert page.is_file(), page
        for png in (site / "results" / gpu / suite / run.name).glob("*.png"):
            assert f'src="{run.name}/{png.name}"' in page.read_text()
    notes = (REPO / "results" / "reference" / "h100" / "README.md").read_text()
    heading = re.search(r"^## (.+)$", notes, re.M).group(1)
    assert heading.split(" ")[0] in (site / "results" / "h100" / "index.html").read_text()


@pytest.fixture(scope="module")
def served(site: Path):
    """The built site over HTTP, as GitHub Pages serves it (the search box needs a server: its worker fetches
    the index)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=site,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_browser_renders_the_pages_with_a_search_box(site: Path, served: str):
    for page, words in [("index.html", "I want to"), ("getting-started.html", "make smoke"),
                        ("reference/suite.html", "kind: throughput"), ("reference/cli.html", "ssmbench diff"),
                        ("kinds/synthetic.html", "Fair to both families"), ("results/h100/index.html", "The runs")]:
        dom = browse(f"{served}/{page}", "--window-size=1300,2000", "--dump-dom")
        assert 'class="md-content"' in dom and words in dom, page
        assert 'data-md-component="search-query"' in dom and 'class="md-nav' in dom, page
    index = json.loads((site / "search" / "search_index.json").read_text())
    located = {doc["location"].split("#")[0] for doc in index["docs"]}
    assert {"index.html", "troubleshooting.html", "reference/suite.html", "kinds/zero_shot.html"} <= located
    ARTIFACTS.mkdir(exist_ok=True)
    browse(f"{served}/index.html", "--window-size=1300,1400", f"--screenshot={ARTIFACTS / 'docs.png'}")
    assert (ARTIFACTS / "docs.png").stat().st_size > 10_000


def test_a_run_page_links_its_interactive_report_which_draws_every_plot(site: Path, served: str):
    report = site / "results" / "h100" / "scan" / "20261124-180439" / "report.html"
    assert '<script src="../../../plotly.min.js">' in report.read_text()  # one copy for the site, not one a page
    assert 'href="20261124-180439/report.html"' in (report.parent.parent / "20261124-180439.html").read_text()
    for opened in (report, f"{served}/results/h100/scan/20261124-180439/report.html"):  # from disk and served
        dom = browse(opened, "--window-size=1300,2000", "--dump-dom")
        assert re.search(r'data-plots="4"', dom) and 'data-errors="0"' in dom, re.findall(r"data-\w+=\"\d+\"", dom)


def test_the_readme_is_a_landing_page_whose_test_command_ci_runs():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    commands = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert [c.split("#")[0].strip() for c in commands[:2]] == ["make smoke", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), "CI must run the README's test command"
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target


def test_the_nightly_workflow_publishes_the_site_with_the_history():
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = json.dumps(flow["jobs"]["nightly"]["steps"])
    assert "mkdocs build --strict" in steps and "SSMBENCH_DOCS_HISTORY" in steps
    assert "actions/upload-pages-artifact" in steps
    deploy = flow["jobs"]["pages"]
    assert deploy["needs"] == "nightly" and "actions/deploy-pages" in json.dumps(deploy["steps"])
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
