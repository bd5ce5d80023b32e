"""The run as one self-contained HTML page: every table, interactive plots, and how each figure was obtained.

`ssmbench report RUN --html` writes `report.html` into the run directory beside table.md. Nothing is
fetched when it opens: the styles are inline and plotly's JavaScript (shipped inside its Python package) is
embedded once. The plots are the kinds' own figures, redrawn with plotly from the data each PNG was drawn
from (`<name>.plot.json`, report.plots.write_spec): hover for values, zoom, toggle lines. Each task's
section says how its figures were obtained (kernels, CUDA graphs, weights, dtype, device) above its tables,
and the page's header the GPU, driver, versions and git commit of the run.

Plots sit in a grid of fixed cells (PLOT_WIDTH x PLOT_HEIGHT, each figure drawn at that size), so none
overlaps another or leaves a hole; a title wraps rather than runs out of its plot, and sits below the strip
where plotly's toolbar (the modebar) appears, never under it.

The page watches itself: script errors and console errors are kept and written into `#page-errors` when the
page has loaded, `<body data-plots="N">` counts the plots plotly drew, and `data-layout` holds, per plot,
where its cell, drawing, title and modebar lie on the page, its x ticks and its vertical lines (the training
length), so a headless browser can check what a reader would see, layout included (tests/test_html_report.py).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ssmbench.report.plots import SPEC_SUFFIX, wrap_title
from ssmbench.report.tables import Table, how_obtained

HTML_NAME = "report.html"
PLOT_WIDTH, PLOT_HEIGHT = 580, 440  # one grid cell, in CSS pixels: two a row on the page's 1200
MODEBAR = 30  # the strip at a plot's top where plotly shows its toolbar, in pixels: titles start below it

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; margin-top: 1.5rem; }
table.data { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
table.data th { background: #f3f3f3; } table.data td:first-child { text-align: left; }
ul.notes { font-size: 0.8rem; color: #555; } .provenance { font-size: 0.85rem; color: #335; }
#page-errors:empty { display: none; } #page-errors { color: #a00; } [hidden] { display: none !important; }
""" + f"""
.plots {{ display: grid; grid-template-columns: repeat(auto-fill, {PLOT_WIDTH}px); grid-auto-rows: {PLOT_HEIGHT}px;
  gap: 16px; }}
.plot {{ width: {PLOT_WIDTH}px; height: {PLOT_HEIGHT}px; overflow: hidden; }}
"""

# First in <head>: keep every script error and console.error, whatever runs after.
WATCH = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
(function () { var original = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); }; })();
"""

# Last in <body>: say what the page holds, for a reader's browser and a test's: the plots drawn, the
# errors, and once the page has loaded, each shown plot's boxes [left, top, width, height] on the page,
# its x axis's ticks (label, value, where the label is anchored) and the page x of each vertical line drawn.
REPORT = """
document.body.dataset.plots = document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 ?
  String(document.querySelectorAll('.js-plotly-plot').length) : '0';
document.getElementById('page-errors').textContent = window.__errors.join('\\n');
document.body.dataset.errors = String(window.__errors.length);
window.addEventListener('load', function () { setTimeout(function () {
  function box(el) { if (!el) return null; var r = el.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }
  var shown = Array.prototype.filter.call(document.querySelectorAll('.plot'), function (c) { return c.offsetParent; });
  var grids = Array.prototype.slice.call(document.querySelectorAll('.plots'));
  function across(el) { var r = el.getBoundingClientRect(); return r.left + r.width / 2 + window.scrollX; }
  function xticks(c) { var plot = c.querySelector('.js-plotly-plot'), axis = plot && plot._fullLayout.xaxis;
    return Array.prototype.map.call(c.querySelectorAll('.xtick text'), function (t) {
      var at = t.parentNode.__data__.x;
      return {label: t.getAttribute('data-unformatted'), value: axis.type === 'log' ? Math.pow(10, at) : at,
              x: t.getScreenCTM().e + window.scrollX}; }); }
  document.body.dataset.layout = JSON.stringify(shown.map(function (c) { return {
    id: c.id, grid: grids.indexOf(c.parentElement), cell: box(c), svg: box(c.querySelector('.main-svg')),
    title: box(c.querySelector('.gtitle')), modebar: box(c.querySelector('.modebar')), xticks: xticks(c),
    vlines: Array.prototype.map.call(c.querySelectorAll('.shapelayer path'), across)}; }));
}, 0); });
"""


def write_html(run_path: Path, header: list[str], tables: list[Table], frame: pd.DataFrame) -> Path:
    """Write `report.html` into the run directory and return its path."""
    from plotly.offline import get_plotlyjs

    plots = {spec: json.loads(spec.read_text()) for spec in sorted(run_path.glob(f"*{SPEC_SUFFIX}"))}
    body = [_header(header)]
    placed: set[Path] = set()
    for task, group in _by_task(tables):
        body.append(f"<section><h2>{html.escape(task or 'Run')}</h2>")
        if task:
            body.append(_provenance(frame[frame["task"] == task]))
        body += [_table(t) for t in group]
        mine = [p for p in plots if task and p.name.startswith(f"{task}_")]
        body.append(_plots(mine, plots))
        placed.update(mine)
        body.append("</section>")
    rest = [p for p in plots if p not in placed]
    if rest:
        body.append(f"<section><h2>Other plots</h2>{_plots(rest, plots)}</section>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(header[0].lstrip('# '))}"
            f"</title><style>{STYLE}</style><script>{WATCH}</script><script>{get_plotlyjs()}</script></head><body>"
            f"<pre id='page-errors'></pre>{''.join(body)}<script>{REPORT}</script></body></html>")
    path = run_path / HTML_NAME
    path.write_text(page, encoding="utf-8")
    return path


def _by_task(tables: list[Table]) -> list[tuple[str, list[Table]]]:
    """Tables grouped by their task, in order (the run-wide ones, task '', first)."""
    groups: dict[str, list[Table]] = {}
    for table in tables:
        groups.setdefault(table.task, []).append(table)
    return list(groups.items())


def _header(lines: list[str]) -> str:
    """The markdown header of table.md (a title and '- ' lines) as HTML."""
    out, items = [], []
    for line in lines:
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            items.append(f"<li>{html.escape(line.strip('* '))}</li>")
    return "".join(out) + f"<ul class='provenance'>{''.join(items)}</ul>"


def _provenance(group: pd.DataFrame) -> str:
    """How a task's figures were obtained, per model: kernel path, CUDA graphs, weights, dtype, device."""
    how = how_obtained(group)
    if not how:
        return "<p class='provenance'>No figure of this task was measured.</p>"
    parts = [f"<b>{html.escape(model)}</b>: kernel {html.escape(h['kernel'])}, CUDA graphs {h['graphs']}, "
             f"{html.escape(h['weights'])} weights, {html.escape(h['dtype'])}, {html.escape(h['device'])}"
             for model, h in how.items()]
    return f"<p class='provenance'>How these figures were obtained: {'; '.join(parts)}.</p>"


def _table(table: Table) -> str:
    body = table.frame.to_html(index=False, escape=True, classes="data", border=0, na_rep="")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return f"<h3>{html.escape(table.title)}</h3>{body}" + (f"<ul class='notes'>{notes}</ul>" if notes else "")


def _plots(paths: list[Path], specs: dict[Path, dict[str, Any]]) -> str:
    if not paths:
        return ""
    return "<div class='plots'>" + "".join(_figure(specs[p], p.name.removesuffix(SPEC_SUFFIX)) for p in paths) + "</div>"


def plot_cell(figure: Any, title: str, name: str, key: str = "", title_size: int = 13) -> str:
    """One figure in its grid cell (`<div class='plot' id='fig-NAME'>`, an anchor; `data-key`: what the
    history page's filter matches), drawn at the cell's size with its title placed (place_title)."""
    place_title(figure, title, title_size)
    figure.update_layout(width=PLOT_WIDTH, height=PLOT_HEIGHT, autosize=False)
    drawn = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                           default_width=f"{PLOT_WIDTH}px", default_height=f"{PLOT_HEIGHT}px",
                           config={"responsive": False, "displaylogo": False})
    data_key = f" data-key='{html.escape(key, quote=True)}'" if key else ""
    return f"<div class='plot' id='fig-{name}'{data_key}>{drawn}</div>"


def place_title(figure: Any, title: str, size: int = 13) -> None:
    """The title wrapped to the plot's width, set just above the plotting area, and the top margin grown
    (plotly's automargin) to hold its lines and, above them, the modebar's strip. Left to itself plotly
    centres a title in a fixed top margin, where the modebar covers it, and never wraps one, so a long
    title ran under the toolbar and off the plot."""
    chars = int(PLOT_WIDTH / (0.6 * size))  # a character is about 0.6 of the font's size wide
    figure.update_layout(title={"text": wrap_title(title, chars, newline="<br>"), "font": {"size": size},
                                "x": 0.01, "xanchor": "left", "xref": "container", "y": 1, "yanchor": "bottom",
                                "yref": "paper", "automargin": True, "pad": {"t": MODEBAR, "b": 8}},
                         margin={"t": MODEBAR})


def _error_bars(line: dict[str, Any]) -> dict[str, Any] | None:
    """plotly's error_y for a line of the spec, asymmetric as the PNG's; None where it has none."""
    if not line.get("err_above"):  # specs written before error bars were kept have none
        return None
    return {"type": "data", "symmetric": False, "array": _nan_as_none(line["err_above"]),
            "arrayminus": _nan_as_none(line["err_below"]), "visible": True, "thickness": 1}


def _nan_as_none(values: list[float]) -> list[float | None]:
    """A point without a bar (or with a negative length, as the PNG's): plotly draws none for null."""
    return [v if math.isfinite(v) and v >= 0 else None for v in values]


def _trace(line: dict[str, Any]) -> Any:
    """A line of the spec as plotly draws it: a line with markers and its error bars, or, for a row of
    notes (`texts`, as the PNG prints k/n over split seeds), just the notes above their points."""
    import plotly.graph_objects as go

    if "texts" in line:
        return go.Scatter(x=line["x"], y=line["y"], name=line["label"], mode="text", text=line["texts"],
                          textposition="top center", textfont={"size": 8, "color": line["color"]},
                          hovertemplate="%{text}<extra>" + html.escape(line["label"]) + "</extra>")
    return go.Scatter(x=line["x"], y=line["y"], name=line["label"], mode="lines+markers",
                      line={"color": line["color"], "dash": line["dash"], "width": line["width"]},
                      error_y=_error_bars(line))


def _bar(line: dict[str, Any]) -> Any:
    """A series of a bar plot's spec (report.plots.bar_plot): a bar per group, its value printed over it as
    on the PNG."""
    import plotly.graph_objects as go

    return go.Bar(x=line["x"], y=line["y"], name=line["label"], marker_color=line["color"], text=line["texts"],
                  textposition="outside", error_y=_error_bars(line))


MAX_TICKS = 8  # labels an x axis holds beside the legend: '2^20' is about 25 pixels wide


def powers_of_two(xs: list[float], anchor: float | None = None) -> dict[str, Any]:
    """A log x axis ticked as the PNG's (matplotlib, log base 2): at powers of two, labelled 2^k, over the
    values `xs`; every second (third, ...) power where more than MAX_TICKS would crowd the axis, counted
    from `anchor` (the training length) where it is a power of two, so that it has a tick of its own. Left
    to itself plotly ticks a log axis by decades, 2 5 10 2 5 100, on an axis labelled log2."""
    exponents = [math.log2(x) for x in xs if 0 < x < math.inf]
    if not exponents:
        return {}
    low, high = math.floor(min(exponents)), math.ceil(max(exponents))
    step = math.ceil((high - low + 1) / MAX_TICKS)
    start = int(math.log2(anchor)) if anchor and math.log2(anchor).is_integer() else low
    powers = [k for k in range(low, high + 1) if (k - start) % step == 0]
    return {"tickmode": "array", "tickvals": [2.0**k for k in powers], "ticktext": [f"2<sup>{k}</sup>" for k in powers]}


def _figure(spec: dict[str, Any], name: str) -> str:
    """One interactive plot: the PNG's lines, colours and axes, with the units of its labels."""
    import plotly.graph_objects as go

    figure = go.Figure([_bar(line) if spec.get("bars") else _trace(line) for line in spec["lines"]])
    marker = spec.get("marker_x")
    if marker:  # a shape's x is in data units on a log axis too (an annotation's would be its log10)
        figure.add_vline(x=marker[0], line_dash="dot", line_color="grey", name=marker[1], showlegend=True)  # as the PNG
    figure.update_layout(xaxis_title=spec["xlabel"], yaxis_title=spec["ylabel"],
                         margin={"l": 50, "r": 10, "b": 40}, legend={"font": {"size": 9}})
    if spec["log_x"]:
        xs = [x for line in spec["lines"] for x in line["x"]] + ([marker[0]] if marker else [])
        figure.update_xaxes(type="log", **powers_of_two(xs, marker[0] if marker else None))
    if spec["log_y"]:
        figure.update_yaxes(type="log")
    return plot_cell(figure, spec["title"], name)
