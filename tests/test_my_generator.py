"""Tests of the vectorised twin my_generator/my_generator.py: physics, truth, files, command line."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from my_generator.my_generator import generate, main
from snemo import geometry as geo
from snemo.datagen import file_path
from snemo.events import read_events, write_events

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def batch():
    return generate(2000, 2, np.random.default_rng(11))


def _lines(batch):
    """Per-track line truth as (point (n, 3), direction (n, 3)), mm."""
    point = np.stack([batch.pointx, batch.pointy, batch.pointz], axis=1)
    direction = np.stack([batch.dirx, batch.diry, batch.dirz], axis=1)
    return point, direction


def _hits_per_track(batch, n_tracks):
    """Hits of every track (n_events * n_tracks,) from track_split, for events of n_tracks tracks."""
    return np.diff(batch.track_split.reshape(-1, n_tracks).astype(np.int64), axis=1, prepend=0).ravel()


def _closest_to_wire(point, direction, wire_x, wire_y):
    """Top-view closest point of lines to wires (broadcast): returns (dx, dy, z at that point), mm."""
    dx, dy = direction[..., 0], direction[..., 1]
    t = ((wire_x - point[..., 0]) * dx + (wire_y - point[..., 1]) * dy) / (dx * dx + dy * dy)
    return (point[..., 0] + t * dx - wire_x, point[..., 1] + t * dy - wire_y, point[..., 2] + t * direction[..., 2])


def test_hits_lie_within_half_a_cell_of_the_generating_line(batch):
    track = batch.track_offsets[batch.hit_event_index()] + batch.hit_track_index()
    point, direction = _lines(batch)
    wire_x = geo.wire_x(batch.grid_side, batch.grid_layer)
    wire_y = geo.wire_y(batch.grid_column)
    off_x, off_y, z = _closest_to_wire(point[track], direction[track], wire_x, wire_y)
    tolerance = 1e-6  # mm
    assert np.all(np.abs(off_x) < geo.CELL_HALF + tolerance)
    assert np.all(np.abs(off_y) < geo.CELL_HALF + tolerance)
    assert np.all(np.abs(z) < geo.TRACKER_HALF_Z + tolerance)
    np.testing.assert_allclose(batch.wirez, z, atol=1e-3)
    np.testing.assert_allclose(batch.radius, np.hypot(off_x, off_y), atol=1e-4)
    assert np.all(batch.grid_side == batch.calo_side[track])
    assert np.all(np.sign(batch.dirx[track]) == np.where(batch.grid_side == 0, -1, 1))


def test_every_cell_passing_the_hit_test_is_a_hit(batch):
    small = batch[:150]
    point, direction = _lines(small)
    side = np.arange(geo.N_SIDES)[:, None, None]
    layer = np.arange(geo.N_LAYERS)[None, :, None]
    column = np.arange(geo.N_COLUMNS)[None, None, :]
    wire_x = geo.wire_x(side, layer)[None]  # (1, 2, 9, 1)
    wire_y = geo.wire_y(column)[None]  # (1, 1, 1, 113)
    expand = (slice(None), None, None, None)
    off_x, off_y, z = _closest_to_wire(point[expand], direction[expand], wire_x, wire_y)
    # A line on side s only reaches the cells of side s (dirx points away from the foil).
    beyond_foil = np.sign(wire_x - point[expand][..., 0]) == np.sign(direction[expand][..., 0])
    inside = (np.abs(off_x) < geo.CELL_HALF) & (np.abs(off_y) < geo.CELL_HALF) & (np.abs(z) < geo.TRACKER_HALF_Z)
    inside &= beyond_foil
    track_of_cell, cell = np.nonzero(inside.reshape(len(point), geo.N_CELLS))  # cell_id order
    expected = track_of_cell * geo.N_CELLS + cell
    track = small.track_offsets[small.hit_event_index()] + small.hit_track_index()
    found = np.sort(track * geo.N_CELLS + geo.cell_id(small.grid_side, small.grid_layer, small.grid_column))
    np.testing.assert_array_equal(found, expected)


def test_track_split_tracks_and_hit_order(batch):
    assert np.all(batch.n_tracks == 2)
    split = batch.track_split.reshape(-1, 2).astype(np.int64)
    assert np.all(split[:, 1] == batch.n_hits)  # no noise hits
    assert _hits_per_track(batch, 2).min() >= 5
    track = batch.track_offsets[batch.hit_event_index()] + batch.hit_track_index()
    key = (track * geo.N_LAYERS + batch.grid_layer) * geo.N_COLUMNS + batch.grid_column
    assert np.all(np.diff(key) > 0)  # by track, then layer, then column; no cell twice
    batch.validate()


def test_min_hits_and_sides_options():
    one_side = generate(300, 3, np.random.default_rng(2), sides=1, min_hits=12)
    assert np.all(one_side.grid_side == 1) and np.all(one_side.calo_side == 1)
    assert _hits_per_track(one_side, 3).min() >= 12
    assert len(generate(0, 2, np.random.default_rng(0))) == 0
    for kwargs in ({"n_events": -1}, {"n_tracks": 0}, {"sides": 3}, {"min_hits": 0}, {"min_hits": 2000}):
        args = {"n_events": 5, "n_tracks": 1, "rng": np.random.default_rng(0), **kwargs}
        with pytest.raises(ValueError):
            generate(**args)


def test_calorimeter_cell_is_the_line_at_the_tracker_outer_face(batch):
    point, direction = _lines(batch)
    t = (np.abs(point[:, 0]) - geo.TRACKER_MAX_ABS_X) / -np.abs(direction[:, 0])
    y = point[:, 1] + t * direction[:, 1]
    z = point[:, 2] + t * direction[:, 2]
    width = geo.TRACKER_MAX_Y - geo.TRACKER_MIN_Y
    column = np.where(y < geo.TRACKER_MIN_Y, 0, np.where(y > geo.TRACKER_MAX_Y, 21,
                      1 + np.floor((y - geo.TRACKER_MIN_Y) / width * geo.MAIN_COLUMNS)))
    row = np.where(z < -geo.TRACKER_HALF_Z, 0, np.where(z > geo.TRACKER_HALF_Z, 14,
                   1 + np.floor((z + geo.TRACKER_HALF_Z) / (2 * geo.TRACKER_HALF_Z) * geo.MAIN_ROWS)))
    np.testing.assert_array_equal(batch.calo_column, column)
    np.testing.assert_array_equal(batch.calo_row, row)
    xwall = (column == 0) | (column == 21)
    gveto = (row == 0) | (row == 14)
    assert np.all(batch.calo_type[~xwall & ~gveto] == geo.CALO_TYPE_MAIN)
    assert np.all(batch.calo_wall[~xwall & ~gveto] == -1)
    assert np.all(batch.calo_type[xwall & ~gveto] == geo.CALO_TYPE_XWALL)
    assert np.all(batch.calo_wall[xwall & ~gveto] == (column[xwall & ~gveto] == 21))
    assert np.all(batch.calo_type[gveto & ~xwall] == geo.CALO_TYPE_GVETO)
    assert np.all(batch.calo_wall[gveto & ~xwall] == (row[gveto & ~xwall] == 14))
    # Corner cells: the wall whose boundary the line crosses first.
    corner = xwall & gveto
    assert corner.sum() > 0
    y_edge = np.where(direction[:, 1] > 0, geo.TRACKER_MAX_Y, geo.TRACKER_MIN_Y)
    z_edge = np.where(direction[:, 2] > 0, geo.TRACKER_HALF_Z, -geo.TRACKER_HALF_Z)
    xwall_first = (y_edge - point[:, 1]) / direction[:, 1] < (z_edge - point[:, 2]) / direction[:, 2]
    expected = np.where(xwall_first, geo.CALO_TYPE_XWALL, geo.CALO_TYPE_GVETO)
    np.testing.assert_array_equal(batch.calo_type[corner], expected[corner])
    assert np.all(batch.calo_om == -1)
    np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1.0)


def test_distributions_are_sane(batch):
    per_track = _hits_per_track(batch, 2)
    # Measured on 10^6 tracks: mean 19.9 (near-parallel tracks hit long rows of layer 0 cells).
    assert 17.0 < per_track.mean() < 23.0
    # A track with |slope_top| <= 1 that stays in the chamber up to layer 8 hits 1 or 2 cells per
    # layer (the run of hit columns is 1 + slope^2 columns long): 9 to 18 hits.
    point, direction = _lines(batch)
    slope = np.abs(direction[:, 1] / direction[:, 0])
    t = (geo.TRACKER_MAX_ABS_X - geo.TRACKER_MIN_ABS_X) / np.abs(direction[:, 0])
    y_far, z_far = point[:, 1] + t * direction[:, 1], point[:, 2] + t * direction[:, 2]
    contained = ((slope <= 1) & (np.abs(z_far) < geo.TRACKER_HALF_Z - 1) & (y_far > geo.TRACKER_MIN_Y + 1)
                 & (y_far < geo.TRACKER_MAX_Y - 1))
    assert contained.sum() > 200
    assert per_track[contained].min() >= 9 and per_track[contained].max() <= 18
    # Sides are a fair coin: 4000 tracks, 5 sigma.
    side_fraction = batch.calo_side.mean()
    assert abs(side_fraction - 0.5) < 5 * 0.5 / np.sqrt(batch.calo_side.size)
    assert set(np.unique(batch.grid_layer)) == set(range(geo.N_LAYERS))
    assert np.mean(batch.calo_type == geo.CALO_TYPE_MAIN) > 0.5


def test_same_seed_same_events_and_files_different_seed_different(tmp_path):
    first = generate(300, 3, np.random.default_rng(5))
    second = generate(300, 3, np.random.default_rng(5))
    other = generate(300, 3, np.random.default_rng(6))
    for name in first.hits:
        np.testing.assert_array_equal(first.hits[name], second.hits[name])
    for name in first.tracks:
        np.testing.assert_array_equal(first.tracks[name], second.tracks[name])
    assert not np.array_equal(first.pointy, other.pointy)
    write_events(tmp_path / "a.root", first)
    write_events(tmp_path / "b.root", second)
    read_a, read_b = read_events(tmp_path / "a.root"), read_events(tmp_path / "b.root")
    for group in ("hits", "tracks"):
        for name, values in getattr(read_a, group).items():
            np.testing.assert_array_equal(values, getattr(read_b, group)[name])


def test_write_read_round_trip_is_exact(tmp_path, batch):
    path = write_events(tmp_path / "events.root", batch)
    back = read_events(path)
    np.testing.assert_array_equal(back.hit_offsets, batch.hit_offsets)
    np.testing.assert_array_equal(back.track_offsets, batch.track_offsets)
    assert set(back.hits) == set(batch.hits) and set(back.tracks) == set(batch.tracks)
    for group in ("hits", "tracks"):
        for name, values in getattr(batch, group).items():
            read = getattr(back, group)[name]
            assert read.dtype == values.dtype, name
            np.testing.assert_array_equal(read, values, err_msg=name)


def test_command_line_layout_refusal_and_overwrite(tmp_path, capsys):
    out = tmp_path / "data"
    flags = ["--events", "20", "--files", "2", "--seed", "4", "--out", str(out), "--quiet"]
    assert main(["--tracks", "1", "3", *flags]) == 0
    expected = {file_path(out, "my_generator", n, i) for n in (1, 3) for i in (0, 1)}
    assert set(out.rglob("*.root")) == expected
    assert not list(out.rglob("*.tmp"))
    batch = read_events(file_path(out, "my_generator", 3, 1))
    assert len(batch) == 20 and np.all(batch.n_tracks == 3)
    before = {p: p.read_bytes() for p in expected}

    capsys.readouterr()
    assert main(["--tracks", "1", "2", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert not (out / "2").exists()
    assert {p: p.read_bytes() for p in expected} == before

    reseeded = ["--events", "20", "--files", "2", "--seed", "5", "--out", str(out), "--quiet"]
    assert main(["--tracks", "1", *reseeded, "--overwrite"]) == 0
    assert file_path(out, "my_generator", 1, 0).read_bytes() != before[file_path(out, "my_generator", 1, 0)]


def test_script_entry_points(tmp_path):
    script = [sys.executable, str(REPO / "my_generator" / "my_generator.py")]
    module = [sys.executable, "-m", "my_generator.my_generator"]
    help_run = subprocess.run(script + ["--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert help_run.returncode == 0 and "--sides" in help_run.stdout
    flags = ["--events", "10", "--tracks", "2", "--out", str(tmp_path / "d"), "--quiet"]
    run = subprocess.run(module + flags, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    again = subprocess.run(script + flags, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exist" in again.stderr


def test_macro_constants_match_the_geometry_module():
    source = (REPO / "my_generator" / "my_generator.cxx").read_text()
    constants = dict(re.findall(r"constexpr (?:int|double) (k\w+) = ([-\d.]+);", source))
    expected = {
        "kLayers": geo.N_LAYERS, "kColumns": geo.N_COLUMNS, "kCellPitch": geo.CELL_PITCH,
        "kTrackerHalfZ": geo.TRACKER_HALF_Z, "kTrackerMinAbsX": geo.TRACKER_MIN_ABS_X,
        "kTrackerMinY": geo.TRACKER_MIN_Y, "kMainColumns": geo.MAIN_COLUMNS, "kMainRows": geo.MAIN_ROWS,
    }
    for name, value in expected.items():
        assert float(constants[name]) == value, name
