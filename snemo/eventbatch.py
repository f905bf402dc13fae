"""The in-memory batch of events every task shares, its fields, checks and operations.

An :class:`EventBatch` holds many events as flat per-hit and per-track arrays plus offsets, so
every task converts whole batches with vectorised NumPy (no Python loop per event or per hit).
:data:`HIT_FIELDS` and :data:`TRACK_FIELDS` give the fields (the branches of the event files) and
their dtypes; :meth:`EventBatch.validate` checks every invariant and raises :class:`EventFileError`
naming the file, the entry and the branch of the first bad event. Reading and writing files is
:mod:`snemo.events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

from snemo import geometry as geo

TREE_NAME = "hit_tree"

# Branch name -> in-memory (and written) dtype.
HIT_FIELDS: dict[str, np.dtype] = {
    "grid_side": np.dtype(np.int8),
    "grid_layer": np.dtype(np.int8),
    "grid_column": np.dtype(np.int16),
    "wirez": np.dtype(np.float32),
    "radius": np.dtype(np.float32),
    "wirez_missing": np.dtype(np.int8),
}
# Optional fields: absent from a batch or a file means "not known / not modelled". A hit without
# ``wirez_missing`` had its z measured.
OPTIONAL_HIT_FIELDS = ("wirez_missing",)
TRACK_FIELDS: dict[str, np.dtype] = {
    "track_split": np.dtype(np.int32),
    "calo_side": np.dtype(np.int8),
    "calo_column": np.dtype(np.int8),
    "calo_row": np.dtype(np.int8),
    "calo_type": np.dtype(np.int8),
    "calo_wall": np.dtype(np.int8),
    "calo_om": np.dtype(np.int16),
    "dirx": np.dtype(np.float64),
    "diry": np.dtype(np.float64),
    "dirz": np.dtype(np.float64),
    "pointx": np.dtype(np.float64),
    "pointy": np.dtype(np.float64),
    "pointz": np.dtype(np.float64),
    "break_layer": np.dtype(np.int8),
    "breakpointx": np.dtype(np.float64),
    "breakpointy": np.dtype(np.float64),
    "bpangle": np.dtype(np.float64),
}
REQUIRED_BRANCHES = ("grid_layer", "grid_column", "track_split")
# Valid ranges of integer branches, inclusive; -1 means "unknown" where allowed.
_RANGES = {
    "grid_side": (0, geo.N_SIDES - 1),
    "grid_layer": (0, geo.N_LAYERS - 1),
    "grid_column": (0, geo.N_COLUMNS - 1),
    "calo_side": (0, geo.N_SIDES - 1),
    "calo_column": (0, geo.CALO_GRID_COLUMNS - 1),
    "calo_row": (0, geo.CALO_GRID_ROWS - 1),
    "calo_type": (-1, 2),
    "calo_wall": (-1, 1),
    "calo_om": (-1, geo.N_OM - 1),
    "break_layer": (-1, geo.N_LAYERS - 1),
    "wirez_missing": (0, 1),
}
# Physical bounds of the per-hit measurements, mm. ``wirez`` may exceed the wire's half length by
# WIREZ_TOLERANCE (50 mm: up to the gamma-veto plane at |z| = 1550 mm, past which no tracker hit can
# lie); a drift radius lies between 0 and the cell's half diagonal (a track through a corner of the
# square cell) plus RADIUS_TOLERANCE (0.5 mm of rounding).
WIREZ_TOLERANCE = 50.0
RADIUS_TOLERANCE = 0.5
_BOUNDS = {
    "wirez": (-geo.TRACKER_HALF_Z - WIREZ_TOLERANCE, geo.TRACKER_HALF_Z + WIREZ_TOLERANCE),
    "radius": (0.0, geo.MAX_HIT_RADIUS + RADIUS_TOLERANCE),
}


class EventFileError(ValueError):
    """Bad event input. ``str()`` names the file, the entry and the branch when they are known."""

    def __init__(self, message: str, *, file=None, entry=None, branch=None):
        message = " ".join(str(message).split())  # one line, even when it quotes a multi-line error
        self.file, self.entry, self.branch, self.reason = file, entry, branch, message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if entry is not None:
            where.append(f"entry {entry}")
        if branch is not None:
            where.append(f"branch '{branch}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for every (s, c), vectorised. Returns int64 indices.

    Example: ``ranges([5, 0], [2, 3])`` -> ``[5, 6, 0, 1, 2]``."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    out_starts = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, dtype=np.int64) - out_starts, counts) + np.arange(total, dtype=np.int64)


def offsets_from_counts(counts) -> np.ndarray:
    """Offsets (n + 1,) int64 from per-event counts (n,)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


@dataclass
class EventBatch:
    """Many events as flat arrays.

    ``hits[name]`` are flat per-hit arrays (see :data:`HIT_FIELDS`), event ``i`` owns
    ``hit_offsets[i]:hit_offsets[i+1]``. ``tracks[name]`` are flat per-track arrays (see
    :data:`TRACK_FIELDS`), event ``i`` owns ``track_offsets[i]:track_offsets[i+1]``.
    ``tracks["track_split"]`` are exclusive end offsets of each track's hits, relative to the
    event's first hit; hits after the last offset are noise. ``file_index`` / ``entry`` say where
    each event came from (``files[file_index]``, entry number in that file's tree).
    """

    hit_offsets: np.ndarray
    hits: dict[str, np.ndarray]
    track_offsets: np.ndarray
    tracks: dict[str, np.ndarray]
    files: tuple[str, ...] = ()
    file_index: np.ndarray | None = None
    entry: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.hit_offsets) - 1
        if self.file_index is None:
            self.file_index = np.full(n, -1, dtype=np.int32)
        if self.entry is None:
            self.entry = np.arange(n, dtype=np.int64)

    # ---- sizes -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hit_offsets) - 1

    # Cached: a loader takes small batches out of a large store many times per epoch. The offsets
    # of a batch are never modified in place.
    @cached_property
    def n_hits(self) -> np.ndarray:
        """Hits per event (n,), int64."""
        return np.diff(self.hit_offsets)

    @cached_property
    def n_tracks(self) -> np.ndarray:
        """Tracks per event (n,), int64: ``len(track_split)``, the label of track counting."""
        return np.diff(self.track_offsets)

    def __getattr__(self, name):
        # batch.grid_layer, batch.calo_row ... read the flat arrays.
        if name in ("hits", "tracks"):
            raise AttributeError(name)
        if name in self.hits:
            return self.hits[name]
        if name in self.tracks:
            return self.tracks[name]
        raise AttributeError(f"EventBatch has no field '{name}'; hit fields: {sorted(self.hits)}, "
                             f"track fields: {sorted(self.tracks)}")

    # ---- per-hit views of the truth -------------------------------------------------------
    def hit_event_index(self) -> np.ndarray:
        """Event number (0..n-1) of every hit, int64 (n_hits_total,)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.n_hits)

    def track_event_index(self) -> np.ndarray:
        """Event number of every track, int64 (n_tracks_total,)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.n_tracks)

    def hit_track_index(self) -> np.ndarray:
        """Truth track of every hit: 0-based index within its event, -1 for noise. int64."""
        n_total = int(self.hit_offsets[-1])
        if n_total == 0:
            return np.zeros(0, dtype=np.int64)
        track_event = self.track_event_index()
        global_end = self.hit_offsets[track_event] + self.tracks["track_split"].astype(np.int64)
        hit_global = np.arange(n_total, dtype=np.int64)
        track = np.searchsorted(global_end, hit_global, side="right")  # first track ending after hit
        event = self.hit_event_index()
        in_event = track < self.track_offsets[event + 1]
        return np.where(in_event, track - self.track_offsets[event], -1)

    # ---- selection and joining --------------------------------------------------------------
    def take(self, events) -> "EventBatch":
        """New batch with the given events: indices (n_selected,) in that order, or a boolean mask (n,).

        A mask keeps the order of the batch (and the batch itself when it keeps every event)."""
        events = np.asarray(events)
        if events.dtype == bool:
            if events.shape != (len(self),):
                raise ValueError(f"mask must have one entry per event ({len(self)}), got shape {events.shape}")
            if events.all():
                return self
            hit_mask, track_mask = np.repeat(events, self.n_hits), np.repeat(events, self.n_tracks)
            return EventBatch(offsets_from_counts(self.n_hits[events]), {k: v[hit_mask] for k, v in self.hits.items()},
                              offsets_from_counts(self.n_tracks[events]),
                              {k: v[track_mask] for k, v in self.tracks.items()},
                              files=self.files, file_index=self.file_index[events], entry=self.entry[events])
        events = events.astype(np.int64)
        hit_idx = ranges(self.hit_offsets[events], self.n_hits[events])
        track_idx = ranges(self.track_offsets[events], self.n_tracks[events])
        return EventBatch(
            hit_offsets=offsets_from_counts(self.n_hits[events]),
            hits={k: v[hit_idx] for k, v in self.hits.items()},
            track_offsets=offsets_from_counts(self.n_tracks[events]),
            tracks={k: v[track_idx] for k, v in self.tracks.items()},
            files=self.files, file_index=self.file_index[events], entry=self.entry[events])

    def __getitem__(self, item) -> "EventBatch":
        """``batch[a:b]``: events a..b-1 as array views (no copy); other slices, indices and masks: :meth:`take`."""
        if isinstance(item, slice) and item.step in (None, 1):
            start, stop, _ = item.indices(len(self))
            stop = max(start, stop)
            h0, h1 = int(self.hit_offsets[start]), int(self.hit_offsets[stop])
            t0, t1 = int(self.track_offsets[start]), int(self.track_offsets[stop])
            return EventBatch(self.hit_offsets[start:stop + 1] - h0, {k: v[h0:h1] for k, v in self.hits.items()},
                              self.track_offsets[start:stop + 1] - t0, {k: v[t0:t1] for k, v in self.tracks.items()},
                              files=self.files, file_index=self.file_index[start:stop], entry=self.entry[start:stop])
        if isinstance(item, slice):
            return self.take(np.arange(len(self))[item])
        if np.isscalar(item):
            return self.take([item])
        return self.take(item)

    @staticmethod
    def concatenate(batches: Sequence["EventBatch"]) -> "EventBatch":
        """Join batches event-wise; keeps only the fields every batch has."""
        batches = [b for b in batches]
        if not batches:
            return empty_batch()
        batches = [_with_optional_hits(b, set().union(*(b.hits for b in batches))) for b in batches]
        hit_keys = set.intersection(*(set(b.hits) for b in batches))
        track_keys = set.intersection(*(set(b.tracks) for b in batches))
        files: list[str] = []
        file_index = []
        for b in batches:
            remap = np.array([_index_of(files, f) for f in b.files] + [-1], dtype=np.int32)
            file_index.append(remap[b.file_index])  # -1 indexes the trailing -1
        return EventBatch(
            hit_offsets=offsets_from_counts(np.concatenate([b.n_hits for b in batches])),
            hits={k: np.concatenate([b.hits[k] for b in batches]) for k in sorted(hit_keys)},
            track_offsets=offsets_from_counts(np.concatenate([b.n_tracks for b in batches])),
            tracks={k: np.concatenate([b.tracks[k] for b in batches]) for k in sorted(track_keys)},
            files=tuple(files), file_index=np.concatenate(file_index),
            entry=np.concatenate([b.entry for b in batches]))

    def z_missing(self) -> np.ndarray:
        """Per hit (n_hits_total,) bool: True where the hit has no z measurement (``wirez_missing``)."""
        if "wirez_missing" in self.hits:
            return self.hits["wirez_missing"].astype(bool)
        return np.zeros(int(self.hit_offsets[-1] - self.hit_offsets[0]), dtype=bool)

    def validate(self, where: str = "<memory>") -> None:
        """Check the invariants; raise :class:`EventFileError` naming the first bad event."""
        _validate(self, where, entry_of=lambda i: int(self.entry[i]))


def _with_optional_hits(batch: EventBatch, names: set) -> EventBatch:
    """``batch`` with every optional hit field of ``names`` it lacks filled with zeros (its default)."""
    missing = [name for name in OPTIONAL_HIT_FIELDS if name in names and name not in batch.hits]
    if not missing:
        return batch
    n_hits = int(batch.hit_offsets[-1] - batch.hit_offsets[0])
    hits = dict(batch.hits, **{name: np.zeros(n_hits, HIT_FIELDS[name]) for name in missing})
    return EventBatch(batch.hit_offsets, hits, batch.track_offsets, batch.tracks, batch.files, batch.file_index,
                      batch.entry)


def _index_of(items: list, item) -> int:
    if item not in items:
        items.append(item)
    return items.index(item)


def empty_batch() -> EventBatch:
    """A batch with no events and every standard field."""
    return EventBatch(np.zeros(1, np.int64),
                      {k: np.zeros(0, d) for k, d in HIT_FIELDS.items() if k not in OPTIONAL_HIT_FIELDS},
                      np.zeros(1, np.int64),
                      {k: np.zeros(0, d) for k, d in TRACK_FIELDS.items() if k not in _OPTIONAL_TRACK})


_OPTIONAL_TRACK = ("break_layer", "breakpointx", "breakpointy", "bpangle")


def from_lists(events: Iterable[dict]) -> EventBatch:
    """Build a batch from per-event dicts of lists (for tests and small hand-made examples).

    Each dict has per-hit lists (``grid_side``, ``grid_layer``, ``grid_column``, ``wirez``,
    ``radius``) and per-track lists (``track_split`` and optionally calorimeter / line truth).
    Missing standard fields get defaults (side 1, z 0, radius 0, calo -1, line NaN-free zeros);
    optional fields (``wirez_missing``, the kink branches) are left out unless some event has them.
    """
    events = list(events)
    n_hits = [len(e["grid_layer"]) for e in events]
    n_tracks = [len(e["track_split"]) for e in events]
    hits, tracks = {}, {}
    for name, dtype in HIT_FIELDS.items():
        if name in OPTIONAL_HIT_FIELDS and not any(name in e for e in events):
            continue
        default = 1 if name == "grid_side" else 0
        hits[name] = np.concatenate([np.asarray(e.get(name, [default] * nh), dtype=dtype).reshape(-1)
                                     for e, nh in zip(events, n_hits)]) if events else np.zeros(0, dtype)
    for name, dtype in TRACK_FIELDS.items():
        if name in _OPTIONAL_TRACK and not any(name in e for e in events):
            continue
        default = 1 if name == "calo_side" else (-1 if name.startswith(("calo_t", "calo_w", "calo_o", "break"))
                                                  else 0)
        tracks[name] = np.concatenate([np.asarray(e.get(name, [default] * nt), dtype=dtype).reshape(-1)
                                       for e, nt in zip(events, n_tracks)]) if events else np.zeros(0, dtype)
    return EventBatch(offsets_from_counts(n_hits), hits, offsets_from_counts(n_tracks), tracks)


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------
def first_bad_event(bad_items: np.ndarray, offsets: np.ndarray) -> int:
    """Event index owning the first True of a flat per-item mask ``bad_items``, given the items' offsets (n + 1,)."""
    first = int(np.flatnonzero(bad_items)[0])
    return int(np.searchsorted(offsets, first, side="right") - 1)


def _validate(batch: EventBatch, where: str, entry_of) -> None:
    n_hits = batch.n_hits
    split = batch.tracks["track_split"].astype(np.int64)
    track_event = batch.track_event_index()
    if np.any(split < 0):
        i = first_bad_event(split < 0, batch.track_offsets)
        raise EventFileError("track_split has a negative offset", file=where, entry=entry_of(i),
                             branch="track_split")
    if np.any(split > n_hits[track_event]):
        i = first_bad_event(split > n_hits[track_event], batch.track_offsets)
        raise EventFileError(f"track_split goes beyond the event's {int(n_hits[i])} hits "
                             f"({batch.tracks['track_split'][batch.track_offsets[i]:batch.track_offsets[i+1]].tolist()})",
                             file=where, entry=entry_of(i), branch="track_split")
    decreasing = np.zeros(len(split), dtype=bool)
    if len(split) > 1:
        same_event = track_event[1:] == track_event[:-1]
        decreasing[1:] = same_event & (split[1:] < split[:-1])
    if np.any(decreasing):
        i = first_bad_event(decreasing, batch.track_offsets)
        raise EventFileError("track_split is not increasing", file=where, entry=entry_of(i), branch="track_split")
    for group, offsets in ((batch.hits, batch.hit_offsets), (batch.tracks, batch.track_offsets)):
        for name, values in group.items():
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values)
                if np.any(bad):
                    raise EventFileError("value is NaN or infinite", file=where,
                                         entry=entry_of(first_bad_event(bad, offsets)), branch=name)
                if name in _BOUNDS:
                    low, high = _BOUNDS[name]
                    bad = (values < low) | (values > high)
                    if np.any(bad):
                        value = float(values[np.flatnonzero(bad)[0]])
                        raise EventFileError(f"value {value:g} mm outside the physical range [{low:g}, {high:g}] mm",
                                             file=where, entry=entry_of(first_bad_event(bad, offsets)), branch=name)
            elif name in _RANGES:
                low, high = _RANGES[name]
                bad = (values < low) | (values > high)
                if np.any(bad):
                    i = first_bad_event(bad, offsets)
                    value = values[np.flatnonzero(bad)[0]]
                    raise EventFileError(f"index {value} out of range [{low}, {high}]", file=where,
                                         entry=entry_of(i), branch=name)


