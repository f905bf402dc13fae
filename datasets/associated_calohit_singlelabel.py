"""Calorimeter association, single label: one track's image -> its calorimeter grid cell.

Examples are tracks, not events: one-track events, and multi-track events split into their tracks
by truth (``track_split``), each track's hits alone (noise hits dropped; tracks without hits
skipped). Input (B, 18, 113, 1) float32: the two-sided top view of the track's hits, so the side is
in the image (rows 0-8 are side 0, rows 9-17 side 1). Label: one-hot float32 (B, 330) over the
22 x 15 grid of the track's own side, index ``geometry.calo_grid_index(calo_column, calo_row)``.
The side of each test example is ``Splits.test_events.calo_side`` (one track per example).
"""

from __future__ import annotations

import numpy as np

from datasets import common, views
from datasets.tracks import n_tracks_with_hits, tracks_as_events
from datasets.common import Splits
from snemo import geometry as geo
from snemo.events import EventBatch

CALO_FIELDS = ("calo_side", "calo_column", "calo_row")


def grid_class_names() -> list[str]:
    """Names of the 330 grid cells, index = row * 22 + column: 'c<column>r<row>'."""
    return [f"c{c}r{r}" for r in range(geo.CALO_GRID_ROWS) for c in range(geo.CALO_GRID_COLUMNS)]


def load(source, **options) -> Splits:
    """Train / validation / test datasets of (track top view, one-hot grid cell) pairs.

    Inputs (B, 18, 113, 1), labels (B, 330), both float32. ``n_train`` etc. count tracks.
    ``options``: the common loader arguments (see :func:`datasets.common.build_splits`); the split
    is made on events, so the tracks of one event stay in one split. ``Splits.test_events`` holds
    one event per test track (its hits and its track fields, ``calo_side`` included).
    """
    import tensorflow as tf

    def compact(tracks: EventBatch) -> EventBatch:
        small = views.compact(tracks, "top")
        small.tracks = {"cell": geo.calo_grid_index(tracks.calo_column, tracks.calo_row).astype(np.int16)}
        return small

    def convert(small: EventBatch):
        labels = np.zeros((len(small), geo.CALO_GRID_CELLS), dtype=np.float32)
        labels[np.arange(len(small)), small.tracks["cell"]] = 1.0  # one track per example
        return views.view_inputs(small, ("top",), False), labels  # (B, 18, 113, 1), (B, 330)

    def signature(batch_dim):
        return (views.view_specs(("top",), False, batch_dim),
                tf.TensorSpec((batch_dim, geo.CALO_GRID_CELLS), tf.float32))

    info = dict(views=("top",), shapes={"top": geo.TOP_SHAPE + (1,)}, class_names=grid_class_names(),
                n_classes=geo.CALO_GRID_CELLS, examples="tracks",
                side="the track's side is visible in the input (rows 0-8 side 0, 9-17 side 1); the label is the "
                     "cell on that side; test_events.calo_side gives it per example")
    task = common.Task(name="associated_calohit_singlelabel", fields=views.fields_for("top") + CALO_FIELDS,
                       convert=convert, signature=signature, to_examples=tracks_as_events, compact=compact,
                       n_examples=n_tracks_with_hits, info=info)
    return common.build_splits(task, source, **options)
