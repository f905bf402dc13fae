"""The one training loop of the toolkit: custom ``strategy.run`` + ``GradientTape`` steps.

Keras 3 ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585), so every
script trains through :func:`train`, which works the same under the default (CPU) strategy,
``OneDeviceStrategy``, ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy``:

* ``@tf.function`` train / evaluation steps run with ``strategy.run``; the per-example loss is summed
  and divided by the *global* number of examples in the step (``tf.nn.compute_average_loss`` with
  the global batch size, counted exactly so a short last batch is weighted right);
* ``keras.metrics.Mean`` trackers (loss, accuracy; train and validation), reset every epoch;
* a progress bar (tqdm, on standard error), ``history.json``, TensorBoard scalars in
  ``<out>/tensorboard`` and a ``tf.train.CheckpointManager`` in ``<out>/checkpoints/<phase>`` over
  the model, the optimizer and the loop state (epoch, best validation loss, early-stopping count),
  saved after every epoch: a killed job started again with the same ``--out`` resumes after its
  last completed epoch and stops at the requested total;
* the model with the best validation loss is saved as ``<out>/model.keras`` and, by default, its
  weights are put back into the model at the end of the phase;
* several phases (e.g. frozen branches, then fine-tuning) are separate calls with their own
  ``phase`` name, each with its own checkpoints and resumable on its own.

Under a multi-worker strategy only the chief writes ``<out>``; the other workers write the same
files to a temporary folder that is deleted afterwards, as the TensorFlow documentation recommends
(checkpoint and model saving may need every worker to take part).
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
from typing import Callable

from snemo.jsonfile import json_safe, write_json
from snemo.strategy import is_chief, worker_shard

HISTORY_FILE = "history.json"
MODEL_FILE = "model.keras"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history``: every epoch record of ``history.json`` (all phases so far, see :func:`train`);
    ``best_val_loss``: lowest validation loss of this phase (or the ``initial_best`` passed in),
    ``inf`` without validation; ``epochs_done``: completed epochs of this phase; ``stopped_early``:
    early stopping ended the phase; ``resumed_from``: completed epochs found in the checkpoint.
    """

    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    epochs_done: int = 0
    stopped_early: bool = False
    resumed_from: int = 0


def categorical_loss(y_true, y_pred):
    """Per-example categorical cross-entropy, (B, C) one-hot and softmax -> (B,)."""
    import keras

    return keras.losses.categorical_crossentropy(y_true, y_pred)


def categorical_correct(y_true, y_pred):
    """Per-example 1.0 where argmax(prediction) == argmax(label), (B, C) -> (B,) float32."""
    import tensorflow as tf

    return tf.cast(tf.equal(tf.argmax(y_true, axis=-1), tf.argmax(y_pred, axis=-1)), tf.float32)


def set_trainable(model, trainable: bool, layer_names=None) -> None:
    """Freeze (``False``) or unfreeze (``True``) the whole model or the named layers (sub-models too).

    Frozen BatchNormalization layers also run in inference mode (Keras 3 behaviour), as transfer
    learning wants. Call before :func:`train`: each call of :func:`train` traces its own step.
    """
    if layer_names is None:
        model.trainable = trainable
        return
    for name in layer_names:
        model.get_layer(name).trainable = trainable


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


def _local_steps(dataset, n_examples, batch_size) -> int | None:
    import tensorflow as tf

    cardinality = int(dataset.cardinality().numpy())
    if cardinality >= 0:
        return cardinality
    if n_examples is not None and batch_size:
        return max(1, math.ceil(n_examples / batch_size))
    return None


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


def train(model, train_dataset, validation_dataset=None, *, strategy, out_dir, epochs: int,
          learning_rate: float = 1e-3, phase: str = "train", n_train: int | None = None,
          n_validation: int | None = None, batch_size: int | None = None,
          steps_per_epoch: int | None = None, lr_schedule: str = "constant", min_lr_fraction: float = 0.01,
          plateau_patience: int = 2, plateau_factor: float = 0.5, early_stopping: int = 0,
          restore_best: bool = True, initial_best: float = math.inf,
          loss_fn: Callable = categorical_loss, correct_fn: Callable = categorical_correct,
          optimizer=None, model_path=None, quiet: bool = False, log=print) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs of phase ``phase``, resuming from ``<out_dir>/checkpoints/<phase>``.

    ``model``: a Keras model built (or loaded) under ``strategy.scope()``; its current
    ``trainable`` flags decide which variables are trained. ``train_dataset`` /
    ``validation_dataset``: ``tf.data.Dataset`` of (inputs, targets) batched with the *global*
    batch size (inputs a tensor or a dict of tensors); they are distributed here with
    ``strategy.experimental_distribute_dataset``. ``n_train`` / ``n_validation`` / ``batch_size``
    give the step counts when the dataset cardinality is unknown. ``steps_per_epoch``: optional cap.
    ``lr_schedule``: "constant", "cosine" (per epoch from ``learning_rate`` to
    ``min_lr_fraction * learning_rate``) or "plateau" (multiply by ``plateau_factor`` after
    ``plateau_patience`` epochs without a lower validation loss). ``early_stopping``: stop after that
    many epochs without improvement (0: never). ``loss_fn(y, p) -> (B,)`` per-example loss;
    ``correct_fn(y, p) -> (B,)`` per-example score averaged as "accuracy". ``optimizer``: default
    Adam(``learning_rate``), created under the strategy scope; a given optimizer keeps its own
    learning rate (unless a schedule sets it). ``model_path``: where the best model goes (default
    ``<out_dir>/model.keras``); ``initial_best``: validation loss the phase must beat to replace it
    (pass the previous phase's ``best_val_loss``).

    ``history.json`` holds ``{"epochs": [record, ...]}``, one record per completed epoch of every
    phase: phase, epoch (1-based within the phase), loss, accuracy, val_loss, val_accuracy (None
    without validation), learning_rate, samples (training examples seen, all workers), seconds (wall
    time of the epoch), samples_per_second.
    Returns a :class:`TrainResult`.
    """
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if lr_schedule not in ("constant", "cosine", "plateau"):
        raise ValueError(f"lr_schedule must be constant, cosine or plateau, got {lr_schedule!r}")
    if learning_rate <= 0:
        raise ValueError(f"learning rate must be positive, got {learning_rate}")
    chief = is_chief(strategy)
    n_workers = worker_shard(strategy)[1]
    out_dir = Path(out_dir)
    scratch = None
    if chief:
        write_dir = out_dir
    else:
        scratch = tempfile.mkdtemp(prefix="snemo-worker-")
        write_dir = Path(scratch)
    write_dir.mkdir(parents=True, exist_ok=True)
    model_path = Path(model_path) if model_path is not None else out_dir / MODEL_FILE
    say = (lambda *a, **k: None) if (quiet or not chief) else log

    try:
        # ---- state: model, optimizer, loop counters, all in one checkpoint ----------------------
        trainable_variables = model.trainable_variables
        if not trainable_variables:
            raise ValueError(f"phase '{phase}': the model has no trainable variables")
        own_optimizer = optimizer is None
        with strategy.scope():
            if own_optimizer:
                optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
            optimizer.build(trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(float(initial_best), dtype=tf.float64, trainable=False, name="best_val_loss")
        bad_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_without_improvement")
        stopped_var = tf.Variable(False, trainable=False, name="stopped_early")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, best=best_var,
                                         bad=bad_var, stopped=stopped_var)
        manager = tf.train.CheckpointManager(checkpoint, str(write_dir / "checkpoints" / phase), max_to_keep=2)
        resumed_from = 0
        latest = tf.train.latest_checkpoint(str(out_dir / "checkpoints" / phase))
        if latest is not None:
            checkpoint.restore(latest)
            resumed_from = int(epoch_var.numpy())
            say(f"[{phase}] resuming from {latest} after epoch {resumed_from}")
        if resumed_from == 0 and own_optimizer:
            optimizer.learning_rate = learning_rate
        # Best weights are kept in memory on every worker (so all workers agree); on resume they
        # come from the best model file of the interrupted run.
        best_weights = None
        if (0 < resumed_from < epochs and restore_best and model_path.exists()
                and math.isfinite(float(best_var.numpy()))):
            best_weights = keras.saving.load_model(model_path, safe_mode=True, compile=False).get_weights()

        history = [r for r in read_history(out_dir)
                   if r.get("phase") != phase or r.get("epoch", 0) <= resumed_from]
        offset = sum(1 for r in history if r.get("phase") != phase)

        # ---- data -------------------------------------------------------------------------------
        train_steps = _local_steps(train_dataset, n_train, batch_size)
        val_steps = (_local_steps(validation_dataset, n_validation, batch_size)
                     if validation_dataset is not None else None)
        if n_workers > 1:
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
        dist_train = strategy.experimental_distribute_dataset(train_dataset)
        dist_val = (strategy.experimental_distribute_dataset(validation_dataset)
                    if validation_dataset is not None else None)
        train_iter = iter(dist_train) if n_workers > 1 else None
        val_iter = iter(dist_val) if (n_workers > 1 and dist_val is not None) else None

        # ---- steps ------------------------------------------------------------------------------
        sum_op = tf.distribute.ReduceOp.SUM

        def replica_train(inputs, targets):
            context = tf.distribute.get_replica_context()
            local_n = tf.cast(tf.shape(targets)[0], tf.float32)
            global_n = context.all_reduce(sum_op, local_n)  # exact global batch, short last batch too
            with tf.GradientTape() as tape:
                predictions = model(inputs, training=True)
                per_example = loss_fn(targets, predictions)  # (B,)
                loss = tf.nn.compute_average_loss(
                    per_example, global_batch_size=tf.cast(tf.maximum(global_n, 1.0), tf.int64))
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            gradients = tape.gradient(loss, trainable_variables)
            optimizer.apply_gradients(zip(gradients, trainable_variables))
            return tf.reduce_sum(per_example), tf.reduce_sum(correct_fn(targets, predictions)), local_n

        def replica_eval(inputs, targets):
            predictions = model(inputs, training=False)
            return (tf.reduce_sum(loss_fn(targets, predictions)), tf.reduce_sum(correct_fn(targets, predictions)),
                    tf.cast(tf.shape(targets)[0], tf.float32))

        # autograph=False: no tensor-dependent Python control flow here, and traced functions then
        # never re-read this file (a long job keeps working while the source is being edited).
        @tf.function(autograph=False)
        def train_step(batch):
            sums = strategy.run(replica_train, args=batch)
            return [strategy.reduce(sum_op, value, axis=None) for value in sums]

        @tf.function(autograph=False)
        def eval_step(batch):
            sums = strategy.run(replica_eval, args=batch)
            return [strategy.reduce(sum_op, value, axis=None) for value in sums]

        trackers = {name: keras.metrics.Mean(name=name) for name in ("loss", "accuracy", "val_loss", "val_accuracy")}

        def update(prefix, loss_sum, correct_sum, n):
            # Tensors in, no host synchronisation: the next step can be dispatched at once.
            safe_n = tf.maximum(n, 1.0)
            trackers[prefix + "loss"].update_state(loss_sum / safe_n, sample_weight=n)
            trackers[prefix + "accuracy"].update_state(correct_sum / safe_n, sample_weight=n)

        def batches(dist, iterator, steps):
            if iterator is not None:  # multi-worker: repeated data, agreed steps
                for _ in range(steps):
                    yield next(iterator)
            else:
                for i, batch in enumerate(dist):
                    if steps is not None and i >= steps:
                        break
                    yield batch

        summary_dir = write_dir / "tensorboard"
        writer = tf.summary.create_file_writer(str(summary_dir)) if chief else tf.summary.create_noop_writer()
        stopped = bool(stopped_var.numpy())
        if resumed_from >= epochs or stopped:
            say(f"[{phase}] already complete ({resumed_from} epoch(s){', stopped early' if stopped else ''})")

        # ---- epochs -----------------------------------------------------------------------------
        for epoch in range(resumed_from, epochs):
            if stopped:
                break
            if lr_schedule == "cosine":
                fraction = epoch / max(epochs - 1, 1)
                optimizer.learning_rate = learning_rate * (
                    min_lr_fraction + (1 - min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * fraction)))
            current_lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            for tracker in trackers.values():
                tracker.reset_state()
            start = time.time()
            n_seen = tf.constant(0.0)
            bar = tqdm(total=train_steps, desc=f"[{phase}] epoch {epoch + 1}/{epochs}", unit="step",
                       disable=quiet or not chief, file=sys.stderr, mininterval=1.0, leave=False)
            for step, batch in enumerate(batches(dist_train, train_iter, train_steps)):
                loss_sum, correct_sum, n = train_step(batch)
                update("", loss_sum, correct_sum, n)
                n_seen += n
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{float(trackers['loss'].result()):.4f}",
                                    acc=f"{float(trackers['accuracy'].result()):.4f}")
            bar.close()
            n_seen = float(n_seen)  # waits for the last step
            train_seconds = time.time() - start
            if dist_val is not None:
                for batch in batches(dist_val, val_iter, val_steps):
                    update("val_", *eval_step(batch))
            seconds = time.time() - start
            record = {"phase": phase, "epoch": epoch + 1,
                      "loss": json_safe(float(trackers["loss"].result())),
                      "accuracy": json_safe(float(trackers["accuracy"].result())),
                      "val_loss": json_safe(float(trackers["val_loss"].result())) if dist_val is not None else None,
                      "val_accuracy": json_safe(float(trackers["val_accuracy"].result())) if dist_val is not None else None,
                      "learning_rate": current_lr, "samples": int(n_seen), "seconds": round(seconds, 3),
                      "samples_per_second": round(n_seen / max(train_seconds, 1e-9), 1)}

            # best model, plateau, early stopping
            monitored = record["val_loss"] if record["val_loss"] is not None else None
            improved = monitored is not None and monitored < float(best_var.numpy())
            if improved:
                best_var.assign(monitored)
                bad_var.assign(0)
                if restore_best:
                    best_weights = model.get_weights()
                save_model(model, model_path if chief else write_dir / MODEL_FILE, chief)
            elif monitored is not None:
                bad_var.assign_add(1)
                if lr_schedule == "plateau" and int(bad_var.numpy()) % max(plateau_patience, 1) == 0:
                    optimizer.learning_rate = current_lr * plateau_factor
                if early_stopping and int(bad_var.numpy()) >= early_stopping:
                    stopped_var.assign(True)
                    stopped = True
            # History first, checkpoint last: a job killed in between redoes this epoch and its record
            # is dropped on resume; the other order would lose the record of a checkpointed epoch.
            history.append(record)
            if chief:
                write_json(out_dir / HISTORY_FILE, {"epochs": history})
            epoch_var.assign(epoch + 1)
            manager.save(checkpoint_number=epoch + 1)
            with writer.as_default(step=offset + epoch + 1):
                for key in ("loss", "accuracy"):
                    tf.summary.scalar(f"{key}/train", record[key])
                    if record["val_" + key] is not None:
                        tf.summary.scalar(f"{key}/validation", record["val_" + key])
                tf.summary.scalar("learning_rate", current_lr)
                tf.summary.scalar("samples_per_second", record["samples_per_second"])
            writer.flush()
            val_text = (f", val_loss {record['val_loss']:.4f}, val_accuracy {record['val_accuracy']:.4f}"
                        if record["val_loss"] is not None else "")
            say(f"[{phase}] epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}, accuracy {record['accuracy']:.4f}"
                f"{val_text}, lr {current_lr:.3g}, {seconds:.1f} s, {record['samples_per_second']:.0f} samples/s"
                f"{' (best)' if improved else ''}{' - early stop' if stopped else ''}")

        # ---- end of phase -----------------------------------------------------------------------
        epochs_done = int(epoch_var.numpy())
        if dist_val is None:
            save_model(model, model_path if chief else write_dir / MODEL_FILE, chief)  # no validation: final
        elif restore_best and best_weights is not None and epochs_done > resumed_from:
            model.set_weights(best_weights)
            manager.save(checkpoint_number=epochs_done)  # a rerun of a finished phase restores these weights
        elif (restore_best and best_weights is None and epochs_done > resumed_from and model_path.exists()
              and math.isfinite(float(initial_best))):
            # This phase never beat the previous one: keep the previous phase's best model.
            model.set_weights(keras.saving.load_model(model_path, safe_mode=True, compile=False).get_weights())
            manager.save(checkpoint_number=epochs_done)
        return TrainResult(history=history, best_val_loss=float(best_var.numpy()), epochs_done=epochs_done,
                           stopped_early=bool(stopped_var.numpy()), resumed_from=resumed_from)
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
