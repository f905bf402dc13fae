"""Capsule layers (capsule/) and the CapsNet counter (architectures/capsnet.py) on tiny tensors and images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from architectures import capsnet, combined  # noqa: E402
from capsule import (CapsuleLength, CapsuleMask, PrimaryCapsule, RoutingByAgreement, SecondaryCapsule,  # noqa: E402
                     margin_loss, squash)
from snemo import training  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = dict(filters=(8,), pools=(None,), primary_types=4, primary_dim=4, primary_kernel=3, primary_strides=2,
            class_dim=8)


def reference_routing(u_hat, iterations):
    """NumPy routing by agreement, written from the paper: u_hat (B, I, J, D) -> v (B, J, D), couplings."""
    logits = np.zeros(u_hat.shape[:3])
    couplings = []
    for iteration in range(iterations):
        coupling = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
        couplings.append(coupling)
        weighted = (coupling[..., None] * u_hat).sum(axis=1)  # (B, J, D)
        norm2 = (weighted ** 2).sum(axis=-1, keepdims=True)
        outputs = norm2 / (1 + norm2) * weighted / np.sqrt(norm2)
        logits = logits + (u_hat * outputs[:, None]).sum(axis=-1)
    return outputs, np.stack(couplings, axis=1)


def bars(n, size=8, seed=0):
    """(n, size, size, 1) images of one horizontal (class 0) or vertical (class 1) bar, and one-hot labels."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, n)
    positions = rng.integers(0, size, n)
    images = np.zeros((n, size, size, 1), np.float32)
    images[classes == 0, positions[classes == 0], :, 0] = 1.0
    images[classes == 1, :, positions[classes == 1], 0] = 1.0
    return images, np.eye(2, dtype=np.float32)[classes]


def test_squash_keeps_direction_and_maps_lengths_into_unit_interval():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(6, 5)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    norms = np.array([0.0, 1e-3, 0.5, 1.0, 10.0, 100.0], np.float32)
    vectors = directions * norms[:, None]  # (6, 5)
    squashed = keras.ops.convert_to_numpy(squash(vectors))
    lengths = np.linalg.norm(squashed, axis=1)
    assert np.all(lengths >= 0) and np.all(lengths < 1)
    np.testing.assert_allclose(lengths[2:], norms[2:] ** 2 / (1 + norms[2:] ** 2), rtol=1e-5)
    np.testing.assert_allclose(squashed[2:] / lengths[2:, None], directions[2:], atol=1e-6)
    assert lengths[0] == 0
    along_axis = keras.ops.convert_to_numpy(squash(vectors.T, axis=0))
    np.testing.assert_allclose(along_axis, squashed.T, atol=1e-7)


def test_squash_and_length_have_finite_gradients_at_zero():
    zeros = tf.zeros((2, 3, 4))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(zeros)
        squashed = tf.reduce_sum(squash(zeros))
        length = tf.reduce_sum(CapsuleLength()(zeros))
    for value in (tape.gradient(squashed, zeros), tape.gradient(length, zeros)):
        assert np.all(np.isfinite(value.numpy()))


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_routing_matches_the_paper_and_couplings_sum_to_one(iterations):
    rng = np.random.default_rng(iterations)
    u_hat = rng.normal(scale=0.3, size=(3, 7, 4, 5)).astype(np.float32)  # (B, I, J, D)
    outputs, couplings = RoutingByAgreement(iterations, return_coupling=True)(u_hat)
    couplings = couplings.numpy()
    assert outputs.shape == (3, 4, 5) and couplings.shape == (3, iterations, 7, 4)
    np.testing.assert_allclose(couplings.sum(axis=-1), 1.0, atol=1e-6)
    expected_outputs, expected_couplings = reference_routing(u_hat.astype(np.float64), iterations)
    np.testing.assert_allclose(outputs.numpy(), expected_outputs, atol=1e-5)
    np.testing.assert_allclose(couplings, expected_couplings, atol=1e-5)
    np.testing.assert_allclose(couplings[:, 0], 0.25)  # logits start at zero: uniform over the 4 outputs
    without = RoutingByAgreement(iterations)(u_hat)
    np.testing.assert_allclose(without.numpy(), outputs.numpy(), atol=1e-7)


def test_routing_concentrates_couplings_on_the_agreeing_output():
    u_hat = np.zeros((1, 6, 3, 4), np.float32)
    u_hat[0, :, 1, 0] = 1.0  # every input predicts the same vector for output 1
    u_hat[0, :, 0, :] = np.random.default_rng(0).normal(scale=0.5, size=(6, 4))  # disagreeing predictions
    _, couplings = RoutingByAgreement(3, return_coupling=True)(u_hat)
    last = couplings.numpy()[0, -1]  # (I, J)
    assert np.all(last[:, 1] > 0.5)
    one = RoutingByAgreement(1, return_coupling=True)(u_hat)[1].numpy()
    np.testing.assert_allclose(one, 1 / 3, atol=1e-7)


def test_routing_rejects_bad_arguments():
    for iterations in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="iterations"):
            RoutingByAgreement(iterations)
    with pytest.raises(ValueError, match="u_hat of shape"):
        RoutingByAgreement(3)(np.zeros((2, 3, 4), np.float32))


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_gradients_reach_the_transformation_matrices(stop_gradient):
    rng = np.random.default_rng(0)
    capsules = squash(rng.normal(size=(4, 10, 3)).astype(np.float32))  # (B, I, D_in)
    layer = SecondaryCapsule(3, 5, routing_iterations=3, stop_gradient=stop_gradient)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(margin_loss(labels, CapsuleLength()(layer(capsules))))
    assert layer.kernel.shape == (10, 3, 5, 3)
    gradient = tape.gradient(loss, layer.kernel).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    u_hat = layer.predictions(capsules).numpy()
    np.testing.assert_allclose(u_hat, np.einsum("ijdk,bik->bijd", layer.kernel.numpy(), capsules.numpy()), atol=1e-6)


def test_margin_loss_known_values():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    lengths = np.array([[0.95, 0.05], [0.5, 0.6], [0.2, 0.8], [0.0, 0.9]], np.float32)
    # 0; (0.9 - 0.5)^2 + 0.5 (0.6 - 0.1)^2; 0.5 (0.2 - 0.1)^2 + (0.9 - 0.8)^2; 0 + 0
    expected = [0.0, 0.16 + 0.125, 0.005 + 0.01, 0.0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(margin_loss(labels, lengths)), expected, atol=1e-6)


def test_primary_capsules_shape_and_lengths():
    images = np.random.default_rng(0).normal(size=(2, 9, 29, 6)).astype(np.float32)
    layer = PrimaryCapsule(8, 4, kernel_size=3, strides=2)
    capsules = layer(images).numpy()
    assert capsules.shape == (2, 4 * 14 * 8, 4) == layer.compute_output_shape(images.shape)
    lengths = np.linalg.norm(capsules, axis=-1)
    assert np.all(lengths < 1) and lengths.max() > 0.1
    with pytest.raises(ValueError, match="too small"):
        PrimaryCapsule(2, 2, kernel_size=5, strides=2)(np.zeros((1, 3, 3, 1), np.float32))


def test_mask_keeps_the_true_capsule_in_training_and_the_longest_otherwise():
    capsules = np.zeros((2, 3, 2), np.float32)
    capsules[:, 0] = [0.1, 0.0]
    capsules[:, 1] = [0.0, 0.2]
    capsules[:, 2] = [0.5, 0.5]  # longest
    labels = np.eye(3, dtype=np.float32)[[0, 1]]
    trained = CapsuleMask()([capsules, labels], training=True).numpy()
    np.testing.assert_allclose(trained, [[0.1, 0, 0, 0, 0, 0], [0, 0, 0, 0.2, 0, 0]])
    inferred = CapsuleMask()([capsules, labels], training=False).numpy()
    np.testing.assert_allclose(inferred, [[0, 0, 0, 0, 0.5, 0.5]] * 2)


def test_capsnet_counter_names_shapes_and_options():
    model = capsnet.build()
    assert model.input.shape == (None, 18, 113, 1) and model.inputs[0].name.split(":")[0] == "top"
    assert model.output_shape == (None, 4)
    assert model.get_layer("primary_capsules").output.shape == (None, 448, 8)
    assert model.get_layer("features").output.shape == (None, 64)
    assert combined.cut_at_features(model, "top_branch").output_shape == (None, 64)
    lengths = model(np.zeros((2, 18, 113, 1), np.float32)).numpy()
    assert np.all((lengths >= 0) & (lengths < 1))
    side = capsnet.build((30, 113, 1), 3, routing_iterations=2)
    assert side.inputs[0].name.split(":")[0] == "side" and side.output_shape == (None, 3)
    assert capsnet.build((30, 18, 1)).inputs[0].name.split(":")[0] == "front"
    with pytest.raises(ValueError, match="one pool size per block"):
        capsnet.build(filters=(8, 16), pools=(None,))
    with pytest.raises(ValueError, match="n_classes"):
        capsnet.build(n_classes=1)


def test_capsnet_learns_horizontal_against_vertical_bars_through_the_shared_loop(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = bars(256)
    test_images, test_labels = bars(200, seed=1)
    model = capsnet.build((8, 8, 1), 2, view="image", **TINY)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    step = training.ClassifierStep(model, learning_rate=1e-2, loss_fn=margin_loss)
    result = training.train(step, data, data.take(1), strategy=tf.distribute.get_strategy(), out_dir=tmp_path,
                            epochs=3, quiet=True)
    assert result.epochs_done == 3
    accuracy = np.mean(model.predict(test_images, verbose=0).argmax(1) == test_labels.argmax(1))
    assert accuracy > 0.9, accuracy


LOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import capsule
folder = sys.argv[1]
expected = np.load(folder + "/expected.npz")
inputs = {"counter": expected["counter_input"], "routing": expected["routing_input"],
          "decoder": {"image": expected["decoder_image"], "label": expected["decoder_label"]}}
differences = {}
for name, values in inputs.items():
    outputs = keras.saving.load_model(f"{folder}/{name}.keras", safe_mode=True).predict(values, verbose=0)
    if isinstance(outputs, dict):
        outputs = [outputs[key] for key in sorted(outputs)]
    elif not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    differences[name] = max(float(np.abs(np.asarray(value) - expected[f"{name}_out{index}"]).max())
                            for index, value in enumerate(outputs))
from architectures import capsnet
from snemo import training
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = capsnet.build((8, 8, 1), 2, view="image", filters=(8,), pools=(None,), primary_types=4, primary_dim=4,
                          class_dim=8)
images = np.zeros((64, 8, 8, 1), np.float32)
images[:32, 3, :, 0] = 1.0
images[32:, :, 3, 0] = 1.0
labels = np.eye(2, dtype=np.float32)[[0] * 32 + [1] * 32]
data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
result = training.train(training.ClassifierStep(model, loss_fn=capsule.margin_loss), data, data,
                        strategy=strategy, out_dir=folder + "/mirrored", epochs=1, quiet=True)
print(json.dumps({"differences": differences, "replicas": strategy.num_replicas_in_sync,
                  "val_loss": result.best_val_loss}))
"""


def test_capsule_models_save_and_load_with_safe_mode_in_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = bars(5)
    counter = capsnet.build((8, 8, 1), 2, view="image", **TINY)
    decoder = capsnet.build_with_decoder((8, 8, 1), 2, view="image", decoder_units=(16,), **TINY)
    u_hat = keras.Input((6, 3, 4), name="u_hat")
    outputs = RoutingByAgreement(2, return_coupling=True, stop_gradient=False)(u_hat)
    routing = keras.Model(u_hat, list(outputs))
    u_values = np.random.default_rng(0).normal(size=(5, 6, 3, 4)).astype(np.float32)
    expected = {"counter_input": images, "counter_out0": counter.predict(images, verbose=0),
                "decoder_image": images, "decoder_label": labels, "routing_input": u_values}
    decoded = decoder.predict({"image": images, "label": labels}, verbose=0)
    for index, key in enumerate(sorted(decoded)):
        expected[f"decoder_out{index}"] = decoded[key]
    for index, value in enumerate(routing.predict(u_values, verbose=0)):
        expected[f"routing_out{index}"] = value
    np.savez(tmp_path / "expected.npz", **expected)
    for name, model in (("counter", counter), ("decoder", decoder), ("routing", routing)):
        model.save(tmp_path / f"{name}.keras")
    config = SecondaryCapsule(3, 5, routing_iterations=2, name="secondary").get_config()
    assert SecondaryCapsule.from_config(config).get_config() == config
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["differences"]) == {"counter", "decoder", "routing"}
    assert max(report["differences"].values()) < 1e-6, report["differences"]
    assert report["replicas"] == 2 and np.isfinite(report["val_loss"])
