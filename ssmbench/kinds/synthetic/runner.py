"""kind: synthetic — small models trained from scratch inside the run, then tested at each length.

One job per architecture of the task, and per seed and learning rate where the task sweeps them (their
values are in the job's id and in every record's slice). Its first point (phase=train) builds the model
from the suite's config, trains it on batches drawn fresh on the device every step (ssmbench.train),
validating on fixed sets at the validation lengths, records the training curve and throughput, and saves
the trained weights in the job's artifact folder; the other points (phase=eval, seq_len=L) test it on the
fixed test set of length L. Training writes its whole state to the artifact folder as it goes, so an
interrupted train point continues where it stopped on `--resume`; a finished one is not retrained: its
weights are loaded and testing goes on.

A task with MAD's `settings` (suites/mad.yaml) has one job per setting, learning rate and weight decay (the
setting's label in the job's id and every record's slice): the job builds its model for the setting's
vocabulary and length, trains on the setting's fixed training set (ssmbench.data.mad.fixed_training_set,
drawn once from eval_seed and shared by the setting's jobs in one process) walked in `train.epochs`
seeded epochs (EpochWalk), validates on its own fixed set and is tested once (phase=eval, the slice naming
the setting's length) on MAD's fixed test set. A resumed job draws from the same place in its walk.

Records of the train point:
    train_steps, train_s, steps_per_s, train_tok_s   how long training took (tokens = batch x length)
    final_loss                                        the mean training loss over the last window of steps
                                                      (the eval_every steps before the last evaluation)
    train_accuracy                                    the last evaluation's validation accuracy at the
                                                      training length (the name is kept for old records)
    validation_accuracy                               its mean over the validation lengths (each in extra)
    loss, accuracy (slice step=N)                     the curve, one pair per evaluation
A diverged run has no final_loss, train_accuracy or validation_accuracy.
with how the run ended in `extra.outcome` (trained every step, stopped early, or collapsed at chance: then
the message says from which step), and in extra whether it trained in a pack, what its CUDA graph held and
the norm of its final RMSNorm's weight (a collapsed model's shrinks, flattening its logits).

With the task's `pack: K`, the train points of up to K jobs run side by side on one device (the launcher
gathers them, ssmbench.launch.worker.run_pack; each on its own CUDA stream), and each job's records,
weights and train_state.pt are the ones it writes alone. Induction heads' training layout
(`task_params.special_within`) is in every record's slice as `layout`; validation and test sets are always
drawn in the uniform layout, so models trained on either are scored on the same examples.
Records of an eval point:
    accuracy          correct answers / answer positions
    example_accuracy  share of examples with every answer right
with a standard error over examples (sqrt(p(1-p)/n), conservative for tasks with several answers per
example), the accuracy of each answer in turn in `extra.by_answer_index`, and the test set's seed and
fingerprint in `extra.eval_set` (equal fingerprints: the same examples).

A length the model cannot run is a result, not an error: out of memory (status oom), or positions beyond a
learned position table (status skipped, message starting with CANNOT_RUN); the tables print both as ✗
with the reason. A length above the architecture's `max_eval_len` is skipped as not run (—).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ssmbench import console
from ssmbench.data.mad_settings import MadSetting, mad_setting
from ssmbench.errors import JobError
from ssmbench.jobs import Point, point
from ssmbench.kinds.base import Runner, SkipPoint
from ssmbench.kinds.synthetic.task import Architecture, SyntheticTask
from ssmbench.models.mixers import mixer_family
from ssmbench.records import Record
from ssmbench.zoo import ResolvedModel

if TYPE_CHECKING:
    import torch

    from ssmbench.data.synthetic import Batch, ExamplePool
    from ssmbench.models.builder import BuiltModel
    from ssmbench.train import EvalResult, LogPoint, Trainer, TrainResult, TrainSettings

CANNOT_RUN = "cannot run:"  # a skipped point's message prefix when the architecture cannot hold the length
COLLAPSED = "collapsed at chance"  # a train record's outcome (and message prefix) when the run never left chance
DIVERGED = "diverged"  # a train record's outcome starts so when the loss went non-finite or past train.max_loss
NOT_TESTED = "not tested:"  # a skipped test point's message prefix when its model's training diverged
OUT_OF_TIME = "stopped at its time budget"  # a train record's outcome when train.budget_s ended it
CHECKPOINT = "model.pt"  # the trained weights (they load into mamba_ssm's MambaLMHeadModel for a Mamba model)
TRAIN_STATE = "train_state.pt"  # the whole training state, written as training goes: what a resume continues


class SyntheticRunner(Runner[SyntheticTask]):
    @classmethod
    def points(cls, task: SyntheticTask, model: ResolvedModel | None, device: str) -> list[Point]:
        if task.settings is not None:  # a MAD setting is tested at its own length (the job's, not the task's)
            return [point(phase="train"), point(phase="eval")]
        return [point(phase="train"), *(point(phase="eval", seq_len=length) for length in task.lengths)]

    @property
    def variant(self) -> str:
        assert self.job.variant is not None
        return self.job.variant

    @property
    def arch(self) -> Architecture:
        return self.task.architectures[self.variant]

    @property
    def setting(self) -> MadSetting | None:
        """The job's MAD setting (task `settings`), which brings its own length, vocabulary and parameters."""
        return self.task.setting_of(self.job.axes)

    @property
    def seq_len(self) -> int:
        """The training length: the MAD setting's, else the task's."""
        return self.setting.seq_len if self.setting is not None else self.task.train.seq_len

    @property
    def vocab_size(self) -> int:
        return self.setting.params["vocab_size"] if self.setting is not None else self.task.vocab_size

    @property
    def params(self) -> dict[str, Any]:
        """The generator's parameters of the fixed validation and test sets (vocab_size aside)."""
        if self.setting is None:
            return self.task.test_params
        return {k: v for k, v in self.setting.params.items() if k != "vocab_size"}

    def setup(self) -> None:
        """Build the model from its config; load the trained weights when an earlier attempt saved them."""
        from ssmbench.models.builder import build_model

        arch, device = self.arch, self.job.device
        try:
            self.model: BuiltModel = build_model(arch.config(self.vocab_size, self.seq_len),
                                                 device=device, seed=self.job.seed)
        except (ImportError, RuntimeError) as exc:  # e.g. fused kernels missing on CUDA: never a silent swap
            raise JobError(f"{self.job.id}: cannot build {arch.mixer}: {exc}") from None
        self.trained = False
        self.diverged = self._diverged_earlier()
        if (self.context.artifacts / CHECKPOINT).is_file():
            self.model.module.load_state_dict(self._trained_weights())
            self.trained = True

    def _trained_weights(self) -> dict[str, torch.Tensor]:
        """The weights an earlier attempt saved (model.pt). A damaged model.pt is set aside with one line
        saying why, and rebuilt from the finished training state (train_state.pt holds the same weights);
        a job with neither gets a one-line error naming both files."""
        from ssmbench.train import UnreadableCheckpoint, load_safely, save_atomically, set_aside

        weights, device = self.context.artifacts / CHECKPOINT, self.job.device
        try:
            return load_safely(weights, device)
        except UnreadableCheckpoint as exc:
            note = f"{exc}; set aside as {set_aside(weights).name}"
        state_path = self.context.artifacts / TRAIN_STATE
        try:
            state = load_safely(state_path, device) if state_path.is_file() else None
        except UnreadableCheckpoint as exc:
            raise JobError(f"{self.job.id}: {note}, and {exc}: train this job again in a new run") from None
        if not isinstance(state, dict) or "module" not in state:
            raise JobError(f"{self.job.id}: {note}, and there is no training state to rebuild it from: "
                           "train this job again in a new run")
        save_atomically(state["module"], weights)
        console.note(f"{self.job.id}: {note}; rebuilt from {TRAIN_STATE} (step {state['progress']['step']:,})")
        return state["module"]

    def _diverged_earlier(self) -> str | None:
        """A finished training's outcome when it diverged (read from its train_state.pt), so that the tests
        of a resumed run are skipped as they would have been in one sitting."""
        from ssmbench.train import UnreadableCheckpoint, load_safely

        state_path = self.context.artifacts / TRAIN_STATE
        if (self.context.artifacts / CHECKPOINT).is_file() or not state_path.is_file():
            return None
        try:
            progress = load_safely(state_path, "cpu").get("progress", {})
        except (UnreadableCheckpoint, AttributeError):
            return None  # the train point sets it aside and says so
        if progress.get("diverged_at") is None:
            return None
        return diverged_outcome(progress["diverged_at"], progress["diverged_loss"])

    def measure(self, pt: Point) -> list[Record]:
        if pt.params["phase"] == "train":
            return self._train(pt)
        return self._test(pt, pt.params.get("seq_len", self.seq_len))

    def record(self, point: Point, **fields: Any) -> Record:
        """Every record, failures included, names the generator, the training length and the mixer in its
        slice: they define what an accuracy means, and the tables match the paper's rows by mixer."""
        task = self.task
        layout = {"layout": task.layout} if task.layout is not None else {}
        tested_at = {"seq_len": self.seq_len} if self.setting is not None and point.params["phase"] == "eval" else {}
        fields["slice"] = {**fields.get("slice", point.params), **tested_at, "synthetic_task": task.task,
                           "train_len": self.seq_len, "mixer": self.arch.mixer, **layout, **self.job.axes}
        base: dict[str, Any] = {"family": mixer_family(self.arch.mixer), "weights": "trained", "dtype": "float32"}
        built = getattr(self, "model", None)
        if built is not None:
            base["kernel"] = built.kernel
            layers = {"layers": built.config.layer_mixers} if built.config.layers else {}  # a hybrid's pattern
            base["extra"] = ({"params": built.n_params, "mixer": self.arch.mixer, "d_model": self.arch.d_model}
                             | layers | fields.pop("extra", {}))
        return super().record(point, **(base | fields))

    # --- training -----------------------------------------------------------------------------------

    def settings(self) -> TrainSettings:
        """The training settings of this job: the task's, with the job's steps (the architecture's, or epochs
        over its fixed set), its learning rate and weight decay (its own, or its point of the task's sweep),
        and a MAD setting's length and training set size in place."""
        from ssmbench.data.synthetic import answer_values
        from ssmbench.train import TrainSettings

        given, axes, setting = self.task.train, self.job.axes, self.setting
        fields = given.model_dump(exclude={"validate_lengths", "validate_tokens", "cuda_graphs", "data_seed"})
        fields["lr"] = axes.get("lr", self.task.lrs(self.variant)[0])
        fields["weight_decay"] = axes.get("weight_decay", self.task.weight_decays()[0])
        fields["steps"] = self.task.steps_of(self.variant, setting)
        if setting is not None:
            fields |= {"seq_len": setting.seq_len, "examples": self.task.examples_of(setting)}
        if given.collapse_evals is not None:
            fields["chance_loss"] = math.log(answer_values(self.task.task, self.vocab_size, **self.params))
        return TrainSettings(**fields, cuda_graphs=given.graphs_on(self.job.device))

    def packable(self, point: Point) -> bool:
        return point.params["phase"] == "train"

    def pack_trainer(self, point: Point) -> Trainer:
        return self._trainer(packed=True)

    def training_records(self, point: Point, trainer: Trainer, outcome: TrainResult | Exception) -> list[Record]:
        """Save the trained weights and make the train point's records; a failed run's exception is raised.
        (A checkpoint of other settings never gets here: the trainer sets it aside and starts afresh.)"""
        from ssmbench.train import save_atomically

        if isinstance(outcome, Exception):
            raise outcome
        if outcome.diverged:  # its weights are not a model to test: the eval points say so instead
            self.diverged = diverged_outcome(outcome.diverged_at, outcome.diverged_loss)
        else:
            save_atomically(self.model.module.state_dict(), self.context.artifact(CHECKPOINT))
            self.trained = True
        return self._train_records(point, trainer, outcome)

    def _train(self, pt: Point) -> list[Record]:
        from ssmbench.train import train_pack

        trainer = self._trainer(packed=False)
        ((_, outcome),) = train_pack([trainer], width=1)
        return self.training_records(pt, trainer, outcome)

    def _trainer(self, packed: bool) -> Trainer:
        """This job's training run: its settings, data stream, fixed validation sets and checkpoint."""
        from ssmbench.data.synthetic import seeded_generator
        from ssmbench.train import Trainer

        settings, device = self.settings(), self.job.device
        lengths = [self.seq_len] if self.setting is not None else self.task.validate_lengths(self.variant)
        validation = {length: list(self._fixed(length, self.task.validation_samples_at(length), "validation"))
                      for length in lengths}
        every = max(1, settings.steps // 200)

        def progress(step: int) -> None:
            if step % every == 0:
                self.on_progress(step / settings.steps)

        return Trainer(self.model.module, self._training_draw(settings),
                       seeded_generator(self.job.seed, device), validation, settings, device,
                       checkpoint=self.context.artifact(TRAIN_STATE), on_log=self._show, on_step=progress,
                       own_stream=packed)

    def _training_draw(self, settings: TrainSettings) -> Callable[[Any], Batch]:
        """How a training batch is drawn from the run's stream: fresh examples, or from the job's fixed
        training set: a MAD setting's (MAD's training layout, drawn once from eval_seed and shared by every job
        of the setting) or `train.examples` (drawn from pool_seed of train.data_seed, else of the job's seed). A
        fixed set is walked in `train.epochs` epochs, each in an order drawn from the job's seed (EpochWalk),
        else sampled."""
        from ssmbench.data.synthetic import EpochWalk, ExamplePool, pool_seed

        if settings.examples is None:
            return lambda g: self._batch(settings.batch_size, settings.seq_len, g)
        if self.setting is not None:
            pool = _mad_training_set(self.task.task, self.setting.label, self.task.eval_seed, self.job.device,
                                     settings.examples)
        else:
            pool = ExamplePool.draw(self.task.task, settings.examples, settings.seq_len, seed=pool_seed(self.data_seed),
                                    device=self.job.device, vocab_size=self.task.vocab_size, **self.task.task_params)
        if settings.epochs is not None:
            return EpochWalk(pool, settings.batch_size, settings.steps, seed=pool_seed(self.job.seed))
        return lambda g: pool.sample(settings.batch_size, g)

    @property
    def data_seed(self) -> int:
        """The seed the job's fixed training set (train.examples) is drawn from: the task's, else the job's."""
        given = self.task.train.data_seed
        return self.job.seed if given is None else given

    def _show(self, log: LogPoint) -> None:
        longest = max(log.by_length)
        beyond = f" {log.by_length[longest]:.0%} at {longest:,}" if len(log.by_length) > 1 else ""
        self.on_status(f"step {log.step} loss {log.loss:.3f} acc {log.accuracy:.1%}{beyond} "
                       f"{log.steps_per_s:.0f} step/s")

    def _train_records(self, pt: Point, trainer: Trainer, result: TrainResult) -> list[Record]:
        settings = trainer.settings
        precision = settings.autocast if self.job.device == "cuda" and settings.autocast else "float32"
        how = self._how_trained(trainer, result)
        common = {"dtype": precision, "cuda_graphs": settings.cuda_graphs, "message": how.pop("message", None),
                  "extra": {"stopped_early": result.stopped_early, "lr": settings.lr, "autocast": precision,
                            "resumed_at_steps": result.resumed_at,
                            "train_examples": settings.examples or "fresh every step",
                            **({"data_seed": self.data_seed} if settings.examples and self.setting is None else {}),
                            **({"epochs": settings.epochs} if settings.epochs else {}), **how}}
        tokens = settings.batch_size * settings.seq_len
        figures = [("train_steps", result.steps, "steps", None), ("train_s", result.train_s, "s", False),
                   ("steps_per_s", result.steps_per_s, "steps/s", True),
                   ("train_tok_s", result.steps_per_s * tokens, "tok/s", True)]
        final = None if result.diverged else result.final  # a diverged run's last evaluation is not its result
        if final is not None:
            validation = sum(final.by_length.values()) / len(final.by_length)
            figures += [("final_loss", final.loss, "nats", False),
                        ("train_accuracy", final.accuracy, "fraction", True),
                        ("validation_accuracy", validation, "fraction", True)]
        records = [self.record(pt, metric=m, value=v, unit=u, higher_is_better=h, **common) for m, v, u, h in figures]
        if final is not None:
            records[-1] = records[-1].model_copy(update={"extra": records[-1].extra | {
                "by_length": {str(k): v for k, v in final.by_length.items()}}})
        for log in result.curve:
            step_slice = {**pt.params, "step": log.step}
            # The curve is a diagnostic, not a figure to judge: no direction, so `ssmbench diff` leaves it be.
            records += [self.record(pt, metric="loss", value=log.loss, unit="nats", higher_is_better=None,
                                    slice=step_slice, **common),
                        self.record(pt, metric="accuracy", value=log.accuracy, unit="fraction",
                                    higher_is_better=None, slice=step_slice, **common)]
        return records

    def _how_trained(self, trainer: Trainer, result: TrainResult) -> dict[str, Any]:
        """What the train records say of how the run went (extra), and a collapsed run's message: its
        outcome, whether it shared the device (pack), what its CUDA graph held, and the final norm's weight
        (a collapsed model's shrinks towards 0, flattening its logits)."""
        settings = trainer.settings
        how: dict[str, Any] = {"outcome": outcome(result)}
        if result.set_aside:
            how["checkpoints_set_aside"] = result.set_aside
            for line in result.set_aside:
                console.note(f"{self.job.id}: {line}")
        if result.diverged:
            bound = f" (above train.max_loss {settings.max_loss:g})" if settings.max_loss is not None and \
                math.isfinite(result.diverged_loss) else ""
            how["message"] = (f"{how['outcome']}{bound}: the mean training loss since step "
                              f"{result.curve[-1].step if result.curve else 0:,}, read at the evaluation of step "
                              f"{result.diverged_at:,}; stopped there, its tests skipped")
            console.note(f"{self.job.id}: {how['message']}")
        if result.collapsed:
            first = result.curve[-settings.collapse_evals].step if settings.collapse_evals else result.steps
            how["message"] = (f"{COLLAPSED}: training loss within 1% of chance (ln {math.exp(settings.chance_loss):.0f} = "
                              f"{settings.chance_loss:.3f}) or above at {settings.collapse_evals} evaluations in a row, "
                              f"from step {first:,}; stopped at step {result.steps:,}")
            console.note(f"{self.job.id}: {how['message']}")
        if trainer.own_stream:
            how["pack"] = self.task.pack
        if trainer.draw_in_graph is not None:
            how["graph"] = "draw+step" if trainer.draw_in_graph else "step (batches drawn eagerly)"
        if trainer.graph_note:
            how["graph_note"] = trainer.graph_note
            console.note(f"{self.job.id}: {trainer.graph_note}")
        norm = self.model.module.state_dict().get("backbone.norm_f.weight")
        if norm is not None:
            how["norm_f_weight_l2"] = round(float(norm.float().norm()), 4)
        return how

    # --- testing ------------------------------------------------------------------------------------

    def _test(self, pt: Point, length: int) -> list[Record]:
        import hashlib

        from ssmbench.models.mixers.attention import PositionLimitError
        from ssmbench.train import evaluate

        self._check_runs(length)
        if self.diverged:
            raise SkipPoint(f"{NOT_TESTED} training {self.diverged}")
        if not self.trained:
            raise JobError(f"{self.job.id}: no trained model to test (the train point did not finish)")
        n, digest = self.task.samples_at(length), hashlib.sha256()
        try:
            result = evaluate(self.model.module, self._counted(self._fixed(length, n, "test", digest), n),
                              self.job.device, self.arch.eval_dtype if self.job.device == "cuda" else None,
                              self.task.n_answers)
        except PositionLimitError as exc:
            raise SkipPoint(f"{CANNOT_RUN} {exc}") from None
        return self._test_records(pt, result, {"seed": self.task.eval_seed, "sha256": digest.hexdigest()[:16]})

    def _check_runs(self, length: int) -> None:
        arch = self.arch
        if arch.max_eval_len is not None and length > arch.max_eval_len:
            raise SkipPoint(f"not run: above max_eval_len={arch.max_eval_len:,}")
        limit = self.model.config.max_positions if arch.abs_positions == "learned" else None
        if limit is not None and length > limit:
            raise SkipPoint(f"{CANNOT_RUN} longer than the learned position table ({limit:,} positions)")

    def _counted(self, batches: Iterator[Batch], n: int) -> Iterator[Batch]:
        done = 0
        for batch in batches:
            yield batch
            done += len(batch.inputs)
            self.on_progress(done / n)

    def _test_records(self, pt: Point, result: EvalResult, eval_set: dict[str, Any]) -> list[Record]:
        precision = self.arch.eval_dtype if self.job.device == "cuda" else "float32"
        extra = {"n_examples": result.n_examples, "n_answers": result.n_answers,
                 "by_answer_index": result.by_answer_index, "eval_set": eval_set}
        out = []
        for metric, value in (("accuracy", result.accuracy), ("example_accuracy", result.example_accuracy)):
            stderr = math.sqrt(value * (1 - value) / result.n_examples)
            out.append(self.record(pt, metric=metric, value=value, stderr=stderr, unit="fraction",
                                   higher_is_better=True, dtype=precision, extra=extra))
        return out

    def _fixed(self, length: int, n: int, purpose: str, digest: Any = None) -> Iterator[Batch]:
        """The fixed test or validation set at `length` (ssmbench.data.synthetic.fixed_batches), in
        batches that fit the task's token budget per forward pass. A MAD setting's test set is MAD's
        (ssmbench.data.mad.fixed_test_batches: the same draw, eval_samples of its 1,280 examples)."""
        from ssmbench.data.synthetic import fixed_batches

        return fixed_batches(self.task.task, n, length, self.task.batch_at(length), seed=self.task.eval_seed,
                             purpose=purpose, device=self.job.device, digest=digest,
                             vocab_size=self.vocab_size, **self.params)

    def _batch(self, batch: int, length: int, generator: Any) -> Batch:
        from ssmbench.data.synthetic import make_batch

        return make_batch(self.task.task, batch, length, generator=generator, device=self.job.device,
                          vocab_size=self.task.vocab_size, **self.task.task_params)


@functools.lru_cache(maxsize=16)
def _mad_training_set(task: str, label: str, seed: int, device: str, examples: int) -> ExamplePool:
    """A MAD setting's fixed training set (ssmbench.data.mad.fixed_training_set) of `examples` examples
    (MAD's count, or a toy's fewer), drawn once per process and shared, read-only, by the jobs of the setting
    that train there (a pack holds several: MAD's six optimizer points of a setting train on one set)."""
    from ssmbench.data.mad import fixed_training_set

    setting = dataclasses.replace(mad_setting(task, label), num_train_examples=examples)
    return fixed_training_set(setting, seed=seed, device=device)


def diverged_outcome(step: int, loss: float) -> str:
    """A diverged run's outcome, as its records and tables say it: "diverged at step 2,000 (loss nan)"."""
    return f"{DIVERGED} at step {step:,} (loss {loss:.4g})"


def outcome(result: TrainResult) -> str:
    """How a training run ended, as the tables count it."""
    if result.diverged:
        return diverged_outcome(result.diverged_at, result.diverged_loss)
    if result.collapsed:
        return COLLAPSED
    if result.out_of_time:
        return OUT_OF_TIME
    return "stopped early (validation held)" if result.stopped_early else "trained every step"
