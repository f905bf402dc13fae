"""snemo.phase: a finished phase run again (same run folder) ends with the best model file's weights.

A job killed after the last epoch's checkpoint but before the end of the phase (which puts the best
weights back and checkpoints them) leaves a last checkpoint that holds the LAST epoch's weights,
while ``model.keras`` holds the best epoch's. Run again, the phase has no epoch left to train: it
must still end with the best weights, read from the best model file.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from snemo import training  # noqa: E402
from snemo.phase import Phase  # noqa: E402


def data(n, seed, invert=False, batch=20):
    """tf.data of (x (n, 6), one-hot y (n, 4)): class = positive features among the first 3 (reversed if invert)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    classes = (x[:, :3] > 0).sum(axis=1)
    y = np.eye(4, dtype=np.float32)[3 - classes if invert else classes]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(hidden))


class Killed(Exception):
    """Stands for SIGKILL between the last epoch's checkpoint and the end of the phase."""


def test_a_finished_phase_run_again_restores_the_best_model_files_weights(tmp_path, monkeypatch):
    train_data = data(200, 0)
    validation = data(100, 1, invert=True)  # learning the rule makes this loss grow: epoch 1 is the best

    def run(network, restore_best=True):
        return training.train(training.ClassifierStep(network, learning_rate=5e-2), train_data, validation,
                              strategy=tf.distribute.get_strategy(), out_dir=tmp_path, epochs=3, quiet=True,
                              restore_best=restore_best)

    def killed(self, validated):
        raise Killed

    first = model(0)
    with monkeypatch.context() as patch:
        patch.setattr(Phase, "finish", killed)
        with pytest.raises(Killed):
            run(first)
    losses = [record["val_loss"] for record in training.read_history(tmp_path)]
    assert len(losses) == 3 and int(np.argmin(losses)) < 2, losses  # the best epoch is not the last
    best = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False).get_weights()
    last = first.get_weights()  # what the last checkpoint holds
    assert not np.allclose(best[0], last[0])

    # Without restore_best the rerun keeps the checkpoint's (last epoch's) weights: the two differ.
    kept = model(5)
    assert run(kept, restore_best=False).resumed_from == 3
    for got, want in zip(kept.get_weights(), last, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    again = model(5)  # a new process builds the network from scratch
    result = run(again)
    assert result.resumed_from == 3 and result.epochs_done == 3
    assert result.best_val_loss == pytest.approx(min(losses), rel=1e-6)
    for got, want in zip(again.get_weights(), best, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert len(training.read_history(tmp_path)) == 3  # nothing trained again
