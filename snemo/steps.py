"""Step objects: what differs between tasks in the one training loop (:func:`snemo.training.train`).

The loop knows no task. It distributes the data, runs epochs, reduces metrics, writes history,
TensorBoard, checkpoints and the best model; a *step object* says what to train and how, in the
spirit of overriding Keras' ``train_step``. A step is a :class:`Step` subclass with:

* ``build(strategy)``: called once at the start of every :func:`~snemo.training.train` call, before
  the checkpoint is restored: create the optimizers under ``strategy.scope()`` and build them over
  the variables they train (a Keras optimizer restores its slots only once built). The trainable
  flags are read here, so :func:`~snemo.training.set_trainable` goes before ``train``.
* ``trackables()``: ``{name: model, optimizer or tf.Variable}``, checkpointed together with the loop
  state; the names are the checkpoint keys (not ``epoch``, ``best``, ``bad``, ``stopped``,
  ``base_learning_rate``). Before ``build`` (``snemo.cli.train_model`` counts the models'
  parameters) optimizers not yet made may be None. Keep anything random in a checkpointed
  ``tf.random.Generator`` so that a resumed run repeats an uninterrupted one.
* ``train_step(inputs, targets)``: runs on each replica (inside ``strategy.run`` in a
  ``tf.function``): forward pass, gradients, ``apply_gradients`` of each optimizer. Returns a dict
  of per-replica SUMS (float scalars), which the loop all-reduces (SUM) over replicas and workers.
  Each name of ``metric_names`` must be a key: the sum over this replica's examples (or cells...)
  of that metric. A loss used for gradients is divided by the GLOBAL count (:func:`global_sum`),
  so that N replicas make the same update as one device. The key ``n`` is the number of examples
  (the loop counts the batch's first input tensor when the step leaves it out); it gives the
  ``samples`` of the history. Traced with autograph off: ``tf.where`` / ``tf.cond``, not a Python
  ``if`` on a tensor.
* ``evaluate_step(inputs, targets)``: the same sums without any update, for the validation split.
* ``metric_names``: what the history (``name`` and ``val_name``), TensorBoard (``name/train``,
  ``name/validation``), the progress bar and the epoch line report: the epoch value of a metric is
  (its sum over the epoch) / (the sum of its denominator key, ``n`` unless ``denominators`` names
  another key, e.g. the number of hit cells of a masked loss).
* ``monitor``: the reported name whose lowest value is "best" (default ``val_loss``; a training
  metric works without validation). Lower is better: report an error rate rather than an accuracy.
* ``best_models()``: ``{file name: keras.Model}`` saved in the run folder when the monitored value
  improves (e.g. only the generator of a GAN) and, with ``restore_best``, put back at the end.
* ``learning_rate`` / ``set_learning_rate(value)``: what the lr schedules read and set; by default
  the first optimizer of ``trackables()`` is read and every optimizer is set. A step whose
  optimizers run at different rates overrides ``set_learning_rate`` to keep their ratio.

:class:`ClassifierStep` (one model, Adam, a per-example loss, "accuracy") serves the counters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

MODEL_FILE = "model.keras"
EXAMPLES = "n"


def categorical_loss(y_true, y_pred):
    """Per-example categorical cross-entropy, (B, C) one-hot and softmax -> (B,)."""
    import keras

    return keras.losses.categorical_crossentropy(y_true, y_pred)


def categorical_correct(y_true, y_pred):
    """Per-example 1.0 where argmax(prediction) == argmax(label), (B, C) -> (B,) float32."""
    import tensorflow as tf

    return tf.cast(tf.equal(tf.argmax(y_true, axis=-1), tf.argmax(y_pred, axis=-1)), tf.float32)


def global_sum(value):
    """Sum of a per-replica scalar over every replica of every worker (an all-reduce).

    Call it inside a replica step (e.g. the global number of examples of a short last batch,
    counted exactly); returns a float32 scalar, the same on every replica.
    """
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(value, tf.float32))


def batch_size_of(tensor):
    """Number of examples (first dimension) of a batch tensor, float32 scalar."""
    import tensorflow as tf

    return tf.cast(tf.shape(tensor)[0], tf.float32)


def global_mean(values, global_count):
    """sum(values) / global_count: this replica's share of a mean over the global batch (float32)."""
    import tensorflow as tf

    return tf.reduce_sum(values) / tf.maximum(global_count, 1.0)


def regularisation_loss(model):
    """The model's regularisation losses, scaled for the replicas (0.0 without any)."""
    import tensorflow as tf

    if not model.losses:
        return tf.constant(0.0)
    return tf.nn.scale_regularization_loss(tf.add_n(model.losses))


class Step(ABC):
    """The step protocol of :func:`snemo.training.train`; see the module docstring."""

    metric_names: tuple[str, ...] = ("loss",)
    denominators: dict[str, str] = {}
    monitor: str = "val_loss"

    def build(self, strategy) -> None:
        """Create and build optimizers under ``strategy.scope()`` (nothing by default)."""

    @abstractmethod
    def trackables(self) -> dict:
        """{checkpoint name: model, optimizer or tf.Variable}."""

    @abstractmethod
    def train_step(self, inputs, targets) -> dict:
        """Replica train step: update the weights, return {name: per-replica sum}."""

    @abstractmethod
    def evaluate_step(self, inputs, targets) -> dict:
        """Replica evaluation step: {name: per-replica sum}, no update."""

    @abstractmethod
    def best_models(self) -> dict:
        """{file name in the run folder: keras.Model} saved as the best model(s)."""

    def optimizers(self) -> list:
        """The Keras optimizers among ``trackables()``, in order."""
        import keras

        return [value for value in self.trackables().values() if isinstance(value, keras.optimizers.Optimizer)]

    @property
    def learning_rate(self) -> float:
        """Current learning rate of the first optimizer (what the history reports)."""
        import keras

        optimizers = self.optimizers()
        if not optimizers:
            raise ValueError(f"{type(self).__name__} has no optimizer among its trackables")
        return float(keras.ops.convert_to_numpy(optimizers[0].learning_rate))

    def set_learning_rate(self, value: float) -> None:
        """Set every optimizer's learning rate to ``value``."""
        for optimizer in self.optimizers():
            optimizer.learning_rate = value

    def denominator(self, name: str) -> str:
        """Key of the sums that ``name`` is divided by (``n`` unless ``denominators`` says otherwise)."""
        return self.denominators.get(name, EXAMPLES)


class ClassifierStep(Step):
    """One model, one optimizer (default Adam), a per-example loss and a per-example "accuracy".

    ``model``: a Keras model built under the strategy scope; its ``trainable`` flags at
    :meth:`build` decide what is trained. ``learning_rate``: of the default Adam (a given
    ``optimizer`` keeps its own). ``loss_fn(y, p) -> (B,)`` per-example loss, averaged over the
    exact global batch (a short last batch is weighted right), plus the model's regularisation
    losses; ``correct_fn(y, p) -> (B,)`` per-example score reported as "accuracy". ``model_file``:
    the best model's file name in the run folder. Reports ``loss`` and ``accuracy``.
    """

    metric_names = ("loss", "accuracy")

    def __init__(self, model, *, learning_rate: float = 1e-3, optimizer=None, loss_fn: Callable = categorical_loss,
                 correct_fn: Callable = categorical_correct, model_file: str = MODEL_FILE):
        if learning_rate <= 0:
            raise ValueError(f"learning rate must be positive, got {learning_rate}")
        self.model = model
        self.initial_learning_rate = learning_rate
        self.given_optimizer = optimizer
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.correct_fn = correct_fn
        self.model_file = model_file
        self.variables = []

    def build(self, strategy) -> None:
        """Read the trainable variables; create (default Adam) and build the optimizer in the scope."""
        import keras

        self.variables = self.model.trainable_variables
        if not self.variables:
            raise ValueError("the model has no trainable variables")
        with strategy.scope():
            if self.given_optimizer is None:
                self.optimizer = keras.optimizers.Adam(learning_rate=self.initial_learning_rate)
            self.optimizer.build(self.variables)

    def trackables(self) -> dict:
        """{"model": the model, "optimizer": its optimizer} (the checkpoint keys of earlier releases)."""
        return {"model": self.model, "optimizer": self.optimizer}

    def best_models(self) -> dict:
        """{model_file: the model}."""
        return {self.model_file: self.model}

    def train_step(self, inputs, targets) -> dict:
        """One Adam step on the mean loss over the global batch; returns loss, accuracy and n sums."""
        import tensorflow as tf

        local_n = batch_size_of(targets)
        global_n = global_sum(local_n)
        with tf.GradientTape() as tape:
            predictions = self.model(inputs, training=True)
            per_example = self.loss_fn(targets, predictions)  # (B,)
            loss = global_mean(per_example, global_n) + regularisation_loss(self.model)
        gradients = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(gradients, self.variables))
        return {"loss": tf.reduce_sum(per_example), "accuracy": tf.reduce_sum(self.correct_fn(targets, predictions)),
                EXAMPLES: local_n}

    def evaluate_step(self, inputs, targets) -> dict:
        """Loss, accuracy and n sums of the model in inference mode."""
        import tensorflow as tf

        predictions = self.model(inputs, training=False)
        return {"loss": tf.reduce_sum(self.loss_fn(targets, predictions)),
                "accuracy": tf.reduce_sum(self.correct_fn(targets, predictions)), EXAMPLES: batch_size_of(targets)}
