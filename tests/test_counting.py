"""Track counting: metrics on hand-computed cases, model builders, every script end to end on tiny data."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from snemo import metrics as snm

# ------------------------------------------------------------------------------------------------
# Metrics (no TensorFlow needed)
# ------------------------------------------------------------------------------------------------


def test_counting_metrics_hand_computed():
    truth = [0, 0, 1, 1]
    prediction = [0, 1, 1, 1]
    result = snm.counting_metrics(truth, prediction, 2)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["recall"] == pytest.approx([0.5, 1.0])
    assert result["precision"] == pytest.approx([1.0, 2 / 3])
    assert result["support"] == [2, 2]
    assert result["confusion_matrix"] == [[1, 1], [0, 2]]  # rows true, columns predicted
    assert result["labels"] == [1, 2]
    assert result["n_events"] == 4


def test_empty_classes_give_nan_not_zero():
    # Class 2 (3 tracks) never true, class 3 (4 tracks) never true nor predicted.
    result = snm.counting_metrics(np.array([0, 1, 1]), np.array([0, 2, 1]), 4)
    assert result["recall"][:2] == pytest.approx([1.0, 0.5])
    assert math.isnan(result["recall"][2]) and math.isnan(result["recall"][3])
    assert result["precision"][2] == 0.0  # predicted once, never right
    assert math.isnan(result["precision"][3])
    assert all(math.isnan(v) for v in result["confusion_matrix_normalised"][3])
    empty = snm.counting_metrics([], [], 3)
    assert math.isnan(empty["accuracy"]) and empty["n_events"] == 0


def test_one_hot_and_softmax_inputs_and_bad_classes():
    truth = np.eye(3)[[0, 1, 2, 2]]
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.0, 0.1, 0.9]])
    matrix = snm.confusion_matrix(truth, scores, 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match="outside"):
        snm.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="lengths"):
        snm.confusion_matrix([0, 1], [0], 3)


def test_write_metrics_turns_nan_into_null(tmp_path):
    result = snm.counting_metrics([0, 0], [0, 0], 2)
    path = snm.write_metrics(tmp_path / "metrics.json", result)
    data = json.loads(path.read_text())
    assert data["recall"] == [1.0, None] and data["precision"] == [1.0, None]


def test_format_confusion_labels_axes():
    text = snm.format_confusion([[5, 1], [0, 4]], [1, 2])
    assert "rows = true" in text and "columns = predicted" in text and "true \\ predicted" in text
    lines = text.splitlines()
    assert lines[2].split()[:3] == ["1", "5", "1"] and lines[3].split()[:3] == ["2", "0", "4"]
    summary = snm.format_counting_summary(snm.counting_metrics([0, 1], [0, 0], 2))
    assert "accuracy: 50.000%" in summary


# ------------------------------------------------------------------------------------------------
# Model builders
# ------------------------------------------------------------------------------------------------


def test_view_builders_shapes_and_features():
    pytest.importorskip("tensorflow")
    from architectures import front, side, top, view3d

    for module, shape, name, n_features in ((top, (18, 113, 1), "top", 128), (side, (30, 113, 1), "side", 128),
                                            (front, (30, 18, 1), "front", 128),
                                            (view3d, (18, 113, 30, 1), "voxels", 128)):
        model = module.build(n_classes=4)
        assert tuple(model.inputs[0].shape[1:]) == shape
        assert model.layers[0].name == name
        assert model.output_shape == (None, 4)
        assert tuple(model.get_layer("features").output.shape) == (None, n_features)  # pooled (B, F)
        assert not any(layer.__class__.__name__ == "Lambda" for layer in model.layers)
    two_channels = top.build(input_shape=(18, 113, 2), n_classes=3)
    assert two_channels.output_shape == (None, 3)
    with pytest.raises(ValueError):
        top.build(n_classes=1)


def test_fast_builder_reads_each_view_along_its_long_axis():
    pytest.importorskip("tensorflow")
    from architectures import combined, fast

    models = {view: fast.build(shape, 4, input_name=view) for view, shape in fast.SHAPES.items()}
    # the top and side views run along their 113 columns, the front view along its 30 z bins
    for view, sequence in (("top", (113, 18)), ("side", (113, 30)), ("front", (30, 18))):
        model = models[view]
        assert [t.name for t in model.inputs] == [view] and model.output_shape == (None, 4)
        assert tuple(model.get_layer("sequence").output.shape) == (None, *sequence)
        assert tuple(model.get_layer("features").output.shape) == (None, 2 * 48)
    radius = fast.build((18, 113, 2), 3)  # a radius channel doubles the channels of each step
    assert tuple(radius.get_layer("sequence").output.shape) == (None, 113, 36) and radius.output_shape == (None, 3)
    joined = combined.build(models["top"], models["side"], models["front"], n_classes=4)
    rng = np.random.default_rng(0)
    images = {view: (rng.random((2, *shape)) > 0.9).astype("float32") for view, shape in fast.SHAPES.items()}
    np.testing.assert_allclose(np.asarray(joined(images, training=False)).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="input_name"):
        fast.build(input_name="voxels")
    with pytest.raises(ValueError):
        fast.build(n_classes=1)


def test_combined_builder_cuts_at_features_and_round_trips(tmp_path):
    keras = pytest.importorskip("keras")
    from architectures import combined, front, side, top

    model = combined.build(top.build(), side.build(), front.build(), n_classes=4)
    assert sorted(tensor.name.split(":")[0] for tensor in model.inputs) == ["front", "side", "top"]
    assert model.output_shape == (None, 4)
    head_only = len(model.trainable_variables)
    combined.set_branches_trainable(model, True)
    assert len(model.trainable_variables) > head_only
    batch = {"top": np.zeros((2, 18, 113, 1), np.float32), "side": np.zeros((2, 30, 113, 1), np.float32),
             "front": np.zeros((2, 30, 18, 1), np.float32)}
    # Unfrozen branches keep BatchNorm in inference mode: training and inference agree without dropout.
    model.get_layer("head_dropout").rate = 0.0
    np.testing.assert_allclose(model(batch, training=True), model(batch, training=False), atol=1e-5)
    model.save(tmp_path / "combined.keras")
    loaded = keras.saving.load_model(tmp_path / "combined.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(batch), model(batch), atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        combined.cut_at_features(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), "x")


# ------------------------------------------------------------------------------------------------
# Scripts end to end on tiny data
# ------------------------------------------------------------------------------------------------

RUN_FILES = ("model.keras", "history.json", "config.json", "metrics.json", "training_curves.pdf",
             "training_curves.png", "confusion_matrix.pdf", "confusion_matrix.png")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Folder with 4 ROOT files of 40 events each, 1..4 tracks."""
    from snemo.events import from_lists, write_events

    folder = tmp_path_factory.mktemp("tiny_counting")
    rng = np.random.default_rng(0)
    try:
        from my_generator.my_generator import generate
    except ImportError:
        generate = None
    for n_tracks in (1, 2, 3, 4):
        if generate is not None:
            batch = generate(40, n_tracks, np.random.default_rng(n_tracks))
        else:
            events = []
            for _ in range(40):
                hits = rng.integers(3, 8, size=n_tracks)
                events.append({"grid_layer": rng.integers(0, 9, hits.sum()).tolist(),
                               "grid_column": rng.integers(0, 113, hits.sum()).tolist(),
                               "grid_side": rng.integers(0, 2, hits.sum()).tolist(),
                               "wirez": rng.uniform(-1400, 1400, hits.sum()).tolist(),
                               "track_split": np.cumsum(hits).tolist()})
            batch = from_lists(events)
        write_events(folder / f"tiny_t{n_tracks}.root", batch)
    return folder


def common_flags(data, out, epochs=1):
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "32", "--quiet"]


def assert_run_folder(out, phases=("train",)):
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    for phase in phases:
        assert list((out / "checkpoints" / phase).glob("*.index"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_events"] > 0
    assert np.array(metrics["confusion_matrix"]).shape == (4, 4)
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["epochs"] >= 1 and "strategy" in config


@pytest.fixture(scope="module")
def view_runs(tiny_data, tmp_path_factory):
    """Train the three view models for one epoch (reused by the combined and plot tests)."""
    pytest.importorskip("tensorflow")
    import number_of_tracks_classification as script

    root = tmp_path_factory.mktemp("view_runs")
    runs = {}
    for view in ("top", "side", "front"):
        out = root / view
        assert script.main(["--view", view] + common_flags(tiny_data, out)) == 0
        runs[view] = out
    return runs


def test_view_scripts_write_the_run_folder(view_runs, capsys):
    for out in view_runs.values():
        assert_run_folder(out)
        assert len(json.loads((out / "history.json").read_text())["epochs"]) == 1


def test_resume_after_first_epoch(tiny_data, view_runs, tmp_path, capsys):
    import shutil

    import number_of_tracks_classification as script

    out = tmp_path / "resume"
    shutil.copytree(view_runs["top"], out)  # a run of `--view top` + common_flags(epochs=1), as a killed job leaves it
    assert script.main(["--view", "top"] + common_flags(tiny_data, out, epochs=2)[:-1]) == 0  # not quiet
    printed = capsys.readouterr().out
    assert "resuming" in printed and "after epoch 1" in printed
    assert "accuracy:" in printed and "rows = true" in printed
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in history] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["resumed"] is True and config["args"]["epochs"] == 2 and "--epochs 1" in config["command"]
    assert [resume["changed"] for resume in config["resumes"]] == [{"epochs": [1, 2], "quiet": [True, False]}]


def test_3d_script(tiny_data, tmp_path):
    pytest.importorskip("tensorflow")
    import number_of_tracks_classification3D as script

    out = tmp_path / "voxel"
    # The voxel model is the costly one: 40 events (10 a file) in batches of 8 still fill the run folder.
    assert script.main(common_flags(tiny_data, out) + ["--batch-size", "8", "--max-events", "40", "--variant", "sides6"]) == 0
    assert_run_folder(out)
    assert json.loads((out / "config.json").read_text())["args"]["variant"] == "sides6"
    import keras

    model = keras.saving.load_model(out / "model.keras", safe_mode=True, compile=False)
    assert tuple(model.get_layer("stem_fold_rows").output.shape) == (None, 2, 113, 6, 45)  # 9 layers x 5 z bins


def test_3d_script_init_model(tiny_data, view_runs, tmp_path, capsys):
    """--init-model on the voxel counter: a run from a trained voxel model at a vanishing learning
    rate keeps its weights; a top-view model is refused (status 2, one line naming the flag)."""
    import keras

    import number_of_tracks_classification3D as script

    small = ["--batch-size", "8", "--max-events", "40"]
    first, tuned = tmp_path / "voxel", tmp_path / "tuned"
    assert script.main(common_flags(tiny_data, first) + small) == 0
    source = first / "model.keras"
    assert script.main(common_flags(tiny_data, tuned) + small + ["--init-model", str(source),
                                                                  "--learning-rate", "1e-12"]) == 0
    trained = keras.saving.load_model(source, safe_mode=True)
    after = keras.saving.load_model(tuned / "model.keras", safe_mode=True)
    for a, b in zip(trained.trainable_weights, after.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert json.loads((tuned / "config.json").read_text())["init_model"] == os.path.abspath(source)
    capsys.readouterr()
    assert script.main(common_flags(tiny_data, tmp_path / "wrong") + small + [
        "--init-model", str(view_runs["top"] / "model.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-model" in err[0] and "top" in err[0]
    assert not (tmp_path / "wrong").exists()


@pytest.fixture(scope="module")
def combined_run(tiny_data, view_runs, tmp_path_factory):
    """One combined run (frozen, then finetune), and the branch weights at the end of its frozen phase.

    The weights are read in-process from the model the script trains (a wrapper around
    cli.train_model), so one run shows both phases and the frozen branches.
    """
    import combined as script
    from snemo import cli

    out = tmp_path_factory.mktemp("combined") / "run"
    flags = common_flags(tiny_data, out) + ["--finetune-epochs", "1", "--learning-rate", "0.01"]
    flags += [item for view in ("top", "side", "front") for item in (f"--{view}", str(view_runs[view] / "model.keras"))]
    after_frozen = {}
    train_model = cli.train_model

    def train_and_keep_the_frozen_branches(run, model, splits, **options):
        result = train_model(run, model, splits, **options)
        if options.get("phase") == "frozen":
            after_frozen.update({view: model.get_layer(f"{view}_branch").get_weights()
                                 for view in ("top", "side", "front")})
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "train_model", train_and_keep_the_frozen_branches)
        assert script.main(flags) == 0
    return out, after_frozen


def test_combined_script_two_phases(combined_run):
    out, _ = combined_run
    assert_run_folder(out, phases=("frozen", "finetune"))
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [(r["phase"], r["epoch"]) for r in history] == [("frozen", 1), ("finetune", 1)]
    assert history[1]["learning_rate"] == pytest.approx(1e-4, rel=1e-4)


def test_combined_missing_model_is_one_line_exit_2(tiny_data, tmp_path, capsys):
    import combined as script

    status = script.main(common_flags(tiny_data, tmp_path / "c") + ["--top", str(tmp_path / "missing.keras")])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert "missing.keras" in err and len(err.splitlines()) == 1


def always_one_track(model_path, out_path):
    """A copy of a trained counter whose head always answers 1 track (class 0): most events are misclassified."""
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    head = model.get_layer("count")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.array([50.0] + [0.0] * (len(bias) - 1), np.float32)])
    model.save(out_path)
    return out_path


def test_plot_confusion_gallery_of_a_model_that_is_always_wrong_on_two_or_more(tiny_data, view_runs, tmp_path,
                                                                               capsys):
    import plot_confusion as script

    model = always_one_track(view_runs["top"] / "model.keras", tmp_path / "one_track.keras")
    out = tmp_path / "plots"
    status = script.main(["--model", str(model), "--data", str(tiny_data), "--out", str(out), "--max-gallery", "2",
                          "--quiet"])
    assert status == 0
    for name in ("confusion_matrix.pdf", "confusion_matrix.png", "metrics.json"):
        assert (out / name).exists()
    metrics = json.loads((out / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix[:, 1:].sum() == 0 and matrix[1:, 0].sum() > 0  # every event predicted 1 track, some are not
    wrong = int(capsys.readouterr().out.split(" misclassified")[0].split()[-1])
    assert wrong == matrix[1:, 0].sum()
    pngs = sorted((out / "misclassified").glob("*.png"))
    assert len(pngs) == 2 and (out / "misclassified.pdf").stat().st_size > 0
    from matplotlib.image import imread

    assert imread(pngs[0]).std() > 0.01  # a drawn page, not a blank one


@pytest.fixture(scope="module")
def tuned_front_run(tiny_data, view_runs, tmp_path_factory):
    """A front run from the trained front model's weights (--init-model, learning rate 1e-12) on a file
    split of 120 events with seed 3: the init-model test and the plot_confusion split test share it."""
    out = tmp_path_factory.mktemp("tuned_front") / "run"
    run_config(tiny_data, out, "--view", "front", "--init-model", str(view_runs["front"] / "model.keras"),
               "--learning-rate", "1e-12", "--lr-schedule", "constant", "--seed", "3", "--split-by", "file",
               "--max-events", "120")
    return out


def test_plot_confusion_scores_the_runs_own_test_split_from_its_config(tuned_front_run, tmp_path, capsys):
    import plot_confusion as script

    run = tuned_front_run
    config = json.loads((run / "config.json").read_text())
    counts = [config["data"][k] for k in ("n_train", "n_validation", "n_test")]
    assert config["data"]["info"]["split_by"] == "file" and sum(counts) == 120  # --max-events: 30 of each file
    assert all(count % 30 == 0 for count in counts) and min(counts) >= 30  # --split-by file keeps files whole
    capsys.readouterr()
    out = tmp_path / "scored"
    assert script.main(["--model", str(run / "model.keras"), "--out", str(out), "--max-gallery", "0"]) == 0
    printed = capsys.readouterr().out
    assert "config.json" in printed and "--seed 3" in printed and "--split-by file" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_events"] == config["data"]["n_test"] > 0
    # A flag given here wins over the run's: another seed is another file split.
    assert script.main(["--model", str(run / "model.keras"), "--out", str(tmp_path / "seed0"), "--seed", "0",
                        "--max-gallery", "0", "--quiet"]) == 0
    assert json.loads((tmp_path / "seed0" / "config.json").read_text())["args"]["seed"] == 0
    assert script.main(["--model", str(run / "model.keras"), "--out", str(tmp_path / "bad"), "--max-tracks", "3",
                        "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-tracks 3" in err[0] and "1..4" in err[0]
    assert not (tmp_path / "bad").exists()


def test_plot_confusion_refuses_to_write_into_a_training_run(view_runs, tmp_path, capsys):
    import plot_confusion as script

    before = (view_runs["top"] / "config.json").read_bytes()
    assert script.main(["--model", str(view_runs["top"] / "model.keras"), "--out", str(view_runs["top"]),
                        "--quiet"]) == 2
    assert "holds a run of number_of_tracks_top" in capsys.readouterr().err
    assert (view_runs["top"] / "config.json").read_bytes() == before


@pytest.mark.slow
def test_demo_runs(tmp_path):
    """The demo on a capped built-in dataset, generated in a temporary --data-dir."""
    import demo

    assert demo.main(["--out", str(tmp_path / "demo"), "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                      "--max-events", "2000", "--quiet"]) == 0
    assert_run_folder(tmp_path / "demo")


def test_plot_confusion_all_events_scores_every_event(side_capsnet_run):
    """--all-events (the scoring of the CapsNet run below): every event of --data, the run's --radius-channel."""
    _, scored = side_capsnet_run
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["split"] == "all events" and metrics["n_events"] == 160
    assert int(np.sum(metrics["confusion_matrix"])) == 160
    assert json.loads((scored / "config.json").read_text())["taken_from_run"] == ["--radius-channel True"]


# ------------------------------------------------------------------------------------------------
# One tiny run per data / training flag
# ------------------------------------------------------------------------------------------------


def run_config(tiny_data, out, *flags):
    import number_of_tracks_classification as script

    base = common_flags(tiny_data, out)[2:] if tiny_data is None else common_flags(tiny_data, out)
    assert script.main(base + list(flags)) == 0
    return json.loads((out / "config.json").read_text())


@pytest.fixture(scope="module")
def side_capsnet_run(tiny_data, tmp_path_factory):
    """A side-view CapsNet run, streamed, with the radius channel; then plot_confusion --all-events on it.

    Returns (run folder, scoring folder). The streaming, CapsNet and --all-events tests share it.
    """
    import plot_confusion

    root = tmp_path_factory.mktemp("side_capsnet")
    run_config(tiny_data, root / "run", "--view", "side", "--architecture", "capsnet", "--streaming",
               "--radius-channel")
    assert plot_confusion.main(["--model", str(root / "run" / "model.keras"), "--data", str(tiny_data),
                                "--all-events", "--out", str(root / "scored"), "--quiet", "--max-gallery", "0"]) == 0
    return root / "run", root / "scored"


def test_streaming_with_radius_channel_gives_the_in_memory_split(side_capsnet_run, view_runs):
    import keras

    run, _ = side_capsnet_run
    streamed = json.loads((run / "config.json").read_text())
    memory = json.loads((view_runs["top"] / "config.json").read_text())
    assert streamed["data"]["info"]["streaming"] is True
    assert [streamed["data"][k] for k in ("n_train", "n_validation", "n_test")] == \
        [memory["data"][k] for k in ("n_train", "n_validation", "n_test")]  # the split is the event hash's
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert tuple(model.inputs[0].shape[1:]) == (30, 113, 2)  # hit counts and drift radius


@pytest.fixture(scope="module")
def with_five(tiny_data, tmp_path_factory):
    """tiny_data plus a file of 40 five-track events (beyond --max-tracks 4)."""
    import shutil

    from my_generator.my_generator import generate
    from snemo.events import write_events

    data = tmp_path_factory.mktemp("with_five") / "data"
    shutil.copytree(tiny_data, data)
    write_events(data / "tiny_t5.root", generate(40, 5, np.random.default_rng(5)))
    return data


@pytest.fixture(scope="module")
def early_skipped_run(with_five, tmp_path_factory):
    """One run for two flags: --skip-out-of-range on with_five, and early stopping after 1 epoch without improvement."""
    out = tmp_path_factory.mktemp("early_skipped") / "run"
    config = run_config(with_five, out, "--skip-out-of-range", "--early-stopping", "1", "--epochs", "6",
                        "--learning-rate", "0.05", "--lr-schedule", "constant")
    return out, config


def test_skip_out_of_range_drops_events_with_too_many_tracks(with_five, early_skipped_run, tmp_path, capsys):
    import number_of_tracks_classification as script

    assert script.main(common_flags(with_five, tmp_path / "refused")) == 2
    err = capsys.readouterr().err
    assert "tiny_t5.root" in err and "skip" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "refused").exists()
    _, config = early_skipped_run
    assert config["args"]["skip_out_of_range"] is True
    assert sum(config["data"][k] for k in ("n_train", "n_validation", "n_test")) == 160


def test_early_stopping_stops_at_the_first_epoch_without_improvement(early_skipped_run):
    out, _ = early_skipped_run
    losses = [r["val_loss"] for r in json.loads((out / "history.json").read_text())["epochs"]]
    improved = [loss < min(losses[:k]) for k, loss in enumerate(losses) if k > 0]
    if len(losses) < 6:
        assert not improved[-1] and all(improved[:-1]), losses  # stopped at the first epoch that did not improve
    else:
        assert all(improved[:-1]), losses  # every epoch but maybe the last improved: no stop was due


# ------------------------------------------------------------------------------------------------
# Built-in dataset, --init-model, frozen branches, resume rules
# ------------------------------------------------------------------------------------------------


def test_builtin_toyhaystack_dataset_in_a_data_dir(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    config = run_config(None, tmp_path / "builtin", "--dataset-kind", "toyhaystack", "--data-dir", str(data_dir),
                        "--max-events", "200")
    assert all(path.startswith(str(data_dir / "toyhaystack")) for path in config["data_files"])
    assert len(config["data_files"]) == 8  # 4 track counts x 2 files
    from Generator.builtin import default_dataset

    stamp = {path: os.stat(path).st_mtime_ns for path in config["data_files"]}
    monkeypatch.setenv("SNEMO_DATA_DIR", str(data_dir))
    assert default_dataset("toyhaystack", progress=False) == data_dir / "toyhaystack"  # found, not regenerated
    assert stamp == {path: os.stat(path).st_mtime_ns for path in config["data_files"]}


def test_init_model_starts_from_the_trained_weights(tiny_data, view_runs, tuned_front_run, tmp_path, capsys):
    import keras

    import number_of_tracks_classification as script

    source = view_runs["front"] / "model.keras"
    config = json.loads((tuned_front_run / "config.json").read_text())
    assert config["init_model"] == str(source.resolve()) or config["init_model"] == os.path.abspath(source)
    trained = keras.saving.load_model(source, safe_mode=True)
    tuned = keras.saving.load_model(tuned_front_run / "model.keras", safe_mode=True)
    for a, b in zip(trained.trainable_weights, tuned.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert script.main(common_flags(tiny_data, tmp_path / "wrong_view") + ["--view", "top", "--init-model",
                                                                          str(source)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init-model" in err[0] and "front" in err[0]
    assert not (tmp_path / "wrong_view").exists()


def test_combined_frozen_phase_leaves_the_branches_unchanged(view_runs, combined_run):
    """The frozen phase (at --learning-rate 0.01) trains the head only."""
    import keras

    from architectures import combined

    out, after_frozen = combined_run
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for view in ("top", "side", "front"):
        branch = combined.cut_at_features(keras.saving.load_model(view_runs[view] / "model.keras", safe_mode=True), "b")
        for before, after in zip(branch.get_weights(), after_frozen[view], strict=True):
            np.testing.assert_array_equal(before, after)
    head_before = combined.build(*(keras.saving.load_model(view_runs[v] / "model.keras") for v in ("top", "side", "front")))
    assert head_before.get_layer("count").get_weights()[0].shape == model.get_layer("count").get_weights()[0].shape


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_refuses_flags_that_change_the_model_or_the_data(tiny_data, view_runs, tmp_path, capsys):
    import number_of_tracks_classification as script

    out = tmp_path / "finished"
    import shutil

    shutil.copytree(view_runs["top"], out)
    before = snapshot(out)
    other = tmp_path / "other_data"
    shutil.copytree(tiny_data, other)
    (other / "tiny_t4.root").unlink()
    for flags, token in ((["--seed", "7"], "--seed 0 (now 7)"), (["--batch-size", "16"], "--batch-size 32 (now 16)"),
                         (["--radius-channel"], "--radius-channel"), (["--max-tracks", "5"], "--max-tracks")):
        assert script.main(common_flags(tiny_data, out) + flags) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and token in err[0] and "cannot resume" in err[0], err
    assert script.main(common_flags(other, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "4 file(s)" in err[0] and "3 file(s)" in err[0], err
    assert script.main(common_flags(tmp_path / "missing.root", out)) == 2  # a bad file never touches the run
    assert script.main(["--view", "side"] + common_flags(tiny_data, out)) == 2
    assert "holds a run of number_of_tracks_top" in capsys.readouterr().err
    assert snapshot(out) == before


def test_capsnet_architecture_trains_and_its_model_loads_for_scoring(side_capsnet_run):
    """--architecture capsnet: margin loss through the shared loop; the saved CapsNet is scored by plot_confusion."""
    import keras

    out, scored = side_capsnet_run
    assert_run_folder(out)
    model = keras.saving.load_model(out / "model.keras", safe_mode=True, compile=False)
    assert any("capsule" in layer.__class__.__name__.lower() for layer in model.layers)
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["architecture"] == "capsnet"
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert 0.0 < history[0]["loss"] < 1.0  # margin loss of lengths in [0, 1): at most 0.81 + 0.5 * 0.81 * 3
    assert (scored / "metrics.json").exists() and (scored / "confusion_matrix.png").exists()


def test_fast_architecture_trains_and_reconstruct_reads_its_combined_counter(tiny_data, tmp_path):
    """--architecture fast for each view, joined by combined.py: reconstruct's counter reads the three views."""
    pytest.importorskip("tensorflow")
    import clustering_inference as inference
    import combined as combined_script
    import number_of_tracks_classification as script
    from snemo.events import read_events

    for view in ("top", "side", "front"):
        sizes = ["--filters", "8", "12"] if view == "top" else []
        assert script.main(["--view", view, "--architecture", "fast", *sizes] + common_flags(tiny_data, tmp_path / view)) == 0
    assert_run_folder(tmp_path / "top")
    import keras

    top = keras.saving.load_model(tmp_path / "top" / "model.keras", safe_mode=True, compile=False)
    assert [layer.filters for layer in top.layers if layer.name.endswith("_conv")] == [8, 12]
    assert script.main(["--view", "front", "--filters", "4", "6", "8"] + common_flags(tiny_data, tmp_path / "front_cnn")) == 0
    front = keras.saving.load_model(tmp_path / "front_cnn" / "model.keras", safe_mode=True, compile=False)
    assert [layer.filters for layer in front.layers if "_conv" in layer.name] == [4, 6, 6, 8]  # block 2 has 2 convs
    for bad in (["--filters", "8"], ["--architecture", "capsnet", "--filters", "8"]):  # the top CNN has 4 blocks
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--view", "top", *bad] + common_flags(tiny_data, tmp_path / "cnn"))
        assert exit_info.value.code == 2 and not (tmp_path / "cnn").exists()
    out = tmp_path / "combined"
    assert combined_script.main([f"--{view}={tmp_path / view / 'model.keras'}" for view in ("top", "side", "front")]
                                + ["--finetune-epochs", "1"] + common_flags(tiny_data, out)) == 0
    counter = inference.load_counter(out / "model.keras")
    assert counter.views == ("top", "side", "front") and not counter.radius_channel
    # A combined counter given as --side / --front lends its branches (frozen phase: unchanged).
    again = tmp_path / "combined_from_branches"
    assert combined_script.main([f"--top={tmp_path / 'top' / 'model.keras'}", f"--side={out / 'model.keras'}",
                                 f"--front={out / 'model.keras'}", "--finetune-epochs", "0"]
                                + common_flags(tiny_data, again)) == 0
    source = keras.saving.load_model(out / "model.keras", safe_mode=True, compile=False)
    built = keras.saving.load_model(again / "model.keras", safe_mode=True, compile=False)
    for view in ("side", "front"):
        for a, b in zip(source.get_layer(f"{view}_branch").get_weights(), built.get_layer(f"{view}_branch").get_weights()):
            np.testing.assert_array_equal(a, b)
    batch = read_events(str(tiny_data), max_events=40)
    counts, scores = inference.predict_counts(counter, batch, batch_size=16)
    assert counts.shape == (len(batch),) and set(np.unique(counts)) <= {1, 2, 3, 4}
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
