"""Calorimeter association, single label: one track's image(s) -> its calorimeter grid cell.

Examples are tracks, not events: one-track events, and multi-track events split into their tracks
by truth (``track_split``), each track's hits alone (noise hits dropped; tracks without hits
skipped). Inputs: the views ``view`` of the track's hits ("top" (B, 18, 113, C), "side"
(B, 30, 113, C), "front" (B, 30, 18, C); a dict keyed by view name for several). Label: one-hot
float32 (B, 330) over the 22 x 15 grid of the track's own side, index
``geometry.calo_grid_index(calo_column, calo_row)``.

``fold=True`` (what :mod:`architectures.calorimeter` models read) draws every track as if on side
1 (its hits' ``grid_side`` set to 1): the detector is mirror-symmetric in x, so a side-0 track and
its mirror image hit the same grid cell, and the model learns one orientation. Tracks never cross
the foil, so the side of the predicted cell is that of the track's hits (:func:`track_side`).
Without folding the side is visible in the top view (rows 0-8 side 0, rows 9-17 side 1).

To apply a trained model to clusters (one :class:`EventBatch` event per cluster), use
:func:`model_inputs` and :func:`track_side`. The side of each test example is
``Splits.test_events.calo_side``; ``Splits.test_events.tracks["event_tracks"]`` is the number of
tracks of the event each test track came from.
"""

from __future__ import annotations

import numpy as np

from datasets import common, views
from datasets.common import Splits
from datasets.line_fit import N_FEATURES as N_LINE_FEATURES
from datasets.line_fit import line_features
from datasets.tracks import n_tracks_with_hits, tracks_as_events
from snemo import geometry as geo
from snemo.events import EventBatch

CALO_FIELDS = ("calo_side", "calo_column", "calo_row")
LINE_FIELDS = ("grid_layer", "grid_column", "wirez", "wirez_missing", "radius")


def grid_class_names() -> list[str]:
    """Names of the 330 grid cells, index = row * 22 + column: 'c<column>r<row>'."""
    return [f"c{c}r{r}" for r in range(geo.CALO_GRID_ROWS) for c in range(geo.CALO_GRID_COLUMNS)]


def fold_to_side1(batch: EventBatch) -> EventBatch:
    """The batch with every hit's ``grid_side`` set to 1 (the same arrays otherwise; nothing copied but that)."""
    hits = dict(batch.hits)
    if "grid_side" in hits:
        hits["grid_side"] = np.ones_like(hits["grid_side"])
    return EventBatch(batch.hit_offsets, hits, batch.track_offsets, dict(batch.tracks), files=batch.files,
                      file_index=batch.file_index, entry=batch.entry)


def track_side(batch: EventBatch) -> np.ndarray:
    """Side (0 or 1) of each event's hits by majority (ties and empty events: side 1), int8 (n,).

    For one-track events (clusters): the calorimeter side the single-label model's cell lies on.
    """
    sides = np.asarray(batch.hits["grid_side"], dtype=np.int64)
    counts = np.diff(batch.hit_offsets)
    ones = np.add.reduceat(sides, batch.hit_offsets[:-1]) if len(sides) else np.zeros(len(batch), np.int64)
    ones = np.where(counts > 0, ones, 0)
    return np.where(2 * ones >= counts, 1, 0).astype(np.int8)


def model_inputs(tracks: EventBatch, view=("top", "side", "front"), radius_channel: bool = False, *, fold=True,
                 z_channel: bool = False, line_input: bool | int = False):
    """Float32 model inputs of one-track events (a cluster per event): (n, H, W, C) or a dict by view.

    ``view``: the views the model reads (its input names); the hits are folded onto side 1 as in
    training (``fold``); channels as :func:`datasets.views.make_view`; ``line_input`` adds "line",
    the (n, 301) :func:`datasets.line_fit.line_features` (an int: its first that many, as the
    model reads them; the result is then always a dict). Needs the
    branches of :func:`datasets.views.fields_for` of those views (and wirez for the line).
    """
    names = views.parse_views(view)
    batch = fold_to_side1(tracks) if fold else tracks
    images = {name: views.make_view(batch, name, radius_channel, z_channel) for name in names}
    if line_input:
        features = line_features(tracks)
        images["line"] = features if line_input is True else features[:, :int(line_input)]
    return images[names[0]] if len(images) == 1 else images


def with_event_tracks(batch: EventBatch) -> EventBatch:
    """:func:`tracks_as_events` with the track field ``event_tracks``: the number of tracks of its event."""
    tracks = dict(batch.tracks)
    tracks["event_tracks"] = batch.n_tracks[batch.track_event_index()].astype(np.int16)
    return tracks_as_events(EventBatch(batch.hit_offsets, batch.hits, batch.track_offsets, tracks,
                                       files=batch.files, file_index=batch.file_index, entry=batch.entry))


def load(source, *, view="top", radius_channel: bool = False, fold: bool = False, event_tracks: bool = False,
         z_channel: bool = False, line_input: bool = False, **options) -> Splits:
    """Train / validation / test datasets of (track views, one-hot grid cell) pairs.

    ``view``: "top" | "side" | "front" or a tuple of them (a dict of inputs). ``radius_channel`` /
    ``z_channel``: the extra channels of :func:`datasets.views.make_view`. ``line_input``: inputs
    are a dict with "line" too, the (B, 301) :func:`datasets.line_fit.line_features` of the track.
    ``fold``: draw every track on side 1 (see the module docstring; the calorimeter models expect it). ``event_tracks``: labels become {"cell": (B, 330), "event_tracks": int32 (B,), the
    number of tracks of each track's event} (a script maps them back to the cell for training).
    ``n_train`` etc. count tracks. ``options``: the common loader arguments (see
    :func:`datasets.common.build_splits`); the split is made on events, so the tracks of one event
    stay in one split. ``Splits.test_events`` holds one event per test track (its hits, unfolded,
    and its track fields, ``calo_side`` and ``event_tracks`` included).
    """
    import tensorflow as tf

    names = views.parse_views(view)

    def compact(tracks: EventBatch) -> EventBatch:
        small = views.compact(fold_to_side1(tracks) if fold else tracks, names, radius_channel, z_channel=z_channel)
        small.tracks = {"cell": geo.calo_grid_index(tracks.calo_column, tracks.calo_row).astype(np.int16),
                        "event_tracks": tracks.tracks["event_tracks"]}
        if line_input:
            small.tracks["line"] = line_features(tracks)
        return small

    def convert(small: EventBatch):
        labels = np.zeros((len(small), geo.CALO_GRID_CELLS), dtype=np.float32)
        labels[np.arange(len(small)), small.tracks["cell"]] = 1.0  # one track per example
        inputs = views.view_inputs(small, names, radius_channel, z_channel)  # (B, H, W, C) or a dict
        if line_input:
            inputs = dict(inputs) if isinstance(inputs, dict) else {names[0]: inputs}
            inputs["line"] = small.tracks["line"]
        if event_tracks:
            return inputs, {"cell": labels, "event_tracks": small.tracks["event_tracks"].astype(np.int32)}
        return inputs, labels  # (B, 330)

    def signature(batch_dim):
        cell = tf.TensorSpec((batch_dim, geo.CALO_GRID_CELLS), tf.float32)
        labels = {"cell": cell, "event_tracks": tf.TensorSpec((batch_dim,), tf.int32)} if event_tracks else cell
        specs = views.view_specs(names, radius_channel, batch_dim, z_channel)
        if line_input:
            specs = dict(specs) if isinstance(specs, dict) else {names[0]: specs}
            specs["line"] = tf.TensorSpec((batch_dim, N_LINE_FEATURES), tf.float32)
        return specs, labels

    info = dict(views=names, shapes={v: views.VIEW_SHAPES[v] + (views.n_channels(v, radius_channel, z_channel),)
                                     for v in names}, z_channel=z_channel, line_input=line_input,
                class_names=grid_class_names(), n_classes=geo.CALO_GRID_CELLS, examples="tracks", fold=fold,
                side=("tracks drawn on side 1 (folded); the cell's side is that of the track's hits" if fold else
                      "the track's side is visible in the input (top rows 0-8 side 0, 9-17 side 1); the label is "
                      "the cell on that side") + "; test_events.calo_side gives it per example")
    task = common.Task(name="associated_calohit_singlelabel",
                       fields=tuple(sorted(set(views.fields_for(names, radius_channel, z_channel) + CALO_FIELDS
                                         + (LINE_FIELDS if line_input else ())))),
                       convert=convert, signature=signature, to_examples=with_event_tracks, compact=compact,
                       n_examples=n_tracks_with_hits, info=info)
    return common.build_splits(task, source, **options)
