"""Toy step objects for tests/test_training.py: an adversarial step and a two-head step.

They show that tasks other than counting fit the loop without touching it:

* :class:`GanStep`: a generator maps an event (cells with hits, 0/1) to the per-cell probability
  that the cell belongs to the first track; a conditional discriminator scores (event, track)
  pairs (pix2pix-style). Two Adam optimizers (the discriminator's at a fixed ratio of the
  generator's rate), an adversarial loss per example and a reconstruction loss per HIT CELL
  (masked to cells with hits, so its denominator is the number of hits, not of events).
* :class:`TwoHeadStep`: one model with two outputs (a 4-class softmax and a scalar), a loss and a
  weight each, per-head metrics.

Run as a script (``python tests/toy_steps.py JOBS_JSON``) it first makes two logical CPU devices
(before TensorFlow starts), then runs each job in order and prints one JSON line of results: a job is
{"kind": "gan" | "two_head", "strategy": "default" | "mirrored", "out": folder,
"epochs": n, "seed": weight seed}; the final and initial weights of every network go to
``<out>/weights.npz``. A job {"kind": "mirrored_update"} instead compares one SGD step under the
default strategy and under MirroredStrategy (:func:`mirrored_update`). One process serves every job
that needs the two logical CPUs: TensorFlow starts once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

CELLS = 12


def gan_data(n=32, seed=0, batch=16):
    """(events, first-track cells) float32 (n, CELLS) each, batched in order (no shuffling)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    events = (rng.random((n, CELLS)) < 0.5).astype(np.float32)
    events[:, 0] = 1.0  # every event has a hit
    tracks = events * (np.arange(CELLS) < CELLS // 2)  # the first track: the hits of the first half
    return tf.data.Dataset.from_tensor_slices((events, tracks.astype(np.float32))).batch(batch)


def two_head_data(n=32, seed=0, batch=16):
    """(x (n, 6), {"count": one-hot (n, 4), "value": (n, 1)}) batched in order."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    count = np.eye(4, dtype=np.float32)[(x[:, :3] > 0).sum(axis=1)]
    value = x[:, 3:4] * 2.0 + x[:, 4:5]
    return tf.data.Dataset.from_tensor_slices((x, {"count": count, "value": value})).batch(batch)


def gan_models(seed=0):
    """(generator, discriminator): tiny dense networks over CELLS cells."""
    import keras

    keras.utils.set_random_seed(seed)
    event = keras.Input((CELLS,), name="event")
    track = keras.layers.Dense(CELLS, activation="sigmoid", name="track")(
        keras.layers.Dense(16, activation="relu")(event))
    generator = keras.Model(event, track, name="generator")
    event_in, track_in = keras.Input((CELLS,), name="event"), keras.Input((CELLS,), name="track")
    joined = keras.layers.Concatenate()([event_in, track_in])
    score = keras.layers.Dense(1, activation="sigmoid", name="real")(keras.layers.Dense(8, activation="relu")(joined))
    return generator, keras.Model([event_in, track_in], score, name="discriminator")


def two_head_model(seed=0):
    """A model with outputs {"count": (B, 4) softmax, "value": (B, 1)}."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = {"count": keras.layers.Dense(4, activation="softmax", name="count")(hidden),
               "value": keras.layers.Dense(1, name="value")(hidden)}
    return keras.Model(inputs, outputs, name="two_head")


def _steps():
    """The step classes (defined here so that importing this module does not start TensorFlow)."""
    import keras
    import tensorflow as tf

    from snemo.steps import Step, batch_size_of, global_mean, global_sum

    class GanStep(Step):
        metric_names = ("generator_loss", "discriminator_loss", "reconstruction")
        denominators = {"reconstruction": "hits"}
        monitor = "val_reconstruction"

        def __init__(self, generator, discriminator, *, learning_rate=1e-2, discriminator_ratio=0.5,
                     reconstruction_weight=10.0):
            self.generator, self.discriminator = generator, discriminator
            self.initial_learning_rate = learning_rate
            self.ratio = discriminator_ratio
            self.weight = reconstruction_weight
            self.generator_optimizer = self.discriminator_optimizer = None

        def build(self, strategy):
            with strategy.scope():
                self.generator_optimizer = keras.optimizers.Adam(self.initial_learning_rate)
                self.discriminator_optimizer = keras.optimizers.Adam(self.initial_learning_rate * self.ratio)
                self.generator_optimizer.build(self.generator.trainable_variables)
                self.discriminator_optimizer.build(self.discriminator.trainable_variables)

        def trackables(self):
            return {"generator": self.generator, "discriminator": self.discriminator,
                    "generator_optimizer": self.generator_optimizer,
                    "discriminator_optimizer": self.discriminator_optimizer}

        def best_models(self):
            return {"generator.keras": self.generator}

        def set_learning_rate(self, value):
            self.generator_optimizer.learning_rate = value
            self.discriminator_optimizer.learning_rate = value * self.ratio

        def _losses(self, events, tracks, training):
            fake = self.generator(events, training=training)  # (B, CELLS)
            real_score = self.discriminator([events, tracks], training=training)  # (B, 1)
            fake_score = self.discriminator([events, fake], training=training)
            bce = keras.losses.binary_crossentropy
            discriminator = bce(tf.ones_like(real_score), real_score) + bce(tf.zeros_like(fake_score), fake_score)
            adversarial = bce(tf.ones_like(fake_score), fake_score)  # (B,)
            mask = tf.cast(events > 0, tf.float32)
            reconstruction = tf.abs(tracks - fake) * mask  # (B, CELLS), 0 off the hits
            return adversarial, discriminator, reconstruction, mask

        def train_step(self, events, tracks):
            n = global_sum(batch_size_of(events))
            hits = global_sum(tf.reduce_sum(tf.cast(events > 0, tf.float32)))
            with tf.GradientTape(persistent=True) as tape:
                adversarial, discriminator, reconstruction, mask = self._losses(events, tracks, True)
                generator_loss = global_mean(adversarial, n) + self.weight * global_mean(reconstruction, hits)
                discriminator_loss = global_mean(discriminator, n)
            for loss, network, optimizer in ((generator_loss, self.generator, self.generator_optimizer),
                                             (discriminator_loss, self.discriminator, self.discriminator_optimizer)):
                gradients = tape.gradient(loss, network.trainable_variables)
                optimizer.apply_gradients(zip(gradients, network.trainable_variables))
            return {"generator_loss": tf.reduce_sum(adversarial), "discriminator_loss": tf.reduce_sum(discriminator),
                    "reconstruction": tf.reduce_sum(reconstruction), "hits": tf.reduce_sum(mask)}

        def evaluate_step(self, events, tracks):
            adversarial, discriminator, reconstruction, mask = self._losses(events, tracks, False)
            return {"generator_loss": tf.reduce_sum(adversarial), "discriminator_loss": tf.reduce_sum(discriminator),
                    "reconstruction": tf.reduce_sum(reconstruction), "hits": tf.reduce_sum(mask)}

    class TwoHeadStep(Step):
        metric_names = ("loss", "count_loss", "value_loss", "count_accuracy")

        def __init__(self, model, *, head_weights=(("count", 1.0), ("value", 0.5)), learning_rate=1e-2):
            self.model = model
            self.head_weights = dict(head_weights)
            self.initial_learning_rate = learning_rate
            self.optimizer = None

        def build(self, strategy):
            with strategy.scope():
                self.optimizer = keras.optimizers.Adam(self.initial_learning_rate)
                self.optimizer.build(self.model.trainable_variables)

        def trackables(self):
            return {"model": self.model, "optimizer": self.optimizer}

        def best_models(self):
            return {"model.keras": self.model}

        def _losses(self, inputs, targets, training):
            outputs = self.model(inputs, training=training)
            heads = {"count": keras.losses.categorical_crossentropy(targets["count"], outputs["count"]),
                     "value": tf.reduce_mean(tf.square(targets["value"] - outputs["value"]), axis=-1)}  # (B,)
            total = tf.add_n([self.head_weights[name] * heads[name] for name in heads])
            correct = tf.cast(tf.equal(tf.argmax(targets["count"], -1), tf.argmax(outputs["count"], -1)), tf.float32)
            return total, heads, correct

        def _sums(self, total, heads, correct):
            return {"loss": tf.reduce_sum(total), "count_loss": tf.reduce_sum(heads["count"]),
                    "value_loss": tf.reduce_sum(heads["value"]), "count_accuracy": tf.reduce_sum(correct)}

        def train_step(self, inputs, targets):
            n = global_sum(batch_size_of(inputs))
            with tf.GradientTape() as tape:
                total, heads, correct = self._losses(inputs, targets, True)
                loss = global_mean(total, n)
            variables = self.model.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return self._sums(total, heads, correct)

        def evaluate_step(self, inputs, targets):
            return self._sums(*self._losses(inputs, targets, False))

    return GanStep, TwoHeadStep


def make_step(kind, strategy, seed):
    """(step, training data, validation data, schedule) of a toy job, built under the strategy scope."""
    from snemo.training import Schedule

    GanStep, TwoHeadStep = _steps()
    with strategy.scope():
        if kind == "gan":
            return GanStep(*gan_models(seed)), gan_data(), gan_data(seed=1), Schedule(lr_schedule="cosine")
        if kind == "two_head":
            return (TwoHeadStep(two_head_model(seed)), two_head_data(), two_head_data(seed=1),
                    Schedule(lr_schedule="plateau", plateau_patience=1))
    raise ValueError(f"unknown toy step {kind!r}")


def networks(step):
    """{name: keras.Model} among the step's trackables."""
    import keras

    return {name: value for name, value in step.trackables().items() if isinstance(value, keras.Model)}


_STRATEGIES = {}


def mirrored_strategy():
    """The process's one MirroredStrategy over the two logical CPUs.

    One per process, as a script has (several in one process may mix up their collective instances).
    """
    import tensorflow as tf

    if "mirrored" not in _STRATEGIES:
        _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return _STRATEGIES["mirrored"]


def mirrored_update():
    """One SGD step (learning rate 0.5) of a dense softmax layer on a batch of 30, on one device and on two replicas.

    Returns {"kind": "mirrored_update", "ratio": max |kernel(one) - kernel(two)| / max |step of one|}.
    """
    import tempfile

    import keras
    import tensorflow as tf

    from snemo import training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype("float32")  # 30: the replicas get 15 each
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 30)]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(30)

    def build():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6,))
        return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(inputs))

    kernels = {}
    for name, strategy in (("one", tf.distribute.get_strategy()), ("two", mirrored_strategy())):
        with strategy.scope():
            model = build()
            optimizer = keras.optimizers.SGD(learning_rate=0.5)
        with tempfile.TemporaryDirectory() as out:
            training.train(training.ClassifierStep(model, optimizer=optimizer), data, None, strategy=strategy,
                           out_dir=out, epochs=1, quiet=True)
        kernels[name] = model.get_weights()[0]
    step = np.abs(kernels["one"] - build().get_weights()[0]).max()
    return {"kind": "mirrored_update", "ratio": float(np.abs(kernels["one"] - kernels["two"]).max() / step)}


def run_job(kind, strategy_name, out, epochs, seed):
    """Train one toy job; writes <out>/weights.npz (final and initial weights); returns a summary dict."""
    import keras
    import tensorflow as tf

    from snemo.training import train

    start = time.time()
    strategy = mirrored_strategy() if strategy_name == "mirrored" else tf.distribute.get_strategy()
    step, train_data, validation_data, schedule = make_step(kind, strategy, seed)
    initial = {name: model.get_weights() for name, model in networks(step).items()}
    result = train(step, train_data, validation_data, strategy=strategy, out_dir=out, epochs=epochs,
                   schedule=schedule, restore_best=False, quiet=True)
    arrays = {}
    for name, model in networks(step).items():
        for index, (final, first) in enumerate(zip(model.get_weights(), initial[name])):
            arrays[f"{name}/{index}"] = final
            arrays[f"initial/{name}/{index}"] = first
    np.savez(Path(out) / "weights.npz", **arrays)
    rates = [float(keras.ops.convert_to_numpy(optimizer.learning_rate)) for optimizer in step.optimizers()]
    return {"out": str(out), "kind": kind, "strategy": strategy_name, "seconds": round(time.time() - start, 2),
            "resumed_from": result.resumed_from,
            "epochs_done": result.epochs_done, "replicas": strategy.num_replicas_in_sync, "learning_rates": rates}


def main(argv):
    """Make two logical CPUs, run the jobs of the JSON list argv[0], print their summaries as JSON."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    jobs = json.loads(argv[0])
    print(json.dumps([mirrored_update() if job["kind"] == "mirrored_update"
                      else run_job(job["kind"], job["strategy"], job["out"], job["epochs"], job["seed"])
                      for job in jobs]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
