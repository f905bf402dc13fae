"""Calorimeter association, multi-label: an unclustered event -> the set of its tracks' grid cells.

Inputs: the event's view(s) as in :mod:`datasets.number_of_tracks` (default top, (B, 18, 113, C)),
or the wall view alone (``view="wall"``, (B, 2, 30, 113, 27), :mod:`datasets.wall_view`).
Targets (B, 660) float32 over both sides' grids, index ``side * 330 + row * 22 + column``:

* ``target="sigmoid"``: multi-hot, 1.0 at every cell hit by at least one track (binary
  cross-entropy);
* ``target="softmax"``: the number of tracks in each cell divided by the event's number of tracks,
  so each row sums to 1 (two tracks in one cell give it 2/k) (softmax + categorical cross-entropy).

Decoding takes the top k cells, k = the number of tracks: with ``with_n_tracks=True`` each element
is ``(inputs, targets, n_tracks)`` (int32 (B,); do not pass such a dataset to ``model.fit``, which
would read the third element as sample weights); in any case ``Splits.test_events.n_tracks``
gives k for every test example, in dataset order (in-memory mode). With ``max_tracks`` and
``count_target=True`` the targets are the dict {"cells": (B, 660), "count": one-hot (B,
max_tracks), class k - 1 for k tracks}, what a model with a number-of-tracks head trains on (and
k for the decoding in streaming mode too). :func:`model_inputs` makes the inputs of a trained
model from any events.

With ``prior`` (the wall view only), a callable ``events -> int16 (n_hits,)`` giving each hit a
candidate cell (side * 330 + grid index, -1 none; the script's ``calorimeter_prior.line_prior_cells``:
where the event's Hough lines meet the wall), the inputs are the dict {"wall": (B, 2, 30, 113,
27), "wall_prior": (B, 660)}: 1.0 at every candidate cell of the event (:func:`prior_images`).
"""

from __future__ import annotations

import numpy as np

from datasets import common, views, wall_view
from datasets.associated_calohit_singlelabel import CALO_FIELDS, grid_class_names
from datasets.common import Splits
from snemo import geometry as geo
from snemo.events import EventBatch

N_TARGETS = geo.N_SIDES * geo.CALO_GRID_CELLS  # 660
PRIOR_INPUT = "wall_prior"  # the candidate-cell input beside the wall view
PRIOR_FIELD = "prior_cell"  # per hit: its candidate cell, -1 none


def prior_images(prior_cell, hit_offsets) -> np.ndarray:
    """(n, 660) float32: 1.0 at every candidate cell of each event's hits, else 0.

    ``prior_cell`` (n_hits,) int: a cell index (side * 330 + grid index) per hit, -1 none;
    ``hit_offsets`` (n + 1,): each event's hits (the first need not be 0).
    """
    offsets = np.asarray(hit_offsets, dtype=np.int64)
    cells = np.asarray(prior_cell, dtype=np.int64)[offsets[0]:offsets[-1]]
    event = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    images = np.zeros((len(offsets) - 1) * N_TARGETS, dtype=np.float32)
    images[(event * N_TARGETS + cells)[cells >= 0]] = 1.0
    return images.reshape(len(offsets) - 1, N_TARGETS)


def cell_counts(events: EventBatch) -> np.ndarray:
    """Tracks per grid cell of both sides, (n, 660) float32; index side * 330 + grid index."""
    cell = events.calo_side.astype(np.int64) * geo.CALO_GRID_CELLS + geo.calo_grid_index(events.calo_column,
                                                                                          events.calo_row)
    flat = events.track_event_index() * N_TARGETS + cell  # (n_tracks,) index into (n * 660,)
    return np.bincount(flat, minlength=len(events) * N_TARGETS).astype(np.float32).reshape(len(events), N_TARGETS)


def _is_wall(view) -> bool:
    return ((view,) if isinstance(view, str) else tuple(view)) == (wall_view.NAME,)


def model_inputs(events: EventBatch, view=("top", "side", "front"), radius_channel: bool = False, prior=None):
    """Float32 model inputs of whole events: (n, H, W, C) for one view, else a dict by view name.

    ``view="wall"`` (or ("wall",)): the (n, 2, 30, 113, 27) :func:`datasets.wall_view.wall_view`;
    with ``prior`` (the callable of the module docstring) the dict {"wall", "wall_prior"}."""
    if _is_wall(view):
        if prior is None:
            return wall_view.wall_view(events)
        return {wall_view.NAME: wall_view.wall_view(events),
                PRIOR_INPUT: prior_images(prior(events), events.hit_offsets - events.hit_offsets[0])}
    names = views.parse_views(view)
    if len(names) == 1:
        return views.make_view(events, names[0], radius_channel)
    return {name: views.make_view(events, name, radius_channel) for name in names}


def load(source, *, view="top", target: str = "sigmoid", radius_channel: bool = False, with_n_tracks: bool = False,
         max_tracks: int | None = None, count_target: bool = False, prior=None, **options) -> Splits:
    """Train / validation / test datasets of (event view(s), cell targets (B, 660)).

    ``view``: "top" | "side" | "front" or a tuple (dict inputs), or "wall" (the wall view alone;
    ``radius_channel`` is then ignored: the view carries the radius). ``target``: "sigmoid" (multi-hot)
    or "softmax" (counts / number of tracks). ``with_n_tracks``: add the number of tracks as a
    third element (int32 (B,)). ``max_tracks``: events with more tracks have no target either.
    ``count_target``: targets {"cells": (B, 660), "count": (B, max_tracks) one-hot} (needs
    ``max_tracks``). ``prior``: the candidate cells' callable (module docstring; the wall view
    only), computed once per event as the events are kept. Events without tracks have no target: ValueError unless
    ``skip_out_of_range=True``. ``options``: the common loader arguments (see
    :func:`datasets.common.build_splits`).
    """
    import tensorflow as tf

    if target not in ("sigmoid", "softmax"):
        raise ValueError(f"target must be 'sigmoid' or 'softmax', got {target!r}")
    wall = _is_wall(view)
    names = (wall_view.NAME,) if wall else views.parse_views(view, allowed=("top", "side", "front"))
    if max_tracks is not None and int(max_tracks) < 1:
        raise ValueError(f"max_tracks must be at least 1, got {max_tracks}")
    if count_target and max_tracks is None:
        raise ValueError("count_target needs max_tracks (the classes of the count head)")
    if count_target and with_n_tracks:
        raise ValueError("count_target and with_n_tracks exclude each other: the count target gives k")
    if prior is not None and not wall:
        raise ValueError("prior needs the wall view")
    limit = np.iinfo(np.int64).max if max_tracks is None else int(max_tracks)

    def keep(events: EventBatch) -> np.ndarray:
        return (events.n_tracks >= 1) & (events.n_tracks <= limit)

    def compact(events: EventBatch) -> EventBatch:
        if wall:
            hits = wall_view.wall_hits(events)
            if prior is not None:
                hits[PRIOR_FIELD] = np.asarray(prior(events), dtype=np.int16)
            small = EventBatch(events.hit_offsets, hits, events.track_offsets,
                               dict(events.tracks), files=events.files, file_index=events.file_index,
                               entry=events.entry)
        else:
            small = views.compact(events, names, radius_channel)
        small.tracks = {"cell": (events.calo_side.astype(np.int64) * geo.CALO_GRID_CELLS
                                 + geo.calo_grid_index(events.calo_column, events.calo_row)).astype(np.int16)}
        return small

    def convert(small: EventBatch):
        n_tracks = small.n_tracks
        flat = small.track_event_index() * N_TARGETS + small.tracks["cell"]
        counts = np.bincount(flat, minlength=len(small) * N_TARGETS).reshape(len(small), N_TARGETS)  # (B, 660)
        if target == "sigmoid":
            targets = np.minimum(counts, 1).astype(np.float32)
        else:
            targets = (counts / n_tracks[:, None]).astype(np.float32)
        if wall:
            inputs = wall_view.wall_images(small.hits, small.hit_offsets)
            if prior is not None:
                inputs = {wall_view.NAME: inputs, PRIOR_INPUT: prior_images(small.hits[PRIOR_FIELD], small.hit_offsets)}
        else:
            inputs = views.view_inputs(small, names, radius_channel)
        if count_target:
            count = np.zeros((len(small), limit), dtype=np.float32)
            count[np.arange(len(small)), n_tracks - 1] = 1.0
            return inputs, {"cells": targets, "count": count}
        if with_n_tracks:
            return inputs, targets, n_tracks.astype(np.int32)
        return inputs, targets

    def signature(batch_dim):
        view_spec = (tf.TensorSpec((batch_dim,) + wall_view.SHAPE, tf.float32) if wall
                     else views.view_specs(names, radius_channel, batch_dim))
        if prior is not None:
            view_spec = {wall_view.NAME: view_spec, PRIOR_INPUT: tf.TensorSpec((batch_dim, N_TARGETS), tf.float32)}
        specs = (view_spec, tf.TensorSpec((batch_dim, N_TARGETS), tf.float32))
        if count_target:
            return specs[0], {"cells": specs[1], "count": tf.TensorSpec((batch_dim, limit), tf.float32)}
        return specs + (tf.TensorSpec((batch_dim,), tf.int32),) if with_n_tracks else specs

    channels = 2 if radius_channel else 1
    shapes = {wall_view.NAME: wall_view.SHAPE} if wall else {v: views.VIEW_SHAPES[v] + (channels,) for v in names}
    if prior is not None:
        shapes[PRIOR_INPUT] = (N_TARGETS,)
    info = dict(views=names, shapes=shapes, target=target,
                n_classes=N_TARGETS,
                class_names=[f"s{s}{name}" for s in range(geo.N_SIDES) for name in grid_class_names()],
                with_n_tracks=with_n_tracks, max_tracks=max_tracks, count_target=count_target)
    task = common.Task(name="associated_calohit_multilabel",
                       fields=(wall_view.FIELDS if wall else views.fields_for(names, radius_channel)) + CALO_FIELDS,
                       convert=convert, signature=signature, keep=keep,
                       keep_rule="no track" if max_tracks is None else f"0 or more than {max_tracks} tracks", compact=compact,
                       info=info)
    return common.build_splits(task, source, **options)
