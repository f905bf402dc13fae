"""What a task loader tells the shared pipeline (:class:`Task`), what it gets back (:class:`Splits`),
and the steps both reading modes share: the keep rule, examples, per-batch conversion, finishing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from snemo.events import EventBatch


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


def keep_mask(task: Task, events: EventBatch) -> np.ndarray:
    """(n,) bool: events with a valid label for ``task``."""
    if task.keep is None:
        return np.ones(len(events), dtype=bool)
    return np.asarray(task.keep(events), dtype=bool)


def label_error(task: Task, path: str, n_bad: int, n_events: int, entry: int, n_tracks: int) -> ValueError:
    return ValueError(f"{task.name}: {n_bad} of {n_events} events read from {path} have {task.keep_rule} "
                      f"(first: entry {entry} with {n_tracks} tracks); skip them with --skip-out-of-range (skip_out_of_range=True)")


def report_skipped(task: Task, skipped: dict[str, int]) -> None:
    total = sum(skipped.values())
    if total:
        per_file = ", ".join(f"{os.path.basename(p)}: {n}" for p, n in skipped.items() if n)
        print(f"{task.name}: skipped {total} events with {task.keep_rule} ({per_file})")


def make_examples(task: Task, events: EventBatch) -> EventBatch:
    return task.to_examples(events) if task.to_examples else events


def prepare(task: Task, events: EventBatch) -> EventBatch:
    examples = make_examples(task, events)
    return task.compact(examples) if task.compact else examples


def converter(task: Task, batch_dim):
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


def finish(dataset, n_batches: int, *, cache: bool, reshuffle: bool, seed: int):
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
