"""Calorimeter association, the task of associated_calorimeter.py: what the script needs and the core must not know.

* :func:`load`: the single-label (tracks, folded onto side 1) or multi-label (events) dataset with
  the run's flags; without --data, the built-in dataset of ``Generator.builtin``; and
  :func:`training_splits`, the same splits with the targets a step trains on;
* :func:`make_step`: the step of the shared training loop: :class:`snemo.steps.ClassifierStep`
  (single label; multi-label without the count head) or :func:`count_head_step` (two heads);
* :func:`init_weights`: ``--init-model``, a trained calorimeter model's weights as the start;
* :func:`report`: the evaluation on the test split that writes ``metrics.json`` and the plots;
* :func:`compare`: the plot of two multi-label runs (sigmoid, softmax) by number of tracks.

    import calorimeter_association as task
    splits = task.load(run)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from Generator.builtin import default_dataset
from snemo import cli


def load(run: cli.Run):
    """Load the dataset of ``--mode`` with the run's flags; returns the loader's ``Splits``.

    Labels: single {"cell": (B, 330), "event_tracks": (B,)}; multi {"cells": (B, 660), "count":
    (B, max_tracks)}. Bad files raise ``EventFileError`` here, before the run folder exists.
    """
    args = run.args
    data = cli.data_source(run, builtin=default_dataset)
    options = dict(view=tuple(args.views), radius_channel=args.radius_channel, batch_size=args.batch_size,
                   split_by=args.split_by, seed=args.seed, cache=args.cache, max_events=args.max_events,
                   streaming=args.streaming, shard=run.shard, skip_out_of_range=args.skip_out_of_range)
    if args.mode == "single":
        from datasets import associated_calohit_singlelabel as loader
        splits = loader.load(data, fold=True, event_tracks=True, z_channel=args.z_channel,
                             line_input=args.line_input, **options)
    else:
        from calorimeter_prior import candidates_for
        from datasets import associated_calohit_multilabel as loader
        splits = loader.load(data, target=args.loss, max_tracks=args.max_tracks, count_target=True,
                             prior=candidates_for(args.line_prior), **options)
    run.record(data={"source": data if isinstance(data, (str, list)) else str(data), "n_train": splits.n_train,
                     "n_validation": splits.n_validation, "n_test": splits.n_test, "shard": list(run.shard),
                     "info": {key: value for key, value in splits.info.items() if key != "class_names"}})
    examples = "tracks" if args.mode == "single" else "events"
    run.log(f"data: {splits.n_train} train, {splits.n_validation} validation, {splits.n_test} test {examples}")
    if splits.n_train == 0:
        raise ValueError("the training split is empty: give more events (--data, --max-events)")
    return splits


def init_weights(run: cli.Run, model, path: str) -> None:
    """Copy the weights of the trained calorimeter model in ``path`` into ``model`` (``--init-model``).

    The file must take the same inputs (names and shapes: views, channels, the line), or a part of
    them (a model trained without --line-prior, for one that reads the candidates). Weights go
    layer by layer, by name: a layer of both must hold arrays of the same shapes; a layer the file
    lacks (the --line-skip layers added to a model trained without them) keeps its start and is
    named in the log; a file layer this model lacks is an error. ValueError naming the flag and the
    file otherwise. Records the file in the run's config.
    """
    import os

    trained = cli.load_keras_model(path, flag="--init-model")

    def inputs(m):
        return sorted((t.name.split(":")[0], tuple(t.shape[1:])) for t in m.inputs)

    if not set(inputs(trained)) <= set(inputs(model)):
        raise ValueError(f"--init-model {path} takes inputs {inputs(trained)}; this run's model takes "
                         f"{inputs(model)} (check --views, --radius-channel, --z-channel, --line-input)")
    theirs = {layer.name: layer for layer in trained.layers if layer.weights}
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    if set(theirs) - set(ours):
        raise ValueError(f"--init-model {path} has layers this architecture lacks: {sorted(set(theirs) - set(ours))} "
                         "(check --mode, --head, --views)")
    for name, layer in theirs.items():
        have = [tuple(w.shape) for w in layer.weights]
        need = [tuple(w.shape) for w in ours[name].weights]
        if have != need:
            raise ValueError(f"--init-model {path}: layer {name} holds weights {have}, this run's needs {need} "
                             "(check --filters, --squeeze, --units, --max-tracks)")
    with run.strategy.scope():
        for name, layer in theirs.items():
            ours[name].set_weights(layer.get_weights())
    run.record(init_model=os.path.abspath(path))
    fresh = sorted(set(ours) - set(theirs))
    run.log(f"weights from {path}" + (f"; new layers kept at their start: {', '.join(fresh)}" if fresh else ""))


def uses_count_head(args) -> bool:
    """True when the run trains the multi-label model with its number-of-tracks head."""
    return args.mode == "multi" and not args.no_count_head


def training_splits(args, splits):
    """``splits`` with the targets the step trains on: the cell target alone, or both heads' dict."""
    if uses_count_head(args):
        return splits
    key = "cell" if args.mode == "single" else "cells"
    pick = lambda inputs, labels: (inputs, labels[key])  # noqa: E731 (a tf.data map, not a Keras layer)
    return dataclasses.replace(splits, train=splits.train.map(pick), validation=splits.validation.map(pick))


def cells_loss(loss: str):
    """Per-example loss of the cell output, (B, C) targets and scores -> (B,).

    "softmax": categorical cross-entropy against tracks per cell / number of tracks; "sigmoid":
    binary cross-entropy averaged over the 660 cells (multi-hot target).
    """
    import keras

    from snemo.steps import categorical_loss

    return categorical_loss if loss == "softmax" else keras.losses.binary_crossentropy


def top_cell_correct(y_true, y_pred):
    """Per-example 1.0 where the highest-scoring cell is a truth cell, (B, C) -> (B,) float32."""
    import tensorflow as tf

    best = tf.argmax(y_pred, axis=-1)
    return tf.cast(tf.gather(y_true, best, axis=1, batch_dims=1) > 0, tf.float32)


def count_head_step(model, *, loss: str, count_weight: float, learning_rate: float):
    """Two-head step: one Adam over the model, loss = cells loss + ``count_weight`` x count cross-entropy.

    ``model`` outputs {"cells", "count"}; the targets are the multi-label loader's dict. Reports
    loss, cells_loss, count_loss, accuracy (the top cell is a truth cell) and count_accuracy.
    """
    import keras
    import tensorflow as tf

    from snemo.steps import (EXAMPLES, MODEL_FILE, Step, batch_size_of, categorical_correct, categorical_loss,
                             global_mean, global_sum, regularisation_loss)

    cell_loss_fn = cells_loss(loss)

    class CountHeadStep(Step):
        metric_names = ("loss", "cells_loss", "count_loss", "accuracy", "count_accuracy")

        def __init__(self):
            self.model, self.optimizer = model, None

        def build(self, strategy):
            with strategy.scope():
                self.optimizer = keras.optimizers.Adam(learning_rate)
                self.optimizer.build(self.model.trainable_variables)

        def trackables(self):
            return {"model": self.model, "optimizer": self.optimizer}

        def best_models(self):
            return {MODEL_FILE: self.model}

        def _sums(self, inputs, targets, training):
            outputs = self.model(inputs, training=training)
            cells = cell_loss_fn(targets["cells"], outputs["cells"])  # (B,)
            count = categorical_loss(targets["count"], outputs["count"])  # (B,)
            sums = {"cells_loss": tf.reduce_sum(cells), "count_loss": tf.reduce_sum(count),
                    "accuracy": tf.reduce_sum(top_cell_correct(targets["cells"], outputs["cells"])),
                    "count_accuracy": tf.reduce_sum(categorical_correct(targets["count"], outputs["count"])),
                    EXAMPLES: batch_size_of(targets["count"])}
            return cells + count_weight * count, sums

        def train_step(self, inputs, targets):
            n = global_sum(batch_size_of(targets["count"]))
            with tf.GradientTape() as tape:
                total, sums = self._sums(inputs, targets, True)
                objective = global_mean(total, n) + regularisation_loss(self.model)
            variables = self.model.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
            return {"loss": tf.reduce_sum(total), **sums}

        def evaluate_step(self, inputs, targets):
            total, sums = self._sums(inputs, targets, False)
            return {"loss": tf.reduce_sum(total), **sums}

    return CountHeadStep()


def make_step(args, model):
    """The run's step object (built under the strategy scope by the loop)."""
    from snemo.steps import ClassifierStep

    if uses_count_head(args):
        return count_head_step(model, loss=args.loss, count_weight=args.count_weight,
                               learning_rate=args.learning_rate)
    if args.mode == "single":
        return ClassifierStep(model, learning_rate=args.learning_rate)
    return ClassifierStep(model, learning_rate=args.learning_rate, loss_fn=cells_loss(args.loss),
                          correct_fn=top_cell_correct)


def predict(model, dataset):
    """(labels, outputs) of ``model`` over ``dataset``, NumPy structures concatenated over batches."""
    import tensorflow as tf

    forward = tf.function(lambda inputs: model(inputs, training=False), autograph=False)
    labels, outputs = [], []
    for inputs, batch_labels in dataset:
        outputs.append(tf.nest.map_structure(lambda t: t.numpy(), forward(inputs)))
        labels.append(tf.nest.map_structure(lambda t: t.numpy(), batch_labels))
    if not labels:
        raise ValueError("the test split is empty: give more events (--data, --max-events)")
    return [tf.nest.map_structure(lambda *parts: np.concatenate(parts), *items) for items in (labels, outputs)]


def evaluate(args, model, splits) -> dict:
    """Test-split metrics of the run (see :mod:`snemo.calorimeter_metrics`), as written to metrics.json."""
    from snemo import geometry as geo
    from snemo import metrics as snm

    labels, outputs = predict(model, splits.test)
    if args.mode == "single":
        true_row, true_column = np.divmod(labels["cell"].argmax(axis=1), geo.CALO_GRID_COLUMNS)
        predicted_row, predicted_column = np.divmod(outputs.argmax(axis=1), geo.CALO_GRID_COLUMNS)
        return {"single_label": snm.single_label_metrics(true_column, true_row, predicted_column, predicted_row,
                                                         labels["event_tracks"])}
    from datasets.associated_calohit_multilabel import cell_counts

    n_tracks = labels["count"].argmax(axis=1) + 1
    scores = outputs["cells"] if isinstance(outputs, dict) else outputs
    if splits.test_events is not None:
        counts, truth = cell_counts(splits.test_events), "test events (exact)"
    elif args.loss == "softmax":
        counts, truth = labels["cells"] * n_tracks[:, None], "softmax targets x number of tracks (exact)"
    else:
        counts, truth = labels["cells"], "multi-hot targets (a cell hit by two tracks counts once)"
    result = {"truth": truth, "k_true": snm.multi_label_metrics(scores, counts, n_tracks=n_tracks)}
    if isinstance(outputs, dict):
        predicted = outputs["count"].argmax(axis=1) + 1
        result["k_predicted"] = snm.multi_label_metrics(scores, counts, k=predicted, n_tracks=n_tracks)
        result["count"] = snm.counting_metrics(n_tracks - 1, predicted - 1, args.max_tracks)
    result["decoding"] = f"k_{args.k}"
    return result


def report(run: cli.Run, model, splits, *, title: str) -> dict | None:
    """Evaluate on this worker's test split and (chief) write metrics.json and the plots; returns the metrics.

    Plots: ``training_curves`` and ``by_tracks`` (the run's metrics by number of tracks), PDF and PNG.
    """
    from snemo import metrics as snm
    from snemo import plots
    from snemo.training import read_history

    args = run.args
    result = evaluate(args, model, splits)
    if not run.chief:
        return None
    headline = result["single_label"] if args.mode == "single" else result[f"k_{args.k}"]
    metrics = {"task": "calorimeter association", "mode": args.mode, "loss": args.loss if args.mode == "multi" else
               "softmax", "views": list(args.views), "split": "test", "test_shard": list(run.shard),
               "model": str(Path(run.out) / "model.keras"), "test": headline, **result}
    snm.write_metrics(run.out / "metrics.json", metrics)
    history = read_history(run.out)
    if history:
        plots.plot_history(history, run.out / "training_curves", title=title)
    fields = ("cell_accuracy", "column_accuracy", "row_accuracy") if args.mode == "single" else \
        ("exact_set_match", "column_top_k", "jaccard")
    snm.plot_by_tracks({title: headline}, run.out / "by_tracks", fields=fields, title=title)
    cli.finish(run)
    print(format_summary(metrics), flush=True)
    print(f"run folder: {run.out}", flush=True)
    return metrics


def _percent(value) -> str:
    return "nan" if value is None or value != value else f"{100 * value:.2f}%"


def format_summary(metrics: dict) -> str:
    """The metrics by number of tracks as a few lines of text."""
    test = metrics["test"]
    names = ["cell_accuracy", "column_accuracy", "row_accuracy"] if metrics["mode"] == "single" else \
        ["exact_set_match", "exact_set_ceiling", "cell_precision", "cell_recall", "jaccard", "column_top_k"]
    lines = [f"{'tracks':>8} {'n':>7} " + " ".join(f"{name:>17}" for name in names)]
    rows = [(key, test["by_tracks"][key]) for key in sorted(test.get("by_tracks", {}), key=int)] + [("all", test)]
    for key, values in rows:
        n = values.get("n_tracks", values.get("n_events"))
        lines.append(f"{key:>8} {n:>7} " + " ".join(f"{_percent(values[name]):>17}" for name in names))
    return "\n".join(lines)


def compare(run_folders, out) -> list:
    """Plot two (or more) multi-label runs' test metrics by number of tracks, labelled by their loss.

    ``run_folders``: run folders holding metrics.json; writes ``<out>/multilabel_by_tracks.{pdf,png}``
    and returns the paths. Raises ValueError naming a folder without multi-label metrics.
    """
    from snemo.calorimeter_metrics import plot_by_tracks
    from snemo.jsonfile import read_json

    runs = {}
    for folder in run_folders:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise ValueError(f"--compare: {path} does not exist")
        metrics = read_json(path)
        if metrics.get("mode") != "multi":
            raise ValueError(f"--compare: {path} is not a multi-label run (mode {metrics.get('mode')!r})")
        runs[f"{metrics.get('loss')} ({Path(folder).name})"] = metrics["test"]
    return plot_by_tracks(runs, Path(out) / "multilabel_by_tracks",
                          fields=("exact_set_match", "column_top_k", "cell_recall"),
                          title="multi-label calorimeter association by loss")
