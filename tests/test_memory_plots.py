"""The memory kind's plot (issue 36): a run of one prompt length drew no plot and said nothing, and on the
CPU the plot drew each model's peak RSS, in which ~360 MiB of interpreter, torch and transformers (alike for
both models) hid the difference the task measures. Pinned here on records, through the plot's data (the
`.plot.json` spec that the PNG and the HTML page are both drawn from): the CPU plot draws `work_rss_mib`
(the peak less the process's own after load and warm-up), CUDA's keeps the decode steps' peak, and a run
draws along what it varied: prompt length, else batch size, else a bar per model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssmbench.kinds.memory import plot_memory
from ssmbench.records import Record
from ssmbench.report.plots import SPEC_SUFFIX
from ssmbench.report.tables import records_frame

# A CPU point as the memory kind records it: the peak counts ~350 MiB of process, the work does not.
CPU = {"tiny-gpt2": {"peak_rss_mib": 352.0, "decode_peak_rss_mib": 349.0, "work_rss_mib": 3.73, "state_mib": 1.12},
       "tiny-mamba": {"peak_rss_mib": 374.0, "decode_peak_rss_mib": 360.0, "work_rss_mib": 15.3, "state_mib": 0.625}}


def memory_record(model: str, metric: str, value: float, batch: int = 4, prompt_len: int = 64,
                  device: str = "cpu") -> Record:
    return Record(task="mem", kind="memory", job=f"mem/{model}", point=f"batch={batch},prompt_len={prompt_len}",
                  model=model, metric=metric, value=value, unit="MiB", higher_is_better=False, device=device,
                  slice={"mode": "inference", "batch": batch, "prompt_len": prompt_len, "new_tokens": 8})


def cpu_run(batches: tuple[int, ...] = (4,), lengths: tuple[int, ...] = (64,), drop: tuple[str, ...] = ()) -> list[Record]:
    """Both models at every (batch, prompt length), each figure scaled by batch x length so points differ."""
    return [memory_record(model, metric, value * b * n / 256, b, n)
            for model, values in CPU.items() for b in batches for n in lengths
            for metric, value in values.items() if metric not in drop]


def plotted(records: list[Record], tmp_path: Path) -> dict[str, dict]:
    """The memory plots drawn of the records: their file names and specs."""
    paths = plot_memory("mem", records_frame(records), tmp_path)
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in paths)
    return {path.name: json.loads(path.with_name(path.stem + SPEC_SUFFIX).read_text()) for path in paths}


def test_one_prompt_length_and_one_batch_draw_a_bar_per_model_of_the_cpu_work(tmp_path: Path):
    plots = plotted(cpu_run(), tmp_path)
    assert list(plots) == ["mem_memory_batch4_prompt64.png"]
    spec = plots["mem_memory_batch4_prompt64.png"]
    assert spec["bars"] is True and spec["title"] == "mem: memory at batch 4, prompt length 64"
    work, state = spec["lines"]
    assert (work["label"], state["label"]) == ("work RSS (peak less baseline)", "analytic state")
    assert work["x"] == state["x"] == ["tiny-gpt2", "tiny-mamba"]
    assert work["y"] == [3.73, 15.3] and state["y"] == [1.12, 0.625]  # the records' work_rss_mib and state_mib
    assert work["texts"] == ["3.73", "15.3"]  # printed over each bar, on the PNG and the page alike


def test_a_model_whose_point_failed_has_no_bar(tmp_path: Path):
    records = [r for r in cpu_run() if r.model == "tiny-gpt2"]
    records.append(Record(task="mem", kind="memory", job="mem/tiny-mamba", point="batch=4,prompt_len=64",
                          model="tiny-mamba", status="oom", message="out of memory",
                          slice={"mode": "inference", "batch": 4, "prompt_len": 64, "new_tokens": 8}))
    (spec,) = plotted(records, tmp_path).values()
    assert [line["x"] for line in spec["lines"]] == [["tiny-gpt2"]] * 2


def test_the_cpu_lines_against_prompt_length_draw_the_work_not_the_process_peak(tmp_path: Path):
    plots = plotted(cpu_run(lengths=(64, 256)), tmp_path)
    (spec,) = plots.values()
    assert list(plots) == ["mem_memory_batch4.png"] and spec.get("bars") is None
    lines = {line["label"]: line for line in spec["lines"]}
    assert set(lines) == {"tiny-gpt2 work RSS (peak less baseline)", "tiny-gpt2 analytic state",
                          "tiny-mamba work RSS (peak less baseline)", "tiny-mamba analytic state"}
    assert lines["tiny-mamba work RSS (peak less baseline)"]["y"] == pytest.approx([15.3, 61.2])
    assert max(y for line in spec["lines"] for y in line["y"]) < 100  # no ~360 MiB peak anywhere


def test_one_prompt_length_and_several_batches_draw_lines_against_batch_size(tmp_path: Path):
    plots = plotted(cpu_run(batches=(1, 4)), tmp_path)
    assert list(plots) == ["mem_memory_prompt64.png"]
    spec = plots["mem_memory_prompt64.png"]
    assert spec["xlabel"] == "batch size" and spec["title"] == "mem: memory vs batch size, prompt length 64"
    (gpt2,) = [line for line in spec["lines"] if line["label"] == "tiny-gpt2 work RSS (peak less baseline)"]
    assert gpt2["x"] == [1, 4] and gpt2["y"] == pytest.approx([3.73 / 4, 3.73])


def test_an_older_cpu_run_without_the_work_figure_falls_back_to_its_peak(tmp_path: Path):
    (spec,) = plotted(cpu_run(drop=("work_rss_mib",)), tmp_path).values()
    assert spec["lines"][0]["label"] == "decode peak RSS" and spec["lines"][0]["y"] == [349.0, 360.0]


def test_cuda_keeps_the_decode_steps_peak(tmp_path: Path):
    records = [memory_record(model, metric, value, prompt_len=n, device="NVIDIA H100 80GB HBM3")
               for model in ("gpt2", "mamba-130m") for n in (64, 256)
               for metric, value in (("peak_alloc_mib", 300.0), ("decode_peak_alloc_mib", 260.0),
                                     ("work_alloc_mib", 40.0), ("state_mib", 2.0))]
    (spec,) = plotted(records, tmp_path).values()
    assert {line["label"] for line in spec["lines"]} >= {"gpt2 decode peak (allocated)", "mamba-130m analytic state"}


def test_a_run_with_no_figure_draws_nothing(tmp_path: Path):
    failed = Record(task="mem", kind="memory", job="mem/tiny-gpt2", point="batch=4,prompt_len=64", model="tiny-gpt2",
                    status="error", message="boom", slice={"mode": "inference", "batch": 4, "prompt_len": 64})
    assert plotted([failed], tmp_path) == {}
