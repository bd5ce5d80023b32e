"""Plots of a run, drawn from its records only (matplotlib, Agg backend, PNG).

- throughput: decode tok/s vs batch size, log-log, a colour per model, graphs on solid / off dashed
  (a library's own generate() dotted), one figure per prompt length.
- memory: peak memory of the decode steps vs prompt length, one line per model (one figure per batch
  size), the analytic state size dotted beside it.
Kind-specific plots (e.g. scan) register in PLOTTERS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

Plotter = Callable[[str, pd.DataFrame, Path], list[Path]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path: Path, title: str, xlabel: str, ylabel: str,
              series: list[tuple[str, list[float], list[float], str]], log: bool = True,
              marker_x: tuple[float, str] | None = None) -> Path:
    """One PNG: a line per (label, xs, ys, style), log-log by default, optionally a labelled vertical line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for label, xs, ys, style in series:
        ax.plot(xs, ys, style, marker="o", label=label)
    if marker_x is not None:
        ax.axvline(marker_x[0], color="grey", linestyle=":", label=marker_x[1])
    if log:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def model_colours(frame: pd.DataFrame) -> dict[str, str]:
    """One matplotlib colour cycle entry ('C0', 'C1', ...) per model, so its lines share a colour."""
    return {model: f"C{i % 10}" for i, model in enumerate(dict.fromkeys(frame["model"].dropna()))}


def plot_throughput(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == "decode_tok_s")]
    if ok.empty or "slice.batch" not in ok or "slice.impl" not in ok:
        return []
    colour = model_colours(frame)
    paths = []
    for prompt_len, by_prompt in ok.groupby("slice.prompt_len"):
        series = []
        for (model, graphs, impl), g in by_prompt.groupby(["model", "cuda_graphs", "slice.impl"], sort=False):
            g = g.sort_values("slice.batch")
            label = f"{model} ({'graphs' if graphs else 'eager'}{'' if impl == 'ssmbench' else ', ' + impl})"
            style = colour[model] + ("-" if graphs else "--" if impl == "ssmbench" else ":")
            series.append((label, list(g["slice.batch"]), list(g["value"]), style))
        if series:
            paths.append(line_plot(out / f"{task}_decode_tok_s_prompt{int(prompt_len)}.png",
                                    f"{task}: decode throughput, prompt {int(prompt_len)}",
                                    "batch size", "decode tokens / s", series))
    return paths


def plot_memory(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    ok = frame[frame["status"] == "ok"]
    # The decode-only peak is where the families differ (KV cache vs fixed state); older runs lack it.
    present = set(ok["metric"])
    measured = next((m for m in ("decode_peak_alloc_mib", "peak_alloc_mib", "decode_peak_rss_mib", "peak_rss_mib")
                     if m in present), "peak_rss_mib")
    lines = ((measured, "-", measured.removesuffix("_mib").replace("_", " ")), ("state_mib", ":", "analytic state"))
    colour = model_colours(frame)
    paths = []
    for batch, by_batch in ok.groupby("slice.batch"):
        series = []
        for model, g in by_batch.groupby("model", sort=False):
            for metric, style, suffix in lines:
                m = g[g["metric"] == metric].sort_values("slice.prompt_len")
                if not m.empty:
                    series.append((f"{model} {suffix}", list(m["slice.prompt_len"]), list(m["value"]),
                                   colour[model] + style))
        if series and by_batch["slice.prompt_len"].nunique() > 1:
            paths.append(line_plot(out / f"{task}_memory_batch{int(batch)}.png",
                                    f"{task}: memory vs prompt length, batch {int(batch)}",
                                    "prompt length (tokens)", "MiB", series))
    return paths


PLOTTERS: dict[str, Plotter] = {"throughput": plot_throughput, "memory": plot_memory}


def draw_plots(frame: pd.DataFrame, out: Path) -> list[Path]:
    paths: list[Path] = []
    for task, group in frame.groupby("task", sort=False):
        plotter = PLOTTERS.get(str(group["kind"].iloc[0]))
        if plotter is not None:
            paths += plotter(str(task), group, out)
    return paths
