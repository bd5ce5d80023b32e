"""What every kind's plots share (matplotlib, Agg backend, PNG): one line-plot helper and a colour per model.

The plots themselves belong to their kinds (each Kind's `plotter`) and are drawn from records only.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd


class Line(NamedTuple):
    """One line of a plot. `yerr` (below, above): each point's distance to the ends of its error bar, NaN
    where the point has none; a plain (label, xs, ys, style[, options]) tuple is a Line without error bars.
    A Line with `texts` is a row of notes, not a line: each text printed just above its point (how many
    seeds hold at each length, say), in the colour of its options or style."""

    label: str
    xs: list[Any]
    ys: list[float]
    style: str
    options: dict[str, Any] = {}  # matplotlib's, e.g. a colour that a style string cannot name
    yerr: tuple[list[float], list[float]] | None = None
    texts: list[str] | None = None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[Any, ...]], log: bool = True,
              marker_x: tuple[float, str] | None = None, log2_x: bool = False) -> Path:
    """One PNG: a line per Line (or plain tuple), with its error bars where it has them, log-log by default
    (`log2_x`: only x, base 2), optionally a labelled vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    lines = [Line(*entry) for entry in series]
    drawn = [_draw(ax, line) for line in lines]
    write_spec(path, {"title": title, "xlabel": xlabel, "ylabel": ylabel, "log_x": log or log2_x, "log_y": log,
                      "marker_x": list(marker_x) if marker_x is not None else None, "lines": drawn})
    if marker_x is not None:
        ax.axvline(marker_x[0], color="grey", linestyle=":", label=marker_x[1])
    if log or log2_x:
        ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    if any(line.texts for line in lines):
        ax.margins(y=0.12)  # room above the top points for their notes
    return _save(fig, ax, path, title, xlabel, ylabel, len(series))


def bar_plot(path: Path, title: str, xlabel: str, ylabel: str, groups: list[str], series: list[Line]) -> Path:
    """One PNG of grouped bars, for figures with nothing to run along (one length, one batch: a line plot
    would hold one point per line): a group per name of `groups` (a model, say), in each a bar per Line
    (its ys, one per group, NaN where it has none; its style, a colour; its error bars where it has them),
    each bar's value printed over it. Its spec says `bars`, so the HTML page draws bars too."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    width = 0.8 / len(series)
    entries = []
    for i, line in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar([g + offset for g in range(len(groups))], line.ys, width, label=line.label, color=line.style,
                      yerr=_finite(line.yerr) if has_error_bars(line) else None, capsize=3, **line.options)
        texts = [f"{v:.3g}" if math.isfinite(v) else "" for v in line.ys]
        ax.bar_label(bars, labels=texts, fontsize=7)
        colour = _hex(bars.patches[0].get_facecolor()) if bars.patches else "#000000"
        entries.append(_spec_line(line, [], line.ys, colour, "solid", 0.0) | {"x": list(groups), "texts": texts})
    write_spec(path, {"title": title, "xlabel": xlabel, "ylabel": ylabel, "log_x": False, "log_y": False,
                      "marker_x": None, "bars": True, "lines": entries})
    ax.set_xticks(range(len(groups)), groups)
    ax.margins(y=0.1)  # room above the tallest bar for its value
    return _save(fig, ax, path, title, xlabel, ylabel, len(series))


def _save(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str, n_series: int) -> Path:
    """Label, title, grid and legend a drawn figure, then write its PNG. A long title wraps (TITLE_CHARS a
    line, fewer where its letters are wide: matplotlib measures each line against the figure's edges)
    rather than running off the figure on either side."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(wrap_title(title), fontsize=10, wrap=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8 if n_series <= 10 else 6, ncol=1 if n_series <= 12 else 2)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return path


TITLE_CHARS = 72  # a title's line, in characters: what a 6.4-inch PNG or a 580-pixel page plot holds


def wrap_title(title: str, width: int = TITLE_CHARS, newline: str = "\n") -> str:
    """A long title broken into lines at spaces (`newline`: '<br>' for plotly), never cut."""
    return newline.join(textwrap.wrap(title, width)) or title


def _draw(ax: Any, line: Line) -> dict[str, Any]:
    """Draw one Line on the axes and return its entry of the plot's spec (write_spec)."""
    if line.texts is not None:
        colour = line.options.get("color", line.style.rstrip("-:.")) or "C0"
        ax.plot(line.xs, line.ys, linestyle="none", marker="none", label=line.label)  # the legend's entry
        for x, y, text in zip(line.xs, line.ys, line.texts, strict=True):
            ax.annotate(text, (x, y), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                        fontsize=6.5, color=colour)
        return _spec_line(line, line.xs, line.ys, _hex(colour), "solid", 0.0)
    if has_error_bars(line):
        drawn = ax.errorbar(line.xs, line.ys, yerr=_finite(line.yerr), fmt=line.style, marker="o", capsize=3,
                            label=line.label, **line.options).lines[0]
    else:
        (drawn,) = ax.plot(line.xs, line.ys, line.style, marker="o", label=line.label, **line.options)
    return _spec_line(line, drawn.get_xdata(), drawn.get_ydata(), _hex(drawn.get_color()),
                      DASHES.get(drawn.get_linestyle(), "solid"), float(drawn.get_linewidth()))


def _hex(colour: Any) -> str:
    """A matplotlib colour ('C1', an RGBA tuple) as '#rrggbb', as the page's plotly takes it."""
    from matplotlib.colors import to_hex

    return to_hex(colour)


def has_error_bars(line: Line) -> bool:
    return line.yerr is not None and any(math.isfinite(v) and v > 0 for part in line.yerr for v in part)


def _finite(yerr: tuple[list[float], list[float]]) -> list[list[float]]:
    """matplotlib draws no bar for a point whose error is 0, and refuses NaN and negative lengths: a missing
    bar becomes 0 (so does a value outside its own quartiles, which only a hand-edited record can hold)."""
    return [[v if math.isfinite(v) and v > 0 else 0.0 for v in part] for part in yerr]


SPEC_SUFFIX = ".plot.json"  # beside each PNG: the same figure as data, for the interactive HTML report
DASHES = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """The plot as data (`<name>.plot.json`) so the HTML report redraws the very figure with plotly: its
    title, axis labels and scales (`log_x`, `log_y`), the vertical line (`marker_x`: x and label), `bars`
    where it is a bar plot, and each line's label, points, error bars and notes as given, its colour, dash
    and width as matplotlib drew them."""
    import json

    out = path.with_name(path.stem + SPEC_SUFFIX)
    out.write_text(json.dumps(spec, allow_nan=True))
    return out


def _spec_line(given: Line, xs: Any, ys: Any, colour: str, dash: str, width: float) -> dict[str, Any]:
    """One line's entry of the spec; `texts` only where the Line is a row of notes."""
    entry = {"label": str(given.label), "x": [float(v) for v in xs], "y": [float(v) for v in ys], "color": colour,
             "dash": dash, "width": width,
             "err_below": [float(v) for v in given.yerr[0]] if given.yerr else None,
             "err_above": [float(v) for v in given.yerr[1]] if given.yerr else None}
    if given.texts is not None:
        entry["texts"] = list(given.texts)
    return entry


def own_error_bars(rows: pd.DataFrame, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """The error bars records_frame gave each row (its repeats' quartiles, or its standard error), scaled
    as the plotted values are."""
    return [scale * v for v in rows["err_below"]], [scale * v for v in rows["err_above"]]


def median_line(rows: pd.DataFrame, x: str, scale: float = 1.0) -> tuple[list[Any], list[float],
                                                                        tuple[list[float], list[float]]]:
    """Per value of column `x`: the median of the rows' values, with error bars to their quartiles where
    several rows (seeds) meet at one x, else to the one row's own error bar."""
    xs, ys, below, above = [], [], [], []
    for at, g in rows.sort_values(x).groupby(x, sort=False):
        values = scale * g["value"].astype(float)
        median = float(values.median())
        if len(g) > 1:
            low, high = values.quantile([0.25, 0.75])
            bar = (median - low, high - median)
        else:
            bar = (scale * g["err_below"].iloc[0], scale * g["err_above"].iloc[0])
        xs.append(at)
        ys.append(median)
        below.append(float(bar[0]))
        above.append(float(bar[1]))
    return xs, ys, (below, above)


def model_colours(frame: pd.DataFrame) -> dict[str, str]:
    """One matplotlib colour cycle entry ('C0', 'C1', ...) per model, so its lines share a colour."""
    return {model: f"C{i % 10}" for i, model in enumerate(dict.fromkeys(frame["model"].dropna()))}


SHADES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys")  # a colour family per model, as C0, C1, ...


def seed_shades(seeds: dict[str, list[int]]) -> dict[tuple[str, int], tuple[float, ...]]:
    """(model, seed) -> a colour: each model a family of shades (blues for the first, as C0 is blue, ...),
    each of its seeds a shade of its own, so lines of one model's seeds read as one model and stay apart."""
    import matplotlib

    colours = {}
    for i, (model, model_seeds) in enumerate(seeds.items()):
        cmap = matplotlib.colormaps[SHADES[i % len(SHADES)]]
        for j, seed in enumerate(model_seeds):
            colours[model, seed] = cmap(0.45 + 0.5 * j / max(len(model_seeds) - 1, 1))
    return colours


SPLIT = 0.5  # seeds whose values part by more than this share of the axis have split into groups


def seeds_split(values: list[float], span: float) -> bool:
    """Whether the seeds' values at one point have split into groups: sorted, two neighbours lie more than
    SPLIT of the axis (`span`: 100 for an accuracy in %) apart. Three seeds at 100% and five at chance have
    split (no seed lies between them); seeds spread from 6% to 100% with some between have not. Of split
    seeds a median and its quartile bar describe neither group, and the bar spans the gap between them."""
    ordered = sorted(values)
    return any(high - low > SPLIT * span for low, high in zip(ordered, ordered[1:], strict=False))
