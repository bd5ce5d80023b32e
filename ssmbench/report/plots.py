"""What every kind's plots share (matplotlib, Agg backend, PNG): one line-plot helper and a colour per model.

The plots themselves belong to their kinds (each Kind's `plotter`) and are drawn from records only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[Any, ...]], log: bool = True,
              marker_x: tuple[float, str] | None = None, log2_x: bool = False) -> Path:
    """One PNG: a line per (label, xs, ys, style[, options]) (options: matplotlib's, e.g. a colour that a
    style string cannot name), log-log by default (`log2_x`: only x, base 2), optionally a labelled vertical
    line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    drawn = []
    for label, xs, ys, style, *options in series:
        (line,) = ax.plot(xs, ys, style, marker="o", label=label, **(options[0] if options else {}))
        drawn.append(line)
    write_spec(path, title, xlabel, ylabel, drawn, log, log2_x, marker_x)
    if marker_x is not None:
        ax.axvline(marker_x[0], color="grey", linestyle=":", label=marker_x[1])
    if log or log2_x:
        ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8 if len(series) <= 10 else 6, ncol=1 if len(series) <= 12 else 2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


SPEC_SUFFIX = ".plot.json"  # beside each PNG: the same figure as data, for the interactive HTML report
DASHES = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}


def write_spec(path: Path, title: str, xlabel: str, ylabel: str, lines: list[Any], log: bool, log2_x: bool,
               marker_x: tuple[float, str] | None) -> Path:
    """The plot as data (`<name>.plot.json`): each line's label, points, colour, dash and width as matplotlib
    drew them, and the axes' scales, so the HTML report redraws the very figure with plotly."""
    import json

    from matplotlib.colors import to_hex

    spec = {"title": title, "xlabel": xlabel, "ylabel": ylabel, "log_x": log or log2_x, "log_y": log,
            "marker_x": list(marker_x) if marker_x is not None else None,
            "lines": [{"label": str(line.get_label()), "x": [float(v) for v in line.get_xdata()],
                       "y": [float(v) for v in line.get_ydata()], "color": to_hex(line.get_color()),
                       "dash": DASHES.get(line.get_linestyle(), "solid"), "width": float(line.get_linewidth())}
                      for line in lines]}
    out = path.with_name(path.stem + SPEC_SUFFIX)
    out.write_text(json.dumps(spec, allow_nan=True))
    return out


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
