"""The wall view (datasets/wall_view.py) and the multi-label calorimeter model on it (build_wall)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets import wall_view
from snemo import geometry as geo
from snemo.events import EventBatch, from_lists, offsets_from_counts, read_events, write_events


def batch_of(events):
    """EventBatch from [(sides, layers, columns, wirez, radius, missing)] per event (no truth tracks)."""
    counts = [len(e[0]) for e in events]
    keys = ("grid_side", "grid_layer", "grid_column", "wirez", "radius", "wirez_missing")
    types = (np.int8, np.int8, np.int16, np.float32, np.float32, np.int8)
    hits = {key: np.concatenate([np.asarray(e[i], dtype=kind) for e in events]) if counts else np.zeros(0, kind)
            for i, (key, kind) in enumerate(zip(keys, types))}
    return EventBatch(offsets_from_counts(counts), hits, np.zeros(len(events) + 1, np.int64), {})


def test_each_hit_is_drawn_at_its_side_z_bin_and_column_with_its_layer_channels():
    first = ([1, 0, 1], [2, 8, 3], [40, 112, 7], [-1450.0, 1499.0, 20.0], [11.0, 22.0, 0.0], [0, 0, 1])
    second = ([0], [0], [0], [-1234.0], [5.5], [0])
    images = wall_view.wall_view(batch_of([first, second]))
    assert images.shape == (2, 2, 30, 113, 27) == (2,) + wall_view.SHAPE and images.dtype == np.float32
    # event 0, hit 0: side 1, z bin 0 (-1500..-1400, centre -1450: offset 0), column 40, layer 2
    np.testing.assert_allclose(images[0, 1, 0, 40, 6:9], [1.0, 0.0, 11.0 / 22.0])
    # hit 1: side 0, z bin 29 (centre 1450: offset +0.49), column 112, layer 8
    np.testing.assert_allclose(images[0, 0, 29, 112, 24:27], [1.0, 0.49, 1.0], atol=1e-6)
    # hit 2 has no z: drawn nowhere; so each event holds exactly its hits with z
    assert images[0, ..., 0::3].sum() == 2 and images[1, ..., 0::3].sum() == 1
    np.testing.assert_allclose(images[1, 0, 2, 0, 0:3], [1.0, (-1234.0 + 1500) / 100 - 2 - 0.5, 0.25], atol=1e-6)
    other_channels = np.ones(27, bool)
    other_channels[0:3] = False
    assert not images[1, 0, 2, 0, other_channels].any()


def test_images_of_a_slice_and_of_empty_events():
    events = [([1, 1], [0, 1], [5, 6], [0.0, 50.0], [1.0, 2.0], [0, 0]), ([], [], [], [], [], []),
              ([0], [4], [60], [700.0], [3.0], [0])]
    batch = batch_of(events)
    whole = wall_view.wall_view(batch)
    assert not whole[1].any()
    hits = wall_view.wall_hits(batch)
    np.testing.assert_array_equal(wall_view.wall_images(hits, batch.hit_offsets[1:]), whole[1:])  # offsets from 2


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from my_generator.my_generator import generate

    folder = tmp_path_factory.mktemp("tiny_wall")
    for n_tracks in (1, 2, 3):
        write_events(folder / f"t{n_tracks}.root", generate(30, n_tracks, np.random.default_rng(10 + n_tracks),
                                                             noise_hits=1.0, missing_z_fraction=0.1))
    return folder


def test_the_multi_label_loader_gives_wall_views_and_softmax_targets(tiny_data):
    import tensorflow as tf

    from datasets import associated_calohit_multilabel as loader

    splits = loader.load(tiny_data, view="wall", target="softmax", max_tracks=3, count_target=True, batch_size=8,
                         seed=1)
    inputs, targets = next(iter(splits.train))
    assert inputs.shape[1:] == wall_view.SHAPE and inputs.dtype == tf.float32
    np.testing.assert_allclose(targets["cells"].numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert splits.info["shapes"] == {"wall": wall_view.SHAPE}
    batch = read_events(tiny_data)
    np.testing.assert_array_equal(loader.model_inputs(batch[:5], "wall"), wall_view.wall_view(batch[:5]))


def test_wall_model_outputs_a_distribution_over_660_cells_and_loads_safely(tmp_path):
    import keras

    from architectures import calorimeter

    model = calorimeter.build_wall(filters=8, squeeze=4, max_tracks=4)
    assert [tensor.name.split(":")[0] for tensor in model.inputs] == ["wall"]
    x = np.random.default_rng(0).random((3,) + wall_view.SHAPE).astype(np.float32)
    out = model(x)
    assert out["cells"].shape == (3, 660) and out["count"].shape == (3, 4)
    np.testing.assert_allclose(np.asarray(out["cells"]).sum(axis=1), 1.0, rtol=1e-5)
    assert calorimeter.input_channels(model) == {"radius_channel": True, "z_channel": False, "line_input": False}
    model.save(tmp_path / "wall.keras")
    again = keras.saving.load_model(tmp_path / "wall.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x)["cells"]), np.asarray(out["cells"]), rtol=1e-5)
    # a cell's logit reads the maps where the hits lie: an event on side 1 only moves side 1's scores most
    sigmoid = calorimeter.build_wall(filters=8, squeeze=4, output="sigmoid")
    empty = np.zeros((1,) + wall_view.SHAPE, np.float32)
    one_side = empty.copy()
    one_side[0, 1, 10:14, 50:56, 0::3] = 1.0
    change = np.abs(np.asarray(sigmoid(one_side)) - np.asarray(sigmoid(empty)))[0]
    assert change[330:].sum() > change[:330].sum()


def test_multi_mode_on_the_wall_view_trains_and_reconstructs(tiny_data, tmp_path, capsys):
    import associated_calorimeter as script
    import reconstruction

    out = tmp_path / "wall"
    assert script.main(["--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                        "--steps-per-epoch", "2", "--max-tracks", "3", "--quiet", "--mode", "multi", "--views",
                        "wall", "--loss", "softmax", "--k", "predicted", "--filters", "8", "8", "--squeeze", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "multi" and metrics["views"] == ["wall"] and metrics["k_predicted"]["n_events"] > 0
    calo = reconstruction.load_calorimeter(out / "model.keras", "multi", flag="--calo-multi")
    assert calo.views == ("wall",)
    batch = read_events(tiny_data)
    n_tracks = batch.n_tracks.astype(np.int64)
    cells = reconstruction.multilabel_cells(calo, batch, n_tracks, batch_size=16)
    assert np.array_equal(cells.per_event, n_tracks) and len(cells.column) == n_tracks.sum()
    assert np.all((cells.column >= 0) & (cells.column < 22) & (cells.row >= 0) & (cells.row < 15))
    assert np.all(cells.cluster == -1)
    with pytest.raises(ValueError, match="--calo-single"):
        reconstruction.load_calorimeter(out / "model.keras", "single", flag="--calo-single")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--mode", "single", "--views", "wall"])
    assert exit_info.value.code == 2 and "--views wall" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_hand_event_has_its_hits_in_the_loader_view(tmp_path):
    events = [{"grid_side": [0, 1], "grid_layer": [8, 0], "grid_column": [3, 100], "wirez": [-10.0, 1200.0],
               "radius": [4.0, 18.0], "track_split": [1, 2], "calo_side": [0, 1], "calo_column": [1, 18],
               "calo_row": [7, 13]}]
    write_events(tmp_path / "hand.root", from_lists(events))
    batch = read_events(tmp_path / "hand.root")
    image = wall_view.wall_view(batch)[0]
    assert image[0, geo.z_bin(-10.0), 3, 24] == 1.0 and image[1, geo.z_bin(1200.0), 100, 0] == 1.0
    assert image[..., 0::3].sum() == 2


def test_prior_images_mark_each_events_candidate_cells_once():
    from datasets.associated_calohit_multilabel import N_TARGETS, prior_images

    cells = np.r_[np.full(10, 1), [-1, 5, 5, 659, 17, -1]].astype(np.int16)  # events: hits [10, 13), [13, 13), [13, 16)
    images = prior_images(cells, np.array([10, 13, 13, 16]))  # offsets into the arrays, not from 0
    assert images.shape == (3, N_TARGETS) and images.dtype == np.float32
    assert images[0, 5] == 1.0 and images[0].sum() == 1.0  # a cell of two hits is marked once
    assert not images[1].any()
    assert images[2, 659] == 1.0 and images[2, 17] == 1.0 and images[2].sum() == 2.0


def test_line_prior_cells_are_the_cells_of_the_lines_of_the_clusters():
    """Truth clusters of clean events: the candidate of each hit is its track's line cell, the true
    cell for nearly every track (the line alone gets 99.8 % of clean cells); noise gets none. The
    Hough finder's own clusters (the default) give one candidate per track on most events."""
    import clustering
    from calorimeter_prior import line_prior_cells
    from datasets.associated_calohit_multilabel import cell_counts, prior_images
    from datasets.clustering import canonical_hit_track_ids
    from my_generator.my_generator import generate

    batch = generate(60, 2, np.random.default_rng(4), noise_hits=1.0)
    truth = canonical_hit_track_ids(batch)
    cells = line_prior_cells(batch, truth)
    assert cells.dtype == np.int16 and cells.shape == truth.shape
    assert np.all(cells[truth < 0] == -1) and np.all(cells[truth >= 0] >= 0)
    event = batch.hit_event_index()
    same = (event[:, None] == event[None, :]) & (truth[:, None] == truth[None, :]) & (truth[:, None] >= 0)
    assert np.all((cells[:, None] == cells[None, :]) | ~same)  # one cell per cluster
    truth_cells = cell_counts(batch) > 0
    found = prior_images(cells, batch.hit_offsets) > 0
    assert (found & truth_cells).sum() / truth_cells.sum() > 0.95
    hough = prior_images(line_prior_cells(batch), batch.hit_offsets)
    assert np.mean(hough.sum(axis=1) == 2) > 0.9
    assert np.all(line_prior_cells(batch, np.full(len(truth), -1)) == -1)
    assert clustering  # imported for canonical labels inside line_prior_cells
    # the isolated hits are noise, and the candidates are those of the events reconstruct.py filtered first
    import reconstruction

    isolated = reconstruction.isolated_hits(batch)
    assert isolated.any()
    hough_cells = line_prior_cells(batch)
    assert np.all(hough_cells[isolated] == -1)
    np.testing.assert_array_equal(hough_cells[~isolated], line_prior_cells(reconstruction.keep_hits(batch, ~isolated)))


def test_wall_model_with_the_prior_ranks_candidate_cells_first_and_trains_from_a_model_without(tiny_data, tmp_path):
    import keras

    import associated_calorimeter as script
    import reconstruction
    from architectures import calorimeter
    from datasets.associated_calohit_multilabel import N_TARGETS

    model = calorimeter.build_wall(filters=8, squeeze=4, max_tracks=3, prior=True)
    assert calorimeter.reads_prior(model) and calorimeter.input_views(model) == ("wall",)
    assert not calorimeter.reads_prior(calorimeter.build_wall(filters=8, squeeze=4))
    model.get_layer("prior_weight").set_weights([np.full((1, 1), 50.0, np.float32)])
    rng = np.random.default_rng(2)
    x = {"wall": rng.random((4,) + wall_view.SHAPE).astype(np.float32), "wall_prior": np.zeros((4, N_TARGETS), np.float32)}
    chosen = [[3], [100, 500], [7, 8, 659], []]
    for row, cells in enumerate(chosen):
        x["wall_prior"][row, cells] = 1.0
    scores = np.asarray(model(x)["cells"])
    for row, cells in enumerate(chosen[:3]):
        assert set(np.argsort(-scores[row])[:len(cells)]) == set(cells)
    model.save(tmp_path / "prior.keras")
    again = keras.saving.load_model(tmp_path / "prior.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x)["cells"]), scores, rtol=1e-5)
    # a run with --line-prior, its wall layers started from a wall model trained without it
    base, out = tmp_path / "base", tmp_path / "prior_run"
    common = ["--data", str(tiny_data), "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2",
              "--max-tracks", "3", "--quiet", "--mode", "multi", "--views", "wall", "--loss", "softmax", "--k",
              "predicted", "--filters", "8", "8", "--squeeze", "4"]
    assert script.main(common + ["--out", str(base)]) == 0
    assert script.main(common + ["--out", str(out), "--line-prior", "--init-model", str(base / "model.keras")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k_true"]["n_events"] > 0 and 0.0 <= metrics["k_true"]["exact_set_match"] <= 1.0
    calo = reconstruction.load_calorimeter(out / "model.keras", "multi", flag="--calo-multi")
    assert calo.prior and calo.views == ("wall",)
    batch = read_events(tiny_data)
    n_tracks = batch.n_tracks.astype(np.int64)
    cells = reconstruction.multilabel_cells(calo, batch, n_tracks, batch_size=16)
    assert np.array_equal(cells.per_event, n_tracks) and np.all(cells.cluster == -1)
    with pytest.raises(SystemExit) as exit_info:
        script.main(common[:-6] + ["--out", str(tmp_path / "bad"), "--line-prior"])  # not the wall view
    assert exit_info.value.code == 2 and not (tmp_path / "bad").exists()
