"""Metrics of the toolkit, defined once; ``metrics.json`` is written next to every model.

Track counting (this part): class ``k`` of a counting model means ``k + 1`` tracks, so the labels
of a ``--max-tracks 4`` model are 1, 2, 3, 4 tracks. Every function takes class indices (0-based)
or one-hot / softmax arrays and is vectorised over events.

The counting metrics (:func:`counting_metrics`) are:

* ``n_events``: number of events evaluated;
* ``accuracy``: fraction of events whose predicted count equals the true count;
* ``labels``: number of tracks of each class, in class order;
* ``recall``: per class, correct / events whose TRUE count is that class (row of the confusion
  matrix); NaN (``null`` in JSON) when no event has that true count;
* ``precision``: per class, correct / events PREDICTED as that class (column); NaN when nothing was
  predicted as that class;
* ``support``: per class, number of events with that true count;
* ``confusion_matrix``: counts, rows = true count, columns = predicted count (note: the original
  scripts printed the transpose);
* ``confusion_matrix_normalised``: each row divided by its sum (NaN rows for absent classes).

Empty denominators give NaN, never a crash or a zero.

Clustering metrics (per-track hit efficiency and purity, double-majority efficiency, fake rate,
perfectly clustered events, adjusted Rand index, the ceiling from truth) live in
:mod:`snemo.clustering_metrics` and are re-exported here: :func:`clustering_metrics`,
:func:`event_statistics`, :func:`summarise`, :func:`ceiling_labels`, :func:`shared_cell_mask`.

Calorimeter-association metrics (single-label cell / column / row accuracy; multi-label exact-set
match, cell precision and recall, Jaccard, column-only top k; each by number of tracks) and the
top-k decoding live in :mod:`snemo.calorimeter_metrics` and are re-exported here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from snemo.calorimeter_metrics import (cell_index, cell_of_index, column_scores, decode_top_k, multi_label_metrics,
                                       plot_by_tracks, single_label_metrics)
from snemo.clustering_metrics import (ceiling_labels, clustering_metrics, event_statistics, shared_cell_mask,
                                     summarise)
from snemo.jsonfile import write_json

__all__ = ["to_class_indices", "confusion_matrix", "counting_metrics_from_confusion", "counting_metrics",
           "write_metrics", "format_confusion", "format_counting_summary", "clustering_metrics", "event_statistics",
           "summarise", "ceiling_labels", "shared_cell_mask", "cell_index", "cell_of_index", "column_scores",
           "decode_top_k", "single_label_metrics", "multi_label_metrics", "plot_by_tracks"]


def to_class_indices(values) -> np.ndarray:
    """Class indices (N,) int64 from indices (N,) or one-hot / probabilities (N, C) (argmax)."""
    values = np.asarray(values)
    if values.ndim == 2:
        return np.argmax(values, axis=1).astype(np.int64)
    if values.ndim == 1:
        return values.astype(np.int64)
    raise ValueError(f"expected class indices (N,) or scores (N, C), got shape {values.shape}")


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix (n_classes, n_classes) int64: rows = true class, columns = predicted class.

    ``y_true`` / ``y_pred``: class indices (N,) or one-hot / softmax (N, C). Classes outside
    0..n_classes-1 raise ValueError.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion

    true, pred = to_class_indices(y_true), to_class_indices(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred have different lengths: {true.shape} and {pred.shape}")
    for name, values in (("y_true", true), ("y_pred", pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} has classes outside 0..{n_classes - 1}: {np.unique(values).tolist()}")
    if true.size == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return sk_confusion(true, pred, labels=np.arange(n_classes)).astype(np.int64)


def _divide(numerator, denominator) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def counting_metrics_from_confusion(matrix, labels=None) -> dict:
    """Counting metrics (see the module docstring) from a confusion matrix (rows true, columns predicted).

    ``labels``: number of tracks of each class (default 1..C). Returns a dict of Python floats and
    lists (NaN where a denominator is empty).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    n_classes = matrix.shape[0]
    labels = list(range(1, n_classes + 1)) if labels is None else [int(v) for v in labels]
    if len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels for {n_classes} classes")
    diagonal = np.diag(matrix)
    support = matrix.sum(axis=1)  # true count per class
    predicted = matrix.sum(axis=0)
    total = int(matrix.sum())
    return {
        "n_events": total,
        "accuracy": float(_divide(diagonal.sum(), total)),
        "labels": labels,
        "recall": _divide(diagonal, support).tolist(),
        "precision": _divide(diagonal, predicted).tolist(),
        "support": support.tolist(),
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalised": _divide(matrix, support[:, None]).tolist(),
    }


def counting_metrics(y_true, y_pred, n_classes: int, labels=None) -> dict:
    """Counting metrics of predictions: accuracy, per-class recall and precision, confusion matrix.

    ``y_true`` / ``y_pred``: class indices (N,) or one-hot / softmax (N, C). Example: truth
    [0, 0, 1, 1], prediction [0, 1, 1, 1] -> accuracy 0.75, recall [0.5, 1.0], precision [1.0, 2/3].
    """
    return counting_metrics_from_confusion(confusion_matrix(y_true, y_pred, n_classes), labels)


def write_metrics(path, metrics: dict) -> Path:
    """Write ``metrics`` as JSON to ``path`` atomically (``.tmp`` then rename); NaN and inf become ``null``.

    Returns the path written.
    """
    return write_json(path, metrics)


def format_confusion(matrix, labels=None, *, title: str = "Confusion matrix") -> str:
    """The confusion matrix as a text table with labelled axes (rows = true count, columns = predicted).

    A last column gives each row's recall. Returns the table as one string (several lines).
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    n_classes = matrix.shape[0]
    labels = list(range(1, n_classes + 1)) if labels is None else list(labels)
    recall = _divide(np.diag(matrix), matrix.sum(axis=1))
    width = max(7, len(str(int(matrix.max(initial=0)))) + 2)
    head = "true \\ predicted"
    lines = [f"{title} (rows = true number of tracks, columns = predicted)",
             f"{head:>16} " + "".join(f"{label:>{width}}" for label in labels) + f"{'recall':>9}"]
    for i, label in enumerate(labels):
        rec = "nan" if math.isnan(recall[i]) else f"{100 * recall[i]:.2f}%"
        lines.append(f"{label:>16} " + "".join(f"{int(v):>{width}}" for v in matrix[i]) + f"{rec:>9}")
    return "\n".join(lines)


def format_counting_summary(metrics: dict) -> str:
    """Confusion table, then accuracy and per-class precision, as printed at the end of a training script."""
    labels = metrics["labels"]
    table = format_confusion(metrics["confusion_matrix"], labels)
    precision = ", ".join(f"{label}: {'nan' if p is None or math.isnan(p) else f'{100 * p:.2f}%'}"
                          for label, p in zip(labels, metrics["precision"]))
    accuracy = metrics["accuracy"]
    accuracy_text = "nan" if accuracy is None or math.isnan(accuracy) else f"{100 * accuracy:.3f}%"
    return (f"{table}\nprecision per predicted count: {precision}\n"
            f"accuracy: {accuracy_text} on {metrics['n_events']} events")
