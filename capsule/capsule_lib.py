"""Capsule layers after Sabour, Frosst and Hinton, "Dynamic Routing Between Capsules" (2017).

* :func:`squash`: v = |s|^2 / (1 + |s|^2) * s / |s|, direction kept, length in [0, 1); the
  epsilon sits inside the square root of the norm, so the gradient at s = 0 is finite (0).
* :class:`PrimaryCapsule`: a Conv2D whose channels are cut into capsules, (B, H, W, C) ->
  (B, H' * W' * types, dim), squashed.
* :class:`SecondaryCapsule`: learned transformation matrices W (I, J, out dim, in dim) give the
  predictions u_hat_ij = W_ij u_i, routed by agreement (:class:`~capsule.routing_by_agreement.RoutingByAgreement`)
  into J capsules (B, J, out dim).
* :class:`CapsuleLength`: the length of each capsule, the class score, (B, J, D) -> (B, J) in [0, 1).
* :func:`margin_loss`: the per-example margin loss on those lengths (m+ = 0.9, m- = 0.1, lambda = 0.5).
* :class:`CapsuleMask`: the masking in front of the reconstruction decoder (true class in
  training, predicted class otherwise), (B, J, D) -> (B, J * D).

Every layer is a registered serialisable Keras class (package "snemo") with a full ``get_config``:
a model that uses them loads with ``keras.saving.load_model(path, safe_mode=True)`` once this
package is imported (``import capsule``).
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


def squash(vectors, axis: int = -1, epsilon: float = EPSILON):
    """Squash ``vectors`` along ``axis``: same direction, length |s|^2 / (1 + |s|^2) in [0, 1).

    ``vectors``: a tensor of any shape (B, ..., D). ``epsilon``: added to |s|^2 inside the square
    root of the norm, so that a zero vector maps to zero with a finite gradient. Returns a tensor of
    the same shape and dtype.
    """
    squared_norm = ops.sum(ops.square(vectors), axis=axis, keepdims=True)
    scale = squared_norm / (1.0 + squared_norm) / ops.sqrt(squared_norm + epsilon)
    return scale * vectors


def margin_loss(y_true, lengths, m_plus: float = 0.9, m_minus: float = 0.1, down_weight: float = 0.5):
    """Per-example margin loss of Sabour et al. (2017), (B, J) one-hot labels and lengths -> (B,).

    L = sum_j T_j max(0, m+ - |v_j|)^2 + lambda (1 - T_j) max(0, |v_j| - m-)^2, with T the one-hot
    label, m+ = 0.9, m- = 0.1 and lambda (``down_weight``) = 0.5. Usable as the ``loss_fn`` of
    :class:`snemo.steps.ClassifierStep`.
    """
    y_true = ops.cast(y_true, lengths.dtype)
    present = y_true * ops.square(ops.relu(m_plus - lengths))
    absent = down_weight * (1.0 - y_true) * ops.square(ops.relu(lengths - m_minus))
    return ops.sum(present + absent, axis=-1)


@keras.saving.register_keras_serializable(package="snemo")
class PrimaryCapsule(keras.layers.Layer):
    """Primary capsules: Conv2D(types * dim) reshaped into capsules, (B, H, W, C) -> (B, H' W' types, dim).

    ``capsule_types``: capsule channels per position; ``capsule_dim``: dimension of each capsule;
    ``kernel_size``, ``strides``, ``padding``: of the convolution (linear: the squash is the
    non-linearity). Weights: the convolution's kernel and bias.
    """

    def __init__(self, capsule_types: int = 8, capsule_dim: int = 8, *, kernel_size=3, strides=2,
                 padding: str = "valid", epsilon: float = EPSILON, **kwargs):
        super().__init__(**kwargs)
        if capsule_types < 1 or capsule_dim < 1:
            raise ValueError(f"capsule_types and capsule_dim must be >= 1, got {capsule_types}, {capsule_dim}")
        self.capsule_types = int(capsule_types)
        self.capsule_dim = int(capsule_dim)
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.epsilon = float(epsilon)
        self.conv = keras.layers.Conv2D(self.capsule_types * self.capsule_dim, kernel_size, strides=strides,
                                        padding=padding, name="conv")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"PrimaryCapsule takes images (batch, height, width, channels), got {tuple(input_shape)}")
        self._n_capsules(input_shape)
        self.conv.build(input_shape)
        self.built = True

    def _n_capsules(self, input_shape) -> int:
        try:
            _, height, width, _ = self.conv.compute_output_shape(input_shape)
        except ValueError:
            height = width = 0
        if not height or not width or height < 1 or width < 1:
            raise ValueError(f"PrimaryCapsule '{self.name}': input {tuple(input_shape)} too small for kernel "
                             f"{self.kernel_size}, strides {self.strides}, padding {self.padding}")
        return height * width * self.capsule_types

    def call(self, images):
        """(B, H, W, C) -> squashed capsules (B, H' * W' * types, dim)."""
        features = self.conv(images)  # (B, H', W', types * dim)
        n_capsules = self._n_capsules(images.shape)
        return squash(ops.reshape(features, (-1, n_capsules, self.capsule_dim)), epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape[0], self._n_capsules(input_shape), self.capsule_dim

    def get_config(self):
        config = super().get_config()
        config.update(capsule_types=self.capsule_types, capsule_dim=self.capsule_dim, kernel_size=self.kernel_size,
                      strides=self.strides, padding=self.padding, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="snemo")
class SecondaryCapsule(keras.layers.Layer):
    """Routed capsules: u (B, I, D_in) -> v (B, J, D_out) via u_hat_ij = W_ij u_i and routing by agreement.

    ``n_capsules``: J (one per class in a classifier); ``capsule_dim``: D_out;
    ``routing_iterations``: of :class:`~capsule.routing_by_agreement.RoutingByAgreement`;
    ``stop_gradient``: no gradient through u_hat in the intermediate iterations;
    ``kernel_initializer``: of W, shape (I, J, D_out, D_in) (default normal, stddev 0.05).
    ``return_coupling``: return ``(v, couplings (B, iterations, I, J))``.
    """

    def __init__(self, n_capsules: int, capsule_dim: int = 16, *, routing_iterations: int = 3,
                 stop_gradient: bool = True, kernel_initializer="random_normal", return_coupling: bool = False,
                 epsilon: float = EPSILON, **kwargs):
        from capsule.routing_by_agreement import RoutingByAgreement

        super().__init__(**kwargs)
        if n_capsules < 1 or capsule_dim < 1:
            raise ValueError(f"n_capsules and capsule_dim must be >= 1, got {n_capsules}, {capsule_dim}")
        self.n_capsules = int(n_capsules)
        self.capsule_dim = int(capsule_dim)
        self.routing_iterations = int(routing_iterations)
        self.stop_gradient = bool(stop_gradient)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.return_coupling = bool(return_coupling)
        self.epsilon = float(epsilon)
        self.routing = RoutingByAgreement(routing_iterations, stop_gradient=stop_gradient,
                                          return_coupling=return_coupling, epsilon=epsilon, name="routing")

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"SecondaryCapsule takes capsules (batch, input capsules, dimension) with known "
                             f"capsule count and dimension, got {tuple(input_shape)}")
        _, n_in, dim_in = input_shape
        self.kernel = self.add_weight(name="kernel", shape=(n_in, self.n_capsules, self.capsule_dim, dim_in),
                                      initializer=self.kernel_initializer)
        self.routing.build((input_shape[0], n_in, self.n_capsules, self.capsule_dim))
        self.built = True

    def predictions(self, capsules):
        """The prediction vectors u_hat (B, I, J, D_out) of input capsules (B, I, D_in)."""
        n_in, n_out, dim_out, dim_in = self.kernel.shape
        kernel = ops.reshape(ops.transpose(self.kernel, (0, 3, 1, 2)), (n_in, dim_in, n_out * dim_out))
        # One matmul per input capsule (batched over I): twice as fast on CPU as the einsum.
        per_input = ops.matmul(ops.transpose(capsules, (1, 0, 2)), kernel)  # (I, B, J * D_out)
        return ops.transpose(ops.reshape(per_input, (n_in, -1, n_out, dim_out)), (1, 0, 2, 3))  # (B, I, J, D_out)

    def call(self, capsules):
        """(B, I, D_in) -> v (B, J, D_out) [and couplings (B, iterations, I, J)]."""
        return self.routing(self.predictions(capsules))

    def compute_output_shape(self, input_shape):
        return self.routing.compute_output_shape((input_shape[0], input_shape[1], self.n_capsules, self.capsule_dim))

    def get_config(self):
        config = super().get_config()
        config.update(n_capsules=self.n_capsules, capsule_dim=self.capsule_dim,
                      routing_iterations=self.routing_iterations, stop_gradient=self.stop_gradient,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      return_coupling=self.return_coupling, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="snemo")
class CapsuleLength(keras.layers.Layer):
    """Length of each capsule, the class score: (B, J, D) -> (B, J), sqrt(|v|^2 + epsilon).

    With squashed capsules the lengths lie in [0, 1) (float32 rounds to 1.0 only for |s| > ~4,000);
    the argmax is the predicted class. No weights.
    """

    def __init__(self, epsilon: float = EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, capsules):
        return ops.sqrt(ops.sum(ops.square(capsules), axis=-1) + self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="snemo")
class CapsuleMask(keras.layers.Layer):
    """Keep one capsule for the reconstruction decoder: [(B, J, D) capsules, (B, J) one-hot] -> (B, J * D).

    In training (``training=True``) the capsule of the true class (the one-hot label) is kept, at
    inference the longest capsule (the predicted class); the others are zeroed, then flattened.
    No weights.
    """

    def call(self, inputs, training=None):
        capsules, labels = inputs
        if training:
            mask = ops.cast(labels, capsules.dtype)  # (B, J)
        else:
            lengths = ops.sum(ops.square(capsules), axis=-1)  # (B, J)
            mask = ops.one_hot(ops.argmax(lengths, axis=-1), capsules.shape[1], dtype=capsules.dtype)
        masked = capsules * ops.expand_dims(mask, -1)  # (B, J, D)
        return ops.reshape(masked, (-1, capsules.shape[1] * capsules.shape[2]))

    def compute_output_shape(self, input_shape):
        capsules_shape = input_shape[0]
        return capsules_shape[0], capsules_shape[1] * capsules_shape[2]
