"""Checkpoints as they are on disk: their config, their architecture, their tokenizer and their weights' hash.

A suite's model may be a local directory (`path:`) or a hub id (`hf_id:`) that no zoo entry describes. Its
architecture is then read from its own config.json: transformers' `model_type`, or mamba_ssm's own format
(`d_model`, `n_layer`, `ssm_cfg`), translated to the transformers-style config the zoo uses, so that state
sizes, position limits and the family are the checkpoint's own.

What a record says was loaded comes from here too: the weights' files are hashed (SHA-256, streamed,
once per file version per process), so two runs can tell whether they measured the same weights.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from ssmbench.errors import did_you_mean
from ssmbench.zoo import ARCHITECTURES, MODELS, ModelSpec

Format = Literal["hf", "mamba_ssm"]  # transformers' from_pretrained, or mamba_ssm's MambaLMHeadModel
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
HASH_CHARS = 16  # the short hash records carry: 64 bits, plenty to tell checkpoints apart


class CheckpointError(ValueError):
    """A checkpoint that cannot be what a suite says it is; the message names no field (callers do)."""


# --- config and architecture ---------------------------------------------------------------------------

def read_local_config(path: str) -> dict[str, Any]:
    """The config.json of a local checkpoint directory, or CheckpointError saying what is wrong with it."""
    directory = Path(path).expanduser()
    if not directory.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not directory.is_dir():
        raise CheckpointError(f"{path}: not a directory (a checkpoint is a directory holding config.json)")
    config = directory / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path}: no config.json in this directory (not a checkpoint directory: one "
                              "written by save_pretrained holds config.json and the weights)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: config.json does not parse ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: config.json is not a mapping")
    return data


def checkpoint_architecture(config: dict[str, Any]) -> tuple[str, dict[str, Any], Format]:
    """(architecture, transformers-style config, format) of a checkpoint's config.json.

    The architecture is a key of zoo.ARCHITECTURES; an unsupported one is a CheckpointError naming those
    that are supported."""
    supported = ", ".join(ARCHITECTURES)
    model_type = config.get("model_type")
    if model_type is None and {"d_model", "n_layer"} <= set(config):
        hf_config = _from_mamba_ssm(config)
        return hf_config["model_type"], hf_config, "mamba_ssm"
    if model_type is None:
        raise CheckpointError(f"config.json has no model_type (supported: {supported})")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(f"model_type {model_type!r} of its config.json is not supported "
                              f"(supported: {supported}){did_you_mean(str(model_type), ARCHITECTURES)}")
    return model_type, dict(config), "hf"


def _from_mamba_ssm(config: dict[str, Any]) -> dict[str, Any]:
    """mamba_ssm's MambaConfig (config.json of state-spaces/mamba-*, mamba2-*) as transformers' keys."""
    ssm = dict(config.get("ssm_cfg") or {})
    layer = ssm.get("layer", "Mamba1")
    if config.get("attn_layer_idx") or config.get("d_intermediate", 0):
        raise CheckpointError("a mamba_ssm hybrid (attention layers or MLPs) is not supported; "
                              "supported: pure Mamba and Mamba-2 stacks")
    if layer not in ("Mamba1", "Mamba2"):
        raise CheckpointError(f"mamba_ssm layer {layer!r} is not supported (Mamba1, Mamba2)")
    d_model, multiple = int(config["d_model"]), int(config.get("pad_vocab_size_multiple", 8))
    vocab = math.ceil(int(config["vocab_size"]) / multiple) * multiple  # as MambaLMHeadModel pads it
    common = {"hidden_size": d_model, "num_hidden_layers": int(config["n_layer"]), "vocab_size": vocab,
              "expand": int(ssm.get("expand", 2)), "conv_kernel": int(ssm.get("d_conv", 4)),
              "use_bias": bool(ssm.get("bias", False)), "use_conv_bias": bool(ssm.get("conv_bias", True)),
              "residual_in_fp32": bool(config.get("residual_in_fp32", True)), "layer_norm_epsilon": 1e-5,
              "tie_word_embeddings": bool(config.get("tie_embeddings", True))}
    if layer == "Mamba1":
        return {"model_type": "mamba", **common, "state_size": int(ssm.get("d_state", 16)),
                "time_step_rank": math.ceil(d_model / 16)}
    head_dim = int(ssm.get("headdim", 64))
    return {"model_type": "mamba2", **common, "state_size": int(ssm.get("d_state", 128)), "head_dim": head_dim,
            "num_heads": common["expand"] * d_model // head_dim, "n_groups": int(ssm.get("ngroups", 1)),
            "chunk_size": int(ssm.get("chunk_size", 256))}


def _architecture_of(field: str, source: str, raw: dict[str, Any], zoo_name: str | None, lender: str = "name"
                     ) -> tuple[str, dict[str, Any], Format]:
    """checkpoint_architecture, with errors that name the suite field, and checked against the zoo entry
    the model borrows from (a checkpoint is what its config says, whatever it is named). `lender` is the
    field that names that entry, `base` or `name`: the one to change when the two disagree."""
    try:
        arch, config, fmt = checkpoint_architecture(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{field}: {source}: {exc}") from None
    zoo = MODELS.get(zoo_name) if zoo_name else None
    if zoo is not None and zoo.arch != arch:
        fix = f"drop `base:`, or give a {arch} model of the zoo" if lender == "base" else "name it otherwise"
        raise CheckpointError(f"{lender}: {zoo_name!r} is a {zoo.arch} model of the zoo, but `{field}: {source}` "
                              f"holds a {arch} checkpoint; {fix} (the architecture comes from the checkpoint's "
                              "config.json)")
    return arch, config, fmt


def _local_config(path: str) -> dict[str, Any]:
    """read_local_config, with errors that name the suite field (`path:`)."""
    try:
        return read_local_config(path)
    except CheckpointError as exc:
        raise CheckpointError(f"path: {exc}") from None


def known_checkpoint_arch(path: str | None, hf_id: str | None, zoo_name: str | None, lender: str = "name"
                          ) -> str | None:
    """What a suite can check offline, when it is read: a `path:` must be a checkpoint directory of a supported
    architecture (CheckpointError "path: ..." otherwise); an `hf_id:` is checked the same way when its
    config.json is in the cache. The architecture, or None when there is no checkpoint to read yet."""
    if path is not None:
        return _architecture_of("path", path, _local_config(path), zoo_name, lender)[0]
    if hf_id is not None:
        from ssmbench.models import hub

        raw = hub.hub_config(hf_id, download=False)
        return _architecture_of("hf_id", hf_id, raw, zoo_name, lender)[0] if raw is not None else None
    return None


def model_spec(name: str, zoo_name: str | None, path: str | None, hf_id: str | None, tokenizer: str | None,
               overrides: dict[str, Any], lender: str = "name") -> tuple[ModelSpec, Format | None]:
    """The spec of a suite's model and the format of its checkpoint (None for the zoo's own).

    A `path:` or `hf_id:` checkpoint is what its config.json says: architecture, family and sizes are its own,
    and the zoo entry it may borrow from (`base:`, or a zoo name) lends only a fallback tokenizer. An `hf_id:`
    whose config.json is neither cached nor downloadable keeps the zoo entry's config when it borrows one.
    """
    from ssmbench.models import hub

    zoo = MODELS.get(zoo_name) if zoo_name else None
    raw: dict[str, Any] | None = None
    if path is not None:
        raw = _local_config(path)
    elif hf_id is not None:
        raw = hub.hub_config(hf_id)
        if raw is None and zoo is None:
            why = hub.unavailable_reason() if not hub.hub_reachable() else "the hub has no config.json for it"
            raise CheckpointError(f"hf_id: {hf_id}: its config.json could not be read ({why}); download it first "
                                  f"(`hf download {hf_id}`) where the hub is reachable, or give a local `path:`")
    fmt: Format | None = None
    if raw is not None:
        arch, config, fmt = _architecture_of("path" if path is not None else "hf_id", path or hf_id or "", raw,
                                             zoo_name, lender)
        spec = ModelSpec(name, arch, config, 0,  # nominal size unknown: n_params in records says
                         tokenizer=zoo.tokenizer if zoo is not None else None,
                         notes=f"checkpoint {path or hf_id}, architecture from its config.json")
    else:
        assert zoo is not None
        spec, fmt = zoo, "hf" if hf_id is not None else None
    if overrides or tokenizer or spec.name != name:
        spec = dataclasses.replace(spec, name=name, config={**spec.config, **overrides},
                                   tokenizer=tokenizer or spec.tokenizer)
    return spec, fmt


# --- overrides ------------------------------------------------------------------------------------------

def check_overrides(arch: str, overrides: dict[str, Any]) -> None:
    """Refuse an override that transformers' config class for `arch` does not have, or a value of the wrong
    type or sign: CheckpointError("overrides.KEY: ..."). Imports transformers (seconds): call it only when
    there are overrides."""
    if not overrides:
        return
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[arch]
    fields = {f.name: f for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else {}
    aliases = dict(getattr(config_class, "attribute_map", {}) or {})
    known = [*fields, *aliases]
    for key, value in overrides.items():
        name = aliases.get(key, key)
        if name not in fields:
            raise CheckpointError(f"overrides.{key}: unknown key for {arch}'s config{did_you_mean(key, known)}")
        problem = _value_problem(name, fields[name], value)
        if problem:
            raise CheckpointError(f"overrides.{key}: {problem}, got {value!r}")


def _value_problem(name: str, field: Any, value: Any) -> str | None:
    kind, optional = _field_kind(field.type)
    if value is None:
        return None if optional or kind is None else "must be set (null is not allowed)"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        non_negative = name.endswith("_id") or field.default == 0
        if value < 0 or (value == 0 and not non_negative):
            return "must be a non-negative integer" if non_negative else "must be a positive integer"
        return None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "must be a number"
        if ("dropout" in name or "pdrop" in name) and not 0 <= value <= 1:
            return "must be a probability between 0 and 1"
        if ("eps" in name or name.endswith("_range")) and value <= 0:
            return "must be a positive number"
    return None


def _field_kind(annotation: Any) -> tuple[str | None, bool]:
    """('int' | 'bool' | 'float' | None, optional) from a config dataclass field's annotation (a type, a
    union, or its text): None for what this check leaves alone (strings, lists, dicts)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    parts = {p.strip() for p in text.replace("typing.", "").split("|")}
    optional = bool(parts & {"None", "NoneType"})
    parts -= {"None", "NoneType"}
    if parts == {"int"}:
        return "int", optional
    if parts == {"bool"}:
        return "bool", optional
    if parts in ({"float"}, {"float", "int"}):
        return "float", optional
    return None, optional


# --- tokenizer and weights -------------------------------------------------------------------------------

def has_tokenizer_files(directory: str) -> bool:
    return any((Path(directory).expanduser() / name).is_file() for name in TOKENIZER_FILES)


def weight_files(directory: str, fmt: Format) -> list[Path]:
    """The weight files a loader reads from a checkpoint directory: transformers reads the safetensors
    when there are any and the .bin files otherwise; mamba_ssm reads pytorch_model.bin."""
    root = Path(directory).expanduser()
    safetensors = sorted(root.glob("*.safetensors"))
    if fmt == "hf" and safetensors:
        return safetensors
    return sorted(root.glob("*.bin"))


def weights_sha256(directory: str, fmt: Format) -> str | None:
    """A short SHA-256 over the weight files read from `directory` (names and contents, in name order), or
    None when there are none. Files are streamed (checkpoints are gigabytes) and each file version is
    hashed once per process."""
    files = weight_files(directory, fmt)
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()  # follows the hub cache's symlinks to the blobs
        digest.update(file.name.encode() + b"\0" + _file_sha256(str(file.resolve()), stat.st_size,
                                                                stat.st_mtime_ns).encode())
    return digest.hexdigest()[:HASH_CHARS]


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file rehashes
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def describe_path(path: str) -> str:
    """A local checkpoint as records name it: its absolute path."""
    return os.path.abspath(os.path.expanduser(path))
