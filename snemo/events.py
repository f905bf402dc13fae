"""Event files: one in-memory batch-of-events type, and ROOT reading and writing with uproot.

An :class:`EventBatch` holds many events as flat per-hit and per-track arrays plus offsets, so
every task converts whole batches with vectorised NumPy (no Python loop per event or per hit).

Files hold one TTree ``hit_tree`` with one entry per event. Per-hit jagged branches
(``grid_side``, ``grid_layer``, ``grid_column``, ``wirez`` mm, ``radius`` mm) and per-track jagged
branches (``track_split``, the calorimeter truth and the generating line) are documented in
README.md. Three flavours are read:

* our own files (written by :func:`write_events`; counter branches ``nhit`` and ``ntrack``);
* files of the original ROOT macro ``my_generator.cxx`` (``std::vector`` branches, ``grid_side``
  and ``calo_side`` empty): read as side 1;
* files of the original SN-IEgenerator ``toyhaystack`` (``calo_type``/``calo_wall`` with main-wall
  columns 0..19 and no ``calo_om``): module coordinates are mapped onto the 22 x 15 grid.

Bad input raises :class:`EventFileError`, which names the file, the entry and the branch.
"""

from __future__ import annotations

import difflib
import glob as globlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

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
}
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


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for every (s, c), vectorised. Returns int64 indices."""
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

    @property
    def n_hits(self) -> np.ndarray:
        """Hits per event (n,), int64."""
        return np.diff(self.hit_offsets)

    @property
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
        """New batch with the given events (indices or boolean mask), in that order."""
        events = np.asarray(events)
        if events.dtype == bool:
            events = np.flatnonzero(events)
        events = events.astype(np.int64)
        hit_idx = _ranges(self.hit_offsets[events], self.n_hits[events])
        track_idx = _ranges(self.track_offsets[events], self.n_tracks[events])
        return EventBatch(
            hit_offsets=offsets_from_counts(self.n_hits[events]),
            hits={k: v[hit_idx] for k, v in self.hits.items()},
            track_offsets=offsets_from_counts(self.n_tracks[events]),
            tracks={k: v[track_idx] for k, v in self.tracks.items()},
            files=self.files, file_index=self.file_index[events], entry=self.entry[events])

    def __getitem__(self, item) -> "EventBatch":
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

    def validate(self, where: str = "<memory>") -> None:
        """Check the invariants; raise :class:`EventFileError` naming the first bad event."""
        _validate(self, where, entry_of=lambda i: int(self.entry[i]))


def _index_of(items: list, item) -> int:
    if item not in items:
        items.append(item)
    return items.index(item)


def empty_batch() -> EventBatch:
    """A batch with no events and every standard field."""
    return EventBatch(np.zeros(1, np.int64), {k: np.zeros(0, d) for k, d in HIT_FIELDS.items()},
                      np.zeros(1, np.int64),
                      {k: np.zeros(0, d) for k, d in TRACK_FIELDS.items() if k not in _OPTIONAL_TRACK})


_OPTIONAL_TRACK = ("break_layer", "breakpointx", "breakpointy", "bpangle")


def from_lists(events: Iterable[dict]) -> EventBatch:
    """Build a batch from per-event dicts of lists (for tests and small hand-made examples).

    Each dict has per-hit lists (``grid_side``, ``grid_layer``, ``grid_column``, ``wirez``,
    ``radius``) and per-track lists (``track_split`` and optionally calorimeter / line truth).
    Missing standard fields get defaults (side 1, z 0, radius 0, calo -1, line NaN-free zeros).
    """
    events = list(events)
    n_hits = [len(e["grid_layer"]) for e in events]
    n_tracks = [len(e["track_split"]) for e in events]
    hits, tracks = {}, {}
    for name, dtype in HIT_FIELDS.items():
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
def _first_bad_event(bad_items: np.ndarray, offsets: np.ndarray) -> int:
    """Event index owning the first True of a flat per-item mask."""
    first = int(np.flatnonzero(bad_items)[0])
    return int(np.searchsorted(offsets, first, side="right") - 1)


def _validate(batch: EventBatch, where: str, entry_of) -> None:
    n_hits = batch.n_hits
    split = batch.tracks["track_split"].astype(np.int64)
    track_event = batch.track_event_index()
    if np.any(split < 0):
        i = _first_bad_event(split < 0, batch.track_offsets)
        raise EventFileError("track_split has a negative offset", file=where, entry=entry_of(i),
                             branch="track_split")
    if np.any(split > n_hits[track_event]):
        i = _first_bad_event(split > n_hits[track_event], batch.track_offsets)
        raise EventFileError(f"track_split goes beyond the event's {int(n_hits[i])} hits "
                             f"({batch.tracks['track_split'][batch.track_offsets[i]:batch.track_offsets[i+1]].tolist()})",
                             file=where, entry=entry_of(i), branch="track_split")
    decreasing = np.zeros(len(split), dtype=bool)
    if len(split) > 1:
        same_event = track_event[1:] == track_event[:-1]
        decreasing[1:] = same_event & (split[1:] < split[:-1])
    if np.any(decreasing):
        i = _first_bad_event(decreasing, batch.track_offsets)
        raise EventFileError("track_split is not increasing", file=where, entry=entry_of(i), branch="track_split")
    for group, offsets in ((batch.hits, batch.hit_offsets), (batch.tracks, batch.track_offsets)):
        for name, values in group.items():
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values)
                if np.any(bad):
                    raise EventFileError("value is NaN or infinite", file=where,
                                         entry=entry_of(_first_bad_event(bad, offsets)), branch=name)
            elif name in _RANGES:
                low, high = _RANGES[name]
                bad = (values < low) | (values > high)
                if np.any(bad):
                    i = _first_bad_event(bad, offsets)
                    value = values[np.flatnonzero(bad)[0]]
                    raise EventFileError(f"index {value} out of range [{low}, {high}]", file=where,
                                         entry=entry_of(i), branch=name)


# ------------------------------------------------------------------------------------------------
# File discovery
# ------------------------------------------------------------------------------------------------
def find_files(source) -> list[str]:
    """Expand ``source`` into a sorted list of ROOT files.

    ``source``: a file path, a directory (searched recursively for ``*.root``), a glob pattern,
    or a list/tuple of any of these. Raises :class:`EventFileError` when a path does not exist or
    a directory or pattern matches nothing.
    """
    if isinstance(source, (list, tuple)):
        files: list[str] = []
        for item in source:
            files.extend(f for f in find_files(item) if f not in files)
        return files
    path = os.fspath(source)
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).rglob("*.root"))
        if not found:
            raise EventFileError("directory holds no *.root file", file=path)
        return found
    if os.path.isfile(path):
        return [path]
    if globlib.has_magic(path):
        found = sorted(p for p in globlib.glob(path, recursive=True) if os.path.isfile(p))
        if not found:
            raise EventFileError("pattern matches no file", file=path)
        return found
    raise EventFileError("no such file or directory", file=path)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def _open_tree(path: str, tree_name: str):
    import uproot

    try:
        file = uproot.open(path)
    except FileNotFoundError:
        raise EventFileError("no such file", file=path) from None
    except Exception as err:  # uproot raises ValueError / OSError / struct errors on non-ROOT data
        raise EventFileError(f"not a readable ROOT file ({type(err).__name__}: {err})", file=path) from None
    try:
        tree = file[tree_name]
    except Exception:
        keys = sorted({k.split(";")[0] for k in file.keys()})
        file.close()
        raise EventFileError(f"tree '{tree_name}' not found; available: {keys}", file=path) from None
    if not hasattr(tree, "arrays"):
        file.close()
        raise EventFileError(f"object '{tree_name}' is a {type(tree).__name__}, not a TTree", file=path)
    return file, tree


def _branches_to_read(tree, path: str, fields) -> list[str]:
    available = set(tree.keys())
    for name in REQUIRED_BRANCHES:
        if name not in available:
            near = difflib.get_close_matches(name, sorted(available), n=3)
            raise EventFileError(f"required branch not found; nearest: {near}; available: {sorted(available)}",
                                 file=path, branch=name)
    wanted = set(HIT_FIELDS) | set(TRACK_FIELDS) if fields is None else set(fields) | set(REQUIRED_BRANCHES)
    unknown = wanted - set(HIT_FIELDS) - set(TRACK_FIELDS)
    if unknown:
        raise ValueError(f"unknown event fields {sorted(unknown)}; known: {sorted(HIT_FIELDS) + sorted(TRACK_FIELDS)}")
    if "calo_column" in wanted or "calo_row" in wanted or "calo_om" in wanted:
        # toyhaystack files are recognised by calo_type without calo_om; the mapping needs both.
        wanted |= {"calo_type", "calo_wall", "calo_om", "calo_column", "calo_row", "calo_side"}
    return sorted(wanted & available)


def _flat(array, name: str, path: str, entry_start: int):
    """ak jagged array -> (flat numpy, per-entry counts)."""
    import awkward as ak

    try:
        counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
        flat = ak.to_numpy(ak.flatten(array, axis=1))
    except Exception as err:
        raise EventFileError(f"expected a jagged numeric branch, got {ak.type(array)} ({err})",
                             file=path, entry=entry_start, branch=name) from None
    return flat, counts


def _chunk_to_batch(arrays, names: list[str], path: str, file_index: int, entry_start: int,
                    fields) -> EventBatch:
    n_events = len(arrays[names[0]])
    entry = np.arange(entry_start, entry_start + n_events, dtype=np.int64)
    raw = {name: _flat(arrays[name], name, path, entry_start) for name in names}

    hit_counts = raw["grid_layer"][1]
    track_counts = raw["track_split"][1]

    def check_counts(name, counts, expected, group, allow_empty=False):
        bad = counts != expected
        if allow_empty:
            bad &= counts != 0
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise EventFileError(f"has {int(counts[i])} values but the event has {int(expected[i])} {group}",
                                 file=path, entry=int(entry[i]), branch=name)

    hits: dict[str, np.ndarray] = {}
    n_total_hits = int(hit_counts.sum())
    for name, dtype in HIT_FIELDS.items():
        if fields is not None and name not in fields and name not in REQUIRED_BRANCHES:
            continue
        if name in raw:
            values, counts = raw[name]
            legacy = name == "grid_side"  # my_generator.cxx leaves grid_side empty: side 1
            check_counts(name, counts, hit_counts, "hits", allow_empty=legacy)
            if legacy:
                values = _side_1_where_empty(values, counts, hit_counts, dtype)
            hits[name] = _cast(values, dtype, name, path, entry, hit_counts)
        elif name == "grid_side":
            hits[name] = np.ones(n_total_hits, dtype=dtype)
        elif name in ("wirez", "radius"):
            raise EventFileError("branch not found", file=path, branch=name)
    tracks: dict[str, np.ndarray] = {}
    n_total_tracks = int(track_counts.sum())
    for name, dtype in TRACK_FIELDS.items():
        if name not in raw:
            continue
        values, counts = raw[name]
        legacy = name == "calo_side"
        check_counts(name, counts, track_counts, "tracks (entries of track_split)", allow_empty=legacy)
        if legacy:
            values = _side_1_where_empty(values, counts, track_counts, dtype)
        tracks[name] = values
    if "calo_column" in tracks and "calo_side" not in tracks:
        tracks["calo_side"] = np.ones(n_total_tracks, dtype=np.int8)
    if "calo_type" in tracks and "calo_om" not in tracks:
        _map_toyhaystack_calo(tracks, path, entry, track_counts)
    for name in list(tracks):
        tracks[name] = _cast(tracks[name], TRACK_FIELDS[name], name, path, entry, track_counts)
    if fields is not None:
        tracks = {k: v for k, v in tracks.items() if k in fields or k in REQUIRED_BRANCHES}
    return EventBatch(offsets_from_counts(hit_counts), hits, offsets_from_counts(track_counts), tracks,
                      files=(path,), file_index=np.zeros(n_events, dtype=np.int32), entry=entry)


def _side_1_where_empty(values: np.ndarray, counts: np.ndarray, expected: np.ndarray, dtype) -> np.ndarray:
    """A side branch left empty in some entries (the original macro never filled it) reads as side 1 there."""
    if len(values) == int(expected.sum()):
        return values
    filled = np.repeat(counts == expected, expected)
    out = np.ones(int(expected.sum()), dtype=dtype)
    out[filled] = values
    return out


def _cast(values: np.ndarray, dtype: np.dtype, name: str, path: str, entry: np.ndarray, counts) -> np.ndarray:
    """Cast to the in-memory dtype; integers out of the dtype's range are an error, never wrapped."""
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu":
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            bad = ~np.isfinite(values)
            i = _first_bad_event(bad, offsets_from_counts(counts))
            raise EventFileError("value is NaN or infinite", file=path, entry=int(entry[i]), branch=name)
        info = np.iinfo(dtype)
        bad = (values < info.min) | (values > info.max) | (values != np.round(values))
        if np.any(bad):
            i = _first_bad_event(bad, offsets_from_counts(counts))
            raise EventFileError(f"value {values[np.flatnonzero(bad)[0]]} is out of range", file=path,
                                 entry=int(entry[i]), branch=name)
    return values.astype(dtype)


def _map_toyhaystack_calo(tracks: dict, path: str, entry: np.ndarray, counts) -> None:
    """SN-IEgenerator files store module coordinates; map them onto the 22 x 15 grid in place."""
    needed = ("calo_type", "calo_wall", "calo_column", "calo_row", "calo_side")
    for name in needed:
        if name not in tracks:
            raise EventFileError("branch not found (needed with calo_type)", file=path, branch=name)
    calo_type = tracks["calo_type"].astype(np.int64)
    bad = (calo_type < 0) | (calo_type > 2)
    if np.any(bad):
        i = _first_bad_event(bad, offsets_from_counts(counts))
        raise EventFileError(f"calo_type {calo_type[np.flatnonzero(bad)[0]]} is not 0, 1 or 2", file=path,
                             entry=int(entry[i]), branch="calo_type")
    module_column = tracks["calo_column"].astype(np.int64)
    module_row = tracks["calo_row"].astype(np.int64)
    wall = tracks["calo_wall"].astype(np.int64)
    tracks["calo_om"] = geo.om_number(calo_type, tracks["calo_side"], wall, module_column, module_row)
    tracks["calo_column"], tracks["calo_row"] = geo.calo_grid_cell(calo_type, wall, module_column, module_row)
    tracks["calo_wall"] = np.where(calo_type == geo.CALO_TYPE_MAIN, -1, wall)


def iterate_events(source, *, step_size: int = 100_000, fields=None, tree: str = TREE_NAME,
                   validate: bool = True) -> Iterator[EventBatch]:
    """Yield :class:`EventBatch` chunks of at most ``step_size`` events from ROOT files.

    ``source``: file, directory, glob or list (see :func:`find_files`). ``fields``: names of the
    fields to load (default all that the files have; ``track_split``, ``grid_layer`` and
    ``grid_column`` are always read), fewer fields read faster. Chunks never span two files.
    Memory is bounded by ``step_size`` whatever the number of files.
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    for path in find_files(source):
        yield from _iterate_file(path, step_size=step_size, fields=fields, tree_name=tree, validate=validate)


def _iterate_file(path: str, *, step_size: int, fields, tree_name: str, validate: bool) -> Iterator[EventBatch]:
    file, tree = _open_tree(path, tree_name)
    try:
        names = _branches_to_read(tree, path, fields)
        n_entries = tree.num_entries
        for start in range(0, n_entries, step_size):
            stop = min(start + step_size, n_entries)
            try:
                # array_cache=None: uproot would otherwise keep every chunk of an open file (up to
                # 100 MB per file), and memory would not be bounded by step_size.
                arrays = tree.arrays(names, entry_start=start, entry_stop=stop, library="ak", how=dict,
                                     array_cache=None)
            except Exception as err:
                raise EventFileError(f"cannot read entries {start}..{stop - 1} ({type(err).__name__}: {err})",
                                     file=path, entry=start) from None
            batch = _chunk_to_batch(arrays, names, path, 0, start, fields)
            if validate:
                batch.validate(path)
            yield batch
    finally:
        file.close()


def read_events(source, *, fields=None, tree: str = TREE_NAME, max_events: int | None = None,
                step_size: int = 1_000_000, validate: bool = True) -> EventBatch:
    """Read all events (or the first ``max_events``) of ``source`` into one :class:`EventBatch`.

    See :func:`iterate_events` for ``source`` and ``fields``.
    """
    chunks, n = [], 0
    for chunk in iterate_events(source, step_size=step_size, fields=fields, tree=tree, validate=validate):
        if max_events is not None and n + len(chunk) > max_events:
            chunk = chunk[: max_events - n]
        chunks.append(chunk)
        n += len(chunk)
        if max_events is not None and n >= max_events:
            break
    if not chunks:
        return empty_batch()
    return chunks[0] if len(chunks) == 1 else EventBatch.concatenate(chunks)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def write_events(path, batch: EventBatch, *, overwrite: bool = False, step_size: int = 50_000,
                 compression: str = "ZSTD", level: int = 1) -> str:
    """Write ``batch`` to a ROOT file with TTree ``hit_tree``; returns the path written.

    Writes ``path.tmp`` and renames it, so a killed job never leaves a file that looks complete.
    Refuses to replace an existing file unless ``overwrite``. Per-hit branches share the counter
    ``nhit``, per-track branches the counter ``ntrack``. The batch is validated first.
    """
    import awkward as ak
    import uproot

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    batch.validate(where=f"<batch to write to {path}>")
    missing = [name for name in HIT_FIELDS if name not in batch.hits]
    if missing:
        raise ValueError(f"cannot write {path}: the batch lacks hit fields {missing}")
    codec = {"ZSTD": uproot.ZSTD, "LZ4": uproot.LZ4, "ZLIB": uproot.ZLIB, "LZMA": uproot.LZMA}[compression](level)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    track_names = [n for n in TRACK_FIELDS if n in batch.tracks]
    try:
        with uproot.recreate(tmp, compression=codec) as file:
            tree = None
            for start in range(0, max(len(batch), 1), step_size):
                chunk = batch[start:start + step_size]
                data = {
                    "hit": ak.zip({n: ak.unflatten(chunk.hits[n].astype(HIT_FIELDS[n]), chunk.n_hits)
                                   for n in HIT_FIELDS}, depth_limit=2),
                    "track": ak.zip({n: ak.unflatten(chunk.tracks[n].astype(TRACK_FIELDS[n]), chunk.n_tracks)
                                     for n in track_names}, depth_limit=2),
                }
                if tree is None:
                    tree = file.mktree(TREE_NAME, {k: v.type.content for k, v in data.items()},
                                       title="SuperNEMO toy events", counter_name=lambda name: "n" + name,
                                       field_name=lambda outer, inner: inner)
                if len(chunk):
                    tree.extend(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
