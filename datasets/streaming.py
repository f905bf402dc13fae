"""Streaming mode of the shared pipeline: files read in chunks, memory bounded by the chunk size.

A first pass reads every branch the task needs, chunk by chunk, validates every file (the checks of
the in-memory mode) and counts the examples; batches are then planned from the chunks read, ``stream_files``
files at a time round-robin for the shuffled training split.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import numpy as np

from datasets import splits
import math

from datasets.task import Task, converter, keep_mask, label_error, prepare, report_skipped
from snemo.events import EventBatch, iterate_events


def _rebatch(chunks: Iterator[EventBatch], batch_size: int, drop_remainder: bool) -> Iterator[EventBatch]:
    """Regroup a stream of example chunks into batches of ``batch_size`` (the last one smaller)."""
    pending = None
    for chunk in chunks:
        if pending is not None and len(pending):
            chunk = EventBatch.concatenate([pending, chunk])
        n_full = len(chunk) // batch_size * batch_size
        for start in range(0, n_full, batch_size):
            yield chunk[start:start + batch_size]
        pending = chunk[n_full:]
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
                yield prepare(task, events.take(selected))

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


def _stream_dataset(task: Task, batches_factory: Callable[[int], Iterator[EventBatch]], n_examples: int, *,
                    batch_size: int, drop_remainder: bool):
    """Batches planned by a Python generator (reading files), converted in parallel numpy_function calls.

    The generator yields small integer keys of compact batches it parks in a dict; the conversion
    takes them out, so only the batches in flight are held. Returns (dataset, number of batches).
    """
    import tensorflow as tf

    n_batches = n_examples // batch_size if drop_remainder else math.ceil(n_examples / batch_size)
    to_tensors = converter(task, batch_size if drop_remainder else None)
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


def streaming_splits(task: Task, files: list[str], *, cap, chunk: int, batch_size: int, split, split_by: str,
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
                events = events[:cap - n]
            keep = keep_mask(task, events)
            if first_bad is None and not keep.all():
                bad = int(np.flatnonzero(~keep)[0])
                first_bad = (int(events.entry[bad]), int(events.n_tracks[bad]))
            keep_parts.append(keep)
            count_parts.append(np.ones(len(events), np.int16) if task.n_examples is None
                               else np.asarray(task.nexamples(events), dtype=np.int16))
            n += len(events)
        per_file_events.append(n)
        keeps.append(np.concatenate(keep_parts) if keep_parts else np.zeros(0, bool))
        n_ex.append(np.concatenate(count_parts) if count_parts else np.zeros(0, np.int16))
        skipped[path] = int((~keeps[-1]).sum())
        if skipped[path] and not skip_out_of_range:
            raise label_error(task, path, skipped[path], n, *first_bad)
    report_skipped(task, skipped)
    codes = splits.plan_events(files, per_file_events, np.concatenate(keeps), split=split, split_by=split_by,
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
