"""tf.data loaders: labels against truth, splits, shards, streaming, bad files, legacy ROOT files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from datasets import common, number_of_tracks, number_of_tracks3D, streaming, views
from datasets.tracks import n_tracks_with_hits
from snemo import geometry as geo
from snemo.events import EventBatch, EventFileError, offsets_from_counts, read_events, write_events
from test_views import random_events

N_FILES, EVENTS_PER_FILE = 4, 150


def tagged(batch, first_id: int):
    """Append two noise hits per event in columns 100..112 (random_events never uses them) that
    encode a unique id, so every event's top view is distinct and identifies it."""
    n = len(batch)
    ids = first_id + np.arange(n)
    counts = batch.n_hits + 2
    offsets = offsets_from_counts(counts)
    old = np.arange(int(batch.hit_offsets[-1])) + 2 * batch.hit_event_index()  # new position of every old hit
    hits = {}
    for name, values in batch.hits.items():
        out = np.zeros(int(offsets[-1]), values.dtype)
        out[old] = values
        hits[name] = out
    for k, code in enumerate((ids % 108, ids // 108 % 126)):
        where = offsets[1:] - 2 + k
        hits["grid_side"][where] = code % 2
        hits["grid_layer"][where] = code // 2 % 9
        hits["grid_column"][where] = 100 + 6 * k + code // 18
    return EventBatch(offsets, hits, batch.track_offsets, batch.tracks)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    rng = np.random.default_rng(3)
    for i in range(N_FILES):
        write_events(folder / f"ev_{i}.root", tagged(random_events(EVENTS_PER_FILE, rng), i * EVENTS_PER_FILE))
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
    json.dumps(splits.info)  # scripts save it with the run's configuration


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
    # noise hits get -1, track hits their track's rank
    truth = events.hit_track_index()
    assert np.all((ids == -1) == (truth == -1))
    json.dumps(splits.info)


def test_calorimeter_single_label(data_dir):
    from datasets import associated_calohit_singlelabel as single

    splits = single.load(data_dir, batch_size=64, shuffle=False)
    events = read_events(data_dir)
    assert splits.n_train + splits.n_validation + splits.n_test == int(n_tracks_with_hits(events).sum())
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
    json.dumps(splits.info)


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
    for i in range(len(events)):
        sl = slice(events.track_offsets[i], events.track_offsets[i + 1])
        cells = events.calo_side[sl].astype(int) * 330 + events.calo_row[sl].astype(int) * 22 + events.calo_column[sl]
        expected = np.zeros(660, np.float32)
        for cell in cells:
            expected[cell] += 1.0
        expected = np.minimum(expected, 1.0) if target == "sigmoid" else expected / len(cells)
        np.testing.assert_allclose(y[i], expected, rtol=1e-6)
    json.dumps(splits.info)
    if target == "softmax":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert np.all(y.sum(axis=1) <= k)


# ------------------------------------------------------------------------------------------------
# Splits, shards, shuffling, streaming
# ------------------------------------------------------------------------------------------------
def image_keys(images):
    """One bytes key per example image (random events have distinct top views)."""
    return [np.packbits(image > 0).tobytes() for image in images]


@pytest.fixture(scope="module")
def key_to_event(data_dir):
    """Top-view key -> (file name, entry) of every event in the data folder."""
    events = read_events(data_dir)
    keys = image_keys(views.make_view(events, "top"))
    table = dict(zip(keys, event_keys_list(events)))
    assert len(table) == len(events), "random events should have distinct top views"
    return table


def event_keys_list(batch):
    return [f"{os.path.basename(batch.files[f])}:{e}" for f, e in zip(batch.file_index, batch.entry)]


def split_events(splits, key_to_event):
    """(file:entry) lists of train, validation, test, read back from the datasets' images."""
    return [[key_to_event[k] for k in image_keys(collect(ds)[0])]
            for ds in (splits.train, splits.validation, splits.test)]


@pytest.mark.parametrize("split_by", ["event", "file"])
def test_splits_disjoint_complete_deterministic(data_dir, key_to_event, split_by):
    splits = number_of_tracks.load(data_dir, split_by=split_by, batch_size=64, seed=5)
    parts = split_events(splits, key_to_event)
    assert [len(p) for p in parts] == [splits.n_train, splits.n_validation, splits.n_test]
    assert all(len(set(p)) == len(p) for p in parts)
    assert set().union(*map(set, parts)) == set(key_to_event.values())
    assert sum(len(p) for p in parts) == N_FILES * EVENTS_PER_FILE
    if split_by == "file":  # each file lies in one split
        files = [{key.split(":")[0] for key in p} for p in parts]
        assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
        assert [len(f) for f in files] == [2, 1, 1]
    again = split_events(number_of_tracks.load(data_dir, split_by=split_by, batch_size=64, seed=5), key_to_event)
    assert [set(p) for p in again] == [set(p) for p in parts]
    assert again[1:] == parts[1:]  # validation and test keep their order
    other = number_of_tracks.load(data_dir, split_by=split_by, batch_size=64, seed=6)
    assert set(split_events(other, key_to_event)[2]) != set(parts[2])


def test_train_reshuffled_every_epoch(data_dir, key_to_event):
    splits = number_of_tracks.load(data_dir, batch_size=64)
    first, second = (split_events(splits, key_to_event)[0] for _ in range(2))
    assert first != second and sorted(first) == sorted(second)
    fixed = number_of_tracks.load(data_dir, batch_size=64, shuffle=False)
    assert split_events(fixed, key_to_event)[0] == sorted(first, key=lambda k: (k.split(":")[0], int(k.split(":")[1])))


@pytest.mark.parametrize("streaming", [False, True])
def test_two_worker_shards_see_each_event_once(data_dir, key_to_event, streaming):
    full = split_events(number_of_tracks.load(data_dir, batch_size=64, streaming=streaming), key_to_event)
    workers = [split_events(number_of_tracks.load(data_dir, batch_size=64, shard=(i, 2), streaming=streaming),
                            key_to_event) for i in range(2)]
    for k in range(3):
        assert not set(workers[0][k]) & set(workers[1][k])
        assert sorted(workers[0][k] + workers[1][k]) == sorted(full[k])
        assert abs(len(workers[0][k]) - len(workers[1][k])) <= 1
    import tensorflow as tf
    splits = number_of_tracks.load(data_dir, batch_size=64, shard=(1, 2), max_events=40)
    assert splits.train.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


@pytest.mark.parametrize("split_by", ["event", "file"])
def test_streaming_matches_in_memory(data_dir, key_to_event, split_by):
    memory = number_of_tracks.load(data_dir, batch_size=48, split_by=split_by, view=("top", "front"))
    stream = number_of_tracks.load(data_dir, batch_size=48, split_by=split_by, view=("top", "front"), streaming=True,
                                   chunk_size=100, stream_files=3)
    assert (memory.n_train, memory.n_validation, memory.n_test) == (stream.n_train, stream.n_validation, stream.n_test)
    assert stream.test_events is None
    for a, b in zip((memory.train, memory.validation, memory.test), (stream.train, stream.validation, stream.test)):
        (xa, ya), (xb, yb) = collect(a), collect(b)
        order_a, order_b = np.argsort(image_keys(xa["top"])), np.argsort(image_keys(xb["top"]))
        for name in ("top", "front"):
            np.testing.assert_array_equal(xa[name][order_a], xb[name][order_b])
        np.testing.assert_array_equal(ya[order_a], yb[order_b])
    # validation and test are not shuffled: same order in both modes
    np.testing.assert_array_equal(collect(memory.test)[0]["top"], collect(stream.test)[0]["top"])
    # streamed train batches mix files: a batch holds events of more than one file
    first = split_events(number_of_tracks.load(data_dir, batch_size=48, split_by=split_by, streaming=True,
                                               chunk_size=100, stream_files=3), key_to_event)[0][:48]
    assert len({key.split(":")[0] for key in first}) > 1


def test_batching_options(data_dir):
    splits = number_of_tracks.load(data_dir, batch_size=64, drop_remainder=True, cache=True, max_events=300)
    assert splits.train.element_spec[0].shape.as_list() == [64, 18, 113, 1]
    sizes = [int(y.shape[0]) for _, y in splits.train]
    assert sizes == [64] * (splits.n_train // 64)
    assert len(splits.train) == splits.n_train // 64
    assert splits.n_train + splits.n_validation + splits.n_test == 300  # 75 from each of the 4 files
    assert {int(e) for e in splits.test_events.entry} <= set(range(75))
    for bad in (dict(split=(0.5, 0.5)), dict(split=(0.7, 0.2, 0.2)), dict(split_by="random"), dict(shard=(2, 2)),
                dict(batch_size=0), dict(view="voxel")):
        with pytest.raises(ValueError):
            number_of_tracks.load(data_dir, **bad)
    with pytest.raises(ValueError, match="needs at least 3 files"):
        number_of_tracks.load(data_dir / "ev_0.root", split_by="file")


def test_out_of_range_counts(tmp_path, capsys):
    rng = np.random.default_rng(9)
    path = write_events(tmp_path / "five.root", random_events(40, rng, max_tracks=5, min_tracks=3))
    n_five = int(np.sum(read_events(path).n_tracks == 5))
    with pytest.raises(ValueError, match=f"{n_five} of 40 events read from .*five.root have 0 or more than 4 tracks"):
        number_of_tracks.load(path)
    with pytest.raises(ValueError, match="five.root"):
        number_of_tracks.load(path, streaming=True)
    for streaming in (False, True):
        splits = number_of_tracks.load(path, skip_out_of_range=True, streaming=streaming)
        assert splits.n_train + splits.n_validation + splits.n_test == 40 - n_five
        assert f"skipped {n_five} events" in capsys.readouterr().out
    splits = number_of_tracks.load(path, max_tracks=5)
    assert splits.train.element_spec[1].shape.as_list() == [None, 5]


# ------------------------------------------------------------------------------------------------
# Bad files and files of the original ROOT macro
# ------------------------------------------------------------------------------------------------
def write_bad(tmp_path, kind):
    import uproot

    path = tmp_path / f"{kind}.root"
    if kind == "missing":
        return path
    if kind == "not_root":
        path.write_text("this is not a ROOT file\n")
        return path
    import awkward as ak

    events = random_events(10, np.random.default_rng(1))
    counts = events.n_hits
    data = {name: ak.unflatten(events.hits[name], counts) for name in ("grid_side", "grid_layer", "wirez", "radius")}
    if kind == "bad_track_split":
        data["grid_column"] = ak.unflatten(events.grid_column, counts)
        split = [list(events.track_split[events.track_offsets[i]:events.track_offsets[i + 1]]) for i in range(10)]
        split[4] = [int(counts[4]) + 5]
        data["track_split"] = ak.Array([np.asarray(s, np.int32) for s in split])
    else:  # missing grid_column
        data["track_split"] = ak.unflatten(events.track_split, events.n_tracks)
    with uproot.recreate(path) as file:
        file.mktree("hit_tree", {k: v.type.content for k, v in data.items()})
        file["hit_tree"].extend(data)
    return path


@pytest.mark.parametrize("kind", ["missing", "not_root", "missing_branch", "bad_track_split"])
@pytest.mark.parametrize("streaming", [False, True])
def test_bad_files_raise_event_file_error(tmp_path, kind, streaming):
    path = write_bad(tmp_path, kind)
    with pytest.raises(EventFileError) as caught:
        number_of_tracks.load(path, streaming=streaming)
    message = str(caught.value)
    assert f"{kind}.root" in message
    if kind == "missing_branch":
        assert "grid_column" in message
    if kind == "bad_track_split":
        assert "entry 4" in message and "track_split" in message


@pytest.mark.root
def test_files_of_the_original_root_macro_load(tmp_path):
    ROOT = pytest.importorskip("ROOT")
    path = str(tmp_path / "macro.root")
    file = ROOT.TFile(path, "RECREATE")
    tree = ROOT.TTree("hit_tree", "my_generator.cxx layout")
    vectors = {name: ROOT.std.vector[kind]() for name, kind in (
        ("grid_layer", "int"), ("grid_column", "int"), ("grid_side", "int"), ("wirez", "double"),
        ("radius", "double"), ("track_split", "int"), ("calo_column", "int"), ("calo_row", "int"),
        ("calo_side", "int"))}
    for name, vector in vectors.items():
        tree.Branch(name, vector)
    truth = []
    rng = np.random.default_rng(4)
    for _ in range(30):
        for vector in vectors.values():
            vector.clear()
        n_tracks = int(rng.integers(1, 5))
        n_hits = 0
        for _ in range(n_tracks):
            for _ in range(int(rng.integers(1, 6))):
                vectors["grid_layer"].push_back(int(rng.integers(0, 9)))
                vectors["grid_column"].push_back(int(rng.integers(0, 113)))
                vectors["wirez"].push_back(float(rng.uniform(-1400, 1400)))
                vectors["radius"].push_back(float(rng.uniform(0, 22)))
                n_hits += 1
            vectors["track_split"].push_back(n_hits)
            vectors["calo_column"].push_back(int(rng.integers(0, 22)))
            vectors["calo_row"].push_back(int(rng.integers(0, 15)))
        truth.append((n_tracks, list(vectors["grid_layer"]), list(vectors["grid_column"])))
        tree.Fill()
    file.Write()
    file.Close()

    splits = number_of_tracks.load(path, view=("top", "side"), split=(0.5, 0.0, 0.5), batch_size=8, shuffle=False)
    events = splits.test_events
    x, y = collect(splits.test)
    for i in range(len(events)):
        n_tracks, layers, columns = truth[int(events.entry[i])]
        assert y[i].argmax() + 1 == n_tracks
        expected = np.zeros((18, 113), np.float32)
        expected[9 + np.array(layers), columns] = 1.0  # no grid_side: side 1, rows 9..17
        np.testing.assert_array_equal(x["top"][i, ..., 0], expected)
    from datasets import associated_calohit_multilabel as multi
    targets = collect(multi.load(path, split=(0.5, 0.0, 0.5), shuffle=False).test)[1]
    assert np.all(targets[:, :330] == 0) and np.all(targets.sum(axis=1) >= 1)  # calo_side empty: side 1


def test_streaming_memory_bounded_by_chunk_not_files(tmp_path):
    """The streaming reader holds chunks, not files: the same events in 4x bigger files, same peak."""
    import tracemalloc

    rng = np.random.default_rng(12)
    layouts = {
        "8 files of 1000": [write_events(tmp_path / f"small{i}.root", random_events(1000, rng)) for i in range(8)],
        "2 files of 4000": [write_events(tmp_path / f"big{i}.root", random_events(4000, rng)) for i in range(2)]}
    task = number_of_tracks.counting_task("memory", ("top",), 4, False)
    peaks = {}
    for name, paths in layouts.items():
        n = [len(read_events(p, fields=("track_split",))) for p in paths]
        codes = [np.zeros(k, np.int8) for k in n]  # every event in the train split
        tracemalloc.start()
        chunks = streaming._stream_chunks(task, paths, codes, 0, chunk=256, n_open=2, rng=np.random.default_rng(0),
                                       max_per_file=n)
        seen = sum(len(task.convert(batch)[1]) for batch in streaming._rebatch(chunks, 256, False))
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == 8000
    # measured here: about 1.8 MB for 8 files of 1000 events, 1.0 MB for 2 files of 4000
    assert peaks["2 files of 4000"] < peaks["8 files of 1000"] + 2**18, peaks
