"""Applying trained clustering models to events: the counter's counts, the generator as an extractor, clusterers.

Shared by ``clustering_one.py`` (evaluation of the test split) and ``reconstruct.py`` (the ``reco``
tree). TensorFlow is imported inside the functions that need it.

* :func:`load_counter` / :func:`predict_counts`: a trained counter (:class:`Counter`, default
  ``models/top_my_generator.keras``), its softmax and predicted number of tracks per event;
* :func:`load_generator` / :func:`generator_extractor`: a trained clustering generator as the
  ``extract`` function of :func:`clustering.cluster_events`, with its input channels;
* :func:`make_clusterer`: "generator file", "hough" or "dbscan" as one function
  ``(batch, n_tracks) -> labels``, run batch by batch (memory bounded by the batch size).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import clustering
from snemo.events import EventBatch

CLASSICAL = ("hough", "dbscan")
DEFAULT_COUNTER = Path(__file__).resolve().parent / "models" / "top_my_generator.keras"
DEFAULT_GENERATOR = Path(__file__).resolve().parent / "models" / "clustering_my_generator.keras"


@dataclass
class Counter:
    """A trained track counter: the model, the views it reads, whether it takes a radius channel."""

    model: object
    views: tuple
    radius_channel: bool
    forward: object = None

    @property
    def n_classes(self) -> int:
        """Number of classes K (1..K tracks)."""
        return int(self.model.output_shape[-1])


def load_counter(path, *, flag: str = "--counter") -> Counter:
    """Load a trained track counter (safe mode) as a :class:`Counter`.

    Raises ValueError naming ``flag`` when the file is not a counter of a known view.
    """
    import counting

    model = counting.load_model(path, flag=flag)
    try:
        views = counting.model_views(model)
    except ValueError as err:
        raise ValueError(f"{flag} {path}: {err}") from None
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    return Counter(model, views, any(shape[-1] == 2 for shape in shapes), forward_function(model))


def forward_function(model):
    """``forward(inputs) -> outputs`` of ``model`` in inference mode, traced once for any batch size.

    ``inputs``: one array, or a dict by input name for a model with several inputs; the signature
    leaves the batch dimension open, so the last, shorter batch of a chunk is not traced again.
    """
    import tensorflow as tf

    specs = {tensor.name.split(":")[0]: tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype)
             for tensor in model.inputs}
    signature = next(iter(specs.values())) if len(specs) == 1 else specs

    @tf.function(input_signature=[signature], autograph=False)
    def forward(inputs):
        return model(inputs, training=False)

    return forward


def predict_counts(counter: Counter, batch: EventBatch, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Predicted number of tracks (int64 (n,)) and the counter's softmax (float32 (n, K)) of ``batch``.

    Class i means i + 1 tracks. Events without any hit get 0 tracks and an all-zero score row
    (there is nothing to count).
    """
    from datasets import views

    scores = np.zeros((len(batch), counter.n_classes), dtype=np.float32)
    for start in range(0, len(batch), batch_size):
        part = batch[start:start + batch_size]
        images = [views.make_view(part, name, radius_channel=counter.radius_channel) for name in counter.views]
        inputs = images[0] if len(images) == 1 else dict(zip(counter.views, images))
        scores[start:start + len(part)] = np.asarray(counter.forward(inputs))
    counts = np.where(batch.n_hits > 0, np.argmax(scores, axis=1) + 1, 0).astype(np.int64)
    scores[batch.n_hits == 0] = 0.0
    return counts, scores


def load_generator(path, *, flag: str = "--clusterer"):
    """Load a trained clustering generator (safe mode); returns (model, {"z_channel", "radius_channel"}).

    Raises ValueError naming ``flag`` when the file is not a generator of ``architectures.generator``.
    """
    from architectures import generator as architecture  # registers its HitMask layer
    from snemo import cli

    model = cli.load_keras_model(path, flag=flag)
    try:
        return model, architecture.input_channels(model)
    except ValueError as err:
        raise ValueError(f"{flag} {path}: {err}") from None


def generator_extractor(model, *, batch_size: int = 512):
    """``extract(images (m, 18, 113, C)) -> (m, 18, 113, 1)`` probabilities of ``model``, in batches."""
    forward = forward_function(model)

    def extract(images):
        outputs = [np.asarray(forward(images[start:start + batch_size]))
                   for start in range(0, len(images), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros(images.shape[:3] + (1,), np.float32)

    return extract


def make_clusterer(name_or_path, *, batch_size: int = 1024, flag: str = "--clusterer", refit: bool | None = None):
    """A clusterer ``(batch, n_tracks or None) -> int16 labels (n_hits,)`` and its description.

    ``name_or_path``: "hough" or "dbscan" (the classical baselines of :mod:`clustering` with their
    tuned defaults) or the path of a trained generator (full-event clustering with
    :func:`clustering.cluster_events`). ``refit``: the clusters refined by their fitted lines
    (:func:`clustering.refine_by_lines`); None: as each method is scored by default (Hough and
    generators refitted, DBSCAN not). The batch is processed ``batch_size`` events at a time.
    """
    if str(name_or_path) in CLASSICAL:
        hough = str(name_or_path) == "hough"
        refit = hough if refit is None else refit

        def classical(batch, n_tracks=None):
            # DBSCAN was tuned without a count (it keeps every cluster); Hough stops at the count.
            if hough:
                return clustering.hough_cluster(batch, n_tracks, progress=False, refine=refit)
            labels = clustering.dbscan_cluster(batch, None, progress=False)
            return clustering.refine_by_lines(batch, labels) if refit else labels

        return in_batches(classical, batch_size), {"clusterer": str(name_or_path), "line_refit": refit}
    model, channels = load_generator(name_or_path, flag=flag)
    extract = generator_extractor(model, batch_size=batch_size)
    make_inputs = functools.partial(clustering.event_inputs, **channels)

    refit = True if refit is None else refit

    def generated(batch, n_tracks=None):
        # Extraction order is the canonical order only when the generator is right: renumber.
        labels = clustering.cluster_events(batch, extract, n_tracks, make_inputs=make_inputs)
        return clustering.refine_by_lines(batch, labels) if refit else clustering.canonical_labels(batch, labels)

    return in_batches(generated, batch_size), {"clusterer": str(Path(name_or_path).resolve()), **channels,
                                               "line_refit": refit}


def in_batches(method, batch_size: int):
    """``method(batch, n_tracks)`` run on ``batch_size`` events at a time; labels concatenated, int16."""
    def run(batch: EventBatch, n_tracks=None) -> np.ndarray:
        parts = []
        for start in range(0, len(batch), batch_size):
            part = batch[start:start + batch_size]
            counts = None if n_tracks is None else np.asarray(n_tracks)[start:start + len(part)]
            parts.append(method(part, counts) if len(part) else np.zeros(0, np.int16))
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)

    return run
