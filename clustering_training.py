"""Training and evaluating the clustering generator (``clustering_one.py``): data, step object, report.

* :func:`load`: the events of the run's files split into train / validation / test (the split of
  every loader: :func:`datasets.splits.plan_events`), and tf.data pipelines of (event image,
  first-remaining-track image) pairs. Full-event clustering removes each extracted track and asks
  again, so every example first removes the first k canonical tracks of its event (k uniform in
  0..n-1, drawn per example): the generator learns "the first REMAINING track". Images are made
  batch by batch, vectorised (:func:`clustering.event_inputs`,
  :func:`clustering.first_remaining_track_image`); the validation draws are the same every epoch.
* :class:`ClusteringStep`: the step object of :func:`snemo.training.train`: generator and
  conditional discriminator (or the generator alone), two Adam optimizers, non-saturating
  adversarial loss plus the per-hit reconstruction loss (binary cross-entropy over hit cells).
* :func:`report`: full-event clustering of the test split beside DBSCAN, Hough and the ceiling,
  ``metrics.json``, the training curves and event displays (truth | prediction).
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

import clustering
import clustering_inference as inference
from datasets import splits as splitting
from datasets.clustering import canonical_hit_track_ids
from datasets.task import Splits
from datasets.tracks import n_tracks_with_hits
from snemo import geometry as geo
from snemo.events import EventBatch, EventFileError, find_files, offsets_from_counts, ranges, read_events
from snemo.steps import EXAMPLES, Step, batch_size_of, global_sum

FIELDS = ("grid_side", "grid_layer", "grid_column", "wirez", "radius", "wirez_missing", "track_split")
SPLIT = (0.8, 0.1, 0.1)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
def examples(batch: EventBatch, rng, *, z_channel: bool = False, radius_channel: bool = False):
    """(inputs (n, 18, 113, C), targets (n, 18, 113, 1)) float32 of ``batch``, its first k tracks removed.

    Per event k is uniform in 0..m-1 (m: tracks with hits, canonical order), drawn from ``rng``;
    the inputs show the hits of the tracks k.. and the noise, the target the hits of track k.
    """
    truth = canonical_hit_track_ids(batch)  # (n_hits,)
    event = batch.hit_event_index()
    visible = np.zeros(len(batch), dtype=np.int64)
    np.maximum.at(visible, event[truth >= 0], truth[truth >= 0] + 1)
    removed = np.floor(rng.random(len(batch)) * visible).astype(np.int64)  # (n,) k per event
    remaining = (truth < 0) | (truth >= removed[event])
    inputs = clustering.event_inputs(batch, remaining, z_channel=z_channel, radius_channel=radius_channel)
    targets = clustering.first_remaining_track_image(batch, remaining)[..., None]
    return inputs, targets


def pipeline(store: EventBatch, *, batch_size: int, shuffle: bool, seed: int, z_channel: bool = False,
             radius_channel: bool = False):
    """tf.data of batched :func:`examples` of ``store``; returns (dataset, number of batches).

    With ``shuffle`` every epoch draws a new permutation and new k's (keyed by ``Dataset.random``);
    without, the batches and draws are the same every epoch (a fixed validation set).
    """
    import tensorflow as tf

    n = len(store)
    n_batches = math.ceil(n / batch_size)
    channels = 1 + bool(z_channel) + bool(radius_channel)
    permutations, lock = {}, threading.Lock()

    def make(key, index):
        key, index = int(key), int(index)
        start, stop = index * batch_size, min(index * batch_size + batch_size, n)
        if shuffle:
            with lock:
                if key not in permutations:
                    permutations.clear()
                    permutations[key] = np.random.default_rng([seed, key & 0xFFFFFFFF]).permutation(n)
                order = permutations[key]
            batch = store.take(order[start:stop])
        else:
            batch = store[start:stop]
        rng = np.random.default_rng([seed, key & 0xFFFFFFFF, index])
        return examples(batch, rng, z_channel=z_channel, radius_channel=radius_channel)

    plain = tf.autograph.experimental.do_not_convert

    @plain
    def convert(key, index):
        inputs, targets = tf.numpy_function(make, [key, index], (tf.float32, tf.float32))
        inputs.set_shape((None,) + geo.TOP_SHAPE + (channels,))  # (B, 18, 113, C)
        targets.set_shape((None,) + geo.TOP_SHAPE + (1,))  # (B, 18, 113, 1)
        return inputs, targets

    @plain
    def batches_of_epoch(key):
        return tf.data.Dataset.range(n_batches).map(plain(lambda index: (key, index)))

    if shuffle:
        plan = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).flat_map(batches_of_epoch)
    else:
        plan = batches_of_epoch(tf.constant(0, tf.int64))
    dataset = plan.map(convert, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options), n_batches


def load(source, *, batch_size: int, seed: int = 0, split_by: str = "event", shard=(0, 1), max_events=None,
         skip_out_of_range: bool = False, z_channel: bool = False, radius_channel: bool = False) -> Splits:
    """Read ``source`` (file, folder, glob or list) and return the clustering :class:`Splits`.

    ``train`` / ``validation``: :func:`pipeline` datasets; ``test``: None (the test events are
    clustered whole: ``test_events``). ``max_events``: at most ceil(max_events / n_files) events
    of each file. An event with no track hit has no target: ValueError naming the file and the
    entry, unless ``skip_out_of_range``.
    """
    files = find_files(source)
    cap = None if max_events is None else math.ceil(int(max_events) / len(files))
    batches = [read_events(path, fields=FIELDS, max_events=cap) for path in files]
    keeps = []
    for path, events in zip(files, batches):
        keep = n_tracks_with_hits(events) >= 1
        if not keep.all() and not skip_out_of_range:
            entry = int(events.entry[np.flatnonzero(~keep)[0]])
            raise EventFileError(f"{int((~keep).sum())} event(s) have no track hit to cluster (first shown); "
                                 f"--skip-out-of-range drops them", file=path, entry=entry, branch="track_split")
        keeps.append(keep)
    codes = splitting.plan_events(files, [len(b) for b in batches], np.concatenate(keeps), split=SPLIT,
                                  split_by=split_by, seed=seed, shard=shard)
    codes = np.split(codes, np.cumsum([len(b) for b in batches])[:-1])
    parts = [EventBatch.concatenate([b.take(c == k) for b, c in zip(batches, codes)]) for k in range(3)]
    channels = dict(z_channel=z_channel, radius_channel=radius_channel)
    train, _ = pipeline(parts[0], batch_size=batch_size, shuffle=True, seed=seed, **channels)
    validation, _ = pipeline(parts[1], batch_size=batch_size, shuffle=False, seed=seed + 1, **channels)
    info = {"task": "clustering", "files": files, "split": SPLIT, "split_by": split_by, "seed": seed,
            "target": "first remaining track after removing k canonical tracks, k uniform in 0..n-1", **channels}
    return Splits(train, validation, None, len(parts[0]), len(parts[1]), len(parts[2]), test_events=parts[2],
                  info=info)


# ------------------------------------------------------------------------------------------------
# The step object
# ------------------------------------------------------------------------------------------------
class ClusteringStep(Step):
    """Generator (+ conditional discriminator) step of the clustering GAN; see the module docstring.

    Reports per epoch: ``generator_loss`` (the generator's objective), ``reconstruction`` (binary
    cross-entropy per hit cell), ``hit_accuracy`` (hit cells on the right side of 0.5, per hit
    cell), ``track_exact`` (examples whose every hit cell is right), and with a discriminator
    ``adversarial`` (non-saturating -log D(fake), per example) and ``discriminator_loss``
    (-log D(real) - log(1 - D(fake)), per example). The best generator (lowest
    ``val_reconstruction``) is ``model.keras``. The discriminator runs at ``discriminator_ratio``
    times the generator's learning rate.
    """

    monitor = "val_reconstruction"
    denominators = {"reconstruction": "hits", "hit_accuracy": "hits"}

    def __init__(self, generator, discriminator=None, *, learning_rate: float = 1e-3,
                 reconstruction_weight: float = 10.0, discriminator_ratio: float = 1.0):
        if learning_rate <= 0 or discriminator_ratio <= 0:
            raise ValueError(f"learning rate and discriminator ratio must be positive, got {learning_rate}, "
                             f"{discriminator_ratio}")
        if reconstruction_weight < 0 or (discriminator is None and reconstruction_weight == 0):
            raise ValueError(f"reconstruction weight must be >= 0 (> 0 without a discriminator), got "
                             f"{reconstruction_weight}")
        self.generator, self.discriminator = generator, discriminator
        self.initial_learning_rate = learning_rate
        self.weight = float(reconstruction_weight)
        self.ratio = float(discriminator_ratio)
        self.generator_optimizer = self.discriminator_optimizer = None
        adversarial = ("adversarial", "discriminator_loss") if discriminator is not None else ()
        self.metric_names = ("generator_loss",) + adversarial + ("reconstruction", "hit_accuracy", "track_exact")

    def build(self, strategy) -> None:
        """Two Adam optimizers (one without a discriminator), built in the strategy scope."""
        import keras

        with strategy.scope():
            self.generator_optimizer = keras.optimizers.Adam(self.initial_learning_rate)
            self.generator_optimizer.build(self.generator.trainable_variables)
            if self.discriminator is not None:
                self.discriminator_optimizer = keras.optimizers.Adam(self.initial_learning_rate * self.ratio, beta_1=0.5)
                self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def trackables(self) -> dict:
        """The networks and their optimizers, by checkpoint name."""
        items = {"generator": self.generator, "generator_optimizer": self.generator_optimizer}
        if self.discriminator is not None:
            items.update(discriminator=self.discriminator, discriminator_optimizer=self.discriminator_optimizer)
        return items

    def best_models(self) -> dict:
        """{"model.keras": the generator}."""
        return {"model.keras": self.generator}

    def set_learning_rate(self, value: float) -> None:
        """Generator at ``value``, discriminator at ``value * discriminator_ratio``."""
        self.generator_optimizer.learning_rate = value
        if self.discriminator_optimizer is not None:
            self.discriminator_optimizer.learning_rate = value * self.ratio

    def _terms(self, events, tracks, training: bool):
        import tensorflow as tf

        fake = self.generator(events, training=training)  # (B, 18, 113, 1), 0 off the hits
        mask = tf.cast(events[..., :1] > 0, tf.float32)  # (B, 18, 113, 1)
        probability = tf.clip_by_value(fake, 1e-7, 1.0 - 1e-7)
        per_cell = -(tracks * tf.math.log(probability) + (1.0 - tracks) * tf.math.log(1.0 - probability)) * mask
        right = tf.cast(tf.equal(fake > 0.5, tracks > 0.5), tf.float32) * mask
        terms = {"reconstruction": tf.reduce_sum(per_cell), "hit_accuracy": tf.reduce_sum(right),
                 "track_exact": tf.reduce_sum(tf.cast(tf.reduce_all(tf.equal(right, mask), axis=[1, 2, 3]), tf.float32)),
                 "hits": tf.reduce_sum(mask), EXAMPLES: batch_size_of(events)}
        if self.discriminator is not None:
            real_logits = self.discriminator([events, tracks], training=training)  # (B, 5, 15, 1)
            fake_logits = self.discriminator([events, fake], training=training)
            bce = tf.nn.sigmoid_cross_entropy_with_logits
            patches = [1, 2, 3]
            adversarial = tf.reduce_mean(bce(labels=tf.ones_like(fake_logits), logits=fake_logits), axis=patches)
            discriminator = tf.reduce_mean(bce(labels=tf.ones_like(real_logits), logits=real_logits)
                                           + bce(labels=tf.zeros_like(fake_logits), logits=fake_logits), axis=patches)
            terms.update(adversarial=tf.reduce_sum(adversarial), discriminator_loss=tf.reduce_sum(discriminator))
        return terms

    def _objectives(self, terms):
        """(generator objective, global examples, discriminator objective or None): this replica's
        share of the global means (reconstruction per global hit cell, adversarial per global example)."""
        n = tf_maximum(global_sum(terms[EXAMPLES]))
        hits = tf_maximum(global_sum(terms["hits"]))
        generator = self.weight * terms["reconstruction"] / hits
        if self.discriminator is None:
            return generator, n, None
        return generator + terms["adversarial"] / n, n, terms["discriminator_loss"] / n

    def train_step(self, inputs, targets) -> dict:
        """One update of each network; the per-replica sums of every reported metric."""
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            terms = self._terms(inputs, targets, True)
            generator_objective, n, discriminator_objective = self._objectives(terms)
        pairs = [(generator_objective, self.generator, self.generator_optimizer)]
        if self.discriminator is not None:
            pairs.append((discriminator_objective, self.discriminator, self.discriminator_optimizer))
        for objective, network, optimizer in pairs:
            variables = network.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
        del tape
        terms["generator_loss"] = generator_objective * n
        return terms

    def evaluate_step(self, inputs, targets) -> dict:
        """The same sums on validation data, no update."""
        terms = self._terms(inputs, targets, False)
        terms["generator_loss"] = self._objectives(terms)[0] * tf_maximum(global_sum(terms[EXAMPLES]))
        return terms


def tf_maximum(value):
    """max(value, 1.0) (a denominator that is never 0), float32."""
    import tensorflow as tf

    return tf.maximum(value, 1.0)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------
def by_label(batch: EventBatch, labels) -> EventBatch:
    """``batch`` with each event's hits grouped by ``labels`` (0, 1, ..., then -1 as noise) and
    ``track_split`` set accordingly: a batch whose "truth" is the clustering (for the displays)."""
    labels = np.asarray(labels, dtype=np.int64)
    event = batch.hit_event_index()
    n_labels = int(labels.max(initial=-1)) + 1
    order = np.lexsort((np.arange(len(labels)), np.where(labels < 0, n_labels, labels), event))
    counts = np.zeros((len(batch), max(n_labels, 1)), dtype=np.int64)
    np.add.at(counts, (event[labels >= 0], labels[labels >= 0]), 1)
    n_tracks = (counts > 0).sum(axis=1)
    ends = np.cumsum(counts, axis=1)
    split = ends[np.arange(max(n_labels, 1))[None, :] < n_tracks[:, None]]  # (n_tracks_total,) row-major
    return EventBatch(batch.hit_offsets - batch.hit_offsets[0], {k: v[order] for k, v in batch.hits.items()},
                      offsets_from_counts(n_tracks), {"track_split": split.astype(np.int32)}, files=batch.files,
                      file_index=batch.file_index, entry=batch.entry)


def save_displays(batch: EventBatch, labels, out_dir, *, per_count: int = 2, name: str = "generator") -> list:
    """Truth | prediction displays of the first ``per_count`` events of each number of tracks.

    Top (x-y) and side (y-z) views, colours = canonical truth track (left) and predicted cluster
    (right), grey = noise. Writes ``event_t<N>_<entry>.{png,pdf}`` into ``out_dir``; returns the paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snemo.display import draw_event
    from snemo.plots import save_figure

    chosen = np.concatenate([np.flatnonzero(batch.n_tracks == count)[:per_count]
                             for count in np.unique(batch.n_tracks)] or [np.zeros(0, np.int64)])
    if len(chosen) == 0:
        return []
    hits = ranges(batch.hit_offsets[chosen] - batch.hit_offsets[0], batch.n_hits[chosen])
    subset = batch.take(chosen)
    truth = by_label(subset, canonical_hit_track_ids(subset))
    predicted = by_label(subset, np.asarray(labels)[hits])
    paths = []
    for index in range(len(subset)):
        fig, axes = plt.subplots(2, 2, figsize=(20, 6.5), gridspec_kw={"height_ratios": [1, 1.6]})
        for column, (shown, title) in enumerate(((truth, "truth (canonical order)"), (predicted, name))):
            draw_event(shown, index, axes=axes[:, column])
            axes[0, column].set_title(f"{title}: {int(shown.n_tracks[index])} track(s), entry "
                                      f"{int(subset.entry[index])}, {int(subset.n_hits[index])} hits (top view)")
        fig.tight_layout()
        paths += save_figure(fig, out_dir / f"event_t{int(subset.n_tracks[index])}_{int(subset.entry[index])}")
    return paths


def evaluate(test: EventBatch, clusterer, *, counter=None, batch_size: int = 1024, progress: bool = True) -> dict:
    """Score the generator's full-event clustering of ``test`` beside DBSCAN, Hough and the ceiling.

    ``clusterer``: a :func:`clustering_inference.make_clusterer` function of the generator;
    ``counter``: a :class:`clustering_inference.Counter` (None: the generator runs until it finds
    no track and Hough up to 4 lines). Returns {"methods": {name: clustering.score(...)},
    "labels": {name: per-hit labels}, "counting_accuracy": float or None}.
    """
    counts, accuracy = None, None
    if counter is not None:
        counts, _ = inference.predict_counts(counter, test, batch_size=batch_size)
        accuracy = float(np.mean(counts == test.n_tracks)) if len(test) else float("nan")
    count_name = "counter" if counter is not None else "no count"
    labels = {f"generator ({count_name})": clusterer(test, counts),
              "generator (true count)": clusterer(test, test.n_tracks),
              "DBSCAN": clustering.dbscan_cluster(test, progress=progress),
              f"Hough ({count_name})": clustering.hough_cluster(test, counts, progress=progress)}
    return {"methods": {name: clustering.score(test, value) for name, value in labels.items()}, "labels": labels,
            "counting_accuracy": accuracy}


def tables(methods: dict) -> str:
    """The :func:`clustering.format_table` of all events and of each number of tracks, one after the other."""
    first = next(iter(methods.values()))
    groups = ["all"] + sorted(first["by_n_tracks"], key=int)
    return "\n\n".join(clustering.format_table(methods, group) for group in groups)


def report(run, model, splits: Splits, *, counter=None, counter_path=None, displays: int = 2) -> dict:
    """Evaluate the best generator (``model.keras`` of the run, else ``model``) on ``splits.test_events``
    and write the run's report.

    Prints the tables; writes ``metrics.json`` (per method: :func:`clustering.score`, by number
    of tracks), ``training_curves.{pdf,png}`` and ``displays/event_t<N>_<entry>.{png,pdf}``.
    Returns the metrics dict.
    """
    from snemo import cli, plots
    from snemo.metrics import write_metrics
    from snemo.training import read_history

    args = run.args
    channels = {"z_channel": args.z_channel, "radius_channel": args.radius_channel}
    if (run.out / "model.keras").is_file():
        # The file is what is scored, also when a killed run was resumed after its last epoch
        # (the loop then leaves the last epoch's weights in ``model``, not the best ones).
        model = inference.load_generator(run.out / "model.keras", flag="model.keras")[0]
    extract = inference.generator_extractor(model, batch_size=args.batch_size)
    make_inputs = functools.partial(clustering.event_inputs, **channels)

    def clusterer(batch, counts=None):
        return clustering.cluster_events(batch, extract, counts, make_inputs=make_inputs)

    test = splits.test_events
    result = evaluate(test, inference.in_batches(clusterer, 2048), counter=counter, batch_size=args.batch_size,
                      progress=not args.quiet)
    metrics = {"task": "clustering", "split": "test", "n_events": len(test), "model": str(run.out / "model.keras"),
               "counter": None if counter_path is None else str(counter_path),
               "counting_accuracy": result["counting_accuracy"], "adversarial": not args.no_adversarial,
               **channels, "methods": result["methods"]}
    write_metrics(run.out / "metrics.json", metrics)
    history = read_history(run.out)
    if history:
        plots.plot_history(history, run.out / "training_curves", title="clustering generator")
    name = next(iter(result["labels"]))
    save_displays(test, result["labels"][name], run.out / "displays", per_count=displays, name=name)
    cli.finish(run)
    if result["counting_accuracy"] is not None:
        print(f"counter accuracy on the test events: {100 * result['counting_accuracy']:.2f}%", flush=True)
    print(tables(result["methods"]), flush=True)
    print(f"run folder: {run.out}", flush=True)
    return metrics
