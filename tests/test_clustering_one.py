"""Clustering generator and GAN: shapes and masking, the training examples, one GAN step, the script end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from my_generator.my_generator import generate
from snemo.events import write_events

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clustering_data")
    rng = np.random.default_rng(3)
    for n_tracks in (1, 2, 3):
        write_events(folder / f"t{n_tracks}.root", generate(40, n_tracks, rng, noise_hits=1.0))
    return folder


def sparse_images(n, channels, seed=0):
    """(n, 18, 113, channels) float32: about 5 % of the cells hit, extra channels in (-1, 1) on hit cells."""
    rng = np.random.default_rng(seed)
    hits = (rng.random((n, 18, 113, 1)) < 0.05).astype(np.float32)
    extra = rng.uniform(-1, 1, (n, 18, 113, channels - 1)).astype(np.float32) * hits
    return np.concatenate([hits, extra], axis=-1)


@pytest.mark.parametrize("z_channel, radius_channel", [(False, False), (True, True)])
def test_generator_shape_masking_and_safe_loading(z_channel, radius_channel, tmp_path):
    import keras

    from architectures import discriminator, generator

    model = generator.build(z_channel, radius_channel)
    channels = 1 + z_channel + radius_channel
    assert model.input_shape == (None, 18, 113, channels) and model.output_shape == (None, 18, 113, 1)
    assert 20_000 < model.count_params() < 250_000
    images = sparse_images(3, channels)
    output = np.asarray(model(images, training=False))
    assert output.shape == (3, 18, 113, 1)
    empty = images[..., :1] == 0
    assert np.all(output[empty] == 0.0)  # no probability on a cell without a hit
    assert np.all(output[~empty] > 0.0) and np.all(output <= 1.0)
    model.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), output, atol=1e-6)
    assert generator.input_channels(loaded) == {"z_channel": z_channel, "radius_channel": radius_channel}
    critic = discriminator.build(channels)
    assert critic([images, output]).shape == (3, 5, 15, 1)


def test_examples_remove_the_first_tracks():
    import clustering
    import clustering_training as training
    from datasets.clustering import canonical_hit_track_ids

    batch = generate(64, 4, np.random.default_rng(8))
    inputs, targets = training.examples(batch, np.random.default_rng(1), z_channel=True, radius_channel=True)
    assert inputs.shape == (64, 18, 113, 3) and targets.shape == (64, 18, 113, 1)
    assert np.all(targets[..., 0] <= inputs[..., 0])  # the target's cells are hit cells of the input
    assert np.all(targets.reshape(64, -1).sum(axis=1) >= 1)
    full = clustering.event_inputs(batch)[..., 0]
    fewer = inputs[..., 0].reshape(64, -1).sum(axis=1) < full.reshape(64, -1).sum(axis=1)
    assert 0.5 < fewer.mean() < 1.0  # k > 0 for about 3 events in 4
    # Every event keeps its 4 tracks visible, so k = floor(4 u) with the rng's first 64 draws.
    k = np.floor(np.random.default_rng(1).random(64) * 4).astype(np.int64)
    truth = canonical_hit_track_ids(batch)
    kept = truth >= k[batch.hit_event_index()]
    np.testing.assert_array_equal(inputs[..., 0], clustering.event_inputs(batch, kept)[..., 0])
    np.testing.assert_array_equal(targets[..., 0], clustering.event_inputs(batch, truth == k[batch.hit_event_index()])[..., 0])
    again, _ = training.examples(batch, np.random.default_rng(1))
    np.testing.assert_array_equal(again[..., 0], inputs[..., 0])  # the draws follow the rng


def test_one_gan_step_changes_both_networks_and_losses_are_finite():
    import tensorflow as tf

    import clustering_training as training
    from architectures import discriminator, generator

    batch = generate(8, 2, np.random.default_rng(4))
    inputs, targets = training.examples(batch, np.random.default_rng(0))
    strategy = tf.distribute.get_strategy()
    step = training.ClusteringStep(generator.build(), discriminator.build(1), learning_rate=1e-3)
    step.build(strategy)
    before = {name: [w.copy() for w in step.trackables()[name].get_weights()] for name in ("generator", "discriminator")}
    sums = strategy.run(tf.function(step.train_step, autograph=False), args=(tf.constant(inputs), tf.constant(targets)))
    for name in ("generator_loss", "adversarial", "discriminator_loss", "reconstruction", "hit_accuracy", "track_exact"):
        assert name in step.metric_names and np.isfinite(float(sums[name])), name
    assert float(sums["hits"]) == inputs[..., 0].sum() and float(sums["n"]) == 8
    for name, weights in before.items():
        after = step.trackables()[name].get_weights()
        assert any(not np.array_equal(a, b) for a, b in zip(after, weights)), f"{name} did not change"
    alone = training.ClusteringStep(generator.build(), None)
    assert "discriminator_loss" not in alone.metric_names and set(alone.trackables()) == {"generator",
                                                                                          "generator_optimizer"}
    with pytest.raises(ValueError):
        training.ClusteringStep(generator.build(), None, reconstruction_weight=0.0)


def flags(data, out, epochs):
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "16",
            "--steps-per-epoch", "2", "--displays", "1", "--quiet"]


def test_script_end_to_end_and_resume(tiny_data, tmp_path, capsys):
    import clustering_one as script

    out = tmp_path / "gan"
    assert script.main(flags(tiny_data, out, 1) + ["--z-channel"]) == 0
    for name in ("model.keras", "history.json", "metrics.json", "config.json", "training_curves.png",
                 "training_curves.pdf"):
        assert (out / name).is_file(), name
    assert list((out / "checkpoints" / "train").glob("ckpt-1*")) and list((out / "tensorboard").iterdir())
    assert sorted(p.name for p in (out / "displays").glob("*.png")) and list((out / "displays").glob("*.pdf"))
    capsys.readouterr()
    assert script.main(flags(tiny_data, out, 2)[:-1] + ["--z-channel"]) == 0  # killed after epoch 1: resume
    printed = capsys.readouterr().out
    assert "resuming" in printed and "DM eff." in printed and "ceiling" in printed
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [record["epoch"] for record in history] == [1, 2]
    for key in ("generator_loss", "discriminator_loss", "adversarial", "val_reconstruction", "val_hit_accuracy"):
        assert all(np.isfinite(record[key]) for record in history), key
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["z_channel"] and metrics["adversarial"] and metrics["counter"].endswith("top_my_generator.keras")
    methods = metrics["methods"]
    assert {"generator (counter)", "generator (true count)", "DBSCAN", "Hough (counter)"} <= set(methods)
    assert set(methods["DBSCAN"]["by_n_tracks"]) == {"1", "2", "3"}
    assert methods["DBSCAN"]["all"]["n_events"] == metrics["n_events"] > 0


def test_no_adversarial_and_bad_flags(tiny_data, tmp_path, capsys):
    import clustering_one as script

    out = tmp_path / "alone"
    assert script.main(flags(tiny_data, out, 1) + ["--no-adversarial", "--counter", "none"]) == 0
    record = json.loads((out / "history.json").read_text())["epochs"][0]
    assert "discriminator_loss" not in record and np.isfinite(record["val_reconstruction"])
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert "generator (no count)" in methods and "Hough (no count)" in methods
    with pytest.raises(SystemExit) as stop:
        script.main(flags(tiny_data, tmp_path / "bad", 1) + ["--reconstruction-weight", "-1"])
    assert stop.value.code == 2
    assert script.main(flags(tiny_data, tmp_path / "bad", 1) + ["--counter", str(tmp_path / "missing.keras")]) == 2
    assert "--counter" in capsys.readouterr().err and not (tmp_path / "bad").exists()
