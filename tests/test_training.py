"""The shared training loop (snemo.training) on tiny synthetic tf.data datasets and tiny models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from snemo import training  # noqa: E402


def tiny_data(n=50, seed=0, invert=False, batch=16):
    """(x, one-hot y) with a learnable rule: class = number of positive features among the first 3 (0..3)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)  # (n, 6)
    classes = (x[:, :3] > 0).sum(axis=1)
    if invert:
        classes = 3 - classes
    y = np.eye(4, dtype=np.float32)[classes]  # (n, 4)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), x, y


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="count")(hidden)
    return keras.Model(inputs, outputs)


def strategy():
    return tf.distribute.get_strategy()


def step(model, **options):
    """The counters' step over ``model`` (Adam unless an optimizer is given)."""
    return training.ClassifierStep(model, **options)


def test_train_writes_history_model_checkpoints_tensorboard(tmp_path):
    train_ds, _, _ = tiny_data()
    val_ds, _, _ = tiny_data(seed=1)
    model = tiny_model()
    result = training.train(step(model, learning_rate=1e-2), train_ds, val_ds, strategy=strategy(), out_dir=tmp_path,
                            epochs=2, quiet=True)
    history = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds", "samples"):
        assert history[0][key] is not None
    assert history[0]["samples"] == 50
    assert result.epochs_done == 2 and result.resumed_from == 0
    assert math.isfinite(result.best_val_loss)
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.output_shape == (None, 4)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "train")) is not None
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*"))


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    train_ds, _, _ = tiny_data()
    whole = tiny_model()
    training.train(step(whole), train_ds, train_ds, strategy=strategy(), out_dir=tmp_path / "whole", epochs=3,
                   quiet=True, restore_best=False)
    out = tmp_path / "killed"
    model = tiny_model()
    training.train(step(model), train_ds, train_ds, strategy=strategy(), out_dir=out, epochs=1, quiet=True)
    first = [w.copy() for w in model.get_weights()]
    # A new process would rebuild the model from scratch: different initial weights.
    again = tiny_model(seed=5)
    result = training.train(step(again), train_ds, train_ds, strategy=strategy(), out_dir=out, epochs=3, quiet=True,
                            restore_best=False)
    assert result.resumed_from == 1 and result.epochs_done == 3
    history = training.read_history(out)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert not np.allclose(again.get_weights()[0], first[0])  # trained on from the restored weights
    for resumed, uninterrupted in zip(again.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-6, atol=1e-7)
    # A third run with the same total has nothing left to do.
    done = training.train(step(tiny_model(seed=9)), train_ds, train_ds, strategy=strategy(), out_dir=out, epochs=3,
                          quiet=True)
    assert done.resumed_from == 3 and len(training.read_history(out)) == 3


def test_phases_resume_independently(tmp_path):
    train_ds, _, _ = tiny_data()
    model = tiny_model()
    training.set_trainable(model, False, ["hidden"])
    assert len(model.trainable_variables) == 2
    first = training.train(step(model), train_ds, train_ds, strategy=strategy(), out_dir=tmp_path, epochs=1,
                           phase="frozen", quiet=True)
    training.set_trainable(model, True, ["hidden"])
    training.train(step(model, learning_rate=1e-4), train_ds, train_ds, strategy=strategy(), out_dir=tmp_path,
                   epochs=1, phase="finetune", initial_best=first.best_val_loss, quiet=True)
    history = training.read_history(tmp_path)
    assert [(r["phase"], r["epoch"]) for r in history] == [("frozen", 1), ("finetune", 1)]
    assert math.isclose(history[1]["learning_rate"], 1e-4, rel_tol=1e-5)
    # Restart both phases with one more fine-tuning epoch: frozen is complete, finetune resumes.
    model2 = tiny_model(seed=3)
    training.set_trainable(model2, False, ["hidden"])
    again = training.train(step(model2), train_ds, train_ds, strategy=strategy(), out_dir=tmp_path, epochs=1,
                           phase="frozen", quiet=True)
    assert again.resumed_from == 1
    training.set_trainable(model2, True, ["hidden"])
    tuned = training.train(step(model2, learning_rate=1e-4), train_ds, train_ds, strategy=strategy(),
                           out_dir=tmp_path, epochs=2, phase="finetune", initial_best=again.best_val_loss, quiet=True)
    assert tuned.resumed_from == 1
    assert [(r["phase"], r["epoch"]) for r in training.read_history(tmp_path)] == [
        ("frozen", 1), ("finetune", 1), ("finetune", 2)]


def test_loss_is_the_mean_over_examples_with_a_short_last_batch(tmp_path):
    data, x, y = tiny_data(n=50, batch=16)  # batches of 16, 16, 16, 2
    model = tiny_model()
    expected = float(np.mean(keras.losses.categorical_crossentropy(y, model(x, training=False)).numpy()))
    optimizer = keras.optimizers.SGD(learning_rate=1e-12)
    training.train(step(model, optimizer=optimizer), data, data, strategy=strategy(), out_dir=tmp_path, epochs=1,
                   quiet=True)
    record = training.read_history(tmp_path)[0]
    assert record["val_loss"] == pytest.approx(expected, rel=1e-4)
    assert record["loss"] == pytest.approx(expected, rel=1e-4)


def test_early_stopping_and_plateau(tmp_path):
    train_ds, _, _ = tiny_data(n=200, batch=20)
    val_ds, _, _ = tiny_data(n=100, seed=1, invert=True)  # learning the rule makes this loss grow
    model = tiny_model()
    result = training.train(step(model, learning_rate=5e-2), train_ds, val_ds, strategy=strategy(), out_dir=tmp_path,
                            epochs=10, schedule=training.Schedule(early_stopping=2, lr_schedule="plateau",
                                                                  plateau_patience=1), quiet=True)
    assert result.stopped_early and result.epochs_done < 10
    history = training.read_history(tmp_path)
    assert history[-1]["learning_rate"] < history[0]["learning_rate"]
    # A restart of a stopped phase trains no more.
    again = training.train(step(tiny_model()), train_ds, val_ds, strategy=strategy(), out_dir=tmp_path, epochs=10,
                           schedule=training.Schedule(early_stopping=2), quiet=True)
    assert again.epochs_done == result.epochs_done


def test_cosine_schedule_and_steps_cap(tmp_path):
    train_ds, _, _ = tiny_data(n=64, batch=8)
    model = tiny_model()
    training.train(step(model, learning_rate=1e-2), train_ds, None, strategy=strategy(), out_dir=tmp_path, epochs=3,
                   schedule=training.Schedule(lr_schedule="cosine", min_lr_fraction=0.1), steps_per_epoch=2,
                   quiet=True)
    history = training.read_history(tmp_path)
    assert [r["samples"] for r in history] == [16, 16, 16]
    assert history[0]["learning_rate"] == pytest.approx(1e-2, rel=1e-5)
    assert history[2]["learning_rate"] == pytest.approx(1e-3, rel=1e-4)
    assert history[0]["val_loss"] is None
    assert (tmp_path / "model.keras").exists()  # no validation: the final model is saved


def test_bad_arguments_raise_value_error(tmp_path):
    train_ds, _, _ = tiny_data()
    with pytest.raises(ValueError, match="lr_schedule"):
        training.train(step(tiny_model()), train_ds, None, strategy=strategy(), out_dir=tmp_path, epochs=1,
                       schedule=training.Schedule(lr_schedule="linear"))
    frozen = tiny_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable variables"):
        training.train(step(frozen), train_ds, None, strategy=strategy(), out_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="step object"):
        training.train(tiny_model(), train_ds, None, strategy=strategy(), out_dir=tmp_path, epochs=1)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        step(tiny_model(), learning_rate=0.0)
    assert not (tmp_path / "checkpoints").exists()


def test_predict_keeps_dataset_order():
    data, x, y = tiny_data(n=20, batch=6)
    model = tiny_model()
    targets, outputs = training.predict(model, data)
    assert targets.shape == (20, 4) and outputs.shape == (20, 4)
    np.testing.assert_array_equal(targets, y)
    np.testing.assert_allclose(outputs, model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Step objects other than the classifier (tests/toy_steps.py): a GAN and a two-head model train
# through the same loop under the default strategy and MirroredStrategy over two logical CPUs, and a
# job killed after epoch 1 resumes to the weights of an uninterrupted run. The jobs that need the
# two logical CPUs (and the one-step MirroredStrategy check) run in ONE new process.
# ------------------------------------------------------------------------------------------------

KINDS = ("gan", "two_head")  # the classifier step: test_resume_ends_with_the_weights_of_an_uninterrupted_run
STRATEGIES = ("default", "mirrored")


def run_toy_jobs(jobs):
    """Run tests/toy_steps.py on ``jobs`` in a new process (two logical CPUs); returns its summaries, in order."""
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(repo / "tests" / "toy_steps.py"), json.dumps(jobs)], cwd=repo,
                            env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """Uninterrupted 2-epoch runs, and runs stopped after epoch 1 then resumed (one process, in this order).

    Returns (root, {folder name: summary} of the first runs, {folder name: summary} of the resumed
    runs, the mirrored_update summary). A resumed job builds its step, networks (with another seed)
    and traced functions anew and reads the run folder, as a job started again does: only a real
    restore from the folder gives back the weights.
    """
    root = tmp_path_factory.mktemp("toy_steps")

    def jobs(name, epochs, seed):
        return [{"kind": kind, "strategy": strategy, "out": str(root / f"{name}-{kind}-{strategy}"),
                 "epochs": epochs, "seed": seed} for kind in KINDS for strategy in STRATEGIES]

    first, resumed = jobs("whole", 2, 0) + jobs("killed", 1, 0), jobs("killed", 2, 5)
    summaries = run_toy_jobs([{"kind": "mirrored_update"}] + first + resumed)
    update, done = summaries[0], summaries[1:]

    def by_name(items):
        return {Path(item["out"]).name: item for item in items}

    return root, by_name(done[:len(first)]), by_name(done[len(first):]), update


def test_mirrored_update_equals_single_device_update(toy_runs):
    """Loss averaged over the global batch: two replicas make the same SGD step as one device."""
    update = toy_runs[3]
    assert update["kind"] == "mirrored_update" and update["ratio"] < 1e-5


@pytest.mark.parametrize("strategy_name", STRATEGIES)
@pytest.mark.parametrize("kind", KINDS)
def test_toy_step_trains_and_resumes_to_the_uninterrupted_weights(toy_runs, kind, strategy_name):
    root, first, resumed, _ = toy_runs
    whole_dir, killed_dir = root / f"whole-{kind}-{strategy_name}", root / f"killed-{kind}-{strategy_name}"
    summary = resumed[killed_dir.name]
    assert summary["replicas"] == (2 if strategy_name == "mirrored" else 1)
    assert first[whole_dir.name]["epochs_done"] == 2 and first[killed_dir.name]["epochs_done"] == 1
    assert summary["resumed_from"] == 1 and summary["epochs_done"] == 2
    whole, killed = np.load(whole_dir / "weights.npz"), np.load(killed_dir / "weights.npz")
    finals = [key for key in whole.files if not key.startswith("initial/")]
    assert sorted(finals) == sorted(key for key in killed.files if not key.startswith("initial/"))
    for key in finals:
        np.testing.assert_allclose(killed[key], whole[key], rtol=1e-6, atol=1e-7, err_msg=key)
    history = training.read_history(killed_dir)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0] == {**training.read_history(whole_dir)[0], "seconds": history[0]["seconds"],
                          "samples_per_second": history[0]["samples_per_second"]}
    for record in history:
        losses = {key: value for key, value in record.items() if "loss" in key or "reconstruction" in key}
        assert len(losses) >= 4 and all(value is not None and math.isfinite(value) for value in losses.values())
        assert record["samples"] == 32
    if kind == "gan":
        networks = {key.split("/")[0] for key in finals}
        assert networks == {"generator", "discriminator"}
        for network in networks:  # both networks learned
            changed = [not np.allclose(whole[f"{network}/{i}"], whole[f"initial/{network}/{i}"])
                       for i in range(sum(key.startswith(network + "/") for key in finals))]
            assert all(changed), network
        assert (whole_dir / "generator.keras").exists() and not (whole_dir / "model.keras").exists()
        # cosine from 1e-2 to 1e-4 over 2 epochs; the discriminator keeps half the generator's rate
        assert [r["learning_rate"] for r in history] == pytest.approx([1e-2, 1e-4], rel=1e-5)
        generator_rate, discriminator_rate = summary["learning_rates"]
        assert discriminator_rate == pytest.approx(0.5 * generator_rate, rel=1e-6)
        assert history[0]["val_reconstruction"] is not None and "val_loss" not in history[0]
    if kind == "two_head":
        assert {"count_loss", "value_loss", "count_accuracy", "val_count_accuracy"} <= set(history[0])
        assert history[0]["loss"] == pytest.approx(history[0]["count_loss"] + 0.5 * history[0]["value_loss"],
                                                   rel=1e-5)
        loaded = keras.saving.load_model(whole_dir / "model.keras", safe_mode=True)
        assert {name: tuple(out.shape) for name, out in loaded(np.zeros((2, 6), np.float32)).items()} == {
            "count": (2, 4), "value": (2, 1)}


def test_cli_train_model_takes_a_step_object(tmp_path):
    from types import SimpleNamespace

    import toy_steps
    from snemo import cli

    args = SimpleNamespace(epochs=1, learning_rate=1e-3, lr_schedule="constant", early_stopping=0, batch_size=16,
                           steps_per_epoch=None, quiet=True)
    run = cli.Run(script="toy", args=args, strategy=strategy(), out=tmp_path, chief=True, shard=(0, 1))
    splits = SimpleNamespace(train=toy_steps.gan_data(), validation=toy_steps.gan_data(seed=1), n_train=32,
                             n_validation=32)
    gan_step = toy_steps._steps()[0]
    generator, discriminator = toy_steps.gan_models()
    with pytest.raises(ValueError, match="learning_rate"):
        cli.train_model(run, None, splits, step=gan_step(generator, discriminator), learning_rate=1e-2)
    result = cli.train_model(run, None, splits, step=gan_step(generator, discriminator), phase="adversarial")
    assert result.epochs_done == 1 and (tmp_path / "generator.keras").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["parameters"] == generator.count_params() + discriminator.count_params()
    assert [r["phase"] for r in training.read_history(tmp_path)] == ["adversarial"]
    # Without a step: the classifier step over the model, at the flags' learning rate.
    cli.train_model(run, tiny_model(), SimpleNamespace(train=tiny_data()[0], validation=None, n_train=50,
                                                       n_validation=0), phase="count")
    assert training.read_history(tmp_path)[-1]["learning_rate"] == pytest.approx(1e-3, rel=1e-5)
