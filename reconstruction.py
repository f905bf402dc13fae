"""The steps of ``reconstruct.py`` between reading a chunk and writing it: pre-filter, calorimeter cells.

Every function works on a whole :class:`~snemo.events.EventBatch` chunk with vectorised NumPy (no
loop per event or per hit); TensorFlow is imported only by the model loaders.

* :func:`isolated_hits` / :func:`keep_hits`: the isolated-hit pre-filter (a hit with no other hit
  of its event in the 8 neighbouring cells of its side: layer +-1, column +-1) and the batch of
  the hits that pass it;
* :func:`load_calorimeter`: a trained single-label or multi-label calorimeter model
  (:mod:`architectures.calorimeter`) with the views it reads;
* :func:`clustered_cells`: one cell per predicted cluster from the single-label model;
* :func:`multilabel_cells`: the top k cells of each unclustered event from the multi-label model,
  k = the event's predicted number of tracks.

Both calorimeter functions return :class:`Cells`: flat per-predicted-track arrays and the number of
predicted tracks per event (the ``ntrack`` counter of the ``reco`` tree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snemo import geometry as geo
from snemo.calorimeter_metrics import cell_of_index, decode_top_k
from snemo.events import EventBatch, offsets_from_counts

CALO_MODES = ("clustered", "multilabel", "none")
_PAD = 1  # one empty cell around each side's (9, 113) grid, so that neighbour keys never wrap


# ------------------------------------------------------------------------------------------------
# Pre-filter
# ------------------------------------------------------------------------------------------------
def isolated_hits(batch: EventBatch, *, block_events: int = 16384) -> np.ndarray:
    """Per hit (n_hits,) bool: True where no OTHER cell of the same event and side is hit among the 8
    neighbours (layer +-1, column +-1) of the hit's cell.

    A cell that the input lists twice is one cell: two listings of an otherwise lonely cell are
    isolated. Layer 0 of side 0 and layer 0 of side 1 face each other across the foil and are not
    neighbours. Vectorised: the hits of ``block_events`` events at a time are set in a padded
    occupancy grid (2.5 kB per event) and each hit looks up its 8 neighbouring cells.
    """
    layers, columns = geo.N_LAYERS + 2 * _PAD, geo.N_COLUMNS + 2 * _PAD
    event = batch.hit_event_index()
    side, layer, column = (batch.hits[name].astype(np.int64) for name in ("grid_side", "grid_layer", "grid_column"))
    offsets = [d_layer * columns + d_column for d_layer in (-1, 0, 1) for d_column in (-1, 0, 1)
               if (d_layer, d_column) != (0, 0)]
    neighbour = np.zeros(len(event), dtype=bool)
    hit_offsets = np.asarray(batch.hit_offsets) - batch.hit_offsets[0]
    for first in range(0, len(batch), block_events):
        last = min(first + block_events, len(batch))
        hits = slice(hit_offsets[first], hit_offsets[last])
        key = (((event[hits] - first) * geo.N_SIDES + side[hits]) * layers + layer[hits] + _PAD) * columns \
            + column[hits] + _PAD  # (block hits,) index into the padded grid of the block
        occupied = np.zeros((last - first) * geo.N_SIDES * layers * columns, dtype=bool)
        occupied[key] = True
        neighbour[hits] = np.logical_or.reduce([occupied[key + offset] for offset in offsets])
    return ~neighbour


def keep_hits(batch: EventBatch, keep) -> EventBatch:
    """The events of ``batch`` with only the hits where ``keep`` (n_hits,) bool is True, in input order.

    Hit fields only (no truth tracks: their ``track_split`` would no longer fit); same events,
    ``files``, ``file_index`` and ``entry``. Returns ``batch`` itself when every hit is kept.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return batch
    counts = np.bincount(batch.hit_event_index()[keep], minlength=len(batch))
    return EventBatch(offsets_from_counts(counts), {name: values[keep] for name, values in batch.hits.items()},
                      np.zeros(len(batch) + 1, np.int64), {"track_split": np.zeros(0, np.int32)},
                      files=batch.files, file_index=batch.file_index, entry=batch.entry)


# ------------------------------------------------------------------------------------------------
# Calorimeter models
# ------------------------------------------------------------------------------------------------
@dataclass
class CaloModel:
    """A trained calorimeter model: mode "single" or "multi", the views it reads, its extra channels."""

    model: object
    mode: str
    views: tuple
    radius_channel: bool
    forward: object = None
    z_channel: bool = False
    line_input: bool | int = False  # or the number of line features the model reads
    prior: bool = False  # a multi-label model that reads the Hough lines' candidate cells (calorimeter_prior)

    def predict(self, events: EventBatch, make_inputs, batch_size: int) -> np.ndarray:
        """The cell scores of ``events``, ``batch_size`` events at a time (memory bounded by the batch).

        ``make_inputs(part)``: the model inputs of an EventBatch slice (an array or a dict by view).
        Returns (n, 330) for the single-label model, (n, 660) for the multi-label one (its ``cells``
        output when it also has a count head)."""
        width = geo.CALO_GRID_CELLS * (1 if self.mode == "single" else geo.N_SIDES)
        scores = np.zeros((len(events), width), dtype=np.float32)
        for start in range(0, len(events), batch_size):
            output = self.forward(make_inputs(events[start:start + batch_size]))
            scores[start:start + batch_size] = np.asarray(output["cells"] if isinstance(output, dict) else output)
        return scores


def load_calorimeter(path, mode: str, *, flag: str) -> CaloModel:
    """Load a calorimeter model (safe mode): ``mode`` "single" (330 outputs) or "multi" (660 outputs).

    Raises ValueError naming ``flag`` and ``path`` when the file does not hold such a model.
    """
    import clustering_inference as inference
    from architectures.calorimeter import input_channels, input_views, reads_prior
    from snemo import cli

    model = cli.load_keras_model(path, flag=flag)
    try:
        names = input_views(model)
    except ValueError as error:
        raise ValueError(f"{flag} {path}: {error}") from None
    output = model.output["cells"] if isinstance(model.output, dict) and "cells" in model.output else model.output
    width = output.shape[-1] if hasattr(output, "shape") else None
    wanted = geo.CALO_GRID_CELLS if mode == "single" else geo.N_SIDES * geo.CALO_GRID_CELLS
    if width != wanted:
        kind = "single-label (330 cells of one side)" if mode == "single" else "multi-label (660 cells)"
        raise ValueError(f"{flag} {path}: has {width} cell outputs, a {kind} model has {wanted}")
    try:
        channels = input_channels(model)
    except ValueError as error:
        raise ValueError(f"{flag} {path}: {error}") from None
    return CaloModel(model, mode, names, channels["radius_channel"], inference.forward_function(model),
                     channels["z_channel"], channels["line_input"], reads_prior(model))


@dataclass
class Cells:
    """Predicted calorimeter cells: flat per-predicted-track arrays and the tracks per event.

    ``side``, ``column``, ``row`` int8 (22 x 15 grid), ``score`` float32 (the model's probability of
    the cell), ``cluster`` int16 (the cluster label, -1 for the multi-label model); ``per_event``
    int64 (n_events,): predicted tracks of each event, the counter ``ntrack``."""

    side: np.ndarray
    column: np.ndarray
    row: np.ndarray
    score: np.ndarray
    cluster: np.ndarray
    per_event: np.ndarray


def clusters_as_events(batch: EventBatch, labels) -> tuple[EventBatch, np.ndarray, np.ndarray]:
    """One event per predicted cluster: (clusters, event of each cluster, label of each cluster).

    ``labels`` (n_hits,) int, 0..k-1 per event, -1 noise. Clusters come ordered by (event, label);
    each holds its hits in input order (hit fields only).
    """
    labels = np.asarray(labels, dtype=np.int64)
    event = batch.hit_event_index()
    on = np.flatnonzero(labels >= 0)
    order = on[np.lexsort((on, labels[on], event[on]))]  # (m,) hits grouped by (event, label), input order inside
    key = event[order] * (int(labels.max(initial=0)) + 1) + labels[order]
    start = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    cluster_event, cluster_label = event[order][start], labels[order][start]
    sizes = np.diff(np.r_[np.flatnonzero(start), len(key)])
    clusters = EventBatch(offsets_from_counts(sizes), {name: values[order] for name, values in batch.hits.items()},
                          np.zeros(len(sizes) + 1, np.int64), {"track_split": np.zeros(0, np.int32)})
    return clusters, cluster_event, cluster_label


def clustered_cells(calo: CaloModel, batch: EventBatch, labels, *, batch_size: int = 1024) -> Cells:
    """The single-label model's cell for every predicted cluster of ``batch`` (``labels`` (n_hits,)).

    Each cluster is drawn alone, folded onto side 1, as in training
    (:func:`datasets.associated_calohit_singlelabel.model_inputs`); the cell's side is the side of
    the cluster's hits (:func:`~datasets.associated_calohit_singlelabel.track_side`).
    """
    from datasets import associated_calohit_singlelabel as single

    clusters, cluster_event, cluster_label = clusters_as_events(batch, labels)
    scores = calo.predict(clusters, lambda part: single.model_inputs(part, calo.views, calo.radius_channel,
                                                                          z_channel=calo.z_channel,
                                                                          line_input=calo.line_input),
                          batch_size)  # (m, 330)
    best = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    row, column = np.divmod(best, geo.CALO_GRID_COLUMNS)
    return Cells(single.track_side(clusters).astype(np.int8), column.astype(np.int8), row.astype(np.int8),
                 scores[np.arange(len(best)), best].astype(np.float32), cluster_label.astype(np.int16),
                 np.bincount(cluster_event, minlength=len(batch)).astype(np.int64))


def multilabel_cells(calo: CaloModel, batch: EventBatch, n_tracks, *, batch_size: int = 1024) -> Cells:
    """The multi-label model's top ``n_tracks[i]`` cells of every (unclustered) event, by decreasing score.

    A model that reads candidate cells gets those of :func:`calorimeter_prior.line_prior_cells`.

    ``n_tracks`` (n,) int: cells to decode per event (the counter's prediction, 0 for an event
    without hits); ``calo_cluster`` is -1.
    """
    from calorimeter_prior import candidates_for
    from datasets import associated_calohit_multilabel as multi

    prior = candidates_for(calo.prior)
    k = np.minimum(np.asarray(n_tracks, dtype=np.int64), geo.N_SIDES * geo.CALO_GRID_CELLS)
    scores = calo.predict(batch, lambda part: multi.model_inputs(part, calo.views, calo.radius_channel, prior),
                          batch_size)  # (n, 660)
    cells, cell_scores = decode_top_k(scores, k)  # (n, max k), padded with -1 / NaN
    chosen = cells >= 0
    side, column, row = cell_of_index(cells[chosen])
    return Cells(side.astype(np.int8), column.astype(np.int8), row.astype(np.int8),
                 cell_scores[chosen].astype(np.float32), np.full(int(chosen.sum()), -1, np.int16), k)
