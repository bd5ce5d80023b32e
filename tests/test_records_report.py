"""Records and the report built from them: JSONL io, statistics, attempts, and the comparison tables,
formats and plots as pure functions of records."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

import ssmbench.rundir as rundir
from ssmbench.kinds import all_kinds
from ssmbench.records import (
    DONE_STATUSES,
    SCHEMA_VERSION,
    Record,
    RecordWriter,
    Stats,
    duplicate_identities,
    incomplete_points,
    latest_attempts,
    point_attempts,
    read_records,
    shared_identities,
    summarised,
    torn_point,
    upgrade,
)
from ssmbench.report import build_tables, header_lines, integrity_warnings, render, write_report
from ssmbench.report.tables import CPU_MARK, CPU_NOTE, format_value, records_frame
from ssmbench.rundir import RunDir

# --- records.jsonl --------------------------------------------------------------------------------------


def rec(point: str = "batch=1", metric: str | None = "x", value: float | None = 1.0, job: str = "t/m",
        **fields: Any) -> Record:
    return Record(task="t", kind="throughput", job=job, point=point, metric=metric, value=value, **fields)


def test_jsonl_round_trip(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    first = [rec("batch=1", **summarised("decode_tok_s", [3.0, 1.0, 2.0], "tok/s", True)),
             rec("batch=1", "prefill_ms", 4.5, unit="ms", slice={"batch": 1, "graphs": False}, extra={"n": [1, 2]})]
    second = [rec("batch=2", None, None, status="oom", message="out of memory: CUDA out of memory", attempt=1)]
    with RecordWriter(path) as writer:
        writer.write(first)
        writer.write([])  # nothing to write: nothing written
        writer.write(second)
    with RecordWriter(path) as writer:  # appends, never truncates
        writer.write([rec("batch=3")])
    back = read_records(path)
    assert back == [*first, *second, rec("batch=3").model_copy(update={"time": back[-1].time})]
    assert back[0].stats == Stats.of([1.0, 2.0, 3.0]) and back[0].value == 2.0
    assert len(path.read_text().splitlines()) == 4
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in path.read_text().splitlines())


def test_an_induction_record_from_before_layouts_reads_as_the_uniform_layout():
    """Schema 3 put the training layout in induction records' slices; every earlier model trained in the
    uniform one, so its records still pair with a new run's uniform-layout figures (ssmbench diff)."""
    old = rec("phase=eval,seq_len=256", "accuracy", 1.0, slice={"phase": "eval", "seq_len": 256,
                                                               "synthetic_task": "induction_heads"})
    old = old.model_dump(mode="json") | {"kind": "synthetic", "schema_version": 2}
    assert Record.model_validate(upgrade(old)).slice["layout"] == "uniform"
    copying = old | {"slice": old["slice"] | {"synthetic_task": "selective_copying"}}
    assert "layout" not in Record.model_validate(upgrade(copying)).slice
    assert upgrade({**old, "schema_version": SCHEMA_VERSION}) == {**old, "schema_version": SCHEMA_VERSION}


def test_missing_file_has_no_records(tmp_path: Path):
    assert read_records(tmp_path / "records.jsonl") == []


def test_truncated_last_line_is_dropped(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write([rec("batch=1"), rec("batch=2")])
    full = path.read_text()
    path.write_text(full + rec("batch=3").model_dump_json()[:50])  # the process died mid-write
    assert [r.point for r in read_records(path)] == ["batch=1", "batch=2"]


def test_cut_short_middle_line_is_dropped_but_a_foreign_record_raises(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    lines = [rec("batch=1").model_dump_json(), "{not json", rec("batch=2").model_dump_json()]
    path.write_text("\n".join(lines) + "\n")
    assert [r.point for r in read_records(path)] == ["batch=1", "batch=2"]
    path.write_text("\n".join([lines[0], '{"task": "t"}', lines[2]]) + "\n")
    with pytest.raises(ValueError):
        read_records(path)


def test_blank_lines_are_ignored(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    path.write_text("\n" + rec("batch=1").model_dump_json() + "\n\n" + rec("batch=2").model_dump_json() + "\n\n")
    assert [r.point for r in read_records(path)] == ["batch=1", "batch=2"]


def test_appending_after_a_truncated_line_loses_nothing(tmp_path: Path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write([rec("batch=1")])
    path.write_text(path.read_text() + rec("batch=2").model_dump_json()[:40])  # died mid-write
    with RecordWriter(path) as writer:  # what --resume does next
        writer.write([rec("batch=2")])
        writer.write([rec("batch=3")])
    assert [r.point for r in read_records(path)] == ["batch=1", "batch=2", "batch=3"]


def test_records_refuse_unknown_fields_and_statuses():
    with pytest.raises(ValueError):
        rec(colour="red")
    with pytest.raises(ValueError):
        rec(status="crashed")


# --- statistics -----------------------------------------------------------------------------------------

def test_stats_on_known_samples():
    s = Stats.of([10, 1, 9, 2, 8, 3, 7, 4, 6, 5])  # order does not matter
    assert (s.n, s.median, s.mean, s.min, s.max) == (10, 5.5, 5.5, 1.0, 10.0)
    assert s.p10 == pytest.approx(1.9) and s.p90 == pytest.approx(9.1)  # linear interpolation
    assert s.std == pytest.approx(math.sqrt(sum((x - 5.5) ** 2 for x in range(1, 11)) / 9))  # sample std


def test_stats_odd_count_and_single_sample():
    s = Stats.of([4.0, 100.0, 1.0])
    assert (s.median, s.min, s.max) == (4.0, 1.0, 100.0)
    assert s.p10 == pytest.approx(1.6) and s.p90 == pytest.approx(80.8)
    one = Stats.of([7])
    assert (one.n, one.median, one.std, one.p10, one.p90) == (1, 7.0, 0.0, 7.0, 7.0)
    with pytest.raises(ValueError, match="no samples"):
        Stats.of([])


def test_summarised_uses_the_median():
    fields = summarised("decode_tok_s", [1.0, 2.0, 30.0], "tok/s", True)
    assert fields["value"] == 2.0 and fields["stats"].mean == 11.0
    assert (fields["metric"], fields["unit"], fields["higher_is_better"]) == ("decode_tok_s", "tok/s", True)


def test_error_bars_reach_the_repeats_quartiles_or_one_standard_error():
    repeated = rec(**summarised("decode_tok_s", [1.0, 2.0, 30.0], "tok/s", True))  # quartiles 1.5 and 16
    estimated = rec(point="batch=2", value=0.8, stderr=0.04)
    single = rec(point="batch=3", **summarised("decode_tok_s", [5.0], "tok/s", True))
    assert repeated.error_bar == pytest.approx((0.5, 14.0)) and estimated.error_bar == (0.04, 0.04)
    assert single.error_bar is None and rec(value=None).error_bar is None
    frame = records_frame([repeated, estimated, single])
    assert list(frame["err_above"][:2]) == pytest.approx([14.0, 0.04]) and math.isnan(frame["err_below"][2])


def test_a_line_plot_keeps_its_error_bars_for_the_page(tmp_path: Path):
    from ssmbench.report.plots import SPEC_SUFFIX, Line, line_plot

    path = line_plot(tmp_path / "p.png", "t", "batch", "tok/s", [
        Line("with", [1, 2], [10.0, 20.0], "C0-", yerr=([1.0, math.nan], [2.0, math.nan])),
        ("without", [1, 2], [5.0, 6.0], "C1--")])
    with_bars, without = json.loads((tmp_path / f"p{SPEC_SUFFIX}").read_text())["lines"]
    assert path.stat().st_size > 0 and (with_bars["label"], without["label"]) == ("with", "without")
    assert with_bars["err_below"][0] == 1.0 and with_bars["err_above"][0] == 2.0
    assert math.isnan(with_bars["err_above"][1]) and without["err_above"] is None and without["dash"] == "dash"


# --- attempts -------------------------------------------------------------------------------------------

def test_latest_attempts_after_a_retry():
    failed = rec("batch=2", None, None, status="error", message="boom")
    retried = [rec("batch=2", "a", 1.0, attempt=1), rec("batch=2", "b", 2.0, attempt=1)]
    other = rec("batch=1", "a", 3.0)
    other_job = rec("batch=2", "a", 4.0, job="t/other")  # same point key, another job: its own attempts
    records = [other, failed, other_job, *retried]
    assert latest_attempts(records) == [other, other_job, *retried]
    assert point_attempts(records) == {("t/m", "batch=1"): (0, True), ("t/m", "batch=2"): (1, True),
                                       ("t/other", "batch=2"): (0, True)}


def test_point_attempts_done_statuses():
    assert DONE_STATUSES == {"ok", "oom", "skipped"}
    records = [rec("p-ok"), rec("p-oom", None, None, status="oom"), rec("p-skip", None, None, status="skipped"),
               rec("p-err", None, None, status="error"),
               rec("p-err-twice", None, None, status="error"), rec("p-err-twice", None, None, status="error",
                                                                   attempt=1)]
    assert point_attempts(records) == {("t/m", "p-ok"): (0, True), ("t/m", "p-oom"): (0, True),
                                       ("t/m", "p-skip"): (0, True), ("t/m", "p-err"): (0, False),
                                       ("t/m", "p-err-twice"): (1, False)}
    # One failed record among a point's records makes the point not done.
    mixed = [rec("p", "a", 1.0), rec("p", None, None, status="error")]
    assert point_attempts(mixed) == {("t/m", "p"): (0, False)}


def test_a_point_is_done_only_with_all_its_records():
    whole = [rec("p1", "a", 1.0, point_records=2), rec("p1", "b", 2.0, point_records=2)]
    torn = [rec("p2", "a", 1.0, point_records=3), rec("p2", "b", 2.0, point_records=3)]  # the third line was cut
    old = [rec("p3", "a", 1.0)]  # written before records said how many their point had: taken as whole
    redone = [*torn, *(rec("p2", m, 1.0, attempt=1, point_records=3) for m in "abc")]
    assert incomplete_points([*whole, *torn, *old]) == {("t/m", "p2"): (2, 3)}
    assert point_attempts([*whole, *torn, *old]) == {("t/m", "p1"): (0, True), ("t/m", "p2"): (0, False),
                                                     ("t/m", "p3"): (0, True)}
    assert incomplete_points(redone) == {} and point_attempts(redone) == {("t/m", "p2"): (1, True)}


def test_duplicate_identities_within_one_attempt():
    once = [rec("p1", "a", 1.0), rec("p1", "b", 1.0), rec("p1", "a", 2.0, attempt=1)]  # a retry is no duplicate
    twice = [rec("p2", "a", 1.0), rec("p2", "a", 1.1), rec("p2", "b", 1.0), rec("p2", "b", 1.0)]
    assert duplicate_identities(once) == {}
    assert duplicate_identities([*once, *twice]) == {("t/m", "p2", 0): 2}


def test_two_points_recording_one_identity_are_found_and_reported(tmp_path: Path):
    """A kind that sweeps seeds without naming them in the slice: the two seeds' figures share an identity."""
    seeds = [rec("batch=1", "acc", 0.5, job="t/m/seed=0", slice={"batch": 1}, seed=0),
             rec("batch=1", "acc", 0.9, job="t/m/seed=1", slice={"batch": 1}, seed=1),
             rec("batch=2", "acc", 0.7, job="t/m/seed=0", slice={"batch": 2}, seed=0)]
    (key,) = shared_identities(seeds)
    assert shared_identities(seeds)[key] == [("t/m/seed=0", "batch=1"), ("t/m/seed=1", "batch=1")]
    assert shared_identities([r.model_copy(update={"slice": {**r.slice, "seed": r.seed}}) for r in seeds]) == {}
    (warning,) = integrity_warnings(seeds, RunDir(tmp_path))
    assert warning.startswith("Ambiguous: 1 figure recorded by more than one point with the same slice "
                              "(t/m/seed=0 [batch=1], t/m/seed=1 [batch=1])")


def test_torn_point_names_the_point_of_a_cut_line():
    line = rec("batch=1,prompt_len=8", "a", 1.0).model_dump_json()
    assert torn_point(line[: line.index('"attempt"')]) == ("t/m", "batch=1,prompt_len=8")
    assert torn_point(line[: line.index('"point"') + 12]) is None  # cut inside the point: unknown


# --- tables ---------------------------------------------------------------------------------------------

def trec(model: str, batch: int, metric: str | None, samples: list[float] | None = None, unit: str = "tok/s",
         status: str = "ok", message: str | None = None, task: str = "decode", kind: str = "throughput",
         prompt: int = 128, attempt: int = 0, **fields: Any) -> Record:
    values = summarised(metric, samples, unit, unit == "tok/s") if samples else {"metric": metric}
    return Record(suite="bench", task=task, kind=kind, job=f"{task}/{model}", point=f"batch={batch},prompt_len={prompt}",
                  model=model, family="ssm" if "mamba" in model else "transformer",
                  slice={"batch": batch, "prompt_len": prompt, "cuda_graphs": False, "impl": "ssmbench"},
                  kernel="hf-torch",
                  cuda_graphs=False, weights="random", dtype="float16", device="NVIDIA H100 80GB HBM3",
                  seed=0, status=status, message=message, attempt=attempt, extra={"params": 124_439_808},
                  **(values | fields))


def throughput_records() -> list[Record]:
    return [
        trec("gpt2", 1, "prefill_ms", [5.0, 5.5, 4.5], "ms"), trec("gpt2", 1, "decode_tok_s", [100, 110, 90]),
        trec("mamba", 1, "prefill_ms", [3.0, 3.0, 3.0], "ms"), trec("mamba", 1, "decode_tok_s", [1234, 1234, 1234]),
        trec("gpt2", 8, "prefill_ms", [9.0], "ms"), trec("gpt2", 8, "decode_tok_s", [800]),
        trec("mamba", 8, None, status="oom", message="out of memory: CUDA out of memory"),
        trec("gpt2", 64, "prefill_ms", [20.0], "ms"), trec("gpt2", 64, "decode_tok_s", [900]),
        trec("mamba", 64, None, status="error", message="RuntimeError: boom"),
        trec("gpt2", 128, None, status="skipped", message="too long"),
        trec("mamba", 128, "prefill_ms", [30.0], "ms"), trec("mamba", 128, "decode_tok_s", [5000]),
    ]


def test_comparison_layout():
    models, table = build_tables(throughput_records(), all_kinds())
    assert models.title == "Models"
    assert list(models.frame["model"]) == ["gpt2", "mamba"]
    assert models.frame.iloc[0].to_dict() == {"model": "gpt2", "family": "transformer", "params": "124.4M",
                                              "weights": "random", "dtype": "float16", "kernel": "hf-torch",
                                              "cuda graphs": "off", "device": "NVIDIA H100 80GB HBM3"}
    assert table.title == "decode (throughput)" and table.task == "decode"
    # Models as columns; rows are (metric with its unit, varying slice); the kind's metric order first.
    assert list(table.frame.columns) == ["metric", "batch", "gpt2", "mamba"]
    rows = [tuple(r) for r in table.frame.itertuples(index=False)]
    assert rows == [
        ("decode_tok_s (tok/s)", 1, "100 ±5.0%", "1,234 ±0.0%"),
        ("decode_tok_s (tok/s)", 8, "800", "OOM"),
        ("decode_tok_s (tok/s)", 64, "900", "ERR"),
        ("decode_tok_s (tok/s)", 128, "—", "5,000"),
        ("prefill_ms (ms)", 1, "5 ±5.0%", "3 ±0.0%"),
        ("prefill_ms (ms)", 8, "9", "OOM"),
        ("prefill_ms (ms)", 64, "20.0", "ERR"),
        ("prefill_ms (ms)", 128, "—", "30.0"),
    ]
    # Constant slice columns become a note, then what each metric shown is, then one note per failure.
    assert table.notes == ["prompt_len=128, cuda_graphs=off, impl=ssmbench",
                           "decode_tok_s: batch × (new tokens − 1) / decode time: the steady generation rate, "
                           "prompt pass excluded",
                           "prefill_ms: the prompt pass, which also yields the first new token",
                           "± = half the interquartile range of n = 3 repeats, relative to the median",
                           "OOM mamba (1 point): out of memory: CUDA out of memory",
                           "ERR mamba (1 point): RuntimeError: boom",
                           "— gpt2 (1 point): too long"]


def test_several_varying_slices_sort_numerically():
    records = [trec(m, b, "decode_tok_s", [float(b * p)], prompt=p)
               for m in ("gpt2", "mamba") for p in (1024, 256) for b in (16, 2)]
    (_, table) = build_tables(records, all_kinds())
    assert list(table.frame.columns) == ["metric", "batch", "prompt_len", "gpt2", "mamba"]
    assert [(r.batch, r.prompt_len) for r in table.frame.itertuples()] == [(2, 256), (2, 1024), (16, 256),
                                                                          (16, 1024)]
    assert table.notes == ["cuda_graphs=off, impl=ssmbench", "decode_tok_s: batch × (new tokens − 1) / decode time: "
                           "the steady generation rate, prompt pass excluded"]


def test_failures_in_a_task_of_only_failures():
    records = [trec("gpt2", 1, None, status="error", message="weights not cached"),
               trec("gpt2", 2, None, status="error", message="weights not cached")]
    (_, table) = build_tables(records, all_kinds())
    assert list(table.frame["gpt2"]) == ["ERR", "ERR"]
    assert table.notes[-1] == "ERR gpt2 (2 points): weights not cached"


def test_the_table_shows_the_latest_attempt():
    records = [trec("gpt2", 1, None, status="error", message="flaky"),
               trec("gpt2", 1, "decode_tok_s", [50.0], attempt=1)]
    (_, table) = build_tables(records, all_kinds())
    assert list(table.frame["gpt2"]) == ["50.0"]
    assert not any("flaky" in n for n in table.notes)


def test_tasks_get_a_table_each_in_order():
    records = throughput_records()[:2] + [
        trec("gpt2", 1, "peak_rss_mib", [300.0], "MiB", task="mem", kind="memory"),
        trec("gpt2", 1, "state_mib", [0.5], "MiB", task="mem", kind="memory")]
    assert [t.title for t in build_tables(records, all_kinds())] == ["Models", "decode (throughput)", "mem (memory)"]
    assert build_tables([], all_kinds()) == []


@pytest.mark.parametrize(("args", "expected"), [
    ((None,), ""), ((float("nan"),), ""), ((0.0,), "0"), ((1234.4,), "1,234"), ((-2500.0,), "-2,500"),
    ((999.4,), "999"), ((100.0,), "100"), ((12.34,), "12.3"), ((9.876,), "9.88"), ((0.000123,), "0.000123"),
    ((200.0, 0.10), "200 ±5.0%"), ((200.0, None), "200"), ((200.0, 0.09), "200 ±4.5%"),
    ((200.0, 0.2), "200 ±10.0% ⚠"), ((0.0, 1.0), "0"), ((-4.0, 0.5), "-4 ±25.0% ⚠"),
    ((50.0, float("nan")), "50.0"),
])
def test_format_value(args: tuple, expected: str):
    assert format_value(*args) == expected


def test_render_formats():
    records = throughput_records()
    tables = build_tables(records, all_kinds())
    md = render(tables, "md", ["# decode run", ""])
    assert md.startswith("# decode run\n")
    assert "### decode (throughput)" in md and "| decode_tok_s (tok/s) | 1" in md
    assert "> OOM mamba (1 point): out of memory: CUDA out of memory" in md
    rows = list(csv.DictReader(io.StringIO(render(tables, "csv", records=records))))
    assert len(rows) == len(records)
    ok = [r for r in rows if r["model"] == "mamba" and r["metric"] == "decode_tok_s" and r["batch"] == "1"]
    assert ok[0]["value"] == "1234.0" and ok[0]["unit"] == "tok/s" and ok[0]["status"] == "ok"
    oom = [r for r in rows if r["status"] == "oom"]
    assert len(oom) == 1 and oom[0]["metric"] == "" and oom[0]["message"].startswith("out of memory")
    assert render(tables, "csv", records=[]) == ""
    data = json.loads(render(tables, "json"))
    assert [t["title"] for t in data] == ["Models", "decode (throughput)"]
    assert data[1]["rows"][1] == {"metric": "decode_tok_s (tok/s)", "batch": 8, "gpt2": "800", "mamba": "OOM"}
    assert data[1]["notes"] == tables[1].notes
    latex = render(tables, "latex")
    assert latex.count("\\begin{tabular}") == 2 and "\\caption{decode (throughput)}" in latex
    assert "\\par{\\footnotesize ERR mamba (1 point): RuntimeError: boom}" in latex  # the notes stay
    assert "decode\\_tok\\_s (tok/s)" in latex and "100 ±5.0\\%" in latex  # escaped
    with pytest.raises(ValueError, match="unknown format"):
        render(tables, "html")


def test_the_csv_keeps_the_fields_a_slice_shares_and_names_each_records_line():
    """seed, dtype and cuda_graphs live in the slice where a job varies them, else in the record's field:
    the CSV has one column for each, filled from either, so a seed sweep's rows stay apart."""
    def synthetic(seed: int, slice_: dict) -> Record:
        return trec("m", 1, "acc", [0.5], "fraction", task="s", kind="synthetic").model_copy(
            update={"seed": seed, "job": f"s/m/seed={seed}", "slice": slice_})

    sweep = [synthetic(s, {"seed": s, "seq_len": 16}) for s in (0, 1)]
    fixed = synthetic(3, {"step": 5})
    scan = [trec("m", 1, "ms", [2.0], "ms", task="c", kind="scan").model_copy(update={"slice": s, "dtype": d})
            for s, d in (({"dtype": "bfloat16"}, None), ({}, "float16"))]
    records = [*sweep, fixed, *scan]
    rows = list(csv.DictReader(io.StringIO(render([], "csv", records=records))))
    assert [(r["seed"], r["seq_len"], r["step"], r["dtype"]) for r in rows] == [
        ("0", "16", "", "float16"), ("1", "16", "", "float16"), ("3", "", "5", "float16"),
        ("0", "", "", "bfloat16"), ("0", "", "", "float16")]  # whole numbers stay whole beside gaps
    assert [(r["job"], r["point"], r["attempt"]) for r in rows[:2]] == [
        ("s/m/seed=0", "batch=1,prompt_len=128", "0"), ("s/m/seed=1", "batch=1,prompt_len=128", "0")]
    assert rows[0]["value"] == "0.5" and rows[0]["cuda_graphs"] == "False"


def test_a_seed_the_slice_does_not_name_is_a_row_of_the_comparison():
    records = [trec("m", 1, "decode_tok_s", [float(100 + s)]).model_copy(update={"seed": s, "job": f"decode/m/seed={s}"})
               for s in (0, 1)]
    (_, table) = build_tables(records, all_kinds())
    assert [tuple(r) for r in table.frame.itertuples(index=False)] == [("decode_tok_s (tok/s)", 0, "100"),
                                                                         ("decode_tok_s (tok/s)", 1, "101")]


# --- CPU timings ------------------------------------------------------------------------------------------

def test_a_cpu_timing_is_marked_where_its_spread_is_shown():
    assert format_value(257.0, 0.004, cpu_timing=True) == f"257 ±0.2%{CPU_MARK}"
    assert format_value(569.0, 0.164, cpu_timing=True) == f"569 ±8.2%{CPU_MARK} ⚠"
    assert format_value(257.0, None, cpu_timing=True) == "257"  # no spread shown, none claimed
    cpu = [r.model_copy(update={"device": "cpu"}) for r in throughput_records()]
    (_, table) = build_tables(cpu, all_kinds())
    spreads = [cell for row in table.frame.itertuples(index=False) for cell in row[2:] if "±" in str(cell)]
    assert spreads == ["100 ±5.0%†", "1,234 ±0.0%†", "5 ±5.0%†", "3 ±0.0%†"]
    assert CPU_NOTE in table.notes and "runs swing more than repeats show" in CPU_NOTE
    (_, gpu) = build_tables(throughput_records(), all_kinds())
    assert CPU_NOTE not in gpu.notes and CPU_MARK not in gpu.frame.to_string()
    accuracy = trec("m", 1, "acc", [0.5, 0.6, 0.7], "fraction", stderr=0.01).model_copy(update={"device": "cpu"})
    assert records_frame([accuracy])["cpu_timing"].tolist() == [False]


def test_csv_column_names_are_unique():
    header = next(csv.reader(io.StringIO(render([], "csv", records=throughput_records()))))
    assert len(header) == len(set(header)), header


# --- write_report ---------------------------------------------------------------------------------------

ENV = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}], "driver": "550.54", "cuda_runtime": "12.4", "cpu": "EPYC",
       "packages": {"torch": "2.4.0", "transformers": "5.17.0", "ssmbench": "0.1.0"}, "git": "abc123",
       "fused_mamba_kernels": {"available": True, "detail": "mamba_ssm 2.2.2"}}


def memory_records() -> list[Record]:
    return [trec(m, 1, metric, [value * p], "MiB", task="mem", kind="memory", prompt=p)
            for m in ("gpt2", "mamba") for p in (64, 256)
            for metric, value in (("peak_rss_mib", 2.0), ("state_mib", 0.1 if m == "gpt2" else 0.0))]


def run_dir_with(tmp_path: Path, records: list[Record]) -> Path:
    run_dir = tmp_path / "bench" / "20260101-000000"
    run_dir.mkdir(parents=True)
    with RecordWriter(run_dir / "records.jsonl") as writer:
        writer.write(records)
    (run_dir / "env.json").write_text(json.dumps(ENV))
    return run_dir


def test_write_report_writes_tables_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    records = throughput_records() + memory_records()
    run_dir = run_dir_with(tmp_path, records)
    (run_dir / "table.md").write_text("stale")
    replaced: list[tuple[str, str]] = []
    real_replace = rundir.os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(rundir.os, "replace", spy)
    tables = write_report(RunDir(run_dir), all_kinds()).tables
    assert [t.title for t in tables] == ["Models", "decode (throughput)", "mem (memory)"]
    # Each table file is written beside itself and moved into place: a reader never sees half a file.
    assert replaced == [("table.md.tmp", "table.md"), ("table.csv.tmp", "table.csv"),
                        ("table.json.tmp", "table.json")]
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "table.tex").exists()
    md = (run_dir / "table.md").read_text()
    assert md.startswith("# bench — run 20260101-000000\n")
    assert "- GPU: NVIDIA H100 80GB HBM3; driver 550.54; CUDA 12.4; CPU: EPYC" in md
    assert "- torch 2.4.0, transformers 5.17.0; ssmbench 0.1.0 (git abc123)" in md
    assert "- fused Mamba kernels: yes (mamba_ssm 2.2.2)" in md
    assert "### mem (memory)" in md and "| peak_rss_mib (MiB) |" in md
    assert md == render(tables, "md", header_lines(RunDir(run_dir), records))
    assert len(list(csv.DictReader((run_dir / "table.csv").open()))) == len(records)
    assert [t["title"] for t in json.loads((run_dir / "table.json").read_text())] == [t.title for t in tables]
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    assert pngs == ["decode_decode_tok_s_prompt128.png", "mem_memory_batch1.png"]
    for png in pngs:
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_latex_and_empty_runs(tmp_path: Path):
    run_dir = run_dir_with(tmp_path, throughput_records())
    write_report(RunDir(run_dir), all_kinds(), ("md", "latex"))
    header = header_lines(RunDir(run_dir), throughput_records())
    assert (run_dir / "table.tex").read_text() == render(build_tables(throughput_records(), all_kinds()), "latex",
                                                         header)
    empty = tmp_path / "nothing" / "run-1"
    empty.mkdir(parents=True)
    (empty / "records.jsonl").write_text("")
    assert write_report(RunDir(empty), all_kinds()).tables == []
    assert (empty / "table.md").read_text().startswith("# nothing — run run-1\n")  # no env.json: dashes, no crash
    assert not list(empty.glob("*.png"))


def test_the_generic_table_says_what_each_metric_it_shows_is():
    """A reader must not have to open the code to know what work_rss_mib counts: the kind's glossary line
    of every metric in the table is printed under it, in the rows' order, and none of a metric not shown."""
    from ssmbench.kinds import get_kind

    records = [Record(task="mem", kind="memory", job=f"mem/{m}", point="batch=1", model=m, metric=metric, value=v,
                      unit="MiB", slice={"batch": 1})
               for m in ("tiny-gpt2", "tiny-mamba") for metric, v in (("work_rss_mib", 1.2), ("peak_rss_mib", 350.0))]
    (table,) = get_kind("memory").tables("mem", records_frame(records))
    glossary = [n for n in table.notes if n.startswith(("peak_rss_mib:", "work_rss_mib:", "state_mib:"))]
    assert [n.split(":")[0] for n in glossary] == ["peak_rss_mib", "work_rss_mib"]
    assert "the figure to compare on a CPU" in glossary[1]
