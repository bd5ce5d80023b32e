"""A suite's models as checkpoints: what `path:` and `hf_id:` load, what records say was loaded, and what a
suite is refused for before anything runs.

Everything is built offline: tiny random models saved with save_pretrained into temporary directories, with a
word-level tokenizer of their own, and a hub cache laid out by hand for `hf_id:`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_ref
from lm_eval_fixtures import FIXTURE_TASKS, suite_data  # noqa: E402 (fixture `task_dir` too)
from typer.testing import CliRunner

from ssmbench.errors import JobError, UserError
from ssmbench.kinds import all_kinds
from ssmbench.models import choose_backend, load_model
from ssmbench.models.checkpoints import checkpoint_architecture, weights_sha256
from ssmbench.models.tokenizers import byte_tokenizer
from ssmbench.plan import build_plan, resolve_model
from ssmbench.records import read_records
from ssmbench.report import build_tables
from ssmbench.spec import parse_suite
from ssmbench.zoo import MODELS

WORDS = ["<unk>", "<|endoftext|>", "the", "cat", "sat", "on", "mat", "hello", "world"]


def word_tokenizer():
    """A tokenizer of the checkpoint's own, nothing like the byte tokenizer: one id per known word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def save_checkpoint(directory: Path, name: str = "tiny-gpt2", seed: int = 4, tokenizer: bool = True,
                    **config: object) -> Path:
    """A tiny random model as save_pretrained writes it (config.json, model.safetensors), with its tokenizer."""
    import dataclasses

    ref = tiny_ref(name, seed=seed)
    if config:
        ref = dataclasses.replace(ref, spec=dataclasses.replace(ref.spec, config={**ref.spec.config, **config}))
    load_model(ref).module.save_pretrained(directory)
    if tokenizer:
        word_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2 checkpoint of 64 positions (the zoo's tiny-gpt2 has 1024), with a word-level tokenizer."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "my-gpt2", n_positions=64)


def suite(models: list, **defaults: object):
    return parse_suite({"name": "t", "defaults": {"device": "cpu", **defaults}, "models": models,
                        "tasks": [{"kind": "memory"}]})


def resolved(models: list, **defaults: object):
    s = suite(models, **defaults)
    return [resolve_model(m, s, "cpu") for m in s.models]


def file_sha256(*files: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        digest.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).hexdigest().encode())
    return digest.hexdigest()[:16]


# --- (1) the tokenizer of a `path:` checkpoint is its own ---------------------------------------------------

def test_a_path_checkpoint_on_a_tiny_base_uses_its_own_tokenizer(checkpoint: Path) -> None:
    (ref,) = resolved([{"name": "mine", "base": "tiny-gpt2", "path": str(checkpoint)}])
    model = load_model(ref)
    tok = model.tokenizer()
    assert tok is not byte_tokenizer()
    assert tok("the cat sat")["input_ids"] == [2, 3, 4]  # the checkpoint's words, not 11 bytes
    assert model.identity()["tokenizer"] == str(checkpoint)


def test_the_suite_tokenizer_wins_and_a_checkpoint_without_one_falls_back_to_its_base(
        checkpoint: Path, tmp_path: Path) -> None:
    (ref,) = resolved([{"name": "mine", "base": "tiny-gpt2", "path": str(checkpoint), "tokenizer": "bytes"}])
    assert load_model(ref).tokenizer() is byte_tokenizer()
    bare = save_checkpoint(tmp_path / "bare", tokenizer=False)
    (ref,) = resolved([{"name": "mine", "base": "tiny-gpt2", "path": str(bare)}])
    assert load_model(ref).tokenizer() is byte_tokenizer()  # the base's: the checkpoint has none
    (ref,) = resolved([{"name": "mine", "path": str(bare)}])  # no base, no tokenizer: said at once
    with pytest.raises(JobError, match=r"holds no tokenizer .*set `tokenizer:`"):
        load_model(ref).tokenizer()


def text_suite(tmp_path: Path, model: dict) -> Path:
    """A suite that feeds `model` text (generate) and measures its memory, which reads no text."""
    file = tmp_path / "gen.yaml"
    file.write_text(yaml.safe_dump({"name": "gen", "defaults": {"device": "cpu"}, "models": [model], "tasks": [
        {"kind": "generate", "name": "continue", "prompts": {"a": "the cat"}, "max_new_tokens": 2},
        {"kind": "memory", "batch_sizes": [1], "prompt_lengths": [8], "new_tokens": 2}]}))
    return file


def test_a_text_task_on_a_checkpoint_without_a_tokenizer_is_refused_before_it_runs(tmp_path: Path) -> None:
    """validate passed a generate suite whose `path:` holds no tokenizer, and run then failed every point:
    both refuse it now, naming the field, the task and the fix; a tokenizer from `tokenizer:` or `base:`
    passes, and a `tokenizer:` directory that is not there is refused too."""
    from ssmbench.cli import app

    bare = save_checkpoint(tmp_path / "bare", tokenizer=False)
    file = text_suite(tmp_path, {"name": "mine", "path": str(bare)})
    expected = (f"models[0].path: {bare} holds no tokenizer (none of tokenizer.json, tokenizer_config.json, "
                "tokenizer.model, vocab.json), and task 'continue' feeds the model text; set `tokenizer:` (a hub id, "
                "a directory, or bytes)")
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {file}: {expected}"], result.output
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {expected}"], result.output
    assert not (tmp_path / "out").exists()
    for lent in ({"tokenizer": "bytes"}, {"base": "tiny-gpt2"}):
        result = CliRunner().invoke(app, ["validate", str(text_suite(tmp_path, {"name": "mine", "path": str(bare)}
                                                                         | lent))])
        assert result.exit_code == 0, result.output
    gone = tmp_path / "no-tokenizer-here"
    file = text_suite(tmp_path, {"name": "mine", "path": str(bare), "tokenizer": str(gone)})
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"error: {file}: models[0].tokenizer: {gone}: no such directory, and task 'continue' feeds the model "
        "text"], result.output


def test_records_of_a_checkpoint_without_a_tokenizer_name_none(tmp_path: Path) -> None:
    """Its records named the checkpoint's directory, which holds no tokenizer, as their tokenizer."""
    bare = save_checkpoint(tmp_path / "bare", tokenizer=False)
    (ref,) = resolved([{"name": "mine", "path": str(bare)}])
    assert load_model(ref).identity()["tokenizer"] is None
    (ref,) = resolved([{"name": "mine", "base": "tiny-gpt2", "path": str(bare)}])
    assert load_model(ref).identity()["tokenizer"] == "bytes"  # the base's, which its text goes through


# --- (2) a checkpoint without a zoo name; what records say was loaded ---------------------------------------

def test_a_model_directory_without_a_zoo_name_is_what_its_config_says(checkpoint: Path, tmp_path: Path) -> None:
    mamba = save_checkpoint(tmp_path / "my-mamba", "tiny-mamba", state_size=8, num_hidden_layers=2)
    gpt2, ssm = resolved([{"name": "my-model", "path": str(checkpoint)}, {"name": "my-ssm", "path": str(mamba)}])
    assert gpt2.weights == "pretrained" and gpt2.spec.arch == "gpt2" and gpt2.spec.family == "transformer"
    assert gpt2.spec.max_positions == 64  # the checkpoint's own, not a borrowed zoo entry's 1024
    assert gpt2.spec.config == json.loads((checkpoint / "config.json").read_text())
    assert gpt2.spec.hf_id is None and gpt2.spec.mamba_ssm_id is None and gpt2.checkpoint_format == "hf"
    assert ssm.spec.family == "ssm" and ssm.spec.n_layers == 2
    assert ssm.spec.state_elements_per_sequence(1) == 2 * 256 * (8 + 4)  # d_inner 256, its own state_size
    model = load_model(gpt2)
    assert model.record_fields()["family"] == "transformer"
    assert model.identity() == {"checkpoint": str(checkpoint), "architecture": "gpt2",
                                "weights_sha256": file_sha256(checkpoint / "model.safetensors"),
                                "tokenizer": str(checkpoint)}


def test_the_weights_hash_follows_the_files_read(checkpoint: Path, tmp_path: Path) -> None:
    same = save_checkpoint(tmp_path / "same")
    other = save_checkpoint(tmp_path / "other", seed=5)
    assert weights_sha256(str(same), "hf") == weights_sha256(str(save_checkpoint(tmp_path / "again")), "hf")
    assert weights_sha256(str(same), "hf") != weights_sha256(str(other), "hf")
    (same / "pytorch_model.bin").write_bytes(b"not read by transformers when safetensors exist")
    assert weights_sha256(str(same), "hf") == file_sha256(same / "model.safetensors")
    assert weights_sha256(str(same), "mamba_ssm") == file_sha256(same / "pytorch_model.bin")
    assert weights_sha256(str(tmp_path), "hf") is None  # no weights: no hash


def fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/<files>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    return snapshot


def test_a_cached_hub_id_without_a_zoo_name_loads_offline(checkpoint: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = fake_hub_cache(tmp_path / "cache", "someone/tiny-gpt2", checkpoint)
    (ref,) = resolved([{"name": "hub-model", "hf_id": "someone/tiny-gpt2"}])
    assert ref.spec.arch == "gpt2" and ref.spec.max_positions == 64 and ref.weights == "pretrained"
    model = load_model(ref)
    assert model.identity() == {"checkpoint": "someone/tiny-gpt2", "architecture": "gpt2",
                                "weights_sha256": file_sha256(snapshot / "model.safetensors"),
                                "tokenizer": "someone/tiny-gpt2"}
    assert model.tokenizer()("hello world")["input_ids"] == [7, 8]
    # Not cached, no zoo name, no hub: the plan says so, naming the field.
    with pytest.raises(UserError, match=r"^models\[0\]\.hf_id: someone/else: its config.json could not be read "
                                        r"\(not in the Hugging Face cache.*`hf download someone/else`"):
        resolved([{"name": "hub-model", "hf_id": "someone/else"}])


def test_records_say_what_was_loaded(checkpoint: Path, task_dir: Path, tmp_path: Path) -> None:
    """A zero-shot run of a checkpoint named like a zoo model and of one without a zoo name."""
    from ssmbench.cli import app

    data = suite_data(task_dir, [{"name": "gpt2", "path": str(checkpoint), "weights": "pretrained"},
                                 {"name": "my-model", "path": str(checkpoint), "weights": "pretrained"},
                                 "tiny-gpt2"], FIXTURE_TASKS[:1])
    (tmp_path / "zs.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "zs.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "out" / "zs-test").iterdir()
    records = read_records(run_dir / "records.jsonl")
    sha = file_sha256(checkpoint / "model.safetensors")
    for r in records:
        assert r.status == "ok" and r.extra["architecture"] == "gpt2" and r.family == "transformer"
        if r.model == "tiny-gpt2":
            assert (r.extra["checkpoint"], r.extra["weights_sha256"], r.weights) == ("random init", None, "random")
        else:
            assert (r.extra["checkpoint"], r.extra["weights_sha256"], r.weights) == (str(checkpoint), sha,
                                                                                    "pretrained")
            assert r.extra["tokenizer"] == str(checkpoint)
    assert f"checkpoint {checkpoint} (weights sha256 {sha})" in (run_dir / "table.md").read_text()


# --- (2) reference rows belong to the published checkpoint only --------------------------------------------

def as_paper_tasks(records: list) -> list:
    """The fixture LAMBADA's records as lambada_openai's (same metrics, and lm-eval's built-in task, not the
    suite's own), so that the reference tables apply."""
    return [r.model_copy(update={"slice": {k: v for k, v in r.slice.items() if k != "custom"}
                                 | {"lm_eval_task": "lambada_openai"},
                                 "point": "lm_eval_task=lambada_openai"}) for r in records]


@pytest.fixture(scope="module")
def gpt2_path_records(checkpoint: Path, task_dir: Path) -> list:
    """Records of a real zero-shot run of the tiny checkpoint under the zoo name gpt2 (`path:`)."""
    from ssmbench.kinds.base import JobContext
    from ssmbench.kinds.zero_shot.runner import ZeroShotRunner

    data = suite_data(task_dir, [{"name": "gpt2", "path": str(checkpoint), "weights": "pretrained"}],
                      FIXTURE_TASKS[:1])
    job = build_plan(parse_suite(data), "cpu").jobs[0]
    runner = ZeroShotRunner(job, JobContext("test", "zs-test", task_dir / "artifacts"))
    runner.setup()
    try:
        return as_paper_tasks([r for pt in job.points for r in runner.measure(pt)])
    finally:
        runner.teardown()


def slides_table(records: list):
    return next(t for t in build_tables(records, all_kinds()) if "slides layout" in t.title)


def test_no_reference_row_for_a_path_checkpoint_named_like_a_zoo_model(gpt2_path_records: list,
                                                                       checkpoint: Path) -> None:
    table = slides_table(gpt2_path_records)
    assert list(table.frame.columns) == ["metric", "gpt2"]  # no "slides: small gpt2", no Δ
    (note,) = [n for n in table.notes if n.startswith("No slides row")]
    assert f"gpt2: it loaded {checkpoint}, not the published openai-community/gpt2 that the row 'small gpt2'" in note
    # The same records, had they loaded the published checkpoint, get the slides' figures beside them.
    published = [r.model_copy(update={"extra": {**r.extra, "checkpoint": "openai-community/gpt2"}})
                 for r in gpt2_path_records]
    table = slides_table(published)
    assert list(table.frame.columns) == ["metric", "gpt2", "slides: small gpt2", "Δ gpt2"]
    assert not any(n.startswith("No slides row") for n in table.notes)


def test_a_reference_row_follows_the_published_checkpoint_not_the_name(gpt2_path_records: list) -> None:
    renamed = [r.model_copy(update={"model": "my-gpt2", "job": "zero-shot/my-gpt2",
                                    "extra": {**r.extra, "checkpoint": "openai-community/gpt2"}})
               for r in gpt2_path_records]
    assert list(slides_table(renamed).frame.columns) == ["metric", "my-gpt2", "slides: small gpt2", "Δ my-gpt2"]
    unsaid = [r.model_copy(update={"extra": {}}) for r in gpt2_path_records]  # records that do not say
    table = slides_table(unsaid)
    assert list(table.frame.columns) == ["metric", "gpt2"]
    assert any("gpt2: its records do not say which checkpoint was loaded" in n for n in table.notes)


# --- (3) bad paths are refused when the suite is read ------------------------------------------------------

def validate(tmp_path: Path, models: list) -> tuple[int, str]:
    from ssmbench.cli import app

    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump({"name": "s", "models": models, "tasks": [{"kind": "memory"}]}))
    result = CliRunner().invoke(app, ["validate", str(file)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("case", ["missing", "file", "empty", "llama", "mismatch", "named"])
def test_bad_paths_fail_validate_in_one_line(tmp_path: Path, checkpoint: Path, case: str) -> None:
    """Each fault is blamed on its field: a Mamba zoo entry lent by `base:` to a GPT-2 checkpoint is the
    fault of `base:` (it said "name it otherwise"), one lent by the model's name is the name's."""
    target = {"missing": tmp_path / "nonexistent" / "dir", "file": tmp_path / "weights.bin",
              "empty": tmp_path / "empty", "llama": tmp_path / "llama"}.get(case, checkpoint)
    (tmp_path / "weights.bin").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    entry = {"name": "mamba-130m" if case == "named" else "x", "path": str(target)}
    entry |= {"base": "mamba-130m"} if case == "mismatch" else {}
    code, err = validate(tmp_path, ["gpt2", entry])
    expected = {
        "missing": f"models[1].path: {target}: no such directory",
        "file": f"models[1].path: {target}: not a directory (a checkpoint is a directory holding config.json)",
        "empty": f"models[1].path: {target}: no config.json in this directory",
        "llama": f"models[1].path: {target}: model_type 'llama' of its config.json is not supported "
                 "(supported: gpt2, gpt_neox, opt, gpt_neo, gptj, rwkv, mamba, mamba2, falcon_h1)",
        "mismatch": f"models[1].base: 'mamba-130m' is a mamba model of the zoo, but `path: {target}` holds a gpt2 "
                    "checkpoint; drop `base:`, or give a gpt2 model of the zoo",
        "named": f"models[1].name: 'mamba-130m' is a mamba model of the zoo, but `path: {target}` holds a gpt2 "
                 "checkpoint; name it otherwise",
    }[case]
    line = " ".join(err.split())  # rich wraps long lines
    assert code == 2 and line.startswith(f"error: {tmp_path / 's.yaml'}: {expected}"), err
    assert "Traceback" not in err and "hf download" not in err


def test_validate_refuses_an_uncached_hub_id_as_run_does(tmp_path: Path, checkpoint: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """validate builds the plan as run does, from the cache alone: an hf_id whose config.json is not cached
    fails there as in run, with the same remedy, and a cached one passes."""
    import os

    import huggingface_hub.constants as constants

    from ssmbench.models import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    fake_hub_cache(tmp_path / "cache", "someone/tiny-gpt2", checkpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even online, validate never asks the hub
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_ask", lambda url: pytest.fail("validate asked the hub"))
    code, err = validate(tmp_path, [{"name": "cached", "hf_id": "someone/tiny-gpt2"}])
    assert code == 0, err
    code, err = validate(tmp_path, ["gpt2", {"name": "x", "hf_id": "someone/else"}])
    line = " ".join(err.split())
    assert code == 2 and line.startswith(
        f"error: {tmp_path / 's.yaml'}: models[1].hf_id: someone/else: its config.json could not be read (not in "
        "the Hugging Face cache, and `ssmbench validate` reads the Hugging Face cache only, it never downloads); "
        "download it first (`hf download someone/else`)"), err
    assert "Traceback" not in err
    # the process is as it was: no offline switch left behind for what runs next in it
    assert hub.PROBE_FAILED_VAR not in os.environ and "HF_HUB_OFFLINE" not in os.environ


def test_other_model_entries_are_refused_with_the_field(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(UserError, match=r"models\[0\]\.name: unknown model 'my-model'; a checkpoint of your own "
                                        r"needs its `path:`"):
        suite([{"name": "my-model"}])
    with pytest.raises(UserError, match=r"models\[0\]\.hf_id: give `path:` or `hf_id:`, not both"):
        suite([{"name": "m", "path": str(checkpoint), "hf_id": "a/b"}])


def test_a_path_that_vanished_fails_its_job_without_suggesting_a_download(tmp_path: Path) -> None:
    directory = save_checkpoint(tmp_path / "gone", tokenizer=False)
    (ref,) = resolved([{"name": "mine", "path": str(directory)}])
    for f in directory.iterdir():
        f.unlink()
    directory.rmdir()
    with pytest.raises(JobError) as info:
        load_model(ref)
    assert str(info.value) == f"model 'mine': `path:` {directory}: no such directory"


# --- (4) overrides ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "overrides", "message"), [
    ("gpt2", {"n_embd": -3}, "models[0].overrides.n_embd: must be a positive integer, got -3"),
    ("gpt2", {"n_emb": 3}, "models[0].overrides.n_emb: unknown key for gpt2's config (did you mean 'n_embd'?)"),
    ("gpt2", {"n_layer": "12"}, "models[0].overrides.n_layer: must be an integer, got '12'"),
    ("gpt2", {"n_positions": 0}, "models[0].overrides.n_positions: must be a positive integer, got 0"),
    ("gpt2", {"resid_pdrop": 1.5}, "models[0].overrides.resid_pdrop: must be a probability between 0 and 1, got 1.5"),
    ("mamba-130m", {"state_size": 2.5}, "models[0].overrides.state_size: must be an integer, got 2.5"),
    ("mamba-130m", {"use_bias": "yes"}, "models[0].overrides.use_bias: must be true or false, got 'yes'"),
    ("pythia-70m", {"n_embd": 64}, "models[0].overrides.n_embd: unknown key for gpt_neox's config"),
])
def test_overrides_are_checked_against_the_config_class(model: str, overrides: dict, message: str) -> None:
    with pytest.raises(UserError) as info:
        suite([{"name": model, "weights": "random", "overrides": overrides}])
    assert str(info.value) == f"<suite>: {message}"


def test_valid_overrides_and_aliases_pass(checkpoint: Path) -> None:
    gpt2, mamba, mine = resolved([
        {"name": "gpt2", "weights": "random", "overrides": {"hidden_size": 256, "n_positions": 2176,
                                                            "bos_token_id": 0}},
        {"name": "mamba-130m", "weights": "random", "overrides": {"state_size": 32, "residual_in_fp32": False}},
        {"name": "mine", "path": str(checkpoint), "weights": "random", "overrides": {"n_layer": 2}}])
    assert gpt2.spec.max_positions == 2176 and mamba.spec.config["state_size"] == 32
    assert mine.spec.n_layers == 2 and mine.spec.max_positions == 64  # the checkpoint's config, adjusted


def test_overrides_validation_via_the_cli_exits_2(tmp_path: Path) -> None:
    code, err = validate(tmp_path, [{"name": "gpt2", "weights": "random", "overrides": {"n_embd": -3}}])
    assert code == 2 and " ".join(err.split()).endswith("models[0].overrides.n_embd: must be a positive integer, "
                                                        "got -3"), err


# --- checkpoint formats -----------------------------------------------------------------------------------

MAMBA_SSM_130M = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
                  "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}


def test_a_mamba_ssm_checkpoint_is_read_from_its_own_config_and_needs_cuda(tmp_path: Path) -> None:
    arch, config, fmt = checkpoint_architecture(MAMBA_SSM_130M)
    assert (arch, fmt, config["vocab_size"]) == ("mamba", "mamba_ssm", 50280)
    arch, config, _ = checkpoint_architecture({**MAMBA_SSM_130M, "ssm_cfg": {"layer": "Mamba2"},
                                               "pad_vocab_size_multiple": 16})
    assert arch == "mamba2" and config["vocab_size"] == 50288
    (tmp_path / "config.json").write_text(json.dumps(MAMBA_SSM_130M))
    (ref,) = resolved([{"name": "m", "path": str(tmp_path)}])
    assert ref.checkpoint_format == "mamba_ssm" and ref.hf_source is None and ref.mamba_ssm_source == str(tmp_path)
    assert ref.spec.state_elements_per_sequence(1) == MODELS["mamba-130m"].state_elements_per_sequence(1)
    with pytest.raises(JobError, match=r"in mamba_ssm's format, which loads with mamba_ssm's fused kernels only"):
        choose_backend(ref)


def test_a_transformers_checkpoint_of_mamba_is_not_given_to_mamba_ssm(tmp_path: Path) -> None:
    directory = save_checkpoint(tmp_path / "m", "tiny-mamba", tokenizer=False)
    (ref,) = resolved([{"name": "m", "path": str(directory), "backend": "mamba_ssm"}])
    with pytest.raises(JobError, match=r"in transformers' format, which mamba_ssm cannot load; use `backend: hf`"):
        choose_backend(ref)
    (ref,) = resolved([{"name": "m", "base": "mamba-130m", "hf_id": "me/mamba-hf"}])
    assert ref.mamba_ssm_source is None and ref.hf_source == "me/mamba-hf"  # never the zoo's mamba_ssm weights


def test_the_paper_table_gives_a_path_checkpoint_no_paper_row() -> None:
    from ssmbench.kinds.zero_shot.runner import unit_of
    from ssmbench.records import Record
    from ssmbench.reference import PAPER, zero_shot_sources

    paper = zero_shot_sources()[PAPER]

    def records(model: str, checkpoint: str) -> list[Record]:
        return [Record(task="zero-shot", kind="zero_shot", job=f"zero-shot/{model}", point=f"lm_eval_task={c.task}",
                       model=model, metric=c.metric, value=0.5, stderr=0.01, unit=unit_of(c.metric),
                       weights="pretrained", slice={"lm_eval_task": c.task},
                       extra={"checkpoint": checkpoint, "weights_sha256": "0123456789abcdef",
                              "architecture": "mamba"})
                for c in paper.columns]

    tables = build_tables(records("mamba-130m", "/ckpts/my-mamba") + records("mamba-hf", "state-spaces/mamba-130m-hf"),
                          all_kinds())
    table = next(t for t in tables if "Table 3 layout" in t.title)
    assert list(zip(table.frame["model"], table.frame["figures"], strict=True)) == [
        ("mamba-130m", "measured"), ("mamba-hf", "measured"), ("mamba-hf", "paper: Mamba-130M"), ("mamba-hf", "Δ")]
    (note,) = [n for n in table.notes if n.startswith("No paper row")]
    assert note == ("No paper row (a reference row describes the published checkpoint only) for mamba-130m: it "
                    "loaded /ckpts/my-mamba, not the published state-spaces/mamba-130m or state-spaces/mamba-130m-hf "
                    "that the row 'Mamba-130M' describes")


def test_a_cached_mamba_ssm_repository_loads_from_its_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mamba_ssm's from_pretrained takes no local_files_only: it is handed the cached snapshot directory (no
    request), and an uncached one fails at once with the remedy (mamba_ssm itself stood in for on the CPU)."""
    import sys
    import types

    import huggingface_hub.constants as constants
    import torch

    from ssmbench.models.mamba_ssm import load_mamba_ssm

    calls: list[str] = []

    class FakeMambaLMHeadModel(torch.nn.Module):
        @classmethod
        def from_pretrained(cls, source: str, device: str, dtype: torch.dtype) -> FakeMambaLMHeadModel:
            calls.append(source)
            module = cls()
            module.weight = torch.nn.Parameter(torch.zeros(2))
            return module

    fake = types.ModuleType("mamba_ssm.models.mixer_seq_simple")
    fake.MambaLMHeadModel = FakeMambaLMHeadModel
    monkeypatch.setitem(sys.modules, "mamba_ssm.models.mixer_seq_simple", fake)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps(MAMBA_SSM_130M))
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(b"weights")
    snapshot = fake_hub_cache(tmp_path / "cache", "state-spaces/mamba-130m", tmp_path / "src")
    ref = tiny_ref("mamba-130m", weights="pretrained")
    model = load_mamba_ssm(ref)
    assert calls == [str(snapshot)]
    assert model.identity()["checkpoint"] == "state-spaces/mamba-130m"
    assert model.identity()["weights_sha256"] == file_sha256(snapshot / "pytorch_model.bin")
    with pytest.raises(JobError, match=r"weights 'state-spaces/mamba-370m' could not be loaded \(not in the "
                                       r"Hugging Face cache.*`hf download state-spaces/mamba-370m`"):
        load_mamba_ssm(tiny_ref("mamba-370m", weights="pretrained"))
    assert calls == [str(snapshot)]


def test_a_revision_loads_that_revision_and_names_it(checkpoint: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """zero_shot's `model_args.revision`: from_pretrained reads the cached snapshot of that revision, and the
    recorded checkpoint says which (`id@revision`), so no paper row, which describes main, attaches to it."""
    import dataclasses

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    main = fake_hub_cache(tmp_path / "cache", "someone/tiny-gpt2", checkpoint)
    other = save_checkpoint(tmp_path / "other", seed=5, n_positions=64)
    repo = tmp_path / "cache" / "models--someone--tiny-gpt2"
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    (repo / "snapshots" / commit).mkdir()
    for f in other.iterdir():
        (repo / "snapshots" / commit / f.name).write_bytes(f.read_bytes())
    (repo / "refs" / "v1").write_text(commit)
    (ref,) = resolved([{"name": "hub-model", "hf_id": "someone/tiny-gpt2"}])
    at_v1 = load_model(dataclasses.replace(ref, revision="v1"))
    assert at_v1.identity()["checkpoint"] == "someone/tiny-gpt2@v1"
    assert at_v1.identity()["weights_sha256"] == file_sha256(repo / "snapshots" / commit / "model.safetensors")
    assert load_model(ref).identity()["weights_sha256"] == file_sha256(main / "model.safetensors")
