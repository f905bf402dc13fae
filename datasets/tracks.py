"""Events seen track by track: where each truth track's hits lie, one event per track.

Vectorised over whole batches (no loop per event or per track); used by the loaders of the
calorimeter and clustering tasks.
"""

from __future__ import annotations

import numpy as np

from snemo.events import EventBatch, offsets_from_counts, ranges


def track_hit_ranges(batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """(first, count) of every track's hits as flat hit indices, int64 (n_tracks_total,) each."""
    split = batch.tracks["track_split"].astype(np.int64)
    event = batch.track_event_index()
    first_in_event = np.zeros(len(split), dtype=np.int64)
    if len(split) > 1:
        same = event[1:] == event[:-1]
        first_in_event[1:] = np.where(same, split[:-1], 0)
    start = batch.hit_offsets[event] + first_in_event
    return start, split - first_in_event


def tracks_as_events(batch: EventBatch) -> EventBatch:
    """One event per truth track: the track's hits only (noise dropped) and its track fields.

    Returns an :class:`EventBatch` with one "event" per track of ``batch`` (tracks without hits are
    dropped); ``track_split`` is the track's hit count, ``file_index`` / ``entry`` are those of the
    parent event. Vectorised.
    """
    start, count = track_hit_ranges(batch)
    keep = count > 0
    track_idx = np.flatnonzero(keep)
    start, count = start[keep], count[keep]
    hit_idx = ranges(start, count)
    tracks = {k: v[track_idx] for k, v in batch.tracks.items()}
    tracks["track_split"] = count.astype(batch.tracks["track_split"].dtype)
    event = batch.track_event_index()[track_idx]
    return EventBatch(offsets_from_counts(count), {k: v[hit_idx] for k, v in batch.hits.items()},
                      np.arange(len(track_idx) + 1, dtype=np.int64), tracks, files=batch.files,
                      file_index=batch.file_index[event], entry=batch.entry[event])


def n_tracks_with_hits(batch: EventBatch) -> np.ndarray:
    """Per event, the number of truth tracks that have at least one hit (int64 (n,))."""
    _, count = track_hit_ranges(batch)
    return np.bincount(batch.track_event_index()[count > 0], minlength=len(batch))
