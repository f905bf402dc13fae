"""Clustering: an event's top view -> the image of its first track in the canonical order.

Canonical order of an event's tracks (DESIGN.md, Tasks and labels): by the column of the track's
hit nearest the foil (smallest layer; among several such hits, side 0 first, then the smallest
column), ties broken by that hit's side, then by the track's mean column. Tracks without hits
come last. Computed for whole batches with sorts and segment reductions, no loop per event.

Inputs (B, 18, 113, 1) float32: the event's top view, noise hits included. Labels (B, 18, 113, 1)
float32: the top view of the hits of the canonical first track. For scoring a full clustering,
:func:`canonical_hit_track_ids` gives every hit's truth track in canonical order and
:func:`top_pixel_index` its pixel in the top view.
"""

from __future__ import annotations

import numpy as np

from datasets import common, views
from datasets.tracks import n_tracks_with_hits
from datasets.common import Splits
from snemo import geometry as geo
from snemo.events import EventBatch

top_pixel_index = views.top_pixel_index  # per-hit flat top-view pixel, re-exported for clustering scripts


def canonical_track_rank(batch: EventBatch) -> np.ndarray:
    """Rank of every track in its event's canonical order (0 = first), int64 (n_tracks_total,)."""
    n_tracks = len(batch.tracks["track_split"])
    if n_tracks == 0:
        return np.zeros(0, dtype=np.int64)
    track_event = batch.track_event_index()
    hit_track = batch.hit_track_index()  # (n_hits,) index within the event, -1 noise
    on_track = hit_track >= 0
    hit_global = (batch.track_offsets[batch.hit_event_index()] + hit_track)[on_track]  # global track of each
    # Track hits are contiguous and ordered by global track, so segments start where the track changes.
    counts = np.bincount(hit_global, minlength=n_tracks)
    has_hits = counts > 0
    starts = (np.cumsum(counts) - counts)[has_hits]
    layer = batch.hits["grid_layer"][on_track].astype(np.int64)
    side = batch.hits["grid_side"][on_track].astype(np.int64)
    column = batch.hits["grid_column"][on_track].astype(np.int64)
    nearest = (layer * geo.N_SIDES + side) * geo.N_COLUMNS + column  # smallest = nearest the foil
    key = np.full(n_tracks, np.iinfo(np.int64).max, dtype=np.int64)
    mean_column = np.full(n_tracks, np.inf)
    if len(starts):
        key[has_hits] = np.minimum.reduceat(nearest, starts)
        mean_column[has_hits] = np.add.reduceat(column, starts) / counts[has_hits]
    key_column = np.where(has_hits, key % geo.N_COLUMNS, geo.N_COLUMNS)
    key_side = np.where(has_hits, (key // geo.N_COLUMNS) % geo.N_SIDES, geo.N_SIDES)
    order = np.lexsort((np.arange(n_tracks), mean_column, key_side, key_column, track_event))
    rank = np.empty(n_tracks, dtype=np.int64)
    rank[order] = np.arange(n_tracks) - batch.track_offsets[track_event[order]]
    return rank


def canonical_hit_track_ids(batch: EventBatch) -> np.ndarray:
    """Truth track of every hit in canonical order (0 = first track), -1 for noise. int64 (n_hits_total,)."""
    hit_track = batch.hit_track_index()
    ids = np.full(len(hit_track), -1, dtype=np.int64)
    on_track = hit_track >= 0
    if on_track.any():
        global_track = batch.track_offsets[batch.hit_event_index()] + hit_track  # (n_hits,)
        ids[on_track] = canonical_track_rank(batch)[global_track[on_track]]
    return ids


def first_track_images(batch: EventBatch) -> np.ndarray:
    """Top view of each event's canonical first track, (n, 18, 113, 1) float32."""
    return views.track_image(batch, canonical_hit_track_ids(batch) == 0)


def load(source, **options) -> Splits:
    """Train / validation / test datasets of (event top view, first-track image) pairs.

    Inputs and labels are (B, 18, 113, 1) float32. Events without any track hit have no target:
    ValueError unless ``skip_out_of_range=True``. ``options``: the common loader arguments (see
    :func:`datasets.common.build_splits`). ``Splits.test_events`` keeps the full test events, whose
    :func:`canonical_hit_track_ids` and :func:`top_pixel_index` score a full clustering.
    """
    import tensorflow as tf

    def keep(events: EventBatch) -> np.ndarray:
        return n_tracks_with_hits(events) >= 1

    def compact(events: EventBatch) -> EventBatch:
        first = canonical_hit_track_ids(events) == 0
        small = views.compact(events, "top", hit_masks={"first": first})
        small.tracks = {}
        return small

    def convert(small: EventBatch):
        pixels, offsets = small.hits["top"], small.hit_offsets
        size = views.view_size("top")
        event = views.scatter(pixels, offsets, size, dtype=np.uint8)  # (B, 2034)
        track = views.scatter(pixels, offsets, size, mask=small.hits["first"], dtype=np.uint8)  # (B, 2034)
        shape = (len(small),) + geo.TOP_SHAPE + (1,)
        return event.reshape(shape), track.reshape(shape)  # (B, 18, 113, 1) each

    def signature(batch_dim):
        spec = tf.TensorSpec((batch_dim,) + geo.TOP_SHAPE + (1,), tf.uint8)
        return spec, spec

    info = dict(views=("top",), shapes={"top": geo.TOP_SHAPE + (1,)}, target_shape=geo.TOP_SHAPE + (1,),
                class_names=["not first track", "first track"],
                order="by column of the hit nearest the foil, then its side, then mean column")
    task = common.Task(name="clustering", fields=views.fields_for("top"), convert=convert, signature=signature,
                       keep=keep, keep_rule="no hit on any track", compact=compact, info=info)
    return common.build_splits(task, source, **options)
