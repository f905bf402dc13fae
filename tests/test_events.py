"""snemo.events: the batch type, reading and writing, and the errors for bad input."""

import os

import awkward as ak
import numpy as np
import pytest
import uproot

from snemo import geometry as geo
from snemo.events import (EventBatch, EventFileError, find_files, from_lists, iterate_events, read_events,
                          write_events)

EVENTS = [
    dict(grid_side=[0, 0, 1], grid_layer=[0, 1, 2], grid_column=[5, 6, 7], wirez=[1.5, 2.5, -3.0],
         radius=[1.0, 2.0, 3.0], track_split=[2], calo_side=[0], calo_column=[3], calo_row=[4]),
    dict(grid_side=[1] * 5, grid_layer=[0, 1, 2, 3, 4], grid_column=[5, 6, 7, 8, 9], wirez=[0.0] * 5,
         radius=[10.0] * 5, track_split=[1, 3], calo_column=[21, 0], calo_row=[14, 0]),
    dict(grid_layer=[], grid_column=[], track_split=[]),
]


def write_raw(path, hit=None, track=None):
    """Write a hit_tree from dicts of jagged lists, one branch (with its own counter) each, bypassing
    our writer and its checks (to make bad or legacy-shaped files)."""
    data = {k: ak.Array(v) for k, v in {**(hit or {}), **(track or {})}.items()}
    with uproot.recreate(path) as file:
        tree = file.mktree("hit_tree", {k: v.type.content for k, v in data.items()})
        tree.extend(data)
    return str(path)


GOOD_HITS = dict(grid_side=[[1, 1], [0]], grid_layer=[[0, 1], [2]], grid_column=[[3, 4], [5]],
                 wirez=[[0.0, 1.0], [2.0]], radius=[[1.0, 2.0], [3.0]])


def test_offsets_counts_and_truth_per_hit():
    batch = from_lists(EVENTS)
    assert len(batch) == 3
    assert batch.n_hits.tolist() == [3, 5, 0]
    assert batch.n_tracks.tolist() == [1, 2, 0]
    # event 0: hits 0,1 track 0, hit 2 noise; event 1: hit 0 track 0, hits 1,2 track 1, hits 3,4 noise
    assert batch.hit_track_index().tolist() == [0, 0, -1, 0, 1, 1, -1, -1]
    assert batch.hit_event_index().tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_take_and_concatenate_keep_events_whole():
    batch = from_lists(EVENTS)
    picked = batch.take([1, 0])
    assert picked.n_hits.tolist() == [5, 3]
    assert picked.grid_column.tolist() == [5, 6, 7, 8, 9, 5, 6, 7]
    assert picked.track_split.tolist() == [1, 3, 2]
    joined = EventBatch.concatenate([batch[:1], batch[1:]])
    for name in batch.hits:
        np.testing.assert_array_equal(joined.hits[name], batch.hits[name])
    for name in batch.tracks:
        np.testing.assert_array_equal(joined.tracks[name], batch.tracks[name])
    assert batch[np.array([False, True, False])].n_tracks.tolist() == [2]


def test_write_read_round_trip_is_exact(tmp_path):
    batch = from_lists(EVENTS)
    path = write_events(tmp_path / "a.root", batch)
    back = read_events(path)
    assert back.hits.keys() == batch.hits.keys()
    for name, values in batch.hits.items():
        assert back.hits[name].dtype == values.dtype
        np.testing.assert_array_equal(back.hits[name], values)
    for name, values in batch.tracks.items():
        np.testing.assert_array_equal(back.tracks[name], values)
    assert back.entry.tolist() == [0, 1, 2]
    assert back.files == (path,)
    assert not os.path.exists(path + ".tmp")


def test_reading_a_subset_of_fields_and_in_chunks(tmp_path):
    batch = from_lists(EVENTS * 5)
    write_events(tmp_path / "a.root", batch)
    write_events(tmp_path / "sub" / "b.root", batch)
    chunks = list(iterate_events(tmp_path, step_size=4, fields=["grid_side"]))
    assert [len(c) for c in chunks] == [4, 4, 4, 3] * 2
    assert set(chunks[0].hits) == {"grid_side", "grid_layer", "grid_column"}
    assert set(chunks[0].tracks) == {"track_split"}
    everything = read_events(str(tmp_path / "**" / "*.root"))
    assert len(everything) == 30
    assert everything.entry.tolist() == list(range(15)) * 2
    assert len(everything.files) == 2 and everything.file_index.tolist() == [0] * 15 + [1] * 15
    assert len(read_events(tmp_path, max_events=7)) == 7


def test_find_files_accepts_directory_glob_and_list(tmp_path):
    for name in ("1/x_t1_0.root", "2/x_t2_0.root", "2/x_t2_1.root"):
        write_events(tmp_path / name, from_lists(EVENTS))
    everything = find_files(tmp_path)
    assert [os.path.relpath(p, tmp_path) for p in everything] == ["1/x_t1_0.root", "2/x_t2_0.root", "2/x_t2_1.root"]
    assert find_files(str(tmp_path / "2" / "*.root")) == everything[1:]
    assert find_files([tmp_path / "1", str(tmp_path / "2" / "x_t2_1.root")]) == [everything[0], everything[2]]


def test_writer_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "a.root"
    write_events(path, from_lists(EVENTS))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_events(path, from_lists(EVENTS[:1]))
    assert path.read_bytes() == before
    write_events(path, from_lists(EVENTS[:1]), overwrite=True)
    assert len(read_events(path)) == 1
    bad = from_lists([dict(grid_layer=[0], grid_column=[200], track_split=[1])])
    with pytest.raises(EventFileError, match="grid_column"):
        write_events(tmp_path / "bad.root", bad)
    assert sorted(os.listdir(tmp_path)) == ["a.root"]


def test_missing_and_non_root_files(tmp_path):
    with pytest.raises(EventFileError, match="no such file") as err:
        read_events(tmp_path / "nope.root")
    assert "nope.root" in str(err.value)
    junk = tmp_path / "junk.root"
    junk.write_text("this is not a ROOT file\n" * 10)
    with pytest.raises(EventFileError, match="not a readable ROOT file") as err:
        read_events(junk)
    assert err.value.file == str(junk)
    with pytest.raises(EventFileError, match="matches no file"):
        read_events(str(tmp_path / "*.nothing"))


def test_missing_tree_and_missing_branch_name_the_nearest_keys(tmp_path):
    path = tmp_path / "other.root"
    with uproot.recreate(path) as file:
        file.mktree("events", {"x": np.int32}).extend({"x": np.arange(3, dtype=np.int32)})
    with pytest.raises(EventFileError, match=r"tree 'hit_tree' not found; available: \['events'\]"):
        read_events(path)
    hits = {k: v for k, v in GOOD_HITS.items() if k != "grid_column"}
    hits["grid_col"] = GOOD_HITS["grid_column"]
    path = write_raw(tmp_path / "nobranch.root", hits, {"track_split": [[2], [1]]})
    with pytest.raises(EventFileError) as err:
        read_events(path)
    assert err.value.branch == "grid_column" and "grid_col" in str(err.value) and path in str(err.value)


@pytest.mark.parametrize("split, entry, message", [
    ([[2], [5]], 1, "beyond"),
    ([[2, 1], [1]], 0, "not increasing"),
    ([[-1], [1]], 0, "negative"),
])
def test_bad_track_split_names_file_entry_and_branch(tmp_path, split, entry, message):
    path = write_raw(tmp_path / "bad.root", GOOD_HITS, {"track_split": split})
    with pytest.raises(EventFileError, match=message) as err:
        read_events(path)
    assert (err.value.file, err.value.entry, err.value.branch) == (path, entry, "track_split")


@pytest.mark.parametrize("branch, values, entry", [
    ("grid_layer", [[0, 1], [9]], 1),
    ("grid_column", [[-1, 4], [5]], 0),
    ("grid_side", [[1, 1], [2]], 1),
    ("wirez", [[0.0, float("nan")], [1.0]], 0),
    ("radius", [[0.0, 1.0], [float("inf")]], 1),
])
def test_out_of_range_and_nan_hits(tmp_path, branch, values, entry):
    hits = dict(GOOD_HITS, **{branch: values})
    path = write_raw(tmp_path / "bad.root", hits, {"track_split": [[2], [1]]})
    with pytest.raises(EventFileError) as err:
        read_events(path)
    assert (err.value.file, err.value.entry, err.value.branch) == (path, entry, branch)


def test_branch_with_wrong_length_is_an_error(tmp_path):
    path = tmp_path / "bad.root"
    data = {name: ak.Array(v) for name, v in GOOD_HITS.items()}
    data["wirez"] = ak.Array([[0.0], [2.0]])
    data["track_split"] = ak.Array([[2], [1]])
    with uproot.recreate(path) as file:
        tree = file.mktree("hit_tree", {k: v.type for k, v in data.items()})
        tree.extend(data)
    with pytest.raises(EventFileError, match="has 1 values but the event has 2 hits") as err:
        read_events(path)
    assert (err.value.entry, err.value.branch) == (0, "wirez")


def test_files_without_side_branches_read_as_side_1(tmp_path):
    hits = {k: v for k, v in GOOD_HITS.items() if k != "grid_side"}
    path = write_raw(tmp_path / "legacy.root", hits,
                     {"track_split": [[2], [1]], "calo_column": [[3], [4]], "calo_row": [[5], [6]]})
    batch = read_events(path)
    assert batch.grid_side.tolist() == [1, 1, 1]
    assert batch.calo_side.tolist() == [1, 1]
    # empty side vectors, as the original macro wrote them, also mean side 1
    hits = dict(GOOD_HITS, grid_side=[[], []])
    path = write_raw(tmp_path / "empty_side.root", hits, {"track_split": [[2], [1]], "calo_side": [[], []],
                                                          "calo_column": [[3], [4]], "calo_row": [[5], [6]]})
    batch = read_events(path)
    assert batch.grid_side.tolist() == [1, 1, 1] and batch.calo_side.tolist() == [1, 1]


def test_sn_iegenerator_calorimeter_modules_map_onto_the_grid(tmp_path):
    # main wall column 4 row 7; X-wall wall 1 row 15 (top); gamma veto wall 0 (bottom) column 0
    track = {"track_split": [[1, 2], [1]], "calo_type": [[0, 1], [2]], "calo_side": [[0, 1], [1]],
             "calo_wall": [[-1, 1], [0]], "calo_column": [[4, 1], [0]], "calo_row": [[7, 15], [1]]}
    hits = dict(GOOD_HITS)
    path = write_raw(tmp_path / "toyhaystack.root", hits, track)
    batch = read_events(path)
    assert batch.calo_column.tolist() == [5, 21, 1]
    assert batch.calo_row.tolist() == [8, 13, 0]
    assert batch.calo_om.tolist() == [13 * 4 + 7, 520 + 64 + 32 + 16 + 15, 648 + 32]
    assert batch.calo_wall.tolist() == [-1, 1, 0]


def test_geometry_numbering_is_consistent():
    assert geo.N_CELLS == 2034 and geo.N_OM == 712
    side, layer, column = np.meshgrid(np.arange(2), np.arange(9), np.arange(113), indexing="ij")
    ids = geo.cell_id(side, layer, column).ravel()
    assert np.array_equal(np.sort(ids), np.arange(geo.N_CELLS))
    s, l, c = geo.cell_from_id(ids)
    assert np.array_equal(s, side.ravel()) and np.array_equal(l, layer.ravel()) and np.array_equal(c, column.ravel())
    rows = geo.top_row(side, layer)
    assert rows[0, 0, 0] == 8 and rows[0, 8, 0] == 0 and rows[1, 0, 0] == 9 and rows[1, 8, 0] == 17
    # wire positions: the layer/column band containing a wire is that wire's cell
    x = geo.wire_x(side, layer)
    assert geo.wire_x(0, 0) == -53.0 and geo.wire_x(1, 8) == 53.0 + 8 * 44.0 and geo.wire_y(112) == -2464.0 + 112 * 44
    found_side, found_layer = geo.layer_of_x(x)
    assert np.array_equal(found_side, side) and np.array_equal(found_layer, layer)
    assert np.array_equal(geo.column_of_y(geo.wire_y(column)), column)
    assert geo.z_bin(-1500.0) == 0 and geo.z_bin(1500.0) == 29 and geo.z_bin(-1400.0) == 1


def test_every_optical_module_has_a_unique_number_and_a_grid_cell():
    oms, cells, types = [], [], []
    for side in range(2):
        for column in range(20):
            for row in range(13):
                oms.append(geo.om_number(0, side, -1, column, row))
                types.append(0)
                cells.append(geo.calo_grid_cell(0, -1, column, row))
        for wall in range(2):
            for column in range(2):
                for row in range(16):
                    oms.append(geo.om_number(1, side, wall, column, row))
                    types.append(1)
                    cells.append(geo.calo_grid_cell(1, wall, column, row))
            for column in range(16):
                oms.append(geo.om_number(2, side, wall, column, 0))
                types.append(2)
                cells.append(geo.calo_grid_cell(2, wall, column, 0))
    assert sorted(int(o) for o in oms) == list(range(712))
    grid_column, grid_row = np.array(cells).T
    assert grid_column.min() == 0 and grid_column.max() == 21 and grid_row.min() == 0 and grid_row.max() == 14
    # X-walls only in grid columns 0 and 21, gamma vetoes only in rows 0 and 14
    types = np.array(types)
    assert set(grid_column[types == 1].tolist()) == {0, 21}
    assert set(grid_row[types == 2].tolist()) == {0, 14}
    assert set(grid_column[types == 0].tolist()) == set(range(1, 21))
    assert geo.calo_grid_index(21, 14) == geo.CALO_GRID_CELLS - 1
