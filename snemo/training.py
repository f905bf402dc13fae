"""The one training loop of the toolkit: custom ``strategy.run`` + ``GradientTape`` steps.

Keras 3 ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so every
script trains through :func:`train`, which works the same under the default (CPU) strategy,
``OneDeviceStrategy``, ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``. The loop knows no
task: a step object (:class:`snemo.steps.Step`; the counters use :class:`snemo.steps.ClassifierStep`)
brings its models, optimizers, replica train and evaluation steps and the names of its metrics.

* ``@tf.function`` train / evaluation steps run the step's replica functions with ``strategy.run``;
  their per-replica sums are all-reduced and fed to ``keras.metrics.Mean`` trackers (train and
  validation, reset every epoch) without a host synchronisation per step; a loss is divided by the
  *global* number of examples of the step, counted exactly so a short last batch is weighted right;
* a progress bar (tqdm, on standard error), ``history.json``, TensorBoard scalars in
  ``<out>/tensorboard`` and a ``tf.train.CheckpointManager`` in ``<out>/checkpoints/<phase>`` over
  the step's trackables (models, optimizers) and the loop state (epoch, best monitored value,
  early-stopping count, base learning rate), saved after every epoch: a killed job started again
  with the same ``--out`` resumes after its last completed epoch and stops at the requested total;
* the step's best model(s) (lowest ``val_loss`` by default) are saved as ``<out>/model.keras`` (the
  names the step gives) and, by default, their weights are put back at the end of the phase;
* several phases (e.g. frozen branches, then fine-tuning) are separate calls with their own
  ``phase`` name, each with its own checkpoints and resumable on its own; a phase that never beat
  the previous one (``initial_best``) keeps the previous phase's best model;
* learning-rate schedules (constant, cosine, plateau) and early stopping (:class:`Schedule`).

Under a multi-worker strategy only the chief writes ``<out>``; the other workers write the same
files to a temporary folder that is deleted afterwards, as the TensorFlow documentation recommends
(checkpoint and model saving may need every worker to take part). The datasets are repeated and
every worker runs the same agreed number of steps (:func:`agree_steps`).
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from snemo.phase import (HISTORY_FILE, Phase, Schedule, TrainResult, read_history,  # noqa: F401
                         replica_functions, save_model)
from snemo.steps import MODEL_FILE, ClassifierStep, Step, categorical_correct, categorical_loss  # noqa: F401
from snemo.strategy import is_chief, worker_shard

__all__ = ["HISTORY_FILE", "MODEL_FILE", "ClassifierStep", "DistributedData", "Schedule", "Step", "TrainResult",
           "agree_steps", "categorical_correct", "categorical_loss", "distribute", "predict", "read_history",
           "save_model", "set_trainable", "train"]


def set_trainable(model, trainable: bool, layer_names=None) -> None:
    """Freeze (``False``) or unfreeze (``True``) the whole model or the named layers (sub-models too).

    Frozen BatchNormalization layers also run in inference mode (Keras 3 behaviour), as transfer
    learning wants. Call before :func:`train`: each call of :func:`train` builds its step anew.
    """
    if layer_names is None:
        model.trainable = trainable
        return
    for name in layer_names:
        model.get_layer(name).trainable = trainable


def agree_steps(strategy, local_steps: int) -> int:
    """Steps every worker runs per epoch under a multi-worker strategy: floor(mean of local steps).

    The datasets are repeated in that case, so no worker runs out of data. Single process: unchanged.
    """
    import tensorflow as tf

    if worker_shard(strategy)[1] <= 1:
        return local_steps
    value = tf.constant(float(local_steps))

    @tf.function(autograph=False)
    def mean_over_workers():
        per_replica = strategy.run(lambda: tf.identity(value))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    return max(1, int(mean_over_workers().numpy()))


def _local_steps(dataset, n_examples, batch_size) -> int | None:
    cardinality = int(dataset.cardinality().numpy())
    if cardinality >= 0:
        return cardinality
    if n_examples is not None and batch_size:
        return max(1, math.ceil(n_examples / batch_size))
    return None


@dataclass
class DistributedData:
    """The distributed training and validation data of a phase and their steps per epoch.

    ``repeated``: multi-worker, the datasets repeat and every worker runs exactly the agreed steps.
    """

    train: object
    validation: object | None
    train_steps: int | None
    validation_steps: int | None
    repeated: bool = False

    def __post_init__(self):
        self._iterators = {}
        if self.repeated:
            self._iterators = {False: iter(self.train)}
            if self.validation is not None:
                self._iterators[True] = iter(self.validation)

    def batches(self, validation: bool = False):
        """Yield the distributed batches of one epoch of the training (or validation) data."""
        steps = self.validation_steps if validation else self.train_steps
        if self.repeated:
            for _ in range(steps):
                yield next(self._iterators[validation])
            return
        for index, batch in enumerate(self.validation if validation else self.train):
            if steps is not None and index >= steps:
                break
            yield batch


def distribute(strategy, train_dataset, validation_dataset=None, *, n_train=None, n_validation=None,
               batch_size=None, steps_per_epoch=None) -> DistributedData:
    """Distribute ``tf.data`` datasets of (inputs, targets) batched with the GLOBAL batch size.

    ``n_train`` / ``n_validation`` (examples on this worker) and ``batch_size`` give the steps when
    the cardinality is unknown, and are required under a multi-worker strategy; ``steps_per_epoch``
    caps the training steps. Returns a :class:`DistributedData`.
    """
    train_steps = _local_steps(train_dataset, n_train, batch_size)
    val_steps = _local_steps(validation_dataset, n_validation, batch_size) if validation_dataset is not None else None
    repeated = worker_shard(strategy)[1] > 1
    if repeated:
        # Shards of different sizes must not leave a worker waiting in a collective: repeat
        # the data and agree on one step count.
        # Each worker's batches (of the global size) are re-batched over all replicas in sync,
        # so a worker consumes batch * local replicas / replicas in sync examples per step.
        if n_train is None or not batch_size:
            raise ValueError("multi-worker training needs n_train and batch_size")
        local_replicas = len(strategy.extended.worker_devices)
        per_worker = max(1, batch_size * local_replicas // strategy.num_replicas_in_sync)
        train_steps = agree_steps(strategy, max(1, math.ceil(n_train / per_worker)))
        train_dataset = train_dataset.repeat()
        if validation_dataset is not None:
            val_steps = agree_steps(strategy, max(1, math.ceil((n_validation or 1) / per_worker)))
            validation_dataset = validation_dataset.repeat()
    if steps_per_epoch:
        train_steps = min(train_steps, steps_per_epoch) if train_steps else steps_per_epoch
    return DistributedData(
        train=strategy.experimental_distribute_dataset(train_dataset),
        validation=(strategy.experimental_distribute_dataset(validation_dataset)
                    if validation_dataset is not None else None),
        train_steps=train_steps, validation_steps=val_steps, repeated=repeated)


def train(step: Step, train_dataset, validation_dataset=None, *, strategy, out_dir, epochs: int,
          phase: str = "train", schedule: Schedule | None = None, n_train: int | None = None,
          n_validation: int | None = None, batch_size: int | None = None, steps_per_epoch: int | None = None,
          restore_best: bool = True, initial_best: float = math.inf, quiet: bool = False,
          log=print) -> TrainResult:
    """Train ``step`` for ``epochs`` epochs of phase ``phase``, resuming from ``<out_dir>/checkpoints/<phase>``.

    ``step``: a :class:`snemo.steps.Step` (e.g. ``ClassifierStep(model, learning_rate=1e-3)``), its
    models built under ``strategy.scope()``. ``train_dataset`` / ``validation_dataset``:
    ``tf.data.Dataset`` of (inputs, targets) batched with the *global* batch size (inputs and
    targets a tensor or a dict of tensors); see :func:`distribute` for ``n_train``,
    ``n_validation``, ``batch_size`` and ``steps_per_epoch``. ``schedule``: learning rate and early
    stopping (:class:`Schedule`, default constant, no early stopping). ``initial_best``: the
    monitored value the phase must beat to replace the best model (pass the previous phase's
    ``best_val_loss``); ``restore_best``: put the best weights back at the end of the phase.
    ``log``: prints the per-epoch lines (chief only; ``quiet`` silences them and the progress bar).

    ``history.json`` holds ``{"epochs": [record, ...]}``, one record per completed epoch of every
    phase: phase, epoch (1-based within the phase), each of the step's ``metric_names`` and
    ``val_<name>`` (None without validation; for the classifier step loss, accuracy, val_loss,
    val_accuracy), learning_rate, samples (training examples seen, all workers), seconds (wall time
    of the epoch), samples_per_second. Returns a :class:`TrainResult`.
    """
    if not isinstance(step, Step):
        raise ValueError(f"train() takes a step object (snemo.steps.Step, e.g. ClassifierStep(model)), "
                         f"got {type(step).__name__}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    reported = set(step.metric_names) | {"val_" + name for name in step.metric_names}
    if step.monitor not in reported:
        raise ValueError(f"{type(step).__name__}.monitor {step.monitor!r} is none of {sorted(reported)}")
    chief = is_chief(strategy)
    scratch = None if chief else tempfile.mkdtemp(prefix="snemo-worker-")
    write_dir = Path(out_dir) if chief else Path(scratch)
    write_dir.mkdir(parents=True, exist_ok=True)
    try:
        loop = Phase(step, strategy=strategy, out_dir=Path(out_dir), write_dir=write_dir, phase=phase, epochs=epochs,
                     schedule=Schedule() if schedule is None else schedule, restore_best=restore_best,
                     initial_best=initial_best, quiet=quiet, log=log)
        loop.restore()
        data = distribute(strategy, train_dataset, validation_dataset, n_train=n_train, n_validation=n_validation,
                          batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        train_function, evaluate_function = replica_functions(step, strategy)
        for epoch in range(loop.resumed_from, epochs):
            if loop.stopped:
                break
            loop.end_epoch(epoch, loop.run_epoch(epoch, data, train_function, evaluate_function))
        return loop.finish(validated=data.validation is not None)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def predict(model, dataset, *, log_progress: bool = False, total: int | None = None):
    """Run ``model`` over ``dataset`` of (inputs, targets) on this process; no strategy, no collectives.

    Returns (targets, predictions) as NumPy arrays concatenated over batches, e.g. (N, C) one-hot
    labels and (N, C) softmax outputs, in dataset order.
    """
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    @tf.function(autograph=False)  # no Python control flow to convert
    def forward(inputs):
        return model(inputs, training=False)

    targets, outputs = [], []
    for inputs, target in tqdm(dataset, total=total, desc="predict", unit="batch", disable=not log_progress,
                               file=sys.stderr, mininterval=1.0, leave=False):
        outputs.append(forward(inputs).numpy())
        targets.append(target.numpy())
    if not outputs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(targets), np.concatenate(outputs)
