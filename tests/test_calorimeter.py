"""Calorimeter association: target encodings, decoding, metrics on hand-made cases, models, every mode end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from snemo import calorimeter_metrics as cm
from snemo import metrics as snm
from snemo.events import from_lists, read_events, write_events


# ------------------------------------------------------------------------------------------------
# Cell indices and decoding (no TensorFlow)
# ------------------------------------------------------------------------------------------------
def test_cell_index_round_trip_and_range():
    side, column, row = np.meshgrid(np.arange(2), np.arange(22), np.arange(15), indexing="ij")
    index = cm.cell_index(side.ravel(), column.ravel(), row.ravel())
    assert sorted(index.tolist()) == list(range(660))
    back = cm.cell_of_index(index)
    for got, want in zip(back, (side.ravel(), column.ravel(), row.ravel())):
        np.testing.assert_array_equal(got, want)
    assert cm.cell_index(1, 21, 14) == 659 and cm.cell_index(0, 3, 2) == 2 * 22 + 3
    with pytest.raises(ValueError, match="0..659"):
        cm.cell_of_index([660])


def test_decode_returns_k_cells_each_once_by_decreasing_score():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 660))
    scores[:, 7] = 2.0  # a clear winner
    k = rng.integers(0, 5, 50)
    cells, chosen = cm.decode_top_k(scores, k)
    assert cells.shape == (50, 4)
    for i in range(50):
        picked = cells[i, :k[i]]
        assert len(set(picked.tolist())) == k[i]  # each cell once
        assert np.all(cells[i, k[i]:] == -1) and np.all(np.isnan(chosen[i, k[i]:]))
        np.testing.assert_array_equal(picked, np.argsort(-scores[i])[:k[i]])
        assert np.all(np.diff(chosen[i, :k[i]]) <= 0)
        if k[i]:
            assert picked[0] == 7
    # ties go to the lower index, never twice the same cell
    cells, _ = cm.decode_top_k(np.zeros((1, 660)), [3])
    assert cells.tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="k must"):
        cm.decode_top_k(np.zeros((1, 5)), [6])


# ------------------------------------------------------------------------------------------------
# Metrics on hand-made cases
# ------------------------------------------------------------------------------------------------
def test_single_label_metrics_hand_computed():
    result = snm.single_label_metrics([1, 2, 3, 4], [3, 4, 5, 6], [1, 2, 0, 4], [3, 5, 5, 0], n_tracks=[1, 1, 2, 2])
    assert result["n_tracks"] == 4
    assert result["cell_accuracy"] == pytest.approx(0.25)
    assert result["column_accuracy"] == pytest.approx(0.75)
    assert result["row_accuracy"] == pytest.approx(0.5)
    assert result["by_tracks"]["1"]["cell_accuracy"] == pytest.approx(0.5)
    assert result["by_tracks"]["2"] == {"n_tracks": 2, "cell_accuracy": 0.0, "column_accuracy": 0.5,
                                        "row_accuracy": 0.5}
    empty = snm.single_label_metrics([], [], [], [])
    assert empty["n_tracks"] == 0 and math.isnan(empty["cell_accuracy"])


def counts_of(events_cells):
    counts = np.zeros((len(events_cells), 660))
    for i, cells in enumerate(events_cells):
        for cell in cells:
            counts[i, cell] += 1
    return counts


def test_multi_label_metrics_hand_computed():
    a, b, c = cm.cell_index(0, 3, 4), cm.cell_index(1, 3, 9), cm.cell_index(1, 10, 2)  # a and b share column 3
    truth = counts_of([[a], [a, c], [a, b], [c, c]])  # the last event: two tracks in one cell
    scores = np.zeros((4, 660))
    scores[0, a] = 0.9  # 1 track: right
    scores[1, [a, b]] = [0.6, 0.3]  # 2 tracks: one right, b wrong (but column 3... of a: found)
    scores[2, [b, a]] = [0.5, 0.4]  # right, in another order
    scores[3, [c, a]] = [0.8, 0.1]  # a shared cell: can never match
    result = snm.multi_label_metrics(scores, truth)
    assert result["n_events"] == 4
    assert result["exact_set_match"] == pytest.approx(2 / 4)
    assert result["exact_set_ceiling"] == pytest.approx(3 / 4)
    # decoded 1 + 2 + 2 + 2 = 7 cells, of which 1 + 1 + 2 + 1 are truth cells; 1 + 2 + 2 + 1 distinct truth cells
    assert result["cell_precision"] == pytest.approx(5 / 7)
    assert result["cell_recall"] == pytest.approx(5 / 6)
    assert result["jaccard"] == pytest.approx(np.mean([1, 1 / 3, 1, 1 / 2]))
    # columns: event 1 top-2 columns {3, 10}... scores only in column 3 (a, b), then column 0 (ties -> lowest)
    # -> finds a (column 3), misses c (column 10); event 3: top-2 columns {10, 3}, both tracks in column 10 found
    assert result["column_top_k"] == pytest.approx((1 + 1 + 2 + 2) / 7)
    by = result["by_tracks"]
    assert set(by) == {"1", "2"} and by["1"]["exact_set_match"] == 1.0 and by["2"]["n_events"] == 3
    assert by["2"]["exact_set_match"] == pytest.approx(1 / 3)
    # a predicted k of 1 everywhere: events 0 right, precision over 4 decoded cells
    low = snm.multi_label_metrics(scores, truth, k=[1, 1, 1, 1])
    assert low["exact_set_match"] == pytest.approx(1 / 4) and low["cell_precision"] == pytest.approx(4 / 4)
    # a multi-hot truth with the number of tracks given: the shared cell still cannot match
    hot = snm.multi_label_metrics(scores, np.minimum(truth, 1), n_tracks=[1, 2, 2, 2])
    assert hot["exact_set_match"] == pytest.approx(2 / 4) and hot["exact_set_ceiling"] == pytest.approx(3 / 4)


def test_multi_label_metrics_empty_and_bad_shapes():
    empty = snm.multi_label_metrics(np.zeros((0, 660)), np.zeros((0, 660)))
    assert empty["n_events"] == 0 and math.isnan(empty["exact_set_match"]) and math.isnan(empty["jaccard"])
    assert empty["by_tracks"] == {}
    with pytest.raises(ValueError, match="660"):
        snm.multi_label_metrics(np.zeros((2, 330)), np.zeros((2, 330)))


def test_plot_by_tracks_writes_pdf_and_png(tmp_path):
    runs = {"softmax": {"by_tracks": {"1": {"exact_set_match": 1.0}, "2": {"exact_set_match": 0.5}}},
            "sigmoid": {"by_tracks": {"1": {"exact_set_match": 0.9}, "2": {"exact_set_match": None}}}}
    paths = snm.plot_by_tracks(runs, tmp_path / "p", fields=("exact_set_match",))
    assert sorted(p.name for p in paths) == ["p.pdf", "p.png"] and all(p.stat().st_size > 0 for p in paths)


# ------------------------------------------------------------------------------------------------
# Loaders: target encodings, folding, the side of a track
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hand_file(tmp_path_factory):
    """Three events: 1 track (side 0); 2 tracks; 3 tracks of which two hit the same cell."""
    events = [
        {"grid_side": [0, 0, 0], "grid_layer": [0, 1, 2], "grid_column": [50, 51, 52], "wirez": [10.0, 60.0, 110.0],
         "track_split": [3], "calo_side": [0], "calo_column": [12], "calo_row": [7]},
        {"grid_side": [1, 1, 0, 0], "grid_layer": [0, 1, 0, 1], "grid_column": [5, 5, 90, 91],
         "wirez": [-900.0, -950.0, 400.0, 420.0], "track_split": [2, 4], "calo_side": [1, 0], "calo_column": [1, 18],
         "calo_row": [3, 9]},
        {"grid_side": [1, 1, 1, 1, 1, 1], "grid_layer": [0, 1, 0, 1, 0, 1], "grid_column": [20, 21, 22, 23, 60, 61],
         "wirez": [0.0] * 6, "track_split": [2, 4, 6], "calo_side": [1, 1, 1], "calo_column": [4, 4, 10],
         "calo_row": [7, 7, 2]},
    ]
    path = tmp_path_factory.mktemp("calo_hand") / "hand.root"
    write_events(path, from_lists(events))
    return path


def collect(dataset):
    import tensorflow as tf

    batches = list(dataset)
    return [tf.nest.map_structure(lambda *parts: np.concatenate([p.numpy() for p in parts]), *items)
            for items in zip(*batches)]


@pytest.mark.parametrize("target", ["softmax", "sigmoid"])
def test_multi_label_targets_sum_to_one_or_count_the_tracks(hand_file, target):
    from datasets import associated_calohit_multilabel as multi

    splits = multi.load(hand_file, target=target, view=("top", "side"), max_tracks=4, count_target=True,
                        split=(0.0, 0.0, 1.0), shuffle=False)
    inputs, labels = collect(splits.test)
    cells, count = labels["cells"], labels["count"]
    np.testing.assert_array_equal(count.argmax(axis=1) + 1, [1, 2, 3])
    if target == "softmax":
        np.testing.assert_allclose(cells.sum(axis=1), 1.0, rtol=1e-6)
        assert cells[2, cm.cell_index(1, 4, 7)] == pytest.approx(2 / 3)  # two of three tracks in one cell
    else:
        np.testing.assert_array_equal(cells.sum(axis=1), [1, 2, 2])  # the tracks, a shared cell once
        assert set(np.unique(cells)) == {0.0, 1.0}
    assert cells[1, cm.cell_index(0, 18, 9)] > 0 and cells[1, cm.cell_index(1, 1, 3)] > 0
    assert inputs["top"].shape == (3, 18, 113, 1) and inputs["side"].shape == (3, 30, 113, 1)
    with pytest.raises(ValueError, match="count_target needs max_tracks"):
        multi.load(hand_file, count_target=True)


def test_single_label_folds_tracks_and_keeps_their_event_size(hand_file):
    from datasets import associated_calohit_singlelabel as single
    from datasets import views

    splits = single.load(hand_file, view=("top", "side", "front"), fold=True, event_tracks=True,
                         split=(0.0, 0.0, 1.0), shuffle=False)
    inputs, labels = collect(splits.test)
    assert splits.n_test == 6
    np.testing.assert_allclose(labels["cell"].sum(axis=1), 1.0)
    np.testing.assert_array_equal(labels["cell"].argmax(axis=1), [7 * 22 + 12, 3 * 22 + 1, 9 * 22 + 18, 7 * 22 + 4,
                                                                  7 * 22 + 4, 2 * 22 + 10])
    np.testing.assert_array_equal(labels["event_tracks"], [1, 2, 2, 3, 3, 3])
    assert inputs["top"][:, :9].sum() == 0 and inputs["front"][..., :9, :].sum() == 0  # all drawn on side 1
    assert inputs["top"].sum() == 13  # every hit drawn once
    tracks = splits.test_events
    np.testing.assert_array_equal(single.track_side(tracks), tracks.calo_side)  # unfolded hits give the side
    again = single.model_inputs(tracks)
    for name in ("top", "side", "front"):
        np.testing.assert_array_equal(again[name], inputs[name])
    np.testing.assert_array_equal(single.model_inputs(tracks, "side", fold=False), views.make_view(tracks, "side"))


def test_track_side_majority_and_empty_events():
    from datasets.associated_calohit_singlelabel import track_side

    batch = from_lists([{"grid_side": [0, 0, 1], "grid_layer": [0, 1, 2], "grid_column": [1, 2, 3], "track_split": [3]},
                        {"grid_side": [], "grid_layer": [], "grid_column": [], "track_split": []},
                        {"grid_side": [0, 1], "grid_layer": [0, 1], "grid_column": [1, 2], "track_split": [2]}])
    np.testing.assert_array_equal(track_side(batch), [0, 1, 1])


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
def test_models_shapes_sizes_and_safe_loading(tmp_path):
    import keras

    from architectures import calorimeter

    single = calorimeter.build_single()
    multi = calorimeter.build_multi(output="sigmoid", max_tracks=4)
    for model in (single, multi):
        assert 100_000 <= model.count_params() <= 300_000
    x = {v: np.zeros((2,) + calorimeter.VIEW_SHAPES[v] + (1,), np.float32) for v in calorimeter.VIEWS}
    x["top"][:, 12, 40] = 1.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(single(x)).sum(axis=1), 1.0, rtol=1e-5)
    multi.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    out = loaded(x)
    assert out["cells"].shape == (2, 660) and out["count"].shape == (2, 4)
    cells = keras.ops.convert_to_numpy(out["cells"])
    assert np.all((cells > 0) & (cells < 1)) and not np.allclose(cells.sum(axis=1), 1.0)  # sigmoid, not softmax
    one_view = calorimeter.build_multi(("side",))
    assert one_view.output_shape == (None, 660) and [t.name.split(":")[0] for t in one_view.inputs] == ["side"]
    with pytest.raises(ValueError, match="views"):
        calorimeter.build_single(("voxel",))
    with pytest.raises(ValueError, match="output"):
        calorimeter.build_multi(output="relu")


# ------------------------------------------------------------------------------------------------
# The script, every mode end to end on tiny data
# ------------------------------------------------------------------------------------------------
RUN_FILES = ("model.keras", "history.json", "config.json", "metrics.json", "training_curves.pdf",
             "training_curves.png", "by_tracks.pdf", "by_tracks.png")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from my_generator.my_generator import generate

    folder = tmp_path_factory.mktemp("tiny_calo")
    for n_tracks in (1, 2, 3):
        write_events(folder / f"t{n_tracks}.root", generate(30, n_tracks, np.random.default_rng(n_tracks)))
    return folder


def flags(data, out, *more, epochs=1):
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--batch-size", "16", "--steps-per-epoch", "3",
            "--max-tracks", "3", "--quiet", *more]


def check_run(out, mode):
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    assert list((out / "checkpoints" / "train").glob("*.index"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == mode and metrics["split"] == "test"
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert len(history) == 1 and history[0]["samples"] > 0
    return metrics, history[0]


MODES = {"single": ["--mode", "single"],
         "multi_softmax_count": ["--mode", "multi", "--loss", "softmax", "--k", "predicted", "--count-weight", "0.3"],
         "multi_sigmoid_count": ["--mode", "multi", "--loss", "sigmoid"],
         "multi_softmax": ["--mode", "multi", "--loss", "softmax", "--no-count-head"],
         "multi_sigmoid": ["--mode", "multi", "--loss", "sigmoid", "--no-count-head", "--views", "top", "side"]}


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    import associated_calorimeter as script

    folders = {}
    for name, mode_flags in MODES.items():
        out = tmp_path_factory.mktemp("calo_runs") / name
        assert script.main(flags(tiny_data, out, *mode_flags)) == 0, name
        folders[name] = out
    return folders


def test_single_mode_writes_its_run_folder(runs):
    metrics, record = check_run(runs["single"], "single")
    assert metrics["test"]["n_tracks"] > 0 and set(metrics["test"]["by_tracks"]) <= {"1", "2", "3"}
    assert 0.0 <= metrics["test"]["cell_accuracy"] <= metrics["test"]["column_accuracy"] <= 1.0
    assert {"loss", "accuracy", "val_loss"} <= set(record)


@pytest.mark.parametrize("name", ["multi_softmax_count", "multi_sigmoid_count", "multi_softmax", "multi_sigmoid"])
def test_multi_modes_write_their_run_folders(runs, name):
    metrics, record = check_run(runs[name], "multi")
    with_count = name.endswith("count")
    assert metrics["loss"] == ("softmax" if "softmax" in name else "sigmoid")
    assert metrics["k_true"]["n_events"] > 0 and ("k_predicted" in metrics) == with_count
    assert metrics["test"] == metrics["k_predicted" if name == "multi_softmax_count" else "k_true"]
    if with_count:
        assert {"cells_loss", "count_loss", "count_accuracy", "val_count_loss"} <= set(record)
        assert np.array(metrics["count"]["confusion_matrix"]).shape == (3, 3)
    else:
        assert "count_loss" not in record
    config = json.loads((runs[name] / "config.json").read_text())
    assert config["script"] == "associated_calorimeter_multi" and config["parameters"] > 0


def test_compare_plots_two_multi_label_runs(runs, tmp_path, capsys):
    import associated_calorimeter as script

    assert script.main(["--compare", str(runs["multi_softmax"]), str(runs["multi_sigmoid"]), "--out",
                        str(tmp_path)]) == 0
    assert (tmp_path / "multilabel_by_tracks.png").exists() and (tmp_path / "multilabel_by_tracks.pdf").exists()
    assert script.main(["--compare", str(runs["single"]), "--out", str(tmp_path)]) == 2
    assert "not a multi-label run" in capsys.readouterr().err


def test_resume_continues_and_refuses_another_loss(tiny_data, runs, capsys):
    import associated_calorimeter as script

    out = runs["multi_sigmoid"]
    assert script.main(flags(tiny_data, out, *MODES["multi_sigmoid"], epochs=2)) == 0
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 2
    assert script.main(flags(tiny_data, out, "--mode", "multi", "--loss", "softmax", "--no-count-head",
                             "--views", "top", "side")) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_bad_flags_exit_2_and_write_nothing(tiny_data, tmp_path, capsys):
    import associated_calorimeter as script

    with pytest.raises(SystemExit) as exit_info:
        script.main(flags(tiny_data, tmp_path / "x", "--mode", "multi", "--k", "predicted", "--no-count-head"))
    assert exit_info.value.code == 2 and "--k predicted" in capsys.readouterr().err
    assert script.main(flags(tmp_path / "missing.root", tmp_path / "y")) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_single_model_with_z_channel_tells_its_channels(tmp_path):
    import keras

    from architectures import calorimeter

    model = calorimeter.build_single(("top", "side"), channels=2, z_channel=True, filters=(8, 8), squeeze=4, units=16)
    assert {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs} == {"top": (18, 113, 3),
                                                                               "side": (30, 113, 2)}
    model.save(tmp_path / "z.keras")
    loaded = keras.models.load_model(tmp_path / "z.keras", safe_mode=True)
    assert calorimeter.input_channels(loaded) == {"radius_channel": True, "z_channel": True, "line_input": False}
    top_only = calorimeter.build_single(("top",), channels=1, z_channel=True, filters=(8, 8), squeeze=4, units=16,
                                        line_input=True)
    assert calorimeter.input_channels(top_only) == {"radius_channel": False, "z_channel": True, "line_input": 301}
    radius_only = calorimeter.build_single(("top",), channels=2, filters=(8, 8), squeeze=4, units=16)
    assert calorimeter.input_channels(radius_only) == {"radius_channel": True, "z_channel": False,
                                                       "line_input": False}
    assert calorimeter.input_channels(calorimeter.build_multi(("top", "front"))) == \
        {"radius_channel": False, "z_channel": False, "line_input": False}
    line = calorimeter.build_single(("front",), line_input=True, filters=(8, 8), squeeze=4, units=16)
    assert calorimeter.input_channels(line) == {"radius_channel": False, "z_channel": False, "line_input": 301}
    assert line.name == "calorimeter_single_line"


def test_single_mode_with_z_channel_trains_and_reconstructs_from_it(tiny_data, tmp_path):
    """--z-channel end to end: the run folder, then reconstruction reads the model's channels."""
    import associated_calorimeter as script
    import reconstruction
    from datasets.associated_calohit_singlelabel import model_inputs

    out = tmp_path / "z"
    assert script.main(flags(tiny_data, out, "--mode", "single", "--views", "top", "--z-channel", "--radius-channel",
                             "--line-input", "--line-skip", "--head", "factorised", "--filters", "8", "8",
                             "--squeeze", "4", "--units", "16")) == 0
    metrics, _ = check_run(out, "single")
    assert metrics["test"]["n_tracks"] > 0
    calo = reconstruction.load_calorimeter(out / "model.keras", "single", flag="--calo-single")
    assert calo.views == ("top",) and calo.radius_channel and calo.z_channel and calo.line_input
    # --line-skip: the line reaches the row and column logits through their own linear layers
    assert calo.model.get_layer("column_from_line").kernel.shape == (301, 22)
    assert calo.model.get_layer("row_from_line").kernel.shape == (301, 15)
    batch = read_events(tiny_data)
    labels = np.zeros(int(batch.hit_offsets[-1]), np.int64)  # every hit in cluster 0
    cells = reconstruction.clustered_cells(calo, batch, labels, batch_size=16)
    assert len(cells.column) == len(batch) and np.all((cells.column >= 0) & (cells.column < 22))
    assert model_inputs(batch[:4], ("top",), True, z_channel=True).shape == (4, 18, 113, 3)
    inputs = model_inputs(batch[:4], ("top",), True, z_channel=True, line_input=True)
    assert set(inputs) == {"top", "line"} and inputs["line"].shape == (4, 301)
    first_kind = model_inputs(batch[:4], ("top",), True, z_channel=True, line_input=264)  # models of the first kind
    np.testing.assert_array_equal(first_kind["line"], inputs["line"][:, :264])


def test_z_channel_needs_single_mode_and_the_top_view(tiny_data, tmp_path, capsys):
    import associated_calorimeter as script

    for more, flag in ((["--mode", "multi", "--z-channel"], "--z-channel"),
                       (["--mode", "single", "--views", "side", "--z-channel"], "--z-channel"),
                       (["--mode", "multi", "--line-input"], "--line-input"),
                       (["--mode", "single", "--line-input", "--line-skip"], "--line-skip")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(flags(tiny_data, tmp_path / "bad", *more))
        assert exit_info.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_factorised_head_puts_row_and_column_at_row_times_22_plus_column():
    import keras

    from architectures import calorimeter
    from snemo import geometry as geo

    model = calorimeter.build_single(("top",), z_channel=True, filters=(4, 4), squeeze=2, units=8, head="factorised")
    for name, size, hot in (("row_logits", geo.CALO_GRID_ROWS, 3), ("column_logits", geo.CALO_GRID_COLUMNS, 5)):
        layer = model.get_layer(name)
        bias = np.zeros(size, np.float32)
        bias[hot] = 10.0
        layer.set_weights([np.zeros_like(layer.get_weights()[0]), bias])
    scores = keras.ops.convert_to_numpy(model(np.random.default_rng(0).random((2, 18, 113, 2), np.float32)))
    assert scores.shape == (2, 330) and np.all(scores.argmax(axis=1) == geo.calo_grid_index(5, 3))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="head"):
        calorimeter.build_single(head="wide")


def test_init_model_adds_the_line_skip_to_a_trained_model_and_refuses_another_architecture(tiny_data, tmp_path,
                                                                                          capsys):
    """--init-model: a model without --line-skip starts one with it (its layers copied, the skip at
    its grid-binning start); a file of other sizes exits 2 naming the flag, writing nothing."""
    import keras

    import associated_calorimeter as script
    from datasets.line_fit import grid_binning

    from architectures import calorimeter

    size = ["--views", "top", "--line-input", "--head", "factorised", "--filters", "8", "8", "--squeeze", "4",
            "--units", "16"]
    base = tmp_path / "base"
    base.mkdir()
    trained = calorimeter.build_single(("top",), filters=(8, 8), squeeze=4, units=16, head="factorised",
                                       line_input=True)  # as the script builds it without --line-skip
    trained.save(base / "model.keras")
    skip = tmp_path / "skip"
    assert script.main(flags(tiny_data, skip, "--mode", "single", *size, "--line-skip", "--init-model",
                             str(base / "model.keras"), "--learning-rate", "1e-9")) == 0
    config = json.loads((skip / "config.json").read_text())
    assert config["init_model"] == str((base / "model.keras").resolve())
    started = keras.models.load_model(skip / "model.keras", safe_mode=True)
    np.testing.assert_allclose(started.get_layer("top_conv1").get_weights()[0],
                               trained.get_layer("top_conv1").get_weights()[0], atol=1e-6)
    kernel = started.get_layer("column_from_line").get_weights()[0]
    np.testing.assert_allclose(kernel, 4.0 * grid_binning()[0], atol=1e-3)  # the start, barely moved at lr 1e-9
    capsys.readouterr()
    other = tmp_path / "other"
    bigger = [f if f != "16" else "32" for f in size]  # --units 32
    assert script.main(flags(tiny_data, other, "--mode", "single", *bigger, "--init-model",
                             str(base / "model.keras"))) == 2
    err = capsys.readouterr().err.strip()
    assert "--init-model" in err and len(err.splitlines()) == 1
    assert not other.exists()
