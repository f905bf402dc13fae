"""Dynamic routing by agreement (Sabour, Frosst and Hinton, "Dynamic Routing Between Capsules", 2017).

:class:`RoutingByAgreement` takes the prediction vectors u_hat[b, i, j] that each input capsule i
makes for each output capsule j and returns the output capsules v[b, j]:

    logits b_ij = 0
    repeat `iterations` times:
        c_ij = softmax_j(b_ij)                 coupling coefficients, sum to 1 over the OUTPUT capsules
        s_j  = sum_i c_ij u_hat_ij             weighted sum of the predictions
        v_j  = squash(s_j)                     length in [0, 1)
        b_ij += <u_hat_ij, v_j>                agreement (skipped after the last iteration)

The iterations run in a ``tf.while_loop`` (TensorFlow backend). With ``stop_gradient`` (default) the
intermediate iterations see u_hat without its gradient, as in the reference implementation: the
gradient reaches the transformation matrices only through the last weighted sum, and the loop stores
no activations for the backward pass.
"""

from __future__ import annotations

import keras
from keras import ops

from capsule.capsule_lib import squash


@keras.saving.register_keras_serializable(package="snemo")
class RoutingByAgreement(keras.layers.Layer):
    """Routing by agreement: u_hat (B, I, J, D) -> v (B, J, D), optionally with the couplings.

    ``iterations``: routing iterations (>= 1; 3 in the paper; with 1 the couplings stay uniform,
    1 / J). ``stop_gradient``: no gradient through u_hat in the intermediate iterations.
    ``return_coupling``: the layer returns ``(v, couplings)``, couplings (B, iterations, I, J), the
    c_ij used at each iteration (for tests and inspection). ``epsilon``: of :func:`squash`.
    No weights.
    """

    def __init__(self, iterations: int = 3, *, stop_gradient: bool = True, return_coupling: bool = False,
                 epsilon: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
            raise ValueError(f"routing iterations must be an integer >= 1, got {iterations!r}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.iterations = int(iterations)
        self.stop_gradient = bool(stop_gradient)
        self.return_coupling = bool(return_coupling)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"RoutingByAgreement takes u_hat of shape (batch, input capsules, output capsules, "
                             f"dimension), got {tuple(input_shape)}")
        self.built = True

    def call(self, u_hat):
        """Route ``u_hat`` (B, I, J, D); returns v (B, J, D) [and couplings (B, iterations, I, J)]."""
        import tensorflow as tf

        u_hat = ops.transpose(ops.convert_to_tensor(u_hat), (0, 2, 1, 3))  # (B, J, I, D): batched matmuls
        frozen = ops.stop_gradient(u_hat) if self.stop_gradient else u_hat
        logits = tf.zeros(tf.shape(u_hat)[:3], dtype=u_hat.dtype)  # (B, J, I)
        couplings = tf.TensorArray(u_hat.dtype, size=self.iterations) if self.return_coupling else None

        def body(iteration, logits, *state):
            coupling = ops.softmax(logits, axis=1)  # (B, J, I), over the output capsules
            outputs = self._route(coupling, frozen)  # (B, J, D)
            logits = logits + ops.squeeze(ops.matmul(frozen, ops.expand_dims(outputs, -1)), -1)  # agreement
            if self.return_coupling:
                return iteration + 1, logits, state[0].write(iteration, coupling)
            return iteration + 1, logits

        loop_vars = (tf.constant(0), logits) + ((couplings,) if self.return_coupling else ())
        result = tf.while_loop(lambda iteration, *_: iteration < self.iterations - 1, body, loop_vars,
                               maximum_iterations=self.iterations - 1)
        coupling = ops.softmax(result[1], axis=1)  # (B, J, I)
        outputs = self._route(coupling, u_hat)  # (B, J, D)
        if not self.return_coupling:
            return outputs
        stacked = result[2].write(self.iterations - 1, coupling).stack()  # (iterations, B, J, I)
        return outputs, ops.transpose(stacked, (1, 0, 3, 2))  # (B, iterations, I, J)

    def _route(self, coupling, u_hat):
        """squash(sum_i c_ij u_hat_ij): coupling (B, J, I), u_hat (B, J, I, D) -> (B, J, D)."""
        weighted = ops.squeeze(ops.matmul(ops.expand_dims(coupling, 2), u_hat), 2)  # (B, J, D)
        return squash(weighted, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        batch, n_in, n_out, dim = input_shape
        if self.return_coupling:
            return (batch, n_out, dim), (batch, self.iterations, n_in, n_out)
        return batch, n_out, dim

    def get_config(self):
        config = super().get_config()
        config.update(iterations=self.iterations, stop_gradient=self.stop_gradient,
                      return_coupling=self.return_coupling, epsilon=self.epsilon)
        return config
