"""Shared tf.data machinery of the task loaders: reading, splits, shards, batching, streaming.

A task (see :class:`Task`) says which branches it reads, which events carry a valid label, how
events become examples (usually one example per event; the single-label calorimeter task makes one
example per track) and how a batch of examples becomes NumPy ``(inputs, labels)``. This module does
the rest, once for every task:

* **Reading.** In memory (default): the needed branches of every file are read once, and each
  split is kept as a compact :class:`~snemo.events.EventBatch` of per-hit pixel indices (int16:
  2 bytes a hit, about 100 MB for 1M events); images are made batch by batch inside the pipeline,
  never all at once (1M top views would be 8 GB). Streaming (``streaming=True``): files are read in
  chunks with :func:`snemo.events.iterate_events` inside a Python generator, so peak memory is
  bounded by ``chunk_size`` whatever the number of files (plus a few bytes of bookkeeping per
  event). A first pass over ``grid_layer``, ``grid_column`` and ``track_split`` validates every
  file and counts the examples, so bad files and bad labels fail in the constructor, and example
  counts (hence ``len(dataset)``) are exact.
* **Splits.** ``split_by="event"``: event (file, entry) goes to train / validation / test by a
  deterministic hash of (seed, file name, entry) compared with the cumulative fractions, so the
  split is the same in both modes, for any ``max_events`` and any order of files; fractions are met
  up to binomial fluctuations. ``split_by="file"``: files are permuted with ``seed`` and dealt out
  in proportion to the fractions (largest remainder, at least one file for every non-zero fraction).
  Splits are disjoint and complete.
* **Shards.** ``shard=(index, count)``: after the split, each worker keeps the events of its split
  at positions ``index::count`` (file order, then entry), so workers see distinct events. Returned
  datasets have ``auto_shard_policy = OFF``.
* **Order.** The train split is reshuffled every epoch (``shuffle=True``; in memory: a full
  permutation; streaming: file order permuted, ``stream_files`` files read round-robin and each
  chunk permuted, so a batch mixes files even when each file holds one track count). Validation
  and test are never shuffled: file order, then entry.
* **Batching.** Python plans each batch (a slice of the epoch's permutation in memory; a slice of
  the chunks read in streaming) and the task's ``convert`` turns it into NumPy arrays with one
  scatter per image, inside ``tf.numpy_function`` calls that ``map(num_parallel_calls=AUTOTUNE)``
  runs in parallel; one-channel images (0/1 or hit counts) travel as uint8 and become float32
  inside TensorFlow. Batches hold
  ``batch_size`` examples (the last one smaller unless ``drop_remainder``); then
  ``prefetch(AUTOTUNE)``. ``cache=True`` adds ``.cache()`` (the converted images stay in memory:
  small data only) and, for train, a batch-level reshuffle every epoch instead of an event-level one.

``max_events`` caps the events read from each file at ``ceil(max_events / n_files)`` (the first
entries), so a capped dataset still spans every file.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from datasets import views
from snemo.events import EventBatch, iterate_events, offsets_from_counts, ranges, read_events


@dataclass
class Splits:
    """The three datasets of a task and what a script needs to know about them.

    ``train``, ``validation``, ``test``: ``tf.data.Dataset`` of batched ``(inputs, labels)``.
    ``n_train``, ``n_validation``, ``n_test``: examples in each (after split and shard).
    ``test_events``: the test examples as an :class:`EventBatch`, in dataset order (for galleries
    and per-example decoding); ``None`` in streaming mode. ``info``: view names, shapes, class
    names and task-specific facts.
    """

    train: object
    validation: object
    test: object
    n_train: int
    n_validation: int
    n_test: int
    test_events: EventBatch | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Task:
    """What a loader module tells :func:`build_splits`.

    ``fields``: event branches to read. ``convert(examples) -> (inputs, labels)``: NumPy arrays
    for a batch of examples. ``signature(batch_dim) -> (inputs spec, labels spec)``: the matching
    ``tf.TensorSpec`` structure as ``convert`` returns it; uint8 arrays (one-channel images) are cast to
    float32 in the pipeline, so datasets always give float32 images. ``keep(events) -> (n,)
    bool``: events with a valid label (None: all). ``keep_rule``: words for the events that fail
    ``keep`` (for errors). ``to_examples(events) -> EventBatch``: events -> examples (None: one
    example per event). ``compact(examples) ->
    EventBatch``: the examples with only what ``convert`` needs, precomputed once (e.g. per-hit
    pixel indices in int16 instead of three branches), so the per-batch work is one scatter (None:
    the examples themselves). ``n_examples(events) -> (n,)``: examples per event (None: 1).
    ``info``: copied into :attr:`Splits.info`.
    """

    name: str
    fields: tuple[str, ...]
    convert: Callable[[EventBatch], tuple]
    signature: Callable[[int | None], tuple]
    keep: Callable[[EventBatch], np.ndarray] | None = None
    keep_rule: str = ""
    to_examples: Callable[[EventBatch], EventBatch] | None = None
    compact: Callable[[EventBatch], EventBatch] | None = None
    n_examples: Callable[[EventBatch], np.ndarray] | None = None
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Helpers used by the task modules
# ------------------------------------------------------------------------------------------------
def parse_views(view, allowed=("top", "side", "front")) -> tuple[str, ...]:
    """Normalise ``view`` ("top" or a tuple of names) into a tuple of distinct allowed names."""
    names = (view,) if isinstance(view, str) else tuple(view)
    if not names or len(set(names)) != len(names) or any(name not in allowed for name in names):
        raise ValueError(f"view must be one of {list(allowed)} or a tuple of distinct ones, got {view!r}")
    return names


def view_inputs(compact_batch: EventBatch, names: tuple[str, ...], radius_channel: bool):
    """Model inputs from a :func:`views.compact` batch: one (n, H, W, C) array for one view, a dict
    name -> array for several. Wire format: uint8 (0/1 or hit counts) for C = 1, float32 for C = 2."""
    if len(names) == 1:
        return views.compact_view(compact_batch, names[0], radius_channel, dtype=np.uint8)
    return {name: views.compact_view(compact_batch, name, radius_channel, dtype=np.uint8) for name in names}


def view_specs(names: tuple[str, ...], radius_channel: bool, batch_dim):
    """Wire ``tf.TensorSpec`` structure matching :func:`view_inputs` (uint8 is cast to float32 later)."""
    import tensorflow as tf

    channels = 2 if radius_channel else 1
    dtype = tf.float32 if radius_channel else tf.uint8
    specs = {name: tf.TensorSpec((batch_dim,) + views.VIEW_SHAPES[name] + (channels,), dtype) for name in names}
    return specs[names[0]] if len(names) == 1 else specs


def slice_batch(batch: EventBatch, start: int, stop: int) -> EventBatch:
    """Events ``start:stop`` of ``batch`` as a new batch of array views (no copy; offsets start at 0)."""
    h0, h1 = int(batch.hit_offsets[start]), int(batch.hit_offsets[stop])
    t0, t1 = int(batch.track_offsets[start]), int(batch.track_offsets[stop])
    return EventBatch(batch.hit_offsets[start:stop + 1] - h0, {k: v[h0:h1] for k, v in batch.hits.items()},
                      batch.track_offsets[start:stop + 1] - t0, {k: v[t0:t1] for k, v in batch.tracks.items()},
                      files=batch.files, file_index=batch.file_index[start:stop], entry=batch.entry[start:stop])


def select(batch: EventBatch, mask: np.ndarray) -> EventBatch:
    """Events where ``mask`` (n,) is True, in order; cheaper than ``batch.take`` for ordered subsets."""
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return batch
    hit_mask = np.repeat(mask, batch.n_hits)
    track_mask = np.repeat(mask, batch.n_tracks)
    return EventBatch(offsets_from_counts(batch.n_hits[mask]), {k: v[hit_mask] for k, v in batch.hits.items()},
                      offsets_from_counts(batch.n_tracks[mask]), {k: v[track_mask] for k, v in batch.tracks.items()},
                      files=batch.files, file_index=batch.file_index[mask], entry=batch.entry[mask])


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


# ------------------------------------------------------------------------------------------------
# Splits and shards
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


def _check_split(split) -> np.ndarray:
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
    fractions = _check_split(split)
    index, count = _check_shard(shard)
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


def _check_shard(shard) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    return index, count


# ------------------------------------------------------------------------------------------------
# Labels: the keep rule
# ------------------------------------------------------------------------------------------------
def _keep(task: Task, events: EventBatch) -> np.ndarray:
    """(n,) bool: events with a valid label for ``task``."""
    if task.keep is None:
        return np.ones(len(events), dtype=bool)
    return np.asarray(task.keep(events), dtype=bool)


def _label_error(task: Task, path: str, n_bad: int, n_events: int, entry: int, n_tracks: int) -> ValueError:
    return ValueError(f"{task.name}: {n_bad} of {n_events} events read from {path} have {task.keep_rule} "
                      f"(first: entry {entry} with {n_tracks} tracks); pass skip_out_of_range=True to skip them")


def _report_skipped(task: Task, skipped: dict[str, int]) -> None:
    total = sum(skipped.values())
    if total:
        per_file = ", ".join(f"{os.path.basename(p)}: {n}" for p, n in skipped.items() if n)
        print(f"{task.name}: skipped {total} events with {task.keep_rule} ({per_file})")


# ------------------------------------------------------------------------------------------------
# Batch generators
# ------------------------------------------------------------------------------------------------
def _rebatch(chunks: Iterator[EventBatch], batch_size: int, drop_remainder: bool) -> Iterator[EventBatch]:
    """Regroup a stream of example chunks into batches of ``batch_size`` (the last one smaller)."""
    pending = None
    for chunk in chunks:
        if pending is not None and len(pending):
            chunk = EventBatch.concatenate([pending, chunk])
        n_full = len(chunk) // batch_size * batch_size
        for start in range(0, n_full, batch_size):
            yield slice_batch(chunk, start, start + batch_size)
        pending = slice_batch(chunk, n_full, len(chunk))
    if pending is not None and len(pending) and not drop_remainder:
        yield pending


def _stream_chunks(task: Task, files: list[str], codes: list[np.ndarray], code: int, *, chunk: int, n_open: int,
                   rng: np.random.Generator | None, max_per_file: list[int]) -> Iterator[EventBatch]:
    """Example chunks of split ``code`` read from ``files`` ``n_open`` at a time, round-robin.

    ``codes[i]``: split code of each event of file i (from :func:`plan_events`). With ``rng``, the
    file order is permuted and every round's chunk is permuted. Memory ~ ``chunk`` events.
    """
    todo = [i for i in range(len(files)) if np.any(codes[i] == code)]
    if rng is not None:
        todo = [todo[j] for j in rng.permutation(len(todo))]
    step = max(1, chunk // max(1, min(n_open, len(todo))))

    def reader(i):
        stop = max_per_file[i]
        for events in iterate_events(files[i], step_size=step, fields=task.fields):
            first = int(events.entry[0])
            if first >= stop:
                return
            selected = codes[i][first:first + len(events)] == code
            selected[max(0, stop - first):] = False
            if selected.any():
                yield _prepare(task, select(events, selected))

    slots = [reader(i) for i in todo[:n_open]]
    waiting = todo[n_open:]
    while slots:
        pieces, still_open = [], []
        for it in slots:
            piece = next(it, None)
            while piece is None and waiting:  # file exhausted: open the next one in its slot
                it = reader(waiting.pop(0))
                piece = next(it, None)
            if piece is not None:
                pieces.append(piece)
                still_open.append(it)
        slots = still_open
        if not pieces:
            continue
        merged = pieces[0] if len(pieces) == 1 else EventBatch.concatenate(pieces)
        yield merged if rng is None else merged.take(rng.permutation(len(merged)))


def _examples(task: Task, events: EventBatch) -> EventBatch:
    return task.to_examples(events) if task.to_examples else events


def _prepare(task: Task, events: EventBatch) -> EventBatch:
    examples = _examples(task, events)
    return task.compact(examples) if task.compact else examples


def _converter(task: Task, batch_dim):
    """``to_tensors(fetch, *args)``: runs ``fetch(*args) -> compact batch`` and ``task.convert`` in a
    ``tf.numpy_function`` and gives back the (inputs, labels) structure of ``task.signature`` (the
    wire format); uint8 outputs (one-channel images, a quarter of the bytes) become float32 here."""
    import tensorflow as tf

    signature = task.signature(batch_dim)
    flat_specs = tf.nest.flatten(signature)

    def to_tensors(fetch, *args):
        def run(*values):
            return [np.asarray(a) for a in tf.nest.flatten(task.convert(fetch(*values)))]

        outputs = tf.numpy_function(run, list(args), [spec.dtype for spec in flat_specs], stateful=False)
        outputs = [tf.ensure_shape(out, spec.shape) for out, spec in zip(outputs, flat_specs)]
        outputs = [tf.cast(out, tf.float32) if out.dtype == tf.uint8 else out for out in outputs]
        return tf.nest.pack_sequence_as(signature, outputs)

    return tf.autograph.experimental.do_not_convert(to_tensors)


def _memory_dataset(task: Task, store: EventBatch, *, batch_size: int, drop_remainder: bool, shuffle: bool,
                    seed: int):
    """Batches of the in-memory compact examples ``store``, converted in parallel numpy_function calls.

    With ``shuffle``, every iteration (epoch) draws a new random key from ``Dataset.random`` (seeded,
    so the sequence of epochs is repeatable) and the batches gather the events of the permutation
    of that key. Returns (dataset, number of batches).
    """
    import tensorflow as tf

    n = len(store)
    n_batches = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    to_tensors = _converter(task, batch_size if drop_remainder else None)
    permutations: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    hit_counts, track_counts = store.n_hits, store.n_tracks  # once, not per batch

    def gather(events: np.ndarray) -> EventBatch:
        """``store.take(events)`` without recomputing the store's counts on every batch."""
        hit_idx = ranges(store.hit_offsets[events], hit_counts[events])
        track_idx = ranges(store.track_offsets[events], track_counts[events])
        return EventBatch(offsets_from_counts(hit_counts[events]), {k: v[hit_idx] for k, v in store.hits.items()},
                          offsets_from_counts(track_counts[events]),
                          {k: v[track_idx] for k, v in store.tracks.items()}, files=store.files,
                          file_index=store.file_index[events], entry=store.entry[events])

    def fetch(key, index):
        start, stop = int(index) * batch_size, min(int(index) * batch_size + batch_size, n)
        if not shuffle:
            return slice_batch(store, start, stop)
        with lock:
            order = permutations.get(int(key))
            if order is None:
                order = np.random.default_rng([seed, int(key) & 0xFFFFFFFF]).permutation(n)
                permutations.clear()  # one epoch at a time
                permutations[int(key)] = order
        return gather(order[start:stop])

    plain = tf.autograph.experimental.do_not_convert  # straight-line graph code: no AutoGraph pass

    @plain
    def batches_of_epoch(key):
        return tf.data.Dataset.range(n_batches).map(plain(lambda i: (key, i)), num_parallel_calls=tf.data.AUTOTUNE)

    if shuffle:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        plan = keys.flat_map(batches_of_epoch)
    else:
        plan = batches_of_epoch(tf.constant(0, tf.int64))
    dataset = plan.map(plain(lambda key, i: to_tensors(fetch, key, i)), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, n_batches


def _stream_dataset(task: Task, batches_factory: Callable[[int], Iterator[EventBatch]], n_examples: int, *,
                    batch_size: int, drop_remainder: bool):
    """Batches planned by a Python generator (reading files), converted in parallel numpy_function calls.

    The generator yields small integer keys of compact batches it parks in a dict; the conversion
    takes them out, so only the batches in flight are held. Returns (dataset, number of batches).
    """
    import tensorflow as tf

    n_batches = n_examples // batch_size if drop_remainder else math.ceil(n_examples / batch_size)
    to_tensors = _converter(task, batch_size if drop_remainder else None)
    parked: dict[int, EventBatch] = {}
    counter = itertools.count()
    epoch = itertools.count(1)

    def keys():
        for batch in batches_factory(next(epoch)):
            key = next(counter)
            parked[key] = batch
            yield key

    def take_parked(key):
        return parked.pop(int(key))

    dataset = tf.data.Dataset.from_generator(keys, output_signature=tf.TensorSpec((), tf.int64))
    dataset = dataset.map(tf.autograph.experimental.do_not_convert(lambda key: to_tensors(take_parked, key)),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, n_batches


def _finish(dataset, n_batches: int, *, cache: bool, reshuffle: bool, seed: int):
    """Cardinality, optional cache (+ batch-level reshuffle), prefetch, auto-sharding off."""
    import tensorflow as tf

    dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    if cache:
        dataset = dataset.cache()
        if reshuffle:
            dataset = dataset.shuffle(max(1, min(n_batches, 64)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def _streaming_splits(task: Task, files: list[str], *, cap, chunk: int, batch_size: int, split, split_by: str,
                      seed: int, shuffle: bool, cache: bool, shard, drop_remainder: bool, skip_out_of_range: bool,
                      stream_files: int):
    """Streaming mode of :func:`build_splits`: ([(dataset, n_batches)] * 3, n_examples, None)."""
    per_file_events, keeps, n_ex, skipped = [], [], [], {}
    for path in files:  # validation pass: 3 small branches, chunk by chunk
        keep_parts, count_parts, n, first_bad = [], [], 0, None
        for events in iterate_events(path, step_size=chunk, fields=("track_split",)):
            if cap is not None and n >= cap:
                break
            if cap is not None and n + len(events) > cap:
                events = slice_batch(events, 0, cap - n)
            keep = _keep(task, events)
            if first_bad is None and not keep.all():
                bad = int(np.flatnonzero(~keep)[0])
                first_bad = (int(events.entry[bad]), int(events.n_tracks[bad]))
            keep_parts.append(keep)
            count_parts.append(np.ones(len(events), np.int16) if task.n_examples is None
                               else np.asarray(task.n_examples(events), dtype=np.int16))
            n += len(events)
        per_file_events.append(n)
        keeps.append(np.concatenate(keep_parts) if keep_parts else np.zeros(0, bool))
        n_ex.append(np.concatenate(count_parts) if count_parts else np.zeros(0, np.int16))
        skipped[path] = int((~keeps[-1]).sum())
        if skipped[path] and not skip_out_of_range:
            raise _label_error(task, path, skipped[path], n, *first_bad)
    _report_skipped(task, skipped)
    codes = plan_events(files, per_file_events, np.concatenate(keeps), split=split, split_by=split_by,
                        seed=seed, shard=shard)
    counts_per_event = np.concatenate(n_ex)
    n_examples = [int(counts_per_event[codes == k].sum(dtype=np.int64)) for k in range(3)]
    file_codes = np.split(codes, np.cumsum(per_file_events)[:-1])
    stream_cap = list(per_file_events)

    def factory_for(code):
        def factory(epoch):
            rng = np.random.default_rng([seed, epoch]) if (code == 0 and shuffle and not cache) else None
            # Unshuffled splits read one file after the other: file order, then entry, as in memory.
            chunks = _stream_chunks(task, files, file_codes, code, chunk=chunk,
                                    n_open=stream_files if rng is not None else 1, rng=rng,
                                    max_per_file=stream_cap)
            return _rebatch(chunks, batch_size, drop_remainder)
        return factory

    built = [_stream_dataset(task, factory_for(k), n_examples[k], batch_size=batch_size,
                             drop_remainder=drop_remainder) for k in range(3)]
    return built, n_examples, None


def _memory_splits(task: Task, files: list[str], *, cap, batch_size: int, split, split_by: str, seed: int,
                   shuffle: bool, cache: bool, shard, drop_remainder: bool, skip_out_of_range: bool):
    """In-memory mode of :func:`build_splits`: ([(dataset, n_batches)] * 3, n_examples, test examples)."""
    skipped, keeps = {}, []
    # A few threads read the files, then split and compact them file by file (decompression and
    # the big NumPy operations release the GIL); results come back in file order.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, len(files))) as pool:
        batches = list(pool.map(lambda path: read_events(path, fields=task.fields, max_events=cap), files))
        for path, events in zip(files, batches):
            keep = _keep(task, events)
            if not skip_out_of_range and not keep.all():
                first = int(np.flatnonzero(~keep)[0])
                raise _label_error(task, path, int((~keep).sum()), len(events), int(events.entry[first]),
                                   int(events.n_tracks[first]))
            skipped[path] = int((~keep).sum())
            keeps.append(keep)
        _report_skipped(task, skipped)
        n_per_file = [len(b) for b in batches]
        codes = plan_events(files, n_per_file, np.concatenate(keeps), split=split, split_by=split_by, seed=seed,
                            shard=shard)
        file_codes = np.split(codes, np.cumsum(n_per_file)[:-1])

        def split_file(i):
            """(test examples, compact examples of each split) of file i; frees the file's events."""
            events, batches[i] = batches[i], None
            parts = [_examples(task, select(events, file_codes[i] == k)) for k in range(3)]
            return parts[2], [task.compact(part) if task.compact else part for part in parts]

        per_file = list(pool.map(split_file, range(len(files))))
    test_events = EventBatch.concatenate([test for test, _ in per_file])
    examples = [EventBatch.concatenate([compact[k] for _, compact in per_file]) for k in range(3)]
    del per_file
    n_examples = [len(e) for e in examples]

    built = [_memory_dataset(task, examples[k], batch_size=batch_size, drop_remainder=drop_remainder,
                             shuffle=(k == 0 and shuffle and not cache), seed=seed) for k in range(3)]
    return built, n_examples, test_events


# ------------------------------------------------------------------------------------------------
# The entry point of every loader
# ------------------------------------------------------------------------------------------------
def build_splits(task: Task, source, *, batch_size=256, split=(0.8, 0.1, 0.1), split_by="event", seed=0,
                 shuffle=True, cache=False, max_events=None, streaming=False, shard=(0, 1), drop_remainder=False,
                 skip_out_of_range=False, chunk_size=8192, stream_files=4) -> Splits:
    """Read ``source`` for ``task`` and return its train / validation / test datasets.

    ``source``: file, directory, glob or list (:func:`snemo.events.find_files`). ``batch_size``:
    examples per batch. ``split``: (train, validation, test) fractions; ``split_by``: "event" or
    "file"; ``seed``: split and shuffle seed. ``shuffle``: reshuffle train every epoch.
    ``cache``: cache converted batches in memory. ``max_events``: at most ceil(max_events /
    n_files) events from each file. ``streaming``: read in chunks of ``chunk_size`` events from
    ``stream_files`` files at a time instead of holding the events in memory. ``shard``: (index,
    count) of this worker. ``drop_remainder``: drop the last partial batch (static batch size).
    ``skip_out_of_range``: skip events with no valid label instead of raising ValueError.
    Raises :class:`snemo.events.EventFileError` for bad files, ValueError for bad arguments or labels.
    """
    from snemo.events import find_files

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if int(chunk_size) < 1 or int(stream_files) < 1:
        raise ValueError(f"chunk_size and stream_files must be positive, got {chunk_size} and {stream_files}")
    if max_events is not None and int(max_events) < 1:
        raise ValueError(f"max_events must be positive or None, got {max_events}")
    _check_split(split)
    _check_shard(shard)
    batch_size = int(batch_size)
    files = find_files(source)
    cap = None if max_events is None else math.ceil(int(max_events) / len(files))
    chunk = max(batch_size, int(chunk_size) // batch_size * batch_size)

    options = dict(batch_size=batch_size, split=split, split_by=split_by, seed=seed, shuffle=shuffle, cache=cache,
                   shard=shard, drop_remainder=drop_remainder, skip_out_of_range=skip_out_of_range)
    if streaming:
        built, n_examples, test_events = _streaming_splits(task, files, cap=cap, chunk=chunk,
                                                           stream_files=int(stream_files), **options)
    else:
        built, n_examples, test_events = _memory_splits(task, files, cap=cap, **options)

    datasets = [_finish(dataset, n_batches, cache=cache, reshuffle=(k == 0 and shuffle), seed=seed)
                for k, (dataset, n_batches) in enumerate(built)]
    info = dict(task.info)
    info.update(task=task.name, files=files, split=tuple(split), split_by=split_by, seed=seed, shard=tuple(shard),
                streaming=streaming, batch_size=batch_size)
    return Splits(datasets[0], datasets[1], datasets[2], n_examples[0], n_examples[1], n_examples[2],
                  test_events=test_events, info=info)
