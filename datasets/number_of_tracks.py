"""Track counting: event views -> one-hot number of tracks (DESIGN.md, Tasks and labels).

Inputs: the top, side or front view, (B, H, W, C) float32, C = 1 (hit) or 2 (hit, radius / 22 mm),
or a dict {"top": ..., "side": ..., "front": ...} when ``view`` names several (combined model).
Labels: one-hot float32 (B, max_tracks), class k - 1 for an event with k tracks
(k = ``len(track_split)``, read from the file).

Example::

    from datasets import number_of_tracks
    splits = number_of_tracks.load("data/my_generator", view="top", batch_size=256)
    model.fit(splits.train, validation_data=splits.validation, epochs=5)
"""

from __future__ import annotations

import numpy as np

from datasets import common, views
from datasets.common import Splits
from snemo.events import EventBatch


def one_hot_counts(n_tracks: np.ndarray, max_tracks: int) -> np.ndarray:
    """One-hot (n, max_tracks) float32 of track counts 1..max_tracks (class k - 1 for k tracks)."""
    labels = np.zeros((len(n_tracks), max_tracks), dtype=np.float32)
    labels[np.arange(len(n_tracks)), np.asarray(n_tracks, dtype=np.int64) - 1] = 1.0
    return labels


def counting_task(name: str, view_names: tuple[str, ...], max_tracks: int, radius_channel: bool) -> common.Task:
    """The :class:`~datasets.common.Task` of track counting on the views ``view_names``."""
    import tensorflow as tf

    if int(max_tracks) < 1:
        raise ValueError(f"max_tracks must be at least 1, got {max_tracks}")
    max_tracks = int(max_tracks)

    def keep(events: EventBatch) -> np.ndarray:
        return (events.n_tracks >= 1) & (events.n_tracks <= max_tracks)

    def compact(events: EventBatch) -> EventBatch:
        small = views.compact(events, view_names, radius_channel)
        small.tracks = {}  # the label is the number of tracks: the track offsets suffice
        return small

    def convert(small: EventBatch):
        return (views.view_inputs(small, view_names, radius_channel),
                one_hot_counts(small.n_tracks, max_tracks))  # (B, max_tracks)

    def signature(batch_dim):
        return (views.view_specs(view_names, radius_channel, batch_dim),
                tf.TensorSpec((batch_dim, max_tracks), tf.float32))

    channels = 2 if radius_channel else 1
    info = dict(views=view_names, shapes={v: views.VIEW_SHAPES[v] + (channels,) for v in view_names},
                class_names=[f"{k} track{'s' if k > 1 else ''}" for k in range(1, max_tracks + 1)],
                max_tracks=max_tracks, radius_channel=radius_channel)
    return common.Task(name=name, fields=views.fields_for(view_names, radius_channel), convert=convert,
                       signature=signature, keep=keep, compact=compact,
                       keep_rule=f"0 or more than {max_tracks} tracks", info=info)


def load(source, *, view="top", max_tracks: int = 4, radius_channel: bool = False, **options) -> Splits:
    """Train / validation / test datasets of track counting.

    ``view``: "top" | "side" | "front" or a tuple of them; one view gives inputs (B, H, W, C),
    several give a dict of them keyed by view name. ``max_tracks``: number of classes; events with
    0 tracks or more than ``max_tracks`` raise ValueError (naming the file and how many) unless
    ``skip_out_of_range=True``, which skips them and prints how many. ``radius_channel``: C = 2.
    ``options``: the common loader arguments (``batch_size``, ``split``, ``split_by``, ``seed``,
    ``shuffle``, ``cache``, ``max_events``, ``streaming``, ``shard``, ``drop_remainder``,
    ``skip_out_of_range``, ``chunk_size``, ``stream_files``), see :func:`datasets.common.build_splits`.
    Returns :class:`~datasets.common.Splits`; ``info`` has ``views``, ``shapes``, ``class_names``.
    """
    names = views.parse_views(view, allowed=("top", "side", "front"))
    task = counting_task("number_of_tracks", names, max_tracks, radius_channel)
    return common.build_splits(task, source, **options)
