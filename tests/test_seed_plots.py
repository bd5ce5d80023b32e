"""Seed sweeps that split: when some seeds of a model hold 100% and the rest sit at chance, a median and its
quartile bar describe neither group and span the gap between them (issue 32). The rule
(report.plots.seeds_split: sorted, two neighbouring seeds more than half the axis apart) is pinned here, and
the length plot's data (the `.plot.json` spec that the PNG and the HTML page are both drawn from) checked:
split seeds get their own lines and k/n, agreeing seeds keep the median with its quartile bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_synthetic_kind import seeded

from ssmbench.report.plots import SPEC_SUFFIX, Line, line_plot, seeds_split, wrap_title


@pytest.mark.parametrize(("values", "split"), [
    ([100, 100, 99.6, 7.8, 3.9, 8.2, 9.0, 7.0], True),  # 3 of 8 hold, 5 at chance: the committed paper run
    ([100, 6, 6, 6, 6], True),  # one seed learned: the median (6) would hide it
    ([6, 6.2, 55, 99.5, 100], False),  # a seed between: a spread, not two groups
    ([7, 50, 100, 100, 100], False),  # neighbours exactly half the axis apart: not more
    ([42.0], False),
])
def test_seeds_split_when_two_neighbours_lie_more_than_half_the_axis_apart(values: list[float], split: bool):
    assert seeds_split(values, span=100) is split


def test_split_seeds_plot_k_of_n_and_agreeing_seeds_keep_their_median(tmp_path: Path):
    """Two models, four seeds each: mamba splits (two at 100%, two at chance) at one length, hyena agrees
    everywhere. mamba gets no median line but k/n above each length; hyena keeps its bold median."""
    from ssmbench.kinds.synthetic.views import plot_synthetic
    from ssmbench.report.tables import records_frame

    values = {"mamba": {256: (1.0, 1.0, 0.99, 0.98), 2**20: (1.0, 0.995, 0.07, 0.05)},
              "hyena": {256: (0.9, 0.8, 0.85, 0.7), 2**20: (0.4, 0.3, 0.5, 0.35)}}
    records = [seeded(model, n, v, seed) for model, by_len in values.items() for n, vs in by_len.items()
               for seed, v in enumerate(vs)]
    plot_synthetic("ih", records_frame(records), tmp_path)
    spec = json.loads((tmp_path / f"ih_accuracy_by_length{SPEC_SUFFIX}").read_text())
    lines = {line["label"]: line for line in spec["lines"]}
    assert "mamba median" not in lines and "hyena median" in lines
    held = lines["mamba: k/n seeds ≥ 99%"]
    assert held["texts"] == ["3/4", "2/4"] and held["y"] == pytest.approx([100, 100])  # above the top seed
    assert held["err_above"] is None and all(not line["err_above"] for label, line in lines.items()
                                             if label.startswith("mamba"))
    assert lines["hyena median"]["y"] == pytest.approx([82.5, 37.5]) and lines["hyena median"]["err_above"]
    assert "bold: the median" in spec["title"] and "seeds split, so no median" in spec["title"]
    assert (tmp_path / "ih_accuracy_by_length.png").stat().st_size > 0


def test_a_row_of_notes_is_kept_for_the_page_and_long_titles_wrap(tmp_path: Path):
    title = "a task: accuracy by test length (each seed; seeds split, so no median: k/n seeds hold ≥ 99%)"
    line_plot(tmp_path / "p.png", title, "L", "%", [Line("k/n", [1, 2], [100.0, 90.0], "C0-", texts=["3/8", "1/8"])],
              log=False)
    (notes,) = json.loads((tmp_path / f"p{SPEC_SUFFIX}").read_text())["lines"]
    assert notes["texts"] == ["3/8", "1/8"] and notes["width"] == 0.0 and notes["err_above"] is None
    wrapped = wrap_title(title).split("\n")
    assert len(wrapped) == 2 and " ".join(wrapped) == title and all(len(part) <= 72 for part in wrapped)


def test_a_title_of_wide_letters_stays_inside_the_png(tmp_path: Path):
    """Issue 36: a title was clipped on both sides, 72 characters of wide letters being wider than the
    figure. Measured against the figure's edges, it wraps further: no ink touches the PNG's left or right
    edge, while the title is drawn (ink across most of the top band)."""
    import matplotlib.image

    title = "WWWWWWWW MMMMMMMMM WWWWWWWWW MMMMMMMMMMM WWWWWWWWWW MMMMMMMMM WWWWWWWWW MMMMM"
    assert len(wrap_title(title).split("\n")) == 2  # wrapped by characters, each line still wider than the figure
    line_plot(tmp_path / "p.png", title, "x", "y", [Line("a", [32, 64], [1.0, 2.0], "C0-")])
    pixels = matplotlib.image.imread(tmp_path / "p.png")[..., :3].min(axis=2)  # 1.0: white
    assert pixels[:, 0].min() == 1.0 and pixels[:, -1].min() == 1.0
    top = pixels[: pixels.shape[0] // 8]
    inked = (top < 0.5).any(axis=0).nonzero()[0]
    assert inked.max() - inked.min() > 0.6 * pixels.shape[1]
