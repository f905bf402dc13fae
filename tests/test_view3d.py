"""Voxel counter builder (architectures/view3d.py): shapes, softmax, features, z folding, save/load, learning."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

VOXEL_SHAPE = (18, 113, 30, 1)


def sparse_voxels(n_events: int, seed: int = 0, shape=VOXEL_SHAPE) -> np.ndarray:
    """(n_events, *shape) float32 with 40 random hit voxels (1.0) per event."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n_events, int(np.prod(shape))), np.float32)
    rows = np.repeat(np.arange(n_events), 40)
    images[rows, rng.integers(0, images.shape[1], rows.size)] = 1.0
    return images.reshape(n_events, *shape)


def test_default_model_shapes_softmax_and_features():
    from architectures import view3d

    model = view3d.build(n_classes=4)
    assert model.layers[0].name == "voxels"
    assert tuple(model.inputs[0].shape[1:]) == VOXEL_SHAPE
    assert model.output_shape == (None, 4)
    assert tuple(model.get_layer("features").output.shape) == (None, 128)
    assert model.get_layer("stem_fold_rows").output.shape[1:] == (2, 113, 6, 45)
    assert {layer.__class__.__name__ for layer in model.layers} >= {"Conv3D", "BatchNormalization"}
    assert not any(layer.__class__.__name__ in ("Lambda", "Conv2D", "Conv1D") for layer in model.layers)
    assert all(layer.momentum == 0.9 for layer in model.layers if layer.__class__.__name__ == "BatchNormalization")
    scores = np.asarray(model(sparse_voxels(3), training=False))
    assert scores.shape == (3, 4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert (scores >= 0).all()


@pytest.mark.parametrize("variant", ["full", "zstem", "strided", "s2", "s2full", "fold5", "fold5flat", "lite", "sides",
                                     "sides_full", "sides6"])
def test_every_variant_builds_with_two_channels(variant):
    from architectures import view3d

    model = view3d.build(input_shape=(18, 113, 30, 2), n_classes=3, variant=variant)
    assert model.output_shape == (None, 3)
    assert len(model.get_layer("features").output.shape) == 2


def test_fold_z_groups_five_consecutive_bins_into_channels():
    import keras

    from architectures import view3d

    model = view3d.build(input_shape=(18, 113, 30, 2), variant="lite")
    fold = keras.Model(model.inputs[0], model.get_layer("stem_fold_z").output)
    voxels = np.zeros((1, 18, 113, 30, 2), np.float32)
    voxels[0, 4, 70, 13, 1] = 1.0  # z bin 13 = coarse bin 2, sub-bin 3; channel 1 (radius)
    folded = np.asarray(fold(voxels))
    assert folded.shape == (1, 18, 113, 6, 10)
    assert np.argwhere(folded).tolist() == [[0, 4, 70, 2, 3 * 2 + 1]]


def test_fold_rows_puts_each_sides_layers_into_channels():
    """sides6: a hit at row 12 (side 1, layer 3), column 70, z bin 13, channel 1 lands on grid cell
    (side 1, column 70, z slab 2) in channel layer * 10 + sub-bin * 2 + channel."""
    import keras

    from architectures import view3d

    model = view3d.build(input_shape=(18, 113, 30, 2), variant="sides6")
    fold = keras.Model(model.inputs[0], model.get_layer("stem_fold_rows").output)
    voxels = np.zeros((1, 18, 113, 30, 2), np.float32)
    voxels[0, 12, 70, 13, 1] = 1.0
    voxels[0, 2, 5, 29, 0] = 1.0  # side 0, row 2 (layer 6 from the foil; row 2 of the side's 9), z bin 29
    folded = np.asarray(fold(voxels))
    assert folded.shape == (1, 2, 113, 6, 90)
    assert sorted(np.argwhere(folded).tolist()) == [[0, 0, 5, 5, 2 * 10 + 4 * 2 + 0], [0, 1, 70, 2, 3 * 10 + 3 * 2 + 1]]
    assert not any(layer.__class__.__name__ in ("Lambda", "Conv2D", "Conv1D") for layer in model.layers)


def test_bad_arguments_raise_value_error():
    from architectures import view3d

    with pytest.raises(ValueError, match="unknown view3d variant"):
        view3d.build(variant="huge")
    with pytest.raises(ValueError, match="n_classes"):
        view3d.build(n_classes=1)
    with pytest.raises(ValueError, match="filter counts"):
        view3d.build(filters=(8, 16))
    with pytest.raises(ValueError, match="multiple of 5"):
        view3d.build(input_shape=(18, 113, 32, 1))
    with pytest.raises(ValueError, match="multiple of 9 rows"):
        view3d.build(input_shape=(16, 113, 30, 1))


def test_save_and_reload_with_safe_mode(tmp_path):
    import keras

    from architectures import view3d

    model = view3d.build(n_classes=4, filters=(4, 8, 8))
    voxels = sparse_voxels(2, seed=1)
    model.save(tmp_path / "voxel.keras")
    loaded = keras.saving.load_model(tmp_path / "voxel.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(voxels, training=False), model(voxels, training=False), atol=1e-6)
    assert tuple(loaded.get_layer("features").output.shape) == (None, 16)


def test_a_few_train_steps_lower_the_loss():
    import keras
    import tensorflow as tf

    from architectures import view3d

    keras.utils.set_random_seed(3)
    model = view3d.build(n_classes=4, filters=(4, 8, 8), dropout=0.0)
    voxels = tf.constant(sparse_voxels(8, seed=2))
    labels = tf.constant(np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]])
    optimizer = keras.optimizers.Adam(1e-2)

    def loss():
        return tf.reduce_mean(keras.losses.categorical_crossentropy(labels, model(voxels, training=True)))

    before = float(loss())
    for _ in range(8):
        with tf.GradientTape() as tape:
            value = loss()
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    assert float(loss()) < 0.7 * before
