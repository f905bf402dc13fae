"""tf.data loaders: labels against truth, splits, shards, streaming, bad files, legacy ROOT files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datasets import common, number_of_tracks, number_of_tracks3D, views
from snemo import geometry as geo
from snemo.events import EventFileError, read_events, write_events
from test_views import random_events

N_FILES, EVENTS_PER_FILE = 4, 150


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    rng = np.random.default_rng(3)
    for i in range(N_FILES):
        write_events(folder / f"ev_{i}.root", random_events(EVENTS_PER_FILE, rng))
    return folder


def collect(dataset):
    """All batches of a dataset as NumPy: (inputs, labels), inputs a dict when the dataset has several."""
    inputs, labels = [], []
    for x, y in dataset:
        inputs.append({k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy())
        labels.append(y.numpy())
    if inputs and isinstance(inputs[0], dict):
        return {k: np.concatenate([b[k] for b in inputs]) for k in inputs[0]}, np.concatenate(labels)
    return np.concatenate(inputs), np.concatenate(labels)


def event_keys(batch):
    """(file name, entry) of every event of a batch, as a set of strings."""
    return {f"{os.path.basename(batch.files[f])}:{e}" for f, e in zip(batch.file_index, batch.entry)}


def test_number_of_tracks_labels_and_views(data_dir):
    splits = number_of_tracks.load(data_dir, view="top", batch_size=32, shuffle=False)
    assert splits.n_train + splits.n_validation + splits.n_test == N_FILES * EVENTS_PER_FILE
    x, y = collect(splits.test)
    assert x.shape == (splits.n_test, 18, 113, 1) and y.shape == (splits.n_test, 4)
    np.testing.assert_array_equal(y.sum(axis=1), 1)
    np.testing.assert_array_equal(y.argmax(axis=1) + 1, splits.test_events.n_tracks)
    np.testing.assert_array_equal(x, views.make_view(splits.test_events, "top"))
    assert splits.info["class_names"][0] == "1 track" and splits.info["shapes"] == {"top": (18, 113, 1)}


def test_several_views_give_a_dict(data_dir):
    splits = number_of_tracks.load(data_dir, view=("top", "side", "front"), radius_channel=True, batch_size=50,
                                   max_events=200)
    x, y = collect(splits.test)
    assert {k: v.shape[1:] for k, v in x.items()} == {"top": (18, 113, 2), "side": (30, 113, 2),
                                                      "front": (30, 18, 2)}
    for name in ("top", "side", "front"):
        np.testing.assert_array_equal(x[name], views.make_view(splits.test_events, name, True))
    assert splits.n_train + splits.n_validation + splits.n_test == 200


def test_voxel_loader(data_dir):
    splits = number_of_tracks3D.load(data_dir, batch_size=16, max_events=64)
    x, y = collect(splits.test)
    assert x.shape[1:] == (18, 113, 30, 1) and y.shape[1:] == (4,)
    np.testing.assert_array_equal(x, views.make_view(splits.test_events, "voxel"))


# ------------------------------------------------------------------------------------------------
# Clustering and calorimeter labels against a slow per-event reading of the truth
# ------------------------------------------------------------------------------------------------
def reference_canonical_first(batch, event):
    """Per-hit list of the event's first track in the canonical order, one track at a time."""
    start = int(batch.hit_offsets[event])
    splits = batch.track_split[batch.track_offsets[event]:batch.track_offsets[event + 1]]
    keys = []
    begin = 0
    for k, end in enumerate(splits):
        hits = range(start + begin, start + int(end))
        begin = int(end)
        if not len(hits):
            keys.append(((999, 9, 1e9), k, []))
            continue
        nearest = min(hits, key=lambda h: (batch.grid_layer[h], batch.grid_side[h], batch.grid_column[h]))
        mean_column = np.mean([batch.grid_column[h] for h in hits])
        keys.append(((int(batch.grid_column[nearest]), int(batch.grid_side[nearest]), mean_column), k, list(hits)))
    return sorted(keys, key=lambda item: (item[0], item[1]))[0][2]


def test_clustering_first_track_and_hit_ids(data_dir, capsys):
    from datasets import clustering

    with pytest.raises(ValueError, match="no hit on any track.*skip_out_of_range"):
        clustering.load(data_dir)  # random events have some tracks of 0 hits only
    splits = clustering.load(data_dir, batch_size=40, shuffle=False, skip_out_of_range=True)
    assert "clustering: skipped" in capsys.readouterr().out
    x, y = collect(splits.test)
    events = splits.test_events
    assert x.shape == y.shape == (len(events), 18, 113, 1)
    np.testing.assert_array_equal(x, views.make_view(events, "top"))
    ids = clustering.canonical_hit_track_ids(events)
    pixels = clustering.top_pixel_index(events)
    hit_event = events.hit_event_index()
    for i in range(len(events)):
        first = reference_canonical_first(events, i)
        expected = np.zeros((18, 113, 1), np.float32)
        for h in first:
            expected[pixels[h] // 113, pixels[h] % 113, 0] = 1.0
        np.testing.assert_array_equal(y[i], expected)
        assert set(np.flatnonzero((ids == 0) & (hit_event == i))) == set(first)
    # every track of an event gets a distinct rank 0..k-1, noise -1
    truth = events.hit_track_index()
    assert np.all((ids == -1) == (truth == -1))


def test_calorimeter_single_label(data_dir):
    from datasets import associated_calohit_singlelabel as single

    splits = single.load(data_dir, batch_size=64, shuffle=False)
    events = read_events(data_dir)
    assert splits.n_train + splits.n_validation + splits.n_test == int(common.n_tracks_with_hits(events).sum())
    x, y = collect(splits.test)
    tracks = splits.test_events
    assert np.all(tracks.n_tracks == 1) and np.all(tracks.n_hits > 0)
    np.testing.assert_array_equal(y.sum(axis=1), 1)
    np.testing.assert_array_equal(y.argmax(axis=1), tracks.calo_row.astype(int) * 22 + tracks.calo_column)
    np.testing.assert_array_equal(x, views.make_view(tracks, "top"))
    # each example's hits are exactly one truth track of its parent event, without noise
    source = {(os.path.basename(events.files[f]), int(e)): i for i, (f, e) in
              enumerate(zip(events.file_index, events.entry))}
    for k in range(0, len(tracks), 7):
        parent = source[(os.path.basename(tracks.files[tracks.file_index[k]]), int(tracks.entry[k]))]
        truth = events.hit_track_index()[events.hit_offsets[parent]:events.hit_offsets[parent + 1]]
        cells = set(zip(events.grid_layer[events.hit_offsets[parent]:events.hit_offsets[parent + 1]],
                        events.grid_column[events.hit_offsets[parent]:events.hit_offsets[parent + 1]],
                        truth))
        mine = {(l, c) for l, c in zip(tracks.grid_layer[tracks.hit_offsets[k]:tracks.hit_offsets[k + 1]],
                                       tracks.grid_column[tracks.hit_offsets[k]:tracks.hit_offsets[k + 1]])}
        assert any(mine == {(l, c) for l, c, t in cells if t == track} for track in set(truth) - {-1})
    assert len(splits.info["class_names"]) == 330


@pytest.mark.parametrize("target", ["sigmoid", "softmax"])
def test_calorimeter_multi_label(data_dir, target):
    from datasets import associated_calohit_multilabel as multi

    splits = multi.load(data_dir, target=target, batch_size=50, with_n_tracks=True)
    inputs, targets, n_tracks = [], [], []
    for x, y, k in splits.test:
        inputs.append(x.numpy()), targets.append(y.numpy()), n_tracks.append(k.numpy())
    y, k = np.concatenate(targets), np.concatenate(n_tracks)
    events = splits.test_events
    np.testing.assert_array_equal(k, events.n_tracks)
    np.testing.assert_array_equal(splits.info["n_tracks_test"], events.n_tracks)
    for i in range(len(events)):
        sl = slice(events.track_offsets[i], events.track_offsets[i + 1])
        cells = events.calo_side[sl].astype(int) * 330 + events.calo_row[sl].astype(int) * 22 + events.calo_column[sl]
        expected = np.zeros(660, np.float32)
        for cell in cells:
            expected[cell] += 1.0
        expected = np.minimum(expected, 1.0) if target == "sigmoid" else expected / len(cells)
        np.testing.assert_allclose(y[i], expected, rtol=1e-6)
    if target == "softmax":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert np.all(y.sum(axis=1) <= k)
