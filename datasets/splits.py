"""Train / validation / test splits and worker shards of event files, decided event by event.

``split_by="event"``: event (file, entry) goes to train / validation / test by a deterministic hash
of (seed, file base name, entry) compared with the cumulative fractions, so the split is the same
in memory and streaming modes, for any ``max_events`` and any order of files. ``split_by="file"``:
files are permuted with ``seed`` and dealt out in proportion to the fractions (largest remainder, at
least one file for every non-zero fraction). ``shard=(index, count)``: after the split, each worker
keeps the events of its split at positions ``index::count``.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

# ------------------------------------------------------------------------------------------------
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def event_hash(seed: int, path: str, entries: np.ndarray) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) for (seed, file name, entry), float64 (n,).

    Uses the file's base name (not its folder), so moving a dataset keeps its split.
    """
    name_key = zlib.crc32(os.path.basename(path).encode())
    with np.errstate(over="ignore"):
        key = _mix64(np.array([(int(seed) & 0xFFFFFFFF) << 32 | name_key], dtype=np.uint64))
        mixed = _mix64(np.asarray(entries, dtype=np.uint64) ^ key)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def check_split(split) -> np.ndarray:
    """``split`` (train, validation, test fractions) as a float64 (3,) array; ValueError unless they are >= 0 and sum to 1."""
    fractions = np.asarray(split, dtype=np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or abs(fractions.sum() - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions (train, validation, test) summing to 1, "
                         f"got {split!r}")
    return fractions


def file_split(files: list[str], fractions: np.ndarray, seed: int) -> np.ndarray:
    """Split code (0 train, 1 validation, 2 test) of every file for ``split_by="file"``, int8 (n_files,)."""
    nonzero = np.flatnonzero(fractions > 0)
    if len(files) < len(nonzero):
        raise ValueError(f"split_by='file' with fractions {tuple(fractions)} needs at least {len(nonzero)} files, "
                         f"got {len(files)}; use split_by='event'")
    exact = fractions * len(files)
    counts = np.floor(exact).astype(int)
    counts[nonzero] = np.maximum(counts[nonzero], 1)
    floor = (fractions > 0).astype(int)  # a non-zero fraction keeps at least one file
    while counts.sum() > len(files):  # the minimum of one file made too many: take from the most over-served
        surplus = np.where(counts > floor, counts - exact, -np.inf)
        counts[np.argmax(surplus)] -= 1
    for k in np.argsort(-(exact - counts), kind="stable")[: len(files) - counts.sum()]:
        counts[k] += 1  # largest remainders
    order = np.random.default_rng(seed).permutation(len(files))
    codes = np.empty(len(files), dtype=np.int8)
    codes[order] = np.repeat(np.arange(3, dtype=np.int8), counts)
    return codes


def plan_events(files: list[str], n_per_file: list[int], keep: np.ndarray, *, split, split_by: str, seed: int,
                shard) -> np.ndarray:
    """Split code of every event, int8 over the concatenation of files (entries 0..n-1 of each).

    0 train, 1 validation, 2 test, -1 not used (label out of range and skipped, or another shard's).
    ``keep``: (n_total,) bool, events with a valid label.
    """
    fractions = check_split(split)
    index, count = check_shard(shard)
    if split_by == "event":
        bounds = np.cumsum(fractions)[:2]
        codes = np.concatenate([np.searchsorted(bounds, event_hash(seed, path, np.arange(n)), side="right")
                                .astype(np.int8) for path, n in zip(files, n_per_file)]
                               or [np.zeros(0, np.int8)])  # (n_total,), one file at a time
    elif split_by == "file":
        codes = np.repeat(file_split(files, fractions, seed), n_per_file)
    else:
        raise ValueError(f"split_by must be 'event' or 'file', got {split_by!r}")
    codes[~keep] = -1
    if count > 1:
        for k in range(3):
            members = np.flatnonzero(codes == k)
            codes[members[np.arange(len(members)) % count != index]] = -1
    return codes


def check_shard(shard) -> tuple[int, int]:
    """``shard`` as (index, count) ints; ValueError unless 0 <= index < count."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    return index, count
