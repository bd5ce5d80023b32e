"""Suite files: the packaged ones validate, bad ones fail with one line naming the file and the field,
defaults are filled when the suite is built, and the command line's overrides apply (or refuse) up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from ssmbench.errors import UserError
from ssmbench.kinds.memory import MemoryTask
from ssmbench.kinds.throughput import ThroughputTask
from ssmbench.plan import apply_overrides
from ssmbench.spec import (
    Defaults,
    ModelRef,
    Suite,
    find_suite_file,
    load_suite,
    packaged_suites_dir,
    parse_suite,
)

SUITE_FILES = sorted((REPO / "suites").glob("*.yaml"))


def test_the_repository_ships_suites():
    assert {p.stem for p in SUITE_FILES} >= {"smoke", "compare", "throughput", "memory", "scan", "zero_shot"}


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: p.name)
def test_every_packaged_suite_validates(path: Path):
    suite, found = load_suite(path)
    assert found == path
    assert suite.name and suite.tasks
    names = {m.name for m in suite.models}
    for task in suite.tasks:
        assert set(task.models or []) <= names


def suite(**changes: Any) -> dict[str, Any]:
    """A valid suite as data; keys in `changes` replace the defaults here."""
    data: dict[str, Any] = {"name": "t", "models": ["tiny-gpt2", "tiny-mamba"],
                            "tasks": [{"kind": "memory"}, {"kind": "throughput", "batch_sizes": [1, 2]}]}
    return data | changes


def error_of(data: Any, source: str = "suites/x.yaml") -> str:
    with pytest.raises(UserError) as info:
        parse_suite(data, source=source)
    message = str(info.value)
    assert "\n" not in message  # one line
    assert message.startswith(f"{source}: ")
    return message.removeprefix(f"{source}: ")


def test_a_valid_suite_parses():
    parsed = parse_suite(suite())
    assert [m.name for m in parsed.models] == ["tiny-gpt2", "tiny-mamba"]
    assert [t.task_name for t in parsed.tasks] == ["memory", "throughput"]


def test_unknown_task_kind_suggests_the_close_one():
    msg = error_of(suite(tasks=[{"kind": "memory"}, {"kind": "througput"}]))
    assert msg.startswith("tasks[1].kind: unknown task kind 'througput' (did you mean 'throughput'?)")
    assert "kinds: throughput, memory, scan, zero_shot" in msg


def test_missing_kind():
    msg = error_of(suite(tasks=[{"batch_sizes": [1]}]))
    assert msg.startswith("tasks[0].kind: missing `kind`") and "throughput" in msg


def test_unknown_model_suggests_close_names():
    msg = error_of(suite(models=["tiny-gpt2", "mamba-13m"]))
    assert msg.startswith("models[1].name: unknown model 'mamba-13m' (did you mean 'mamba-130m'")


def test_unknown_base_model_names_the_base_field():
    msg = error_of(suite(models=[{"name": "gpt2-long", "base": "gtp2", "overrides": {"n_positions": 4096}}],
                         tasks=[{"kind": "memory"}]))
    assert msg.startswith("models[0].base: unknown model 'gtp2' (did you mean 'gpt2'")


@pytest.mark.parametrize(("value", "says"), [("many", "valid integer"), (0, "greater than 0"),
                                             (1.5, "valid integer")])
def test_bad_type_names_the_full_field_path(value: Any, says: str):
    msg = error_of(suite(tasks=[{"kind": "memory"}, {"kind": "throughput", "batch_sizes": [value, 2]}]))
    assert msg.startswith("tasks[1].batch_sizes[0]: ") and says in msg


# A bool is no size, count or length (lax pydantic reads `true` as 1): refused wherever a number is taken,
# in every kind's task and in the suite's own fields, naming the field and what was written.
@pytest.mark.parametrize(("changes", "field"), [
    ({"tasks": [{"kind": "throughput", "batch_sizes": [True]}]}, "tasks[0].batch_sizes[0]"),
    ({"tasks": [{"kind": "throughput", "repeats": True}]}, "tasks[0].repeats"),
    ({"tasks": [{"kind": "memory", "new_tokens": True}]}, "tasks[0].new_tokens"),
    ({"tasks": [{"kind": "scan", "seq_lengths": [512, False]}]}, "tasks[0].seq_lengths[1]"),
    ({"tasks": [{"kind": "phonebook", "queries": True}]}, "tasks[0].queries"),
    ({"tasks": [{"kind": "zero_shot", "max_batch_size": True}]}, "tasks[0].max_batch_size"),
    ({"tasks": [{"kind": "zero_shot", "limit": True}]}, "tasks[0].limit"),
    ({"tasks": [{"kind": "synthetic", "train": {"steps": True}}]}, "tasks[0].train.steps"),
    ({"tasks": [{"kind": "synthetic", "eval_lengths": [True]}]}, "tasks[0].eval_lengths[0]"),
    ({"tasks": [{"kind": "memory", "resources": {"cpus": True}}]}, "tasks[0].resources.cpus"),
    ({"launch": {"retries": True}}, "launch.retries"),
    ({"defaults": {"seed": False}}, "defaults.seed"),
    ({"tasks": [{"kind": "throughput", "on_cpu": {"because": "x", "batch_sizes": [True]}}]},
     "tasks[0].on_cpu.batch_sizes[0]"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bool_is_no_number(changes: dict, field: str):
    msg = error_of(suite(**changes))
    assert msg.startswith(f"{field}: true must be ") or msg.startswith(f"{field}: false must be "), msg
    assert "a valid integer" in msg or "a valid number" in msg, msg


def test_a_quoted_number_is_no_count_but_an_exponent_is_a_float(tmp_path: Path):
    assert error_of(suite(tasks=[{"kind": "memory", "batch_sizes": ["8"]}])) == (
        'tasks[0].batch_sizes[0]: "8" is a string, and an integer is expected: write it unquoted, 8')
    path = tmp_path / "lr.yaml"  # YAML 1.1 reads 1e-3 as a string; a suite means the number
    path.write_text("name: t\ntasks:\n  - kind: synthetic\n    train: {lr: 1e-3, steps: 10}\n")
    assert load_suite(path)[0].tasks[0].train.lr == 0.001


def test_constraint_on_a_scalar_field():
    msg = error_of(suite(tasks=[{"kind": "throughput", "new_tokens": 1}]))
    assert msg.startswith("tasks[0].new_tokens: ") and "greater than or equal to 2" in msg


@pytest.mark.parametrize(("changes", "expected"), [
    ({"modles": ["tiny-gpt2"]}, "modles: unknown key 'modles' (did you mean 'models'?)"),
    ({"defaults": {"devcie": "cpu"}}, "defaults.devcie: unknown key 'devcie' (did you mean 'device'?)"),
    ({"models": [{"name": "tiny-gpt2", "weigths": "random"}]},
     "models[0].weigths: unknown key 'weigths' (did you mean 'weights'?)"),
    ({"tasks": [{"kind": "memory"}, {"kind": "throughput", "batch_size": [1]}]},
     "tasks[1].batch_size: unknown key 'batch_size' (did you mean 'batch_sizes'?)"),
    ({"tasks": [{"kind": "memory", "repeats": 3}]}, "tasks[0].repeats: unknown key 'repeats'"),
], ids=["top-level", "defaults", "model-entry", "task", "key-of-another-kind"])
def test_unknown_key_with_suggestion(changes: dict, expected: str):
    data = suite(**changes)
    if "modles" in changes:
        del data["models"]
        data["tasks"] = [{"kind": "scan"}]  # needs no models
    assert error_of(data) == expected


def test_task_models_must_be_the_suites():
    msg = error_of(suite(tasks=[{"kind": "memory", "models": ["tiny-gpt2", "tiny-mamb"]}]))
    assert msg == "tasks[0].models: 'tiny-mamb' is not one of the suite's models (did you mean 'tiny-mamba'?)"
    # A zoo model that the suite does not list is refused too.
    msg = error_of(suite(tasks=[{"kind": "memory", "models": ["gpt2"]}]))
    assert msg.startswith("tasks[0].models: 'gpt2' is not one of the suite's models")


def test_duplicate_model_names():
    msg = error_of(suite(models=["tiny-gpt2", {"name": "tiny-gpt2", "dtype": "float16"}]))
    assert msg == "models: duplicate names ['tiny-gpt2']"


def test_duplicate_task_names():
    # Two tasks of one kind and no names: both are called after the kind.
    msg = error_of(suite(tasks=[{"kind": "memory"}, {"kind": "memory", "mode": "training"}]))
    assert msg.startswith("tasks: two tasks share a name")
    msg = error_of(suite(tasks=[{"kind": "memory", "name": "a"}, {"kind": "throughput", "name": "a"}]))
    assert msg.startswith("tasks: two tasks share a name")
    # Named apart, the same two are fine.
    parse_suite(suite(tasks=[{"kind": "memory"}, {"kind": "memory", "mode": "training", "name": "train"}]))


def test_missing_required_field():
    assert error_of({"models": ["tiny-gpt2"], "tasks": [{"kind": "memory"}]}).startswith("name: ")
    assert error_of({"name": "t", "models": ["tiny-gpt2"]}).startswith("tasks: ")


def test_invalid_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: t\nmodels: [tiny-gpt2]\ntasks:\n  - kind: memory\n   batch_sizes: [1\n")
    with pytest.raises(UserError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML (line 5, column 4): ")
    assert "\n" not in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""], ids=["list", "scalar", "empty"])
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"a suite is a mapping with `name` and `tasks`") as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file_names_the_path(tmp_path: Path):
    path = tmp_path / "nowhere" / "smoek.yaml"
    with pytest.raises(UserError) as info:
        load_suite(path)
    message = str(info.value)
    assert str(path) in message and "no such suite file" in message
    assert "(did you mean 'smoke'?)" in message and "packaged suites: " in message


def test_a_directory_is_no_suite_file(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("name: a\n")
    with pytest.raises(UserError) as info:
        load_suite(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory holding a.yaml, not a suite file; give a .yaml file"
    with pytest.raises(UserError, match=r"suites: is a directory holding compare.yaml, .*not a suite file"):
        load_suite(REPO / "suites")


def test_defaults_are_filled_when_the_suite_is_built():
    parsed = parse_suite({"name": "t", "models": ["tiny-gpt2"], "tasks": [{"kind": "throughput"}, {"kind": "memory"}]})
    assert parsed.defaults == Defaults(device="auto", dtype="auto", seed=0, weights="pretrained")
    assert parsed.description == "" and not parsed.require_fused_kernels and not parsed.smoke_test
    throughput, memory = parsed.tasks
    assert isinstance(throughput, ThroughputTask) and isinstance(memory, MemoryTask)
    assert (throughput.batch_sizes, throughput.prompt_lengths, throughput.new_tokens) == ([1], [128], 32)
    assert (throughput.warmup, throughput.repeats) == (1, 5)
    assert throughput.cuda_graphs == "auto" and throughput.library_baseline is False
    assert throughput.name is None and throughput.models is None
    assert (memory.mode, memory.batch_sizes, memory.prompt_lengths, memory.new_tokens) == ("inference", [1], [128], 8)
    (model,) = parsed.models
    assert model == ModelRef(name="tiny-gpt2")
    assert model.weights is None and model.dtype is None and model.backend == "auto" and model.overrides == {}


def test_model_entries_may_be_names_or_mappings():
    parsed = parse_suite(suite(models=["tiny-gpt2", {"name": "long", "base": "gpt2", "overrides": {"n_positions": 2048}}]))
    assert parsed.models[1].zoo_name == "gpt2" and parsed.models[0].zoo_name == "tiny-gpt2"


def test_find_suite_file_finds_packaged_suites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # nowhere near the repository
    smoke = packaged_suites_dir() / "smoke.yaml"
    assert smoke.is_file()
    assert find_suite_file("smoke") == smoke
    assert find_suite_file("smoke.yaml") == smoke
    assert find_suite_file("suites/smoke.yaml") == smoke
    assert load_suite("smoke")[0].name == "smoke"
    # A local file of that name wins over the packaged one.
    (tmp_path / "smoke.yaml").write_text("name: mine\nmodels: [tiny-gpt2]\ntasks: [{kind: memory}]\n")
    assert load_suite("smoke.yaml")[0].name == "mine"
    with pytest.raises(UserError, match=r"smok: no such suite file \(did you mean 'smoke'\?\)"):
        find_suite_file("smok")
    # A packaged suite by its file's name or by the `name:` inside it, which some spell with hyphens.
    train_speed = packaged_suites_dir() / "train_speed.yaml"
    assert find_suite_file("train_speed") == find_suite_file("train-speed") == train_speed
    assert load_suite("train-speed")[0].name == "train-speed"


# --- command-line overrides ---------------------------------------------------------------------------

@pytest.fixture
def smoke() -> Suite:
    return load_suite(REPO / "suites" / "smoke.yaml")[0]


def test_override_tasks_keeps_only_those(smoke: Suite):
    before = [t.task_name for t in smoke.tasks]
    out = apply_overrides(smoke, tasks=["memory-tiny", "throughput-full-size"])
    assert [t.task_name for t in out.tasks] == ["throughput-full-size", "memory-tiny"]  # suite order
    assert out.models == smoke.models
    assert [t.task_name for t in smoke.tasks] == before  # the suite itself is left as it was
    assert before[:3] == ["throughput-tiny", "throughput-full-size", "memory-tiny"]


def test_override_models_replaces_the_suites(smoke: Suite):
    out = apply_overrides(smoke, models=["tiny-mamba", "pythia-70m"])
    assert [m.name for m in out.models] == ["tiny-mamba", "pythia-70m"]
    tasks = {t.task_name: t for t in out.tasks}
    # A task's subset keeps the listed models it had.
    assert tasks["throughput-tiny"].models == ["tiny-mamba"]
    assert tasks["memory-tiny"].models == ["tiny-mamba"]


def test_override_models_keeps_a_suite_models_settings():
    parsed = parse_suite(suite(models=["tiny-gpt2", {"name": "long", "base": "gpt2", "dtype": "bfloat16"}],
                               tasks=[{"kind": "memory"}]))
    (long,) = apply_overrides(parsed, models=["long"]).models
    assert long.base == "gpt2" and long.dtype == "bfloat16"


def test_override_weights_and_device(smoke: Suite):
    out = apply_overrides(smoke, weights="pretrained", device="cuda")
    assert {m.weights for m in out.models} == {"pretrained"}
    assert out.defaults.device == "cuda" and out.defaults.dtype == smoke.defaults.dtype
    assert smoke.defaults.device == "cpu" and {m.weights for m in smoke.models} == {None}  # not mutated
    both = apply_overrides(smoke, models=["gpt2"], weights="random")
    assert [(m.name, m.weights) for m in both.models] == [("gpt2", "random")]


def test_override_nothing_is_the_suite(smoke: Suite):
    assert apply_overrides(smoke) == smoke


def test_override_unknown_names_are_refused(smoke: Suite):
    with pytest.raises(UserError, match=r"^--models: unknown model 'mamba-13m' \(did you mean 'mamba-130m'"):
        apply_overrides(smoke, models=["tiny-gpt2", "mamba-13m"])
    with pytest.raises(UserError, match=r"^--tasks: the suite has no task 'memory' \(did you mean 'memory-tiny'"):
        apply_overrides(smoke, tasks=["memory"])


def test_override_model_suggestion_names_each_model_once(smoke: Suite):
    with pytest.raises(UserError) as info:
        apply_overrides(smoke, models=["tiny-gtp2"])
    message = str(info.value)
    assert message.count("'tiny-gpt2'") == 1, message


def test_a_model_free_task_needs_no_models():
    parsed = parse_suite({"name": "t", "tasks": [{"kind": "scan"}]})
    assert parsed.models == []


def test_a_model_task_without_models_is_refused_when_the_suite_is_built():
    with pytest.raises(UserError, match=r"^suites/x.yaml: .*models"):
        parse_suite({"name": "t", "tasks": [{"kind": "throughput"}]}, source="suites/x.yaml")


def test_override_models_drops_tasks_restricted_to_other_models(smoke: Suite):
    narrowed = apply_overrides(smoke, models=["gpt2"])
    assert [(t.task_name, t.models) for t in narrowed.tasks] == [("throughput-full-size", ["gpt2"])]
    with pytest.raises(UserError, match="no task"):
        apply_overrides(parse_suite({"name": "s", "models": ["gpt2", "tiny-gpt2"],
                                     "tasks": [{"kind": "memory", "models": ["tiny-gpt2"]}]}), models=["gpt2"])
