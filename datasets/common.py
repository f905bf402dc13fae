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
  event). A first pass reads every branch the task needs, chunk by chunk, validates every file
  (the checks of the in-memory mode) and counts the examples, so bad files and bad labels fail in
  the constructor, not in the first epoch, and example counts (hence ``len(dataset)``) are exact.
* **Splits and shards** (:mod:`datasets.splits`): by a seeded hash of (file name, entry) or by
  whole files, the same in both modes; ``shard=(index, count)`` gives each worker distinct events.
  Returned datasets have ``auto_shard_policy = OFF``.
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

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from datasets import splits
from datasets.streaming import streaming_splits
from datasets.task import Splits, Task, converter, finish, keep_mask, label_error, make_examples, report_skipped

__all__ = ["Splits", "Task", "build_splits"]
from snemo.events import EventBatch, read_events


def _memory_dataset(task: Task, store: EventBatch, *, batch_size: int, drop_remainder: bool, shuffle: bool,
                    seed: int):
    """Batches of the in-memory compact examples ``store``, converted in parallel numpy_function calls.

    With ``shuffle``, every iteration (epoch) draws a new random key from ``Dataset.random`` (seeded,
    so the sequence of epochs is repeatable) and the batches gather the events of the permutation
    of that key (``store.take``). Returns (dataset, number of batches).
    """
    import tensorflow as tf

    n = len(store)
    n_batches = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    to_tensors = converter(task, batch_size if drop_remainder else None)
    permutations: dict[int, np.ndarray] = {}
    lock = threading.Lock()
    def fetch(key, index):
        start, stop = int(index) * batch_size, min(int(index) * batch_size + batch_size, n)
        if not shuffle:
            return store[start:stop]
        with lock:
            order = permutations.get(int(key))
            if order is None:
                order = np.random.default_rng([seed, int(key) & 0xFFFFFFFF]).permutation(n)
                permutations.clear()  # one epoch at a time
                permutations[int(key)] = order
        return store.take(order[start:stop])

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


def _memory_splits(task: Task, files: list[str], *, cap, batch_size: int, split, split_by: str, seed: int,
                   shuffle: bool, cache: bool, shard, drop_remainder: bool, skip_out_of_range: bool):
    """In-memory mode of :func:`build_splits`: ([(dataset, n_batches)] * 3, n_examples, test examples)."""
    skipped, keeps = {}, []
    # A few threads read the files, then split and compact them file by file (decompression and
    # the big NumPy operations release the GIL); results come back in file order.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, len(files))) as pool:
        batches = list(pool.map(lambda path: read_events(path, fields=task.fields, max_events=cap), files))
        for path, events in zip(files, batches):
            keep = keep_mask(task, events)
            if not skip_out_of_range and not keep.all():
                first = int(np.flatnonzero(~keep)[0])
                raise label_error(task, path, int((~keep).sum()), len(events), int(events.entry[first]),
                                   int(events.n_tracks[first]))
            skipped[path] = int((~keep).sum())
            keeps.append(keep)
        report_skipped(task, skipped)
        n_per_file = [len(b) for b in batches]
        codes = splits.plan_events(files, n_per_file, np.concatenate(keeps), split=split, split_by=split_by, seed=seed,
                            shard=shard)
        file_codes = np.split(codes, np.cumsum(n_per_file)[:-1])

        def split_file(i):
            """(test examples, compact examples of each split) of file i; frees the file's events."""
            events, batches[i] = batches[i], None
            parts = [make_examples(task, events.take(file_codes[i] == k)) for k in range(3)]
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
    splits.check_split(split)
    splits.check_shard(shard)
    batch_size = int(batch_size)
    files = find_files(source)
    cap = None if max_events is None else math.ceil(int(max_events) / len(files))
    chunk = max(batch_size, int(chunk_size) // batch_size * batch_size)

    options = dict(batch_size=batch_size, split=split, split_by=split_by, seed=seed, shuffle=shuffle, cache=cache,
                   shard=shard, drop_remainder=drop_remainder, skip_out_of_range=skip_out_of_range)
    if streaming:
        built, n_examples, test_events = streaming_splits(task, files, cap=cap, chunk=chunk,
                                                           stream_files=int(stream_files), **options)
    else:
        built, n_examples, test_events = _memory_splits(task, files, cap=cap, **options)

    datasets = [finish(dataset, n_batches, cache=cache, reshuffle=(k == 0 and shuffle), seed=seed)
                for k, (dataset, n_batches) in enumerate(built)]
    info = dict(task.info)
    info.update(task=task.name, files=files, split=tuple(split), split_by=split_by, seed=seed, shard=tuple(shard),
                streaming=streaming, batch_size=batch_size)
    return Splits(datasets[0], datasets[1], datasets[2], n_examples[0], n_examples[1], n_examples[2],
                  test_events=test_events, info=info)
