"""mkdocs hook: the pages that are generated at build time, so that none can drift from the code or the data.

- reference/cli.md: the command-line reference, from the Typer app (Typer's own markdown generator, the one
  `typer ssmbench.cli utils docs` runs), so every option and default is the one the CLI has.
- reference/suite.md: every field of a suite and of every kind's task, with its type, default, allowed values
  and description, rendered from the JSON Schema that `ssmbench schema` writes (ssmbench/schema.py).
- results/: the committed reference runs (results/reference/<gpu>/): the folder's README (the commands, what
  reproduces and what does not), then a page per run with its tables and plots rebuilt from records.jsonl by
  the report code (`ssmbench report --html`) in a scratch copy, so the committed runs are never written.
  The interactive pages share one copy of plotly's JavaScript instead of carrying 4.6 MB each.

- history/: the nightly history (`ssmbench history --out DIR`) when SSMBENCH_DOCS_HISTORY names its folder,
  as the nightly workflow does before it publishes the site; otherwise a page saying where it comes from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
_SCRATCH: list[Path] = []  # the build's scratch folders, removed when the build ends


def on_files(files: Files, config: Any) -> Files:
    pages = {"reference/cli.md": cli_reference(), "reference/suite.md": suite_reference()}
    statics: dict[str, Path] = {}
    results = Path(os.environ.get("SSMBENCH_DOCS_RESULTS", REPO / "results" / "reference"))
    pages |= results_pages(results, statics)
    pages["history/index.md"] = history_page(os.environ.get("SSMBENCH_DOCS_HISTORY"), statics)
    for uri, text in pages.items():
        files.append(File.generated(config, uri, content=text))
    for uri, path in statics.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_post_build(config: Any) -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


# --- the command line ----------------------------------------------------------------------------------

def cli_reference() -> str:
    import typer
    from typer.cli import MARKUP_MODE_KEY, get_docs_for_click

    from ssmbench.cli import app

    command = typer.main.get_command(app)
    # as `typer ... utils docs` sets it: help text is read as the app's markup, so `<run-id>` stays text
    context = typer.Context(command, obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    docs = get_docs_for_click(obj=command, ctx=context, name="ssmbench", title="Command-line reference")
    intro = ("Generated from the Typer app when the site is built: what `ssmbench COMMAND --help` prints. "
             "The guides say what the commands are for ([running suites](../runs.md), "
             "[the nightly gate](../nightly.md)).\n\n")
    head, _, rest = docs.partition("\n\n")
    return f"{head}\n\n{intro}{rest}"


# --- the suite format ----------------------------------------------------------------------------------

_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null"}
_BOUNDS = (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"),
           ("minItems", "items ≥"), ("minLength", "length ≥"))


def suite_reference() -> str:
    """Every mapping of a suite as a table of its fields: the suite, each kind's task, then the nested ones."""
    from ssmbench.kinds import all_kinds
    from ssmbench.schema import suite_schema

    schema = suite_schema()
    defs = schema["$defs"]
    kinds = schema["properties"]["tasks"]["items"]["discriminator"]["mapping"]
    out = ["# Suite reference", "",
           "Generated when the site is built from the pydantic models that validate suites, through the JSON "
           "Schema that `ssmbench schema` prints (committed as `suites/suite.schema.json`, which the packaged "
           "suites name on their first line for editors). A type, default or allowed value here is the one the "
           "code checks. How to write a suite: [Suites](../suites.md).", "",
           "## The suite { #suite }", "", _paragraph(schema.get("description", "")), "", *_fields(schema), "",
           "## Task kinds", "", "Each task of `tasks:` is one of these, chosen by its `kind:`.", ""]
    described = all_kinds()
    for kind, ref in kinds.items():
        name = ref.rsplit("/", 1)[-1]
        what = described[kind].description if kind in described else ""
        out += [f"### `kind: {kind}` {{ #{_anchor(name)} }}", "", what, "", _paragraph(defs[name].get("description", "")),
                "", *_fields(defs[name]), ""]
    nested = [n for n in defs if n not in {r.rsplit("/", 1)[-1] for r in kinds.values()}]
    out += ["## Nested mappings", ""]
    for name in sorted(nested):
        out += [f"### {name} {{ #{_anchor(name)} }}", "", _paragraph(defs[name].get("description", "")), "",
                *_fields(defs[name]), ""]
    return "\n".join(out)


def _anchor(name: str) -> str:
    return f"def-{name.lower()}"


def _paragraph(text: str) -> str:
    return " ".join(text.split())


def _fields(node: dict[str, Any]) -> list[str]:
    required = set(node.get("required", []))
    rows = ["| field | type and allowed values | default | description |", "|---|---|---|---|"]
    for field, spec in node.get("properties", {}).items():
        default = "required" if field in required else _default(spec)
        rows.append(f"| `{field}` | {_cell(type_of(spec))} | {_cell(default)} | {_cell(spec.get('description', ''))} |")
    extra = node.get("additionalProperties")
    if extra is True:
        rows.append("| *any other key* | any | | a setting of the task, as the task itself takes it |")
    return rows


def _default(spec: dict[str, Any]) -> str:
    """The default as written in a suite; one built by a factory (no `default` in the schema) is empty, or
    its mapping's own defaults."""
    if "default" in spec:
        return f"`{json.dumps(spec['default'], ensure_ascii=False)}`"
    if "$ref" in spec:
        return "its fields' defaults"
    return "`[]`" if spec.get("type") == "array" else "`{}`" if spec.get("type") == "object" else ""


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, and `<name>` shown as text outside code spans (not a tag)."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    shown = "".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))
    return shown.replace("|", "\\|")


def type_of(node: dict[str, Any]) -> str:
    """A schema node as a reader says it: `list of int > 0`, `"auto" or bool`, a link to a nested mapping."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " or ".join(type_of(n) for n in node[key])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        text = f"list of {type_of(node.get('items', {}))}"
    elif kind == "object":
        values = node.get("additionalProperties")
        text = f"mapping to {type_of(values)}" if isinstance(values, dict) else "mapping"
    else:
        text = _TYPES.get(kind, "any")
    bounds = [f"{sign} {node[key]}" for key, sign in _BOUNDS if key in node]
    return " ".join([text, *bounds])


# --- the nightly history -------------------------------------------------------------------------------

def history_page(folder: str | None, statics: dict[str, Path]) -> str:
    """history.md as `ssmbench history` wrote it, and its interactive page beside it."""
    title = "# Nightly history\n\n"
    if not folder or not (Path(folder) / "history.md").is_file():
        return (f"{title}This build has no history. The nightly workflow builds the site after `ssmbench history` "
                "has followed every night's run, and this page then holds every figure over the nights with the "
                "steps found ([nightly gate and history](../nightly.md)).\n")
    text = (Path(folder) / "history.md").read_text(encoding="utf-8")
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    link = ""
    if (Path(folder) / "history.html").is_file():
        statics["history/history.html"] = Path(folder) / "history.html"
        link = "[The interactive history](history.html): a plot per figure, steps marked, and a filter box.\n\n"
    return f"{title}{link}{body}"


# --- reference results ---------------------------------------------------------------------------------

def results_pages(root: Path, statics: dict[str, Path]) -> dict[str, str]:
    """results/index.md, a page per GPU folder (its README and its runs) and a page per run."""
    gpus = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    scratch = Path(tempfile.mkdtemp(prefix="ssmbench-docs-"))
    _SCRATCH.append(scratch)
    plotly = scratch / "plotly.min.js"
    from plotly.offline import get_plotlyjs

    plotly.write_text(get_plotlyjs(), encoding="utf-8")
    statics["results/plotly.min.js"] = plotly
    pages = {}
    index = ["# Reference results", "",
             "Runs committed from real GPUs, each rebuilt here from its records.jsonl: the tables, the plots, and "
             "the interactive report `ssmbench report --html` writes. Each folder's notes say which commands made "
             "the runs and what reproduces.", ""]
    for gpu in gpus:
        runs = sorted(r.parent for r in gpu.glob("*/*/records.jsonl"))
        index.append(f"- [{gpu.name}]({gpu.name}/index.md): {len(runs)} runs")
        pages[f"results/{gpu.name}/index.md"] = gpu_page(gpu, runs)
        for run in runs:
            uri = f"results/{gpu.name}/{run.parent.name}/{run.name}"
            pages[f"{uri}.md"] = run_page(run, uri, scratch, statics)
    if not gpus:
        index.append(f"No runs under `{root}`.")
    pages["results/index.md"] = "\n".join(index) + "\n"
    return pages


def gpu_page(gpu: Path, runs: list[Path]) -> str:
    """The folder's README as written (the commands and what reproduces), then its runs."""
    readme = gpu / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else f"# Reference runs: {gpu.name}\n"
    text = _link_runs(_LINK.sub(lambda m: _relink(m, gpu, runs), text), runs)
    rows = ["| suite | run | records |", "|---|---|---|"]
    for run in runs:
        count = sum(1 for line in (run / "records.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
        rows.append(f"| {run.parent.name} | [{run.name}]({run.parent.name}/{run.name}.md) | {count} |")
    return f"{text.rstrip()}\n\n## The runs\n\n" + "\n".join(rows) + "\n"


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _relink(match: re.Match[str], gpu: Path, runs: list[Path]) -> str:
    """A link of the folder's README, as the site can hold it: to a run (or a file in one), that run's page;
    to anything else in the repository, its path as text (the site holds only its pages)."""
    bang, label, target = match.groups()
    if re.match(r"[a-z]+:|#", target):
        return match.group(0)
    path = (gpu / target.split("#")[0]).resolve()
    for run in runs:
        if path == run.resolve() or run.resolve() in path.parents:
            return f"[{label}]({run.parent.name}/{run.name}.md)"
    shown = f"{label} (`{target}`)" if label and label != target else f"`{target}`"
    return f"{'image: ' if bang else ''}{shown}"


def _link_runs(text: str, runs: list[Path]) -> str:
    """Each `suite/run-id` named in the prose (outside code spans and links) links to that run's page."""
    names = "|".join(re.escape(f"{run.parent.name}/{run.name}") for run in runs)
    if not names:
        return text
    named = re.compile(rf"(?<![\w/(\[.-])({names})(?![\w.\]/-])")
    parts = re.split(r"(`[^`\n]*`)", text)  # odd parts are code spans
    return "".join(part if i % 2 else named.sub(r"[\1](\1.md)", part) for i, part in enumerate(parts))


_RUN_FILES = ("records.jsonl", "env.json", "plan.json", "suite.resolved.yaml")


def run_page(run: Path, uri: str, scratch: Path, statics: dict[str, Path]) -> str:
    """A run's tables and plots, rebuilt by the report code in a scratch copy of its records."""
    from ssmbench.kinds import all_kinds
    from ssmbench.report import write_report
    from ssmbench.rundir import RunDir

    copy = scratch / uri
    copy.mkdir(parents=True)
    for name in _RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, copy / name)
    has_records = any(line.strip() for line in (run / "records.jsonl").read_text(encoding="utf-8").splitlines())
    report = write_report(RunDir(copy), all_kinds(), ("md",), html=has_records)
    lines = report.rendered["md"].splitlines()
    title = lines[0] if lines and lines[0].startswith("# ") else f"# {run.parent.name}: run {run.name}"
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    head = [title, "", f"`{run.relative_to(REPO) if run.is_relative_to(REPO) else run}`, rebuilt from its "
                       "records.jsonl by `ssmbench report` when the site was built."]
    if report.html is not None:
        page = report.html
        _share_plotly(page, depth=uri.count("/"))
        statics[f"{uri}/report.html"] = page
        head.append(f"[The interactive report]({run.name}/report.html) (every plot, hover for values).")
    plots = sorted(copy.glob("*.png"))
    for png in plots:
        statics[f"{uri}/{png.name}"] = png
    figures = ["", "## Plots", "", *(f"![{p.stem}]({run.name}/{p.name})" for p in plots)] if plots else []
    return "\n".join([*head, "", *body, *figures]) + "\n"


def _share_plotly(page: Path, depth: int) -> None:
    """The page with plotly's JavaScript read from the site's one copy instead of embedded in it."""
    from plotly.offline import get_plotlyjs

    text = page.read_text(encoding="utf-8")
    embedded = f"<script>{get_plotlyjs()}</script>"
    if embedded in text:
        page.write_text(text.replace(embedded, f'<script src="{"../" * depth}plotly.min.js"></script>', 1),
                        encoding="utf-8")
