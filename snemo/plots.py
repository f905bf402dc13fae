"""Plots of the toolkit: every figure is saved as both PDF and PNG.

Counting plots: training curves (:func:`plot_history`), the confusion heat map
(:func:`plot_confusion`, rows = TRUE count, columns = PREDICTED count, stated on the plot) and an
event-view page for galleries of misclassified events (:func:`event_views_figure`).
Matplotlib runs with the non-interactive Agg backend (batch jobs have no display).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem, *, dpi: int = 150, close: bool = True, formats=("pdf", "png")) -> list[Path]:
    """Save ``fig`` as ``<stem>.pdf`` and ``<stem>.png`` (``stem`` without extension); returns the paths.

    ``formats``: the file types to write (default both). Each file is written as ``name.tmp`` and
    renamed, so a killed job never leaves a half-written plot.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
        os.replace(tmp, path)
        paths.append(path)
    if close:
        _pyplot().close(fig)
    return paths


def plot_history(history: list[dict], stem, *, title: str = "Training") -> list[Path]:
    """Loss and accuracy per epoch, training and validation, from ``history.json`` records.

    ``history``: records with phase, loss, accuracy, val_loss, val_accuracy (see
    :func:`snemo.training.train`); epochs of successive phases follow one another and the phase
    changes are marked. Writes ``<stem>.pdf`` and ``<stem>.png``; returns the paths.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(history) + 1)

    def column(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in history], dtype=np.float64)

    for axis, key, label in ((axes[0], "loss", "loss (cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        axis.plot(x, column(key), "o-", label="training")
        if np.any(np.isfinite(column("val_" + key))):
            axis.plot(x, column("val_" + key), "s-", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        phases = [r.get("phase", "") for r in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                axis.axvline(i + 0.5, color="grey", linestyle="--")
                axis.text(i + 0.6, axis.get_ylim()[1], phases[i], va="top", fontsize=8, color="grey")
        axis.legend()
    axes[0].set_yscale("log") if np.all(column("loss")[np.isfinite(column("loss"))] > 0) else None
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_confusion(matrix, stem, *, labels=None, title: str = "Track counting") -> list[Path]:
    """Confusion heat map (seaborn): counts on the left, row-normalised percentages on the right.

    ``matrix``: (C, C) counts, rows = TRUE number of tracks, columns = PREDICTED (stated on the
    plot). ``labels``: number of tracks per class (default 1..C). Returns the PDF and PNG paths.
    """
    import seaborn as sns

    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.int64)
    labels = list(range(1, matrix.shape[0] + 1)) if labels is None else list(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        percent = np.where(rows > 0, 100.0 * matrix / np.where(rows > 0, rows, 1), np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", xticklabels=labels, yticklabels=labels, ax=axes[0],
                cbar_kws={"label": "events"})
    sns.heatmap(percent, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=100, xticklabels=labels,
                yticklabels=labels, ax=axes[1], cbar_kws={"label": "% of the true-count row"})
    axes[0].set_title("events")
    axes[1].set_title("row-normalised (%): recall on the diagonal")
    for axis in axes:
        axis.set_xlabel("PREDICTED number of tracks")
        axis.set_ylabel("TRUE number of tracks")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else np.nan
    fig.suptitle(f"{title}: rows = TRUE count, columns = PREDICTED count; accuracy {100 * accuracy:.2f}% "
                 f"on {total} events")
    fig.tight_layout()
    return save_figure(fig, stem)


def event_views_figure(views: dict, *, true_count: int, predicted_count: int, probabilities, labels=None,
                       title: str = ""):
    """One event on one page: top, side and front views, truth, prediction and the softmax output.

    ``views``: {"top": (18, 113), "side": (30, 113), "front": (30, 18)} arrays (0 where no hit
    lies, 1.0 or the hit count where hits lie; a trailing channel axis is dropped).
    ``probabilities``: (C,) softmax output.
    Returns the matplotlib figure (the caller saves it, e.g. into a multi-page PDF).
    """
    plt = _pyplot()
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    labels = list(range(1, len(probabilities) + 1)) if labels is None else list(labels)
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, 3, width_ratios=[4, 1.1, 1.6], height_ratios=[18, 30])
    layout = {"top": (grid[0, 0], "column", "row (layer; foil between 8 and 9)"),
              "side": (grid[1, 0], "column", "z bin (100 mm)"),
              "front": (grid[1, 1], "top-view row", "z bin (100 mm)")}
    for name, (cell, xlabel, ylabel) in layout.items():
        if name not in views:
            continue
        image = np.asarray(views[name])
        image = image[..., 0] if image.ndim == 3 else image
        axis = fig.add_subplot(cell)
        peak = float(image.max())  # above 1 where the view holds hit counts (side): darker = more hits
        axis.imshow(image, origin="lower", aspect="auto", cmap="Greys", vmin=0, vmax=max(1.0, peak),
                    interpolation="nearest")
        axis.set_title(f"{name} view" + (f" (hits per pixel, up to {peak:.0f})" if peak > 1 else ""), fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
        axis.tick_params(labelsize=7)
    axis = fig.add_subplot(grid[:, 2])
    colours = ["tab:green" if label == true_count else ("tab:red" if label == predicted_count else "tab:grey")
               for label in labels]
    axis.bar([str(v) for v in labels], probabilities, color=colours)
    axis.set_ylim(0, 1)
    axis.set_xlabel("number of tracks")
    axis.set_ylabel("softmax output")
    for i, p in enumerate(probabilities):
        axis.text(i, min(p + 0.02, 0.95), f"{p:.3f}", ha="center", fontsize=8)
    axis.set_title("green: true, red: predicted", fontsize=9)
    fig.suptitle(f"{title}  true {true_count} tracks, predicted {predicted_count}".strip())
    fig.tight_layout()
    return fig
