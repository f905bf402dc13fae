"""One phase of the training loop of :func:`snemo.training.train`, in named parts.

:class:`Phase` holds the state of one phase (the step, the loop variables, the checkpoint, the best
weights, the history) and runs it: :meth:`Phase.restore` (build the step, restore the checkpoint),
:meth:`Phase.run_epoch` (train and validate one epoch, return its history record),
:meth:`Phase.end_epoch` (best model, schedule, early stopping, history, checkpoint, TensorBoard)
and :meth:`Phase.finish` (best weights back, the :class:`TrainResult`). :func:`replica_functions`
wraps the step's replica functions into distributed ``tf.function`` steps that return all-reduced
sums; :class:`Metrics` averages them per epoch with ``keras.metrics.Mean`` trackers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from snemo.jsonfile import json_safe, write_json
from snemo.steps import EXAMPLES, Step, batch_size_of
from snemo.strategy import is_chief

HISTORY_FILE = "history.json"
LR_SCHEDULES = ("constant", "cosine", "plateau")
LOOP_STATE = ("epoch", "best", "bad", "stopped", "base_learning_rate")


@dataclass
class TrainResult:
    """What :func:`snemo.training.train` returns.

    ``history``: every epoch record of ``history.json`` (all phases so far);
    ``best_val_loss``: lowest monitored value (the step's ``monitor``, default ``val_loss``) of this
    phase (or the ``initial_best`` passed in), ``inf`` when nothing was monitored; ``epochs_done``:
    completed epochs of this phase; ``stopped_early``: early stopping ended the phase;
    ``resumed_from``: completed epochs found in the checkpoint.
    """

    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    epochs_done: int = 0
    stopped_early: bool = False
    resumed_from: int = 0


@dataclass
class Schedule:
    """Per-epoch learning-rate schedule and early stopping of one phase.

    The base rate is the step's learning rate when the phase starts (checkpointed). ``lr_schedule``:
    "constant"; "cosine" from the base rate at the first epoch down to ``min_lr_fraction`` times it
    at the last; "plateau": multiply the rate by ``plateau_factor`` after every ``plateau_patience``
    epochs without a lower monitored value. ``early_stopping``: stop after that many epochs
    without improvement (0: never).
    """

    lr_schedule: str = "constant"
    min_lr_fraction: float = 0.01
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    early_stopping: int = 0

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be constant, cosine or plateau, got {self.lr_schedule!r}")
        if self.early_stopping < 0 or self.plateau_patience < 1 or not 0 < self.plateau_factor <= 1:
            raise ValueError(f"early_stopping must be >= 0, plateau_patience >= 1 and plateau_factor in (0, 1], "
                             f"got {self.early_stopping}, {self.plateau_patience}, {self.plateau_factor}")

    def cosine_rate(self, base: float, epoch: int, epochs: int) -> float:
        """Learning rate of 0-based ``epoch`` of ``epochs`` under the cosine schedule."""
        fraction = epoch / max(epochs - 1, 1)
        return base * (self.min_lr_fraction + (1 - self.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * fraction)))


def read_history(out_dir) -> list[dict]:
    """Epoch records of ``<out_dir>/history.json`` ([] when absent)."""
    path = Path(out_dir) / HISTORY_FILE
    if not path.exists():
        return []
    with open(path) as handle:
        data = json.load(handle)
    return list(data.get("epochs", [])) if isinstance(data, dict) else list(data)


def save_model(model, path: Path, chief: bool) -> None:
    """Save ``model`` to ``path`` (.keras) atomically; non-chief workers save to a temporary folder.

    Every worker calls this (reading distributed variables may need all of them); only the chief's
    file is kept.
    """
    if chief:
        tmp = path.with_name(path.stem + ".tmp.keras")
        model.save(tmp)
        os.replace(tmp, path)
    else:
        scratch = tempfile.mkdtemp(prefix="snemo-worker-")
        try:
            model.save(os.path.join(scratch, path.name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)




def replica_functions(step: Step, strategy):
    """The step's replica train and evaluation steps as distributed ``tf.function`` steps.

    Each takes one distributed batch (inputs, targets) and returns {name: sum over every replica}
    (float32 scalars), with ``n`` (examples) added when the step leaves it out.
    """
    import tensorflow as tf

    needed = set(step.metric_names) | {step.denominator(name) for name in step.metric_names}

    def checked(replica_step, what):
        def replica(inputs, targets):
            sums = dict(replica_step(inputs, targets))
            if EXAMPLES not in sums:
                sums[EXAMPLES] = batch_size_of(tf.nest.flatten(inputs)[0])
            missing = needed - sums.keys()
            if missing:
                raise ValueError(f"{type(step).__name__}.{what} returned no {sorted(missing)} (it returned "
                                 f"{sorted(sums)})")
            return {key: tf.cast(value, tf.float32) for key, value in sums.items()}
        return replica

    def distributed(replica):
        # autograph=False: no tensor-dependent Python control flow here, and traced functions then
        # never re-read this file (a long job keeps working while the source is being edited).
        @tf.function(autograph=False)
        def run(batch):
            sums = strategy.run(replica, args=batch)
            return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for key, value in sums.items()}
        return run

    return distributed(checked(step.train_step, "train_step")), distributed(checked(step.evaluate_step, "evaluate_step"))


class Metrics:
    """Epoch means of the step's metrics, training and validation: sum of a metric / sum of its denominator."""

    def __init__(self, step: Step):
        import keras

        self.names = tuple(step.metric_names)
        self.denominators = {name: step.denominator(name) for name in self.names}
        self.trackers = {prefix + name: keras.metrics.Mean(name=prefix + name)
                         for prefix in ("", "val_") for name in self.names}

    def reset(self) -> None:
        """Start a new epoch."""
        for tracker in self.trackers.values():
            tracker.reset_state()

    def update(self, prefix: str, sums: dict) -> None:
        """Add one step's all-reduced sums ("" training, "val_" validation)."""
        import tensorflow as tf

        # Tensors in, no host synchronisation: the next step can be dispatched at once.
        for name in self.names:
            count = sums[self.denominators[name]]
            self.trackers[prefix + name].update_state(sums[name] / tf.maximum(count, 1.0), sample_weight=count)

    def keys(self) -> list[str]:
        """Reported names: the metrics, then their ``val_`` twins."""
        return list(self.names) + ["val_" + name for name in self.names]

    def value(self, key: str):
        """Current epoch mean of ``key`` (e.g. "loss", "val_loss"); NaN becomes None."""
        return json_safe(float(self.trackers[key].result()))

    def record(self, validated: bool) -> dict:
        """{name: mean, ..., val_name: mean or None, ...} of the epoch."""
        return {key: self.value(key) if validated or not key.startswith("val_") else None for key in self.keys()}


class Phase:
    """State and parts of one phase of :func:`snemo.training.train` (see the module docstring)."""

    def __init__(self, step: Step, *, strategy, out_dir: Path, write_dir: Path, phase: str, epochs: int,
                 schedule: Schedule, restore_best: bool, initial_best: float, quiet: bool, log):
        self.step = step
        self.strategy = strategy
        self.out_dir = out_dir
        self.write_dir = write_dir
        self.phase = phase
        self.epochs = epochs
        self.schedule = schedule
        self.restore_best = restore_best
        self.initial_best = float(initial_best)
        self.quiet = quiet
        self.chief = is_chief(strategy)
        self.say = (lambda *a, **k: None) if (quiet or not self.chief) else log
        self.resumed_from = 0
        self.best_weights = None
        self.history = []
        self.offset = 0

    @property
    def stopped(self) -> bool:
        """Early stopping ended this phase (now or in the run that was resumed)."""
        return bool(self.state["stopped"].numpy())

    def restore(self) -> None:
        """Build the step, make the checkpoint over its trackables and the loop state, restore the latest."""
        import tensorflow as tf

        try:
            self.step.build(self.strategy)
        except ValueError as err:
            raise ValueError(f"phase '{self.phase}': {err}") from err
        trackables = dict(self.step.trackables())
        clash = sorted(set(trackables) & set(LOOP_STATE))
        if clash:
            raise ValueError(f"{type(self.step).__name__}.trackables() uses the loop's names {clash}")
        self.state = {
            "epoch": tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"),
            "best": tf.Variable(self.initial_best, dtype=tf.float64, trainable=False, name="best_val_loss"),
            "bad": tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_without_improvement"),
            "stopped": tf.Variable(False, trainable=False, name="stopped_early"),
            "base_learning_rate": tf.Variable(self.step.learning_rate, dtype=tf.float64, trainable=False,
                                              name="base_learning_rate"),
        }
        self.checkpoint = tf.train.Checkpoint(**trackables, **self.state)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.write_dir / "checkpoints" / self.phase),
                                                  max_to_keep=2)
        latest = tf.train.latest_checkpoint(str(self.out_dir / "checkpoints" / self.phase))
        if latest is not None:
            self.checkpoint.restore(latest)
            self.resumed_from = int(self.state["epoch"].numpy())
            self.say(f"[{self.phase}] resuming from {latest} after epoch {self.resumed_from}")
        # Best weights are kept in memory on every worker (so all workers agree); on resume they
        # come from the best model file(s) of the interrupted run.
        if (0 < self.resumed_from < self.epochs and self.restore_best
                and math.isfinite(float(self.state["best"].numpy()))):
            self.best_weights = self.saved_best_weights()
        self.history = [record for record in read_history(self.out_dir)
                        if record.get("phase") != self.phase or record.get("epoch", 0) <= self.resumed_from]
        self.offset = sum(1 for record in self.history if record.get("phase") != self.phase)
        self.writer = (tf.summary.create_file_writer(str(self.write_dir / "tensorboard")) if self.chief
                       else tf.summary.create_noop_writer())
        self.metrics = Metrics(self.step)
        if self.resumed_from >= self.epochs or self.stopped:
            self.say(f"[{self.phase}] already complete ({self.resumed_from} epoch(s)"
                     f"{', stopped early' if self.stopped else ''})")

    def saved_best_weights(self) -> dict | None:
        """{file: weights} of the best model files in the run folder, None unless every one exists."""
        import keras

        paths = {name: self.out_dir / name for name in self.step.best_models()}
        if not all(path.exists() for path in paths.values()):
            return None
        return {name: keras.saving.load_model(path, safe_mode=True, compile=False).get_weights()
                for name, path in paths.items()}

    def save_best_models(self) -> None:
        """Save the step's best model(s) (every worker takes part, the chief's files are kept)."""
        for name, model in self.step.best_models().items():
            save_model(model, self.out_dir / name if self.chief else self.write_dir / name, self.chief)

    def run_epoch(self, epoch: int, data, train_function, evaluate_function) -> dict:
        """Train one epoch (0-based ``epoch``) and validate; returns the epoch's history record."""
        import tensorflow as tf
        from tqdm import tqdm

        if self.schedule.lr_schedule == "cosine":
            base = float(self.state["base_learning_rate"].numpy())
            self.step.set_learning_rate(self.schedule.cosine_rate(base, epoch, self.epochs))
        learning_rate = self.step.learning_rate
        self.metrics.reset()
        start = time.time()
        n_seen = tf.constant(0.0)
        bar = tqdm(total=data.train_steps, desc=f"[{self.phase}] epoch {epoch + 1}/{self.epochs}", unit="step",
                   disable=self.quiet or not self.chief, file=sys.stderr, mininterval=1.0, leave=False)
        for index, batch in enumerate(data.batches()):
            sums = train_function(batch)
            self.metrics.update("", sums)
            n_seen += sums[EXAMPLES]
            bar.update(1)
            if index % 20 == 0:
                bar.set_postfix({name: f"{self.metrics.value(name):.4f}" for name in self.metrics.names[:3]})
        bar.close()
        n_seen = float(n_seen)  # waits for the last step
        train_seconds = time.time() - start
        if data.validation is not None:
            for batch in data.batches(validation=True):
                self.metrics.update("val_", evaluate_function(batch))
        seconds = time.time() - start
        return {"phase": self.phase, "epoch": epoch + 1, **self.metrics.record(data.validation is not None),
                "learning_rate": learning_rate, "samples": int(n_seen), "seconds": round(seconds, 3),
                "samples_per_second": round(n_seen / max(train_seconds, 1e-9), 1)}

    def end_epoch(self, epoch: int, record: dict) -> None:
        """Best model, plateau, early stopping; then history, checkpoint, TensorBoard and the epoch line."""
        import tensorflow as tf

        state = self.state
        monitored = record.get(self.step.monitor)
        improved = monitored is not None and monitored < float(state["best"].numpy())
        if improved:
            state["best"].assign(monitored)
            state["bad"].assign(0)
            if self.restore_best:
                self.best_weights = {name: model.get_weights() for name, model in self.step.best_models().items()}
            self.save_best_models()
        elif monitored is not None:
            state["bad"].assign_add(1)
            bad = int(state["bad"].numpy())
            if self.schedule.lr_schedule == "plateau" and bad % self.schedule.plateau_patience == 0:
                self.step.set_learning_rate(record["learning_rate"] * self.schedule.plateau_factor)
            if self.schedule.early_stopping and bad >= self.schedule.early_stopping:
                state["stopped"].assign(True)
        # History first, checkpoint last: a job killed in between redoes this epoch and its record
        # is dropped on resume; the other order would lose the record of a checkpointed epoch.
        self.history.append(record)
        if self.chief:
            write_json(self.out_dir / HISTORY_FILE, {"epochs": self.history})
        state["epoch"].assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        with self.writer.as_default(step=self.offset + epoch + 1):
            for name in self.metrics.names:
                if record[name] is not None:
                    tf.summary.scalar(f"{name}/train", record[name])
                if record["val_" + name] is not None:
                    tf.summary.scalar(f"{name}/validation", record["val_" + name])
            tf.summary.scalar("learning_rate", record["learning_rate"])
            tf.summary.scalar("samples_per_second", record["samples_per_second"])
        self.writer.flush()
        values = ", ".join(f"{key} {record[key]:.4f}" for key in self.metrics.keys() if record[key] is not None)
        self.say(f"[{self.phase}] epoch {epoch + 1}/{self.epochs}: {values}, lr {record['learning_rate']:.3g}, "
                 f"{record['seconds']:.1f} s, {record['samples_per_second']:.0f} samples/s"
                 f"{' (best)' if improved else ''}{' - early stop' if self.stopped else ''}")

    def finish(self, validated: bool) -> TrainResult:
        """End the phase: the final or the best weights in the model(s) and the checkpoint; the result."""
        epochs_done = int(self.state["epoch"].numpy())
        trained = epochs_done > self.resumed_from
        monitoring = validated or not self.step.monitor.startswith("val_")
        if not monitoring:
            self.save_best_models()  # nothing monitored: the final model(s)
        elif self.restore_best and trained:
            weights = self.best_weights
            if weights is None and math.isfinite(self.initial_best):
                # This phase never beat the previous one: keep the previous phase's best model.
                weights = self.saved_best_weights()
            if weights is not None:
                for name, model in self.step.best_models().items():
                    model.set_weights(weights[name])
                self.manager.save(checkpoint_number=epochs_done)  # a rerun of a finished phase restores these
        elif self.restore_best:
            # A finished phase run again: its last checkpoint normally holds the best weights already,
            # but a job killed between the last epoch's checkpoint and that save does not; the best
            # model file does.
            weights = self.saved_best_weights()
            if weights is not None:
                for name, model in self.step.best_models().items():
                    model.set_weights(weights[name])
        return TrainResult(history=self.history, best_val_loss=float(self.state["best"].numpy()),
                           epochs_done=epochs_done, stopped_early=self.stopped, resumed_from=self.resumed_from)
