"""Event files as real tools write them, and the bad files that must be refused with a named error."""

from __future__ import annotations

import shutil

import awkward as ak
import numpy as np
import pytest
import uproot

from datasets import views
from snemo.events import EventBatch, EventFileError, find_files, from_lists, read_events, write_events


def two_events(**hit_extra):
    """Two small events: 2 tracks + 1 noise hit, then 1 track."""
    first = dict(grid_side=[0, 0, 1, 1, 0], grid_layer=[0, 1, 0, 1, 5], grid_column=[10, 10, 50, 51, 90],
                 wirez=[100.0, 120.0, -300.0, -310.0, 1400.0], radius=[3.0, 4.0, 5.0, 6.0, 7.0], track_split=[2, 4])
    second = dict(grid_side=[1, 1, 1], grid_layer=[0, 1, 2], grid_column=[7, 8, 9], wirez=[0.0, 10.0, 20.0],
                  radius=[1.0, 2.0, 3.0], track_split=[3])
    for key, (a, b) in hit_extra.items():
        first[key], second[key] = a, b
    return from_lists([first, second])


def test_missing_z_round_trip_and_views(tmp_path):
    batch = two_events(wirez_missing=([0, 1, 0, 0, 1], [1, 0, 0]))
    path = write_events(tmp_path / "z.root", batch)
    back = read_events(path)
    assert back.hits["wirez_missing"].dtype == np.int8
    np.testing.assert_array_equal(back.z_missing(), [0, 1, 0, 0, 1, 1, 0, 0])
    top = views.make_view(back, "top")
    assert top.sum() == 8  # every hit in the top view
    for name, per_event in (("side", [3, 2]), ("front", [3, 2]), ("voxel", [3, 2])):
        image = views.make_view(back, name)
        np.testing.assert_array_equal(image.reshape(2, -1).sum(axis=1), per_event, err_msg=name)
    compact = views.compact(back, ("side", "voxel"))
    np.testing.assert_array_equal(views.compact_view(compact, "voxel"), views.make_view(back, "voxel"))
    np.testing.assert_array_equal(views.compact_view(compact, "side"), views.make_view(back, "side"))
    # Without the branch every z is measured.
    clean = read_events(write_events(tmp_path / "clean.root", two_events()))
    assert "wirez_missing" not in clean.hits and not clean.z_missing().any()
    assert views.make_view(clean, "side").sum() == 8
    joined = EventBatch.concatenate([clean, back])
    np.testing.assert_array_equal(joined.z_missing(), np.r_[np.zeros(8, bool), back.z_missing()])


def test_side_view_counts_a_cell_listed_twice_top_view_once():
    batch = from_lists([dict(grid_side=[1, 1], grid_layer=[3, 3], grid_column=[40, 40], wirez=[10.0, 20.0],
                             radius=[1.0, 2.0], track_split=[1, 2])])
    assert views.make_view(batch, "top").sum() == 1
    assert views.make_view(batch, "front").sum() == 1
    assert views.make_view(batch, "side").max() == 2


def test_unfinished_writes_are_never_read(tmp_path):
    folder = tmp_path / "3"
    write_events(folder / "a.root", two_events())
    shutil.copy(folder / "a.root", folder / "b.root.tmp")
    assert find_files(str(folder / "*")) == [str(folder / "a.root")]
    assert find_files(folder) == [str(folder / "a.root")]
    with pytest.raises(EventFileError, match=r"b\.root\.tmp: an unfinished write"):
        read_events(folder / "b.root.tmp")


@pytest.mark.parametrize("name, values, message", [
    ("wirez", (2000.0, "wirez"), r"entry 0, branch 'wirez': value 2000 mm outside the physical range"),
    ("radius", (-1.0, "radius"), r"entry 0, branch 'radius': value -1 mm outside the physical range"),
    ("radius", (40.0, "radius"), r"branch 'radius': value 40 mm outside"),
])
def test_impossible_measurements_are_errors(tmp_path, name, values, message):
    batch = two_events()
    batch.hits[name][1] = values[0]
    path = tmp_path / "bad.root"
    with pytest.raises(EventFileError, match=message):
        write_events(path, batch)
    assert not path.exists()
    # The same values written by another tool are refused on reading.
    with uproot.recreate(path) as file:
        data = {k: ak.unflatten(v, batch.n_hits) for k, v in batch.hits.items()}
        data["track_split"] = ak.unflatten(batch.tracks["track_split"], batch.n_tracks)
        file["hit_tree"] = data
    with pytest.raises(EventFileError, match=message):
        read_events(path)


def test_empty_file_and_truncated_file_are_named(tmp_path):
    empty = tmp_path / "empty.root"
    with uproot.recreate(empty) as file:
        file.mktree("hit_tree", {"grid_layer": "var * int8", "grid_column": "var * int16",
                                 "track_split": "var * int32"})
    with pytest.raises(EventFileError, match=r"empty\.root: tree 'hit_tree' has no entries"):
        read_events(empty)
    good = write_events(tmp_path / "good.root", EventBatch.concatenate([two_events()] * 500))
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(EventFileError) as caught:
        read_events(truncated)
    message = str(caught.value)
    assert "truncated.root" in message
    assert "available: ['hit_tree']" not in message
    assert "truncated or corrupt" in message or "not a readable ROOT file" in message or "cannot read" in message


def test_branch_declared_but_never_filled_reads_as_absent(tmp_path):
    batch = two_events()
    path = tmp_path / "declared.root"
    never = ak.unflatten(np.zeros(0, np.int8), [0, 0])
    with uproot.recreate(path) as file:
        data = {k: ak.unflatten(v, batch.n_hits) for k, v in batch.hits.items() if k != "grid_side"}
        data["track_split"] = ak.unflatten(batch.tracks["track_split"], batch.n_tracks)
        data.update(break_layer=never, wirez_missing=never, grid_side=never)
        file.mktree("hit_tree", {k: v.type.content for k, v in data.items()}).extend(data)
    back = read_events(path)
    assert "break_layer" not in back.tracks and "wirez_missing" not in back.hits
    np.testing.assert_array_equal(back.hits["grid_side"], 1)  # an empty side branch means side 1


@pytest.mark.root
def test_files_of_the_original_sn_iegenerator_load(tmp_path):
    """Every branch of SN-IEgenerator toyhaystackN.py output, as std::vector, with its real quirks."""
    ROOT = pytest.importorskip("ROOT")
    path = str(tmp_path / "toyhaystack_real.root")
    file = ROOT.TFile(path, "RECREATE")
    tree = ROOT.TTree("hit_tree", "SN-IEgenerator layout")
    kinds = {"radius": "double", "wirex": "double", "wirey": "double", "wirez": "double", "grid_id": "int",
             "grid_side": "int", "grid_layer": "int", "grid_column": "int", "dirx": "double", "diry": "double",
             "dirz": "double", "pointx": "double", "pointy": "double", "pointz": "double", "charge": "int",
             "calo_id": "int", "calo_type": "int", "calo_side": "int", "calo_wall": "int", "calo_row": "int",
             "calo_column": "int", "track_split": "int", "breakpointx": "double", "breakpointy": "double",
             "bpangle": "double", "break_layer": "int"}
    vectors = {name: ROOT.std.vector[kind]() for name, kind in kinds.items()}
    for name, vector in vectors.items():
        tree.Branch(name, vector)
    rng = np.random.default_rng(5)
    truth = []
    for event in range(40):
        for vector in vectors.values():
            vector.clear()
        n_tracks = int(rng.integers(1, 5))
        n_hits, side = 0, int(rng.integers(0, 2))
        for track in range(n_tracks):
            # Some tracks have no hits: equal consecutive track_split.
            count = 0 if (event % 7 == 0 and track == 0 and n_tracks > 1) else int(rng.integers(3, 8))
            for _ in range(count):
                layer, column = int(rng.integers(0, 9)), int(rng.integers(0, 113))
                vectors["grid_side"].push_back(side)
                vectors["grid_layer"].push_back(layer)
                vectors["grid_column"].push_back(column)
                vectors["grid_id"].push_back(side * 1017 + layer * 113 + column)
                vectors["wirex"].push_back((53.0 + 44.0 * layer) * (1 if side else -1))
                vectors["wirey"].push_back(-2464.0 + 44.0 * column)
                vectors["wirez"].push_back(float(rng.uniform(-1500, 1500)))
                vectors["radius"].push_back(float(rng.uniform(0, 22)))
                n_hits += 1
            vectors["track_split"].push_back(n_hits)
            calo_type = int(rng.integers(0, 3))
            vectors["calo_type"].push_back(calo_type)
            vectors["calo_side"].push_back(side)
            vectors["calo_wall"].push_back(-1 if calo_type == 0 else int(rng.integers(0, 2)))
            vectors["calo_column"].push_back(int(rng.integers(0, 20)) if calo_type == 0 else
                                             int(rng.integers(0, 2)) if calo_type == 1 else int(rng.integers(0, 16)))
            vectors["calo_row"].push_back(int(rng.integers(0, 13)) if calo_type == 0 else
                                          int(rng.integers(0, 16)) if calo_type == 1 else 0)
            vectors["calo_id"].push_back(int(rng.integers(0, 712)))
            vectors["charge"].push_back(0)
            for name, value in (("dirx", 1.0), ("diry", 0.0), ("dirz", 0.0), ("pointx", 0.0),
                                ("pointy", float(rng.uniform(-2000, 2000))), ("pointz", 0.0)):
                vectors[name].push_back(value)
        truth.append(n_tracks)
        tree.Fill()
    file.Write()
    file.Close()

    batch = read_events(path)  # default fields
    np.testing.assert_array_equal(batch.n_tracks, truth)
    assert "break_layer" not in batch.tracks and "bpangle" not in batch.tracks
    assert batch.tracks["calo_om"].min() >= 0 and batch.tracks["calo_column"].max() <= 21
    from datasets import (associated_calohit_multilabel, associated_calohit_singlelabel, clustering,
                          number_of_tracks, number_of_tracks3D)
    options = dict(split=(0.5, 0.25, 0.25), batch_size=16, shuffle=False)
    loaders = [lambda: number_of_tracks.load(path, view=("top", "side", "front"), **options),
               lambda: number_of_tracks.load(path, view="top", streaming=True, **options),
               lambda: number_of_tracks3D.load(path, **options),
               lambda: clustering.load(path, **options),
               lambda: associated_calohit_singlelabel.load(path, **options),
               lambda: associated_calohit_multilabel.load(path, **options)]
    for load in loaders:
        splits = load()
        assert splits.n_train + splits.n_validation + splits.n_test > 0
        for inputs, labels in splits.train.take(1):
            assert np.all(np.isfinite(labels.numpy()))
