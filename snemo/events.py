"""Event files: finding, reading and writing ROOT files of events with uproot.

Events are read into an :class:`~snemo.eventbatch.EventBatch` (many events as flat arrays plus
offsets; re-exported here with :class:`EventFileError`, :func:`from_lists` and the field tables).

Files hold one TTree ``hit_tree`` with one entry per event. Per-hit jagged branches
(``grid_side``, ``grid_layer``, ``grid_column``, ``wirez`` mm, ``radius`` mm) and per-track jagged
branches (``track_split``, the calorimeter truth and the generating line) are documented in
README.md. Three flavours are read:

* our own files (written by :func:`write_events`; counter branches ``nhit`` and ``ntrack``);
* files of the original ROOT macro ``my_generator.cxx`` (``std::vector`` branches, ``grid_side``
  and ``calo_side`` empty): read as side 1;
* files of the original SN-IEgenerator ``toyhaystack`` (``calo_type``/``calo_wall`` with main-wall
  columns 0..19 and no ``calo_om``): module coordinates are mapped onto the 22 x 15 grid.

A branch that is empty in every entry of a chunk that has hits or tracks (declared but never
filled, as the macro's ``grid_side`` / ``calo_side`` and SN-IEgenerator's kink branches) reads as
absent; an absent side branch means side 1, an absent ``wirez_missing`` means every z was measured.
Files whose name ends in ``.tmp`` are unfinished writes and are never read.

Bad input raises :class:`EventFileError`, which names the file, the entry and the branch.
"""

from __future__ import annotations

import difflib
import glob as globlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from snemo import geometry as geo
from snemo.eventbatch import (HIT_FIELDS, OPTIONAL_HIT_FIELDS, REQUIRED_BRANCHES, TRACK_FIELDS, TREE_NAME,
                              EventBatch, EventFileError, empty_batch, first_bad_event, from_lists,
                              offsets_from_counts, ranges)
from snemo.treewriter import UNFINISHED_SUFFIX, write_tree  # writers write name.tmp and rename it when complete

__all__ = ["EventBatch", "EventFileError", "HIT_FIELDS", "OPTIONAL_HIT_FIELDS", "TRACK_FIELDS", "TREE_NAME",
           "empty_batch", "find_files", "from_lists", "iterate_events", "offsets_from_counts", "open_tree", "ranges",
           "read_events", "write_events"]


# ------------------------------------------------------------------------------------------------
# File discovery
# ------------------------------------------------------------------------------------------------
def find_files(source) -> list[str]:
    """Expand ``source`` into a sorted list of ROOT files.

    ``source``: a file path, a directory (searched recursively for ``*.root``), a glob pattern,
    or a list/tuple of any of these. Unfinished writes (``*.tmp``) are skipped by directories and
    patterns and refused when named. Raises :class:`EventFileError` when a path does not exist or
    a directory or pattern matches nothing.
    """
    if isinstance(source, (list, tuple)):
        files: list[str] = []
        for item in source:
            files.extend(f for f in find_files(item) if f not in files)
        return files
    path = os.fspath(source)
    if path.endswith(UNFINISHED_SUFFIX) and os.path.isfile(path):
        raise EventFileError("an unfinished write (a writer was killed before renaming it); not read", file=path)
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).rglob("*.root"))
        if not found:
            raise EventFileError("directory holds no *.root file", file=path)
        return found
    if os.path.isfile(path):
        return [path]
    if globlib.has_magic(path):
        found = sorted(p for p in globlib.glob(path, recursive=True)
                       if os.path.isfile(p) and not p.endswith(UNFINISHED_SUFFIX))
        if not found:
            raise EventFileError("pattern matches no file", file=path)
        return found
    raise EventFileError("no such file or directory", file=path)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def open_tree(path: str, tree_name: str, *, what: str = "file"):
    """Open ROOT file ``path`` and its TTree ``tree_name``; returns (file, tree), the file to close.

    Raises :class:`EventFileError` naming the file: missing ("no such ``what``"), not ROOT,
    truncated or corrupt, no such tree, or an object of that name that is not a TTree.
    """
    import uproot

    try:
        file = uproot.open(path)
    except FileNotFoundError:
        raise EventFileError(f"no such {what}", file=path) from None
    except Exception as err:  # uproot raises ValueError / OSError / struct errors on non-ROOT data
        raise EventFileError(f"not a readable ROOT file ({type(err).__name__}: {err})", file=path) from None
    try:
        keys = sorted({k.split(";")[0] for k in file.keys()})
    except Exception as err:
        file.close()
        raise EventFileError(f"truncated or corrupt ROOT file: cannot list its objects ({type(err).__name__})",
                             file=path) from None
    try:
        tree = file[tree_name]
    except Exception as err:
        file.close()
        if tree_name in keys:
            raise EventFileError(f"truncated or corrupt ROOT file: tree '{tree_name}' is listed but cannot be "
                                 f"read ({type(err).__name__})", file=path) from None
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
    for name in [n for n in raw if n not in REQUIRED_BRANCHES]:
        expected = hit_counts if name in HIT_FIELDS else track_counts
        if len(raw[name][0]) == 0 and expected.sum() > 0:
            del raw[name]  # declared but never filled: absent

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
            raise EventFileError("branch not found or empty in every entry", file=path, branch=name)
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
            i = first_bad_event(bad, offsets_from_counts(counts))
            raise EventFileError("value is NaN or infinite", file=path, entry=int(entry[i]), branch=name)
        info = np.iinfo(dtype)
        bad = (values < info.min) | (values > info.max) | (values != np.round(values))
        if np.any(bad):
            i = first_bad_event(bad, offsets_from_counts(counts))
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
        i = first_bad_event(bad, offsets_from_counts(counts))
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
    file, tree = open_tree(path, tree_name)
    try:
        names = _branches_to_read(tree, path, fields)
        n_entries = tree.num_entries
        if n_entries == 0:
            raise EventFileError(f"tree '{tree_name}' has no entries (an empty file)", file=path)
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

    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    batch.validate(where=f"<batch to write to {path}>")
    missing = [name for name in HIT_FIELDS if name not in batch.hits and name not in OPTIONAL_HIT_FIELDS]
    if missing:
        raise ValueError(f"cannot write {path}: the batch lacks hit fields {missing}")
    hit_names = [n for n in HIT_FIELDS if n in batch.hits]
    track_names = [n for n in TRACK_FIELDS if n in batch.tracks]

    def chunks():
        for start in range(0, max(len(batch), 1), step_size):
            chunk = batch[start:start + step_size]
            yield {"hit": ak.zip({n: ak.unflatten(chunk.hits[n].astype(HIT_FIELDS[n]), chunk.n_hits)
                                  for n in hit_names}, depth_limit=2),
                   "track": ak.zip({n: ak.unflatten(chunk.tracks[n].astype(TRACK_FIELDS[n]), chunk.n_tracks)
                                    for n in track_names}, depth_limit=2)}

    write_tree(path, TREE_NAME, chunks(), title="SuperNEMO toy events", compression=compression, level=level)
    return path
