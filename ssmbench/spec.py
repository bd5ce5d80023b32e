"""Suite files: the declarative input of every run, validated completely before anything runs.

A suite names models and tasks; each task has a `kind` that selects its pydantic model from the kinds'
registry (ssmbench.kinds). Unknown keys are rejected, defaults are filled here, and every error names the file and the field
path (`suites/x.yaml: tasks[1].batch_sizes[0]: ...`), so a mistake costs seconds, not a half-finished run.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from ssmbench.errors import UserError, did_you_mean, error_message, format_loc, settle_unions
from ssmbench.jobs import Resources, Strict, TaskBase
from ssmbench.kinds import get_kind, kind_names, registered
from ssmbench.zoo import MODELS

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Weights = Literal["pretrained", "random"]
Backend = Literal["auto", "hf", "mamba_ssm"]


class Defaults(Strict):
    """Settings every model and task inherits unless it sets its own."""

    device: Device = "auto"  # where the tasks run: auto (CUDA when there is a GPU), cpu or cuda
    dtype: DType = "auto"  # float32 on CPU, float16 on CUDA
    # the runs' random seed (lm-eval's random, numpy, torch and few-shot seed); a task's `seeds` override it
    seed: int = 0
    # pretrained (the hub's or a path's) or random (built offline at full size: speed and memory only)
    weights: Weights = "pretrained"


class ModelRef(Strict):
    """A model of the suite: a zoo name, optionally adjusted, or a checkpoint of one's own.

    `base` lets a suite define a variant of a zoo model under a new name (its architecture, tokenizer and
    family), with `overrides` applied to the config and `hf_id`/`path` naming other weights. A `path:` (a
    local directory) or `hf_id:` needs no zoo name: its architecture is read from its config.json. A
    `path:` is checked here (an existing directory holding config.json of a supported architecture), and
    so are `overrides` (against transformers' config class of the architecture).
    """

    name: str  # a zoo name (`ssmbench list models`), or a name of your own for a `base`, `path` or `hf_id`
    base: str | None = None  # the zoo model this one varies: its architecture, tokenizer and family
    hf_id: str | None = None  # a hub repository holding the checkpoint (its config.json cached, or downloadable)
    path: str | None = None  # a local directory written by save_pretrained
    tokenizer: str | None = None  # a hub id or directory, or "bytes" (the offline byte-level tokenizer)
    weights: Weights | None = None  # this model's weights, over the suite's defaults
    dtype: DType | None = None  # this model's dtype, over the suite's defaults
    backend: Backend = "auto"  # Mamba: mamba_ssm's fused MambaLMHeadModel or transformers' implementation
    # changes to the architecture's config (checked against transformers' config class)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> ModelRef:
        from ssmbench.models.checkpoints import CheckpointError, check_overrides, known_checkpoint_arch

        if self.base is not None and self.base not in MODELS:
            raise ValueError(f"base: unknown model {self.base!r}{did_you_mean(self.base, MODELS)}")
        if self.path is not None and self.hf_id is not None:
            raise ValueError("hf_id: give `path:` or `hf_id:`, not both (they name two checkpoints)")
        if self.zoo_name is None and not (self.path or self.hf_id):
            raise ValueError(f"name: unknown model {self.name!r}{did_you_mean(self.name, MODELS)}; a checkpoint "
                             "of your own needs its `path:` (a local directory) or `hf_id:`")
        try:
            arch = known_checkpoint_arch(self.path, self.hf_id, self.zoo_name, self.lender)  # None: not knowable yet
            arch = arch or (MODELS[self.zoo_name].arch if self.zoo_name else None)
            if arch is not None:
                check_overrides(arch, self.overrides)
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def zoo_name(self) -> str | None:
        """The zoo entry this model borrows from (`base`, or a name of the zoo), or None for a checkpoint of
        one's own."""
        return self.base or (self.name if self.name in MODELS else None)

    @property
    def lender(self) -> str:
        """The field that names `zoo_name`: the one an error blames when the checkpoint is of another
        architecture."""
        return "base" if self.base else "name"


class Launch(Strict):
    """How a cluster launcher (`--launcher ray | slurm`) runs the suite's jobs; the local launcher runs them
    in its own process and has nothing here to apply.

    `retries` counts resubmissions of a job that was lost to something transient: a worker that died, a
    node that went away, a time limit. A point that raised in the runner is an error record, not retried.
    """

    retries: Annotated[int, Field(ge=0)] = 0  # resubmissions of a job lost to a dead worker or node, or a time limit
    # what each job asks of the cluster; a task's `resources` overrides some of them
    resources: Resources = Field(default_factory=Resources)


class Suite(Strict):
    """A suite. Its `tasks` are validated against the registered kinds (see `suite_model`)."""

    name: str  # the run directory is results/<name>/<run-id>/
    description: str = ""  # what the suite is for and why: `ssmbench list suites` prints its first line
    # settings every model and task inherits unless it sets its own
    defaults: Defaults = Field(default_factory=Defaults)
    require_fused_kernels: bool = False  # fail Mamba jobs rather than run them without mamba_ssm's kernels
    smoke_test: bool = False  # lets quality tasks run on random weights (their tables say so)
    # `ssmbench diff`'s thresholds for this suite's runs: metric -> largest tolerated regression in percent,
    # `default` for every other metric (throughput is noisier than accuracy)
    regression: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    launch: Launch = Field(default_factory=Launch)  # how a cluster launcher (`--launcher ray | slurm`) runs the jobs
    models: list[ModelRef] = Field(default_factory=list)  # the models every task runs on unless it names a subset
    tasks: list[TaskBase]  # what to measure: one entry per task, its fields chosen by its `kind`

    @field_validator("models", mode="before")
    @classmethod
    def _names_to_refs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        names = [m.name for m in self.models]
        _path_safe("name", self.name)
        for i, name in enumerate(names):
            _path_safe(f"models[{i}].name", name)
        for i, task in enumerate(self.tasks):
            _path_safe(f"tasks[{i}].name", task.task_name)
            for variant in task.variants():  # a synthetic task's architectures: artifacts/<task>/<variant>/
                _path_safe(f"tasks[{i}].architectures.{variant}", variant)
        if len(set(names)) != len(names):
            raise ValueError(f"models: duplicate names {sorted({n for n in names if names.count(n) > 1})}")
        if not self.tasks:
            raise ValueError("tasks: the suite has no tasks; list at least one")
        task_names = [t.task_name for t in self.tasks]
        if len(set(task_names)) != len(task_names):
            raise ValueError("tasks: two tasks share a name; give each a distinct `name`")
        for i, task in enumerate(self.tasks):
            if task.uses_models and not names:
                raise ValueError(f"tasks[{i}]: kind {task.kind!r} runs on models, and the suite lists none")
            for m in task.models or []:
                if m not in names:
                    raise ValueError(f"tasks[{i}].models: {m!r} is not one of the suite's models"
                                     f"{did_you_mean(m, names)}")
            for m in (task.on_cpu.settings.get("models") if task.on_cpu else None) or []:  # not only when planned on a CPU
                if m not in names:
                    raise ValueError(f"tasks[{i}].on_cpu.models: {m!r} is not one of the suite's models"
                                     f"{did_you_mean(m, names)}")
        return self


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


# A directory name holds 255 bytes on the common filesystems; launchers join a task's and a model's names
# into one file name (and add suffixes), so each name keeps well under half of that.
MAX_NAME = 100


def _path_safe(field: str, name: str) -> None:
    """Suite, task and model names become directories (results/<suite>/, artifacts/<task>/<model>/): letters,
    digits and . _ + - only, so no name can climb out of the run directory or hide in a dot-file, and at
    most MAX_NAME characters, so every directory and file made from them can exist."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{field}: {name!r} cannot name a directory; use letters, digits, '.', '_', '+', '-' "
                         "(no '/', no '..', not starting with '.')")
    if len(name) > MAX_NAME:
        raise ValueError(f"{field}: {name[:24]!r}... is {len(name)} characters; a name becomes a directory and "
                         f"part of file names, at most {MAX_NAME} characters")


def suite_model() -> type[Suite]:
    """Suite with `tasks` as the discriminated union of every registered kind's task model: a suite is
    checked against the kinds that exist when it is read, including ones registered after import."""
    return _suite_model(registered())


@functools.cache
def _suite_model(registered: tuple[tuple[str, str], ...]) -> type[Suite]:
    models = tuple(get_kind(name).task for name, _ in registered)
    task = models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
    return create_model("Suite", __base__=Suite, __doc__=Suite.__doc__, tasks=(list[task], ...))


# --- loading -------------------------------------------------------------------------------------------

def packaged_suites_dir() -> Path:
    """The suites shipped with ssmbench: inside the wheel, or the repository's suites/ when editable."""
    inside = resources.files("ssmbench").joinpath("suites")
    if inside.is_dir():
        return Path(str(inside))
    return Path(__file__).resolve().parent.parent / "suites"


def packaged_suite(name: str) -> Path | None:
    """A packaged suite by the name `ssmbench list suites` prints, its file's stem (`train_speed`), or by the
    `name:` written inside it, which spells some with hyphens (`train-speed`, the name of its results)."""
    for stem in dict.fromkeys((name, name.replace("-", "_"))):
        path = packaged_suites_dir() / f"{stem}.yaml"
        if path.is_file():
            return path
    return None


def find_suite_file(path_or_name: str | Path) -> Path:
    """A path as given if it exists, else a packaged suite by name (`smoke`, `compare.yaml`)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    packaged = packaged_suite(stem)
    if packaged is not None and (path.parent == Path(".") or path.parent.name == "suites"):
        return packaged
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.yaml"))
        hint = f" holding {', '.join(inside[:4])}{' …' if len(inside) > 4 else ''}" if inside else ""
        raise UserError(f"{path}: is a directory{hint}, not a suite file; give a .yaml file")
    known = sorted(p.stem for p in packaged_suites_dir().glob("*.yaml"))
    raise UserError(f"{path}: no such suite file{did_you_mean(stem, known)}; packaged suites: {', '.join(known)}")


class _StrictLoader(yaml.SafeLoader):
    """YAML that cannot mean two things: a key given twice in one mapping is an error (PyYAML keeps the
    last one silently, so `batch_sizes` written twice would run only the second list). Merge keys
    (`<<: *anchor`) are YAML's own way to say "this, with these keys changed": the keys written beside one
    override the merged ones, as YAML defines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `1e-3` as a string, the number only with a dot (`1.0e-3`); strict validation would
# refuse the string, so a float is also what YAML 1.2 calls one: digits with an exponent and no dot.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_suite(path_or_name: str | Path) -> tuple[Suite, Path]:
    path = find_suite_file(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"{path}: cannot read the suite ({reason})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: invalid YAML{where}: {problem}") from None
    return parse_suite(data, source=str(path)), path


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    if not isinstance(data, dict):
        raise UserError(f"{source}: a suite is a mapping with `name` and `tasks`, got {type(data).__name__}")
    try:
        return suite_model().model_validate(data)
    except ValidationError as exc:
        raise UserError("\n".join(f"{source}: {line}" for line in describe_validation_error(exc, data))) from None


def describe_validation_error(exc: ValidationError, data: Any) -> list[str]:
    """Every error as `field.path: the value given and its fault`, one line each, in the file's order: a
    union's errors from the branch the input was written for (errors.settle_unions), the kind's tag and
    pydantic's branch names gone from the paths."""
    return list(dict.fromkeys(_describe(err, data) for err in settle_unions(exc.errors(), data)))


def _describe(err: dict[str, Any], data: Any) -> str:
    kinds = kind_names()
    loc = list(err["loc"])
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", "?")
        return f"{format_loc([*loc, 'kind'])}: unknown task kind {tag!r}{did_you_mean(str(tag), kinds)}; kinds: " \
               f"{', '.join(kinds)}"
    if err["type"] == "union_tag_not_found":
        return f"{format_loc([*loc, 'kind'])}: missing `kind` (one of {', '.join(kinds)})"
    if err["type"] == "extra_forbidden":
        field = str(loc[-1])
        return f"{format_loc(loc)}: unknown key {field!r}{did_you_mean(field, _allowed_keys(loc[:-1], data))}"
    msg = error_message(err)
    # Our validators start their messages with the sub-field they mean ("name: ...", "tasks[0].models: ...").
    head, sep, rest = msg.partition(": ")
    if err["type"] == "value_error" and sep and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
        sub = head if head.startswith("[") else f".{head}" if loc else head
        return f"{format_loc(loc) if loc else ''}{sub}: {rest}"
    return f"{format_loc(loc)}: {msg}"


def _allowed_keys(parent_loc: list[Any], data: Any) -> list[str]:
    """Field names of the mapping that holds the unknown key, for 'did you mean': the suite's models are
    walked along the error's path, a task's model chosen by its `kind` as the union does."""
    annotation: Any = suite_model()
    value = data
    for part in parent_loc:
        annotation = _inner(annotation, part, value)
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return []
    model = _model_of(annotation, value)
    return list(model.model_fields) if model is not None else []


def _inner(annotation: Any, part: Any, value: Any) -> Any:
    """The annotation one step down: a model's field, a list's item, a dict's value."""
    model = _model_of(annotation, value)
    if model is not None and isinstance(part, str):
        return model.model_fields[part].annotation if part in model.model_fields else None
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (list, dict) and args:
        return args[-1]
    return _inner(args[0], part, value) if len(args) == 1 else None


def _model_of(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation stands for at this value (a task's model by its kind)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Annotated:
        return _model_of(get_args(annotation)[0], value)
    models = [m for m in get_args(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) > 1 and isinstance(value, dict) and value.get("kind") in kind_names():
        return get_kind(value["kind"]).task
    return models[0] if len(models) == 1 else (TaskBase if models else None)
