"""Line candidates for the multi-label calorimeter model: the cells where an event's Hough lines meet the wall.

The multi-label model reads an unclustered event. With ``--line-prior`` it also reads, for every
line that the Hough finder (:func:`clustering_hough.hough_cluster`, refined by its lines, no
count: it stops when no line is left) finds in the event, the grid cell where the line fitted to
that line's hits meets the calorimeter wall (:func:`datasets.line_fit.line_features`, the toys'
grid convention). No truth enters: the same candidates are made at training and at inference.
The model learns which candidates are tracks' cells and where the lines are wrong.

:func:`line_prior_cells` gives them per hit (the cell of the hit's line, -1 for a noise hit), the
form the loaders keep beside the hits; :func:`datasets.associated_calohit_multilabel.prior_images`
turns them into the (n, 660) model input.
"""

from __future__ import annotations

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch


def line_prior_cells(batch: EventBatch, labels=None) -> np.ndarray:
    """Per hit, the wall cell of its Hough line: int16 (n_hits,), side * 330 + grid index, -1 for noise.

    ``labels`` (n_hits,): clusters to use instead of the Hough finder's (-1 noise), e.g. truth in
    tests. Without them, the isolated hits (:func:`reconstruction.isolated_hits`, reconstruct.py's
    pre-filter) are noise and the Hough finder runs on the others, so that the candidates are the
    same whether or not the events were filtered before. Vectorised over the batch.
    """
    import clustering
    import reconstruction
    from clustering_hough import hough_cluster
    from clustering_training import by_label
    from datasets.associated_calohit_singlelabel import track_side
    from datasets.line_fit import line_cells
    from datasets.tracks import tracks_as_events

    n_hits = int(batch.hit_offsets[-1] - batch.hit_offsets[0])
    if labels is None:
        isolated = reconstruction.isolated_hits(batch)
        labels = np.full(n_hits, -1, np.int64)
        labels[~isolated] = hough_cluster(reconstruction.keep_hits(batch, ~isolated), None, progress=False)
    labels = np.asarray(clustering.canonical_labels(batch, labels), dtype=np.int64)
    out = np.full(n_hits, -1, np.int16)
    if not np.any(labels >= 0):
        return out
    clusters = tracks_as_events(by_label(batch, labels))  # one event per cluster, (event, label) order
    cell = track_side(clusters).astype(np.int64) * geo.CALO_GRID_CELLS + geo.calo_grid_index(*line_cells(clusters))
    event = batch.hit_event_index()
    _, first = clustering.cluster_offsets(event, labels, len(batch))
    on = labels >= 0
    out[on] = cell[first[event[on]] + labels[on]]
    return out


def candidates_for(model_reads_them: bool):
    """:func:`line_prior_cells` for a model that reads the candidates, else None: the ``prior``
    argument of :func:`datasets.associated_calohit_multilabel.model_inputs` and ``load``."""
    return line_prior_cells if model_reads_them else None
