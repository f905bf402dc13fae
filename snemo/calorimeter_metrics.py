"""Calorimeter association: cell indices, top-k decoding and metrics, vectorised over events.

Cells are those of the 22 x 15 label grid of DESIGN.md. A *grid index* (one side) is
``row * 22 + column`` (0..329, :func:`snemo.geometry.calo_grid_index`); a *cell index* over both
sides is ``side * 330 + grid index`` (0..659), the order of the multi-label model's outputs.

Decoding (:func:`decode_top_k`): the k highest-scoring cells of an event, each cell at most once,
in decreasing score. An event in which two tracks hit the same cell therefore has fewer distinct
truth cells than tracks and can never be decoded exactly: ``exact_set_ceiling`` says how many
events can.

Single-label metrics (:func:`single_label_metrics`, one example per track):

* ``n_tracks``: tracks evaluated;
* ``cell_accuracy``: predicted (column, row) equals the truth (the side comes from the track's hits);
* ``column_accuracy``, ``row_accuracy``: the column alone, the row alone;
* ``by_tracks``: the same per number of tracks of the track's event, {"1": {...}, "2": ...}.

Multi-label metrics (:func:`multi_label_metrics`, one example per event, k cells decoded):

* ``n_events``;
* ``exact_set_match``: the decoded cells equal the truth cells (as a multiset: k decoded distinct
  cells against the k tracks' cells, so an event with a shared cell never matches);
* ``exact_set_ceiling``: fraction of events whose tracks hit k distinct cells (the best possible
  ``exact_set_match``);
* ``cell_precision``: decoded cells that are truth cells / decoded cells (summed over events);
* ``cell_recall``: distinct truth cells decoded / distinct truth cells (summed over events);
* ``jaccard``: mean over events of |decoded & truth| / |decoded | truth| (distinct cells);
* ``column_top_k``: the original project's column-only score: the cell scores summed over sides
  and rows give 22 column scores; the fraction of true tracks whose column is among the k
  highest-scoring columns (each track counted, two tracks in one column both found if it is
  there);
* ``by_tracks``: the same per true number of tracks.

Empty denominators give NaN (``null`` in JSON), never a crash or a zero.
"""

from __future__ import annotations

import numpy as np

from snemo import geometry as geo

__all__ = ["N_CELLS", "cell_index", "cell_of_index", "decode_top_k", "column_scores", "single_label_metrics", "multi_label_metrics",
           "plot_by_tracks"]

N_CELLS = geo.N_SIDES * geo.CALO_GRID_CELLS  # 660


def cell_index(side, column, row) -> np.ndarray:
    """Cell index over both sides, side * 330 + row * 22 + column, int64 (same shape as the inputs)."""
    return np.asarray(side, dtype=np.int64) * geo.CALO_GRID_CELLS + geo.calo_grid_index(column, row)


def cell_of_index(index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(side, column, row) int64 arrays of cell indices 0..659 (or grid indices 0..329: side 0)."""
    index = np.asarray(index, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= N_CELLS):
        raise ValueError(f"cell indices must lie in 0..{N_CELLS - 1}, got {index.min()}..{index.max()}")
    side, grid = np.divmod(index, geo.CALO_GRID_CELLS)
    row, column = np.divmod(grid, geo.CALO_GRID_COLUMNS)
    return side, column, row


def decode_top_k(scores, k) -> tuple[np.ndarray, np.ndarray]:
    """The ``k[i]`` highest-scoring cells of each event, each cell once, by decreasing score.

    ``scores``: (N, C) float (e.g. the multi-label model's (N, 660) output); ``k``: (N,) int, the
    number of tracks of each event (0 <= k <= C). Returns (cells, cell scores), (N, max k) each:
    int64 indices padded with -1 and float64 scores padded with NaN beyond ``k[i]``. Ties go to the
    lower index.
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = np.asarray(k, dtype=np.int64)
    if scores.ndim != 2 or k.shape != (scores.shape[0],):
        raise ValueError(f"need scores (N, C) and k (N,), got {scores.shape} and {k.shape}")
    if k.size and (k.min() < 0 or k.max() > scores.shape[1]):
        raise ValueError(f"k must lie in 0..{scores.shape[1]}, got {k.min()}..{k.max()}")
    width = int(k.max(initial=0))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]  # (N, width)
    chosen = np.take_along_axis(scores, order, axis=1)
    keep = np.arange(width)[None, :] < k[:, None]
    return np.where(keep, order, -1), np.where(keep, chosen, np.nan)


def _divide(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _by_tracks(n_tracks, compute) -> dict:
    """{str(k): compute(mask of events with k tracks)} for every k present in ``n_tracks``."""
    return {str(int(value)): compute(n_tracks == value) for value in np.unique(n_tracks)}


def single_label_metrics(true_column, true_row, predicted_column, predicted_row, n_tracks=None) -> dict:
    """Single-label metrics (see the module docstring) of one prediction per track.

    All arguments (N,) ints: the true and predicted grid column (0..21) and row (0..14) of each
    track; ``n_tracks``: the number of tracks of each track's event (None: no ``by_tracks``).
    Example: columns [1, 2], rows [3, 4] predicted as [1, 2], [3, 5] -> cell 0.5, column 1.0, row 0.5.
    """
    arrays = [np.asarray(a, dtype=np.int64) for a in (true_column, true_row, predicted_column, predicted_row)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"columns and rows must be (N,) arrays of one length, got {[a.shape for a in arrays]}")
    column_ok = arrays[0] == arrays[2]
    row_ok = arrays[1] == arrays[3]

    def compute(mask):
        return {"n_tracks": int(mask.sum()), "cell_accuracy": float(_divide((column_ok & row_ok)[mask].sum(), mask.sum())),
                "column_accuracy": float(_divide(column_ok[mask].sum(), mask.sum())),
                "row_accuracy": float(_divide(row_ok[mask].sum(), mask.sum()))}

    result = compute(np.ones(len(column_ok), dtype=bool))
    if n_tracks is not None:
        n_tracks = np.asarray(n_tracks, dtype=np.int64)
        if n_tracks.shape != column_ok.shape:
            raise ValueError(f"n_tracks must be (N,) = {column_ok.shape}, got {n_tracks.shape}")
        result["by_tracks"] = _by_tracks(n_tracks, compute)
    return result


def column_scores(scores) -> np.ndarray:
    """(N, 22) column scores: the (N, 660) cell scores summed over both sides and the 15 rows."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores.reshape(len(scores), geo.N_SIDES * geo.CALO_GRID_ROWS, geo.CALO_GRID_COLUMNS).sum(axis=1)


def multi_label_metrics(scores, true_counts, k=None, n_tracks=None) -> dict:
    """Multi-label metrics (see the module docstring) of (N, 660) cell scores.

    ``true_counts``: (N, 660) number of tracks hitting each cell (the softmax target times the
    number of tracks; it is rounded). ``n_tracks``: (N,) true number of tracks (default the row
    sums of ``true_counts``; give it when ``true_counts`` is a multi-hot target, where a shared
    cell counts once). ``k``: (N,) cells to decode per event (default: the true number of tracks;
    give the count head's prediction for ``--k predicted``). Events are grouped by their TRUE
    number of tracks. Example: truth cells {3, 7}, top scores at 3 and 8 -> exact 0, precision 0.5,
    recall 0.5, Jaccard 1/3.
    """
    scores = np.asarray(scores, dtype=np.float64)
    counts = np.rint(np.asarray(true_counts, dtype=np.float64)).astype(np.int64)
    if scores.ndim != 2 or scores.shape[1] != N_CELLS or counts.shape != scores.shape:
        raise ValueError(f"scores and true_counts must be (N, {N_CELLS}), got {scores.shape} and {counts.shape}")
    n_tracks = counts.sum(axis=1) if n_tracks is None else np.asarray(n_tracks, dtype=np.int64)
    if n_tracks.shape != (len(scores),):
        raise ValueError(f"n_tracks must be ({len(scores)},), got {n_tracks.shape}")
    k = n_tracks if k is None else np.asarray(k, dtype=np.int64)
    cells, _ = decode_top_k(scores, k)
    n = len(scores)
    decoded = np.zeros((n, N_CELLS + 1), dtype=np.int64)  # the last column takes the -1 padding
    np.add.at(decoded, (np.repeat(np.arange(n), cells.shape[1]), cells.ravel()), 1)
    decoded = decoded[:, :N_CELLS] > 0  # (N, 660) bool
    truth = counts > 0
    hits = (decoded & truth).sum(axis=1)
    union = (decoded | truth).sum(axis=1)
    possible = truth.sum(axis=1) == n_tracks
    exact = np.all(decoded == truth, axis=1) & possible
    # Column-only top k: rank the 22 column scores and look up each track's column.
    columns = column_scores(scores)
    top_columns, _ = decode_top_k(columns, np.minimum(k, geo.CALO_GRID_COLUMNS))
    in_top = np.zeros((n, geo.CALO_GRID_COLUMNS + 1), dtype=bool)
    in_top[np.repeat(np.arange(n), top_columns.shape[1]), top_columns.ravel()] = True
    tracks_per_column = counts.reshape(n, geo.N_SIDES * geo.CALO_GRID_ROWS, geo.CALO_GRID_COLUMNS).sum(axis=1)  # (N, 22)
    found_columns = (tracks_per_column * in_top[:, :geo.CALO_GRID_COLUMNS]).sum(axis=1)
    column_tracks = tracks_per_column.sum(axis=1)

    def compute(mask):
        return {"n_events": int(mask.sum()),
                "exact_set_match": float(_divide(exact[mask].sum(), mask.sum())),
                "exact_set_ceiling": float(_divide(possible[mask].sum(), mask.sum())),
                "cell_precision": float(_divide(hits[mask].sum(), decoded[mask].sum())),
                "cell_recall": float(_divide(hits[mask].sum(), truth[mask].sum())),
                "jaccard": float(np.mean(_divide(hits[mask], union[mask]))) if mask.any() else float("nan"),
                "column_top_k": float(_divide(found_columns[mask].sum(), column_tracks[mask].sum()))}

    result = compute(np.ones(n, dtype=bool))
    result["by_tracks"] = _by_tracks(n_tracks, compute)
    return result


def plot_by_tracks(runs: dict, stem, *, fields=("exact_set_match", "column_top_k"), title: str = "") -> list:
    """Plot metrics by number of tracks, one line per run; writes ``<stem>.pdf`` and ``<stem>.png``.

    ``runs``: {label: metrics dict with ``by_tracks`` (e.g. the ``test`` part of two multi-label
    runs' metrics.json, sigmoid and softmax)}. ``fields``: the metrics drawn, one panel each (in %).
    Returns the paths written.
    """
    from snemo.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(fields), figsize=(4.5 * len(fields), 3.6), squeeze=False)
    for axis, name in zip(axes[0], fields):
        for label, metrics in runs.items():
            by = metrics.get("by_tracks", {})
            tracks = sorted(by, key=int)
            values = [100 * v if v is not None else np.nan for v in (by[t].get(name) for t in tracks)]
            axis.plot([int(t) for t in tracks], values, marker="o", label=label)
        axis.set_xlabel("true number of tracks")
        axis.set_ylabel(f"{name.replace('_', ' ')} (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)
