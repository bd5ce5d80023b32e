"""A CPU timing's ± is the spread of one run's repeats, and a rerun on the CPU moves the figure by far more:
every table that shows such a spread marks the cell and says so under it, on the screen and in table.md, in
the words `ssmbench diff` gives for not gating the same figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ssmbench.cli import app
from ssmbench.records import CPU_SWING
from ssmbench.report.tables import CPU_MARK, CPU_NOTE

TIMED = {"name": "timed", "defaults": {"device": "cpu", "weights": "random", "seed": 0}, "models": ["tiny-mamba"],
         "tasks": [{"kind": "throughput", "batch_sizes": [1], "prompt_lengths": [8], "new_tokens": 4, "repeats": 3},
                   {"kind": "scan", "passes": ["forward"], "d_inner": [16], "d_state": 4, "head_dim": 8,
                    "seq_lengths": [16], "reference_max_len": 16, "warmup": 1, "repeats": 3},
                   {"kind": "train_speed", "name": "loops", "architecture": {"mixer": "mamba", "d_model": 16},
                    "vocab_size": 8, "batch_sizes": [2], "seq_len": 16, "warmup_steps": 1, "steps": 2, "repeats": 3},
                   {"kind": "train_speed", "name": "packs", "architecture": {"mixer": "mamba", "d_model": 16},
                    "vocab_size": 8, "batch_sizes": [2], "seq_len": 16, "warmup_steps": 1, "steps": 2, "repeats": 3,
                    "packs": [1, 2]}]}


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The run directory and what `run` printed."""
    out = tmp_path_factory.mktemp("timed")
    (out / "s.yaml").write_text(yaml.safe_dump(TIMED))
    result = CliRunner().invoke(app, ["run", str(out / "s.yaml"), "--out", str(out / "runs")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    (run_dir,) = (out / "runs" / "timed").iterdir()
    return run_dir, result.stdout


SPREAD = re.compile(r"±\d+\.\d%(\S*)")


def test_every_spread_of_a_cpu_timing_is_marked_and_explained_under_its_table(timed_run: tuple[Path, str]):
    run_dir, _ = timed_run
    sections = (run_dir / "table.md").read_text().split("\n### ")[1:]
    timed = {}
    for section in sections:
        title = section.partition("\n")[0]
        rows = [line for line in section.splitlines() if line.startswith("|")]
        marks = [m[1] for line in rows for m in SPREAD.finditer(line)]
        if marks:
            timed[title] = marks
            assert all(mark == CPU_MARK for mark in marks), f"{title}: a CPU spread without its mark"
            assert f"> {CPU_NOTE}" in section.splitlines(), f"{title}: no word of what the mark means"
        else:
            assert CPU_MARK not in section, title
    assert {title.split(" ")[0].rstrip(":") for title in timed} == {"throughput", "scan", "loops", "packs"}
    # beside other kinds' records, the scan's shape still reads as integers
    assert "scan: forward, D=16 (B=1, N=4, bfloat16): ms by sequence length" in timed


def test_the_screen_says_it_too_in_the_words_of_the_diff(timed_run: tuple[Path, str]):
    _, screen = timed_run
    assert CPU_SWING in CPU_NOTE  # the reason `ssmbench diff` gives for not gating these figures
    assert screen.count(CPU_NOTE) == 4 and f"%{CPU_MARK}" in screen
