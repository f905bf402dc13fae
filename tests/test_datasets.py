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
