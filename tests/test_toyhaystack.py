"""Tests of Generator/toyhaystack.py: geometry of the hits, truth, options, files and command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from Generator import toyhaystack
from Generator.toyhaystack import generate
from snemo import geometry as geo
from snemo.events import HIT_FIELDS, TRACK_FIELDS, read_events, write_events

REPO = Path(__file__).resolve().parent.parent
XWALL_FRONT_ABS_X = 29.0  # mm, |x| where X-wall column 0 starts (SN-IEgenerator utility/geometrycheck.py)
XWALL_DEPTH = 203.0  # mm, depth pitch of the two X-wall columns (same source)


@pytest.fixture(scope="module")
def kinked_batch():
    return generate(400, 3, np.random.default_rng(11), kink_prob=0.5, noise_hits=2.0)


@pytest.fixture(scope="module")
def plain_batch():
    return generate(400, 4, np.random.default_rng(12))


def hit_segments(batch):
    """Per track hit of ``batch``: the straight segment that made it.

    Returns (track index per hit, start (x, y, z), direction (x, y, z), path length at the start),
    using the truth line, and for kinked tracks the break point and angle on layers >= break_layer.
    """
    track = batch.hit_track_index()
    is_track = track >= 0
    glob = (batch.track_offsets[batch.hit_event_index()] + track)[is_track]
    t = batch.tracks
    ux, uy, uz = t["dirx"][glob], t["diry"][glob], t["dirz"][glob]
    px, py, pz = t["pointx"][glob], t["pointy"][glob], t["pointz"][glob]
    layer = batch.grid_layer[is_track].astype(np.int64)
    after = (t["break_layer"][glob] >= 0) & (layer >= t["break_layer"][glob])
    t_break = np.abs(t["breakpointx"][glob]) / np.abs(ux)
    angle = t["bpangle"][glob]
    start = (np.where(after, t["breakpointx"][glob], px), np.where(after, t["breakpointy"][glob], py),
             np.where(after, pz + uz * t_break, pz))
    direction = (np.where(after, ux * np.cos(angle) - uy * np.sin(angle), ux),
                 np.where(after, ux * np.sin(angle) + uy * np.cos(angle), uy), uz)
    return is_track, start, direction, np.where(after, t_break, 0.0)


def closest_approach(batch):
    """Top-view distance (mm), z (mm) and path length from the vertex (mm) of every track hit."""
    is_track, (x0, y0, z0), (ux, uy, uz), s0 = hit_segments(batch)
    wx = geo.wire_x(batch.grid_side[is_track], batch.grid_layer[is_track])
    wy = geo.wire_y(batch.grid_column[is_track])
    norm2 = ux ** 2 + uy ** 2
    t = ((wx - x0) * ux + (wy - y0) * uy) / norm2
    distance = np.abs((wy - y0) * ux - (wx - x0) * uy) / np.sqrt(norm2)
    return is_track, distance, z0 + uz * t, s0 + t


# ------------------------------------------------------------------------------------------------
# Hits
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["plain_batch", "kinked_batch"])
def test_hits_lie_within_half_a_cell_of_their_line(name, request):
    batch = request.getfixturevalue(name)
    is_track, distance, z, _ = closest_approach(batch)
    assert np.all(distance < geo.CELL_HALF + 1e-9)
    np.testing.assert_allclose(batch.radius[is_track], distance, atol=1e-3)
    np.testing.assert_allclose(batch.wirez[is_track], z, atol=1e-2)
    assert np.all(np.abs(z) < geo.TRACKER_HALF_Z)


def test_hits_are_on_the_side_of_their_track_and_ordered_along_it(kinked_batch):
    is_track, _, _, s = closest_approach(kinked_batch)
    track = kinked_batch.hit_track_index()[is_track]
    glob = kinked_batch.track_offsets[kinked_batch.hit_event_index()[is_track]] + track
    side = kinked_batch.grid_side[is_track]
    assert np.array_equal(side, (kinked_batch.dirx[glob] > 0).astype(side.dtype))
    same_track = glob[1:] == glob[:-1]
    assert np.all(np.diff(s)[same_track] >= -1e-6)


@pytest.mark.parametrize("name", ["plain_batch", "kinked_batch"])
def test_no_cell_twice_in_an_event(name, request):
    batch = request.getfixturevalue(name)
    key = batch.hit_event_index() * geo.N_CELLS + geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column)
    assert len(np.unique(key)) == len(key)


@pytest.mark.parametrize("n_tracks, min_hits", [(1, 3), (2, 3), (4, 3), (3, 6)])
def test_every_event_has_the_requested_tracks_each_with_min_hits(n_tracks, min_hits):
    batch = generate(200, n_tracks, np.random.default_rng(n_tracks), min_hits=min_hits, noise_hits=1.0)
    assert np.all(batch.n_tracks == n_tracks)
    split = batch.track_split.astype(np.int64).reshape(-1, n_tracks)
    per_track = np.diff(np.concatenate([np.zeros((len(batch), 1), np.int64), split], axis=1), axis=1)
    assert per_track.min() >= min_hits


def test_a_shared_cell_goes_to_the_closest_track(plain_batch):
    batch = plain_batch  # straight tracks, 4 per event: many cells are crossed by two lines
    is_track = batch.hit_track_index() >= 0
    event = batch.hit_event_index()[is_track]
    wx = geo.wire_x(batch.grid_side[is_track], batch.grid_layer[is_track])[:, None]
    wy = geo.wire_y(batch.grid_column[is_track])[:, None]
    others = batch.track_offsets[event][:, None] + np.arange(4)[None, :]  # (hits, 4) tracks of the event
    ux, uy, uz = batch.dirx[others], batch.diry[others], batch.dirz[others]
    x0, y0, z0 = batch.pointx[others], batch.pointy[others], batch.pointz[others]
    norm2 = ux ** 2 + uy ** 2
    t = ((wx - x0) * ux + (wy - y0) * uy) / norm2
    distance = np.abs((wy - y0) * ux - (wx - x0) * uy) / np.sqrt(norm2)
    crosses = (distance < geo.CELL_HALF) & (t >= 0) & (np.abs(z0 + uz * t) < geo.TRACKER_HALF_Z)
    radius = batch.radius[is_track].astype(np.float64)[:, None]
    assert crosses.sum() > is_track.sum()  # some cells were shared
    assert not np.any(crosses & (distance < radius - 1e-3))


def test_track_split_increases_and_noise_follows(kinked_batch):
    batch = kinked_batch
    batch.validate()
    split = batch.track_split.astype(np.int64).reshape(len(batch), -1)
    assert np.all(np.diff(split, axis=1) > 0)
    assert np.all(split[:, -1] <= batch.n_hits)
    track = batch.hit_track_index()
    noise = batch.n_hits - split[:, -1]
    assert noise.sum() > 0
    assert np.array_equal(np.bincount(batch.hit_event_index()[track < 0], minlength=len(batch)), noise)
    event = batch.hit_event_index()
    position = np.arange(len(track)) - batch.hit_offsets[event]
    assert np.all(position[track < 0] >= split[event[track < 0], -1])
    assert abs(noise.mean() - 2.0) < 0.4


def test_common_vertex_gives_one_vertex_per_event():
    batch = generate(300, 3, np.random.default_rng(5), common_vertex=True)
    for name in ("pointx", "pointy", "pointz"):
        values = batch.tracks[name].reshape(len(batch), 3)
        assert np.all(values == values[:, :1])
    assert len(np.unique(batch.pointy)) == len(batch)
    assert np.all(batch.pointx == 0.0)
    assert np.all(np.abs(batch.pointz) <= geo.TRACKER_HALF_Z - toyhaystack.VERTEX_Z_MARGIN)


def test_independent_vertices_differ(plain_batch):
    assert len(np.unique(plain_batch.pointy)) == len(plain_batch.pointy)
    np.testing.assert_allclose(np.sqrt(plain_batch.dirx ** 2 + plain_batch.diry ** 2 + plain_batch.dirz ** 2), 1.0)


# ------------------------------------------------------------------------------------------------
# Kinks
# ------------------------------------------------------------------------------------------------
def test_break_fields(kinked_batch, plain_batch):
    t = plain_batch.tracks
    assert np.all(t["break_layer"] == -1)
    for name in ("breakpointx", "breakpointy", "bpangle"):
        assert np.all(t[name] == 0.0)
    t = kinked_batch.tracks
    kinked = t["break_layer"] >= 0
    assert 0.3 < kinked.mean() < 0.6
    assert np.all((t["break_layer"][kinked] >= 1) & (t["break_layer"][kinked] < geo.N_LAYERS))
    assert np.all(t["bpangle"][kinked] != 0.0) and np.all(t["bpangle"][~kinked] == 0.0)
    expected_x = geo.TRACKER_MIN_ABS_X + geo.CELL_PITCH * t["break_layer"][kinked]
    np.testing.assert_allclose(np.abs(t["breakpointx"][kinked]), expected_x)
    on_line = t["pointy"][kinked] + t["diry"][kinked] * t["breakpointx"][kinked] / t["dirx"][kinked]
    np.testing.assert_allclose(t["breakpointy"][kinked], on_line)


# ------------------------------------------------------------------------------------------------
# Calorimeter
# ------------------------------------------------------------------------------------------------
def module_edges_ok(calo_type, x, y, z, column, row):
    """Whether the point (mm) lies in module (column, row) of a wall of the given type (arrays)."""
    main_ok = ((geo.MAIN_MIN_Y + geo.MAIN_PITCH * column <= y)
               & (y < geo.MAIN_MIN_Y + geo.MAIN_PITCH * (column + 1))
               & (geo.MAIN_MIN_Z + geo.MAIN_PITCH * row <= z) & (z < geo.MAIN_MIN_Z + geo.MAIN_PITCH * (row + 1)))
    depth = np.abs(x) - XWALL_FRONT_ABS_X
    xwall_ok = ((XWALL_DEPTH * column <= depth) & (depth < XWALL_DEPTH * (column + 1))
                & (geo.XWALL_MIN_Z + geo.XWALL_ROW_PITCH * row <= z)
                & (z < geo.XWALL_MIN_Z + geo.XWALL_ROW_PITCH * (row + 1)))
    centre = geo.gveto_column_centre_y(column)
    gveto_ok = np.abs(y - centre) < geo.GVETO_PITCH / 2
    return np.where(calo_type == 0, main_ok, np.where(calo_type == 1, xwall_ok, gveto_ok))


@pytest.mark.parametrize("name", ["plain_batch", "kinked_batch"])
def test_calorimeter_truth_matches_the_extrapolated_line(name, request):
    t = request.getfixturevalue(name).tracks
    kinked = t["break_layer"] >= 0
    t_break = np.abs(t["breakpointx"]) / np.abs(t["dirx"])
    angle = t["bpangle"]
    start = np.stack([t["breakpointx"], t["breakpointy"], np.where(kinked, t["pointz"] + t["dirz"] * t_break,
                                                                     t["pointz"])])
    start[:, ~kinked] = np.stack([t["pointx"], t["pointy"], t["pointz"]])[:, ~kinked]
    direction = np.stack([t["dirx"] * np.cos(angle) - t["diry"] * np.sin(angle),
                          t["dirx"] * np.sin(angle) + t["diry"] * np.cos(angle), t["dirz"]])
    calo_type = t["calo_type"].astype(np.int64)
    wall = t["calo_wall"].astype(np.int64)
    assert set(np.unique(calo_type)) == {0, 1, 2}
    assert np.all((wall == -1) == (calo_type == 0))
    assert np.array_equal(t["calo_side"], (direction[0] > 0).astype(t["calo_side"].dtype))

    # The plane of the reported wall, and the path length to it.
    axis = calo_type  # main wall: x, X-wall: y, gamma veto: z
    plane = np.select([calo_type == 0, calo_type == 1], [geo.MAIN_FRONT_ABS_X, geo.XWALL_ABS_Y], geo.GVETO_ABS_Z)
    plane_sign = np.where(calo_type == 0, np.sign(direction[0]), np.where(wall == 1, 1.0, -1.0))
    index = np.arange(len(axis))
    path = (plane_sign * plane - start[axis, index]) / direction[axis, index]
    assert np.all(path > 0)
    point = start + direction * path
    # it is the first calorimeter plane reached: the point is inside the other walls
    assert np.all(np.abs(point[0]) <= geo.MAIN_FRONT_ABS_X + 1e-6)
    assert np.all(np.abs(point[1]) <= geo.XWALL_ABS_Y + 1e-6)
    assert np.all(np.abs(point[2]) <= geo.GVETO_ABS_Z + 1e-6)

    # The module: recover (column, row) from the om number and check the point falls in it.
    om = t["calo_om"].astype(np.int64)
    side = t["calo_side"].astype(np.int64)
    local = np.select([calo_type == 0, calo_type == 1], [om - 260 * side, om - 520 - 64 * side - 32 * wall],
                      om - 648 - 32 * side - 16 * wall)
    column = np.select([calo_type == 0, calo_type == 1], [local // 13, local // 16], local)
    row = np.select([calo_type == 0, calo_type == 1], [local % 13, local % 16], 0)
    assert np.all((local >= 0) & (local < np.select([calo_type == 0, calo_type == 1], [260, 32], 16)))
    assert np.array_equal(om, geo.om_number(calo_type, side, wall, column, row))
    assert np.all(module_edges_ok(calo_type, *point, column, row))
    grid_column, grid_row = geo.calo_grid_cell(calo_type, wall, column, row)
    assert np.array_equal(t["calo_column"], grid_column)
    assert np.array_equal(t["calo_row"], grid_row)


# ------------------------------------------------------------------------------------------------
# Options, reproducibility, files
# ------------------------------------------------------------------------------------------------
def test_missing_z_fraction():
    batch = generate(500, 2, np.random.default_rng(3), missing_z_fraction=0.2)
    assert abs(np.mean(batch.wirez == 0.0) - 0.2) < 0.03
    assert np.array_equal(batch.z_missing(), batch.wirez == 0.0)  # the flag, not the 0, says "no z"
    assert np.all(generate(200, 2, np.random.default_rng(3)).wirez != 0.0)


def test_smearing_keeps_radius_in_a_cell():
    exact = generate(300, 2, np.random.default_rng(4))
    smeared = generate(300, 2, np.random.default_rng(4), radius_sigma=5.0)
    assert np.all((smeared.radius >= 0.0) & (smeared.radius <= geo.MAX_DRIFT_RADIUS))
    assert np.any(smeared.radius == 0.0) and np.any(smeared.radius == geo.MAX_DRIFT_RADIUS)
    assert np.array_equal(smeared.grid_column, exact.grid_column)
    difference = (smeared.radius - exact.radius)[(exact.radius > 5) & (exact.radius < 17)]
    assert 3.5 < difference.std() < 6.5


def test_same_seed_same_events():
    options = dict(kink_prob=0.3, noise_hits=1.5, radius_sigma=0.5, missing_z_fraction=0.1)
    first = generate(200, 3, np.random.default_rng(9), **options)
    second = generate(200, 3, np.random.default_rng(9), **options)
    other = generate(200, 3, np.random.default_rng(10), **options)
    for group in ("hits", "tracks"):
        for name, values in getattr(first, group).items():
            assert np.array_equal(values, getattr(second, group)[name]), name
    assert not np.array_equal(first.pointy, other.pointy)


def test_chunks_join(monkeypatch):
    monkeypatch.setattr(toyhaystack, "CHUNK_EVENTS", 70)
    batch = generate(200, 2, np.random.default_rng(2))
    assert len(batch) == 200
    batch.validate()
    assert len(generate(0, 2, np.random.default_rng(2))) == 0


def test_write_read_round_trip(kinked_batch, tmp_path):
    path = write_events(tmp_path / "toy.root", kinked_batch)
    back = read_events(path)
    assert np.array_equal(back.hit_offsets, kinked_batch.hit_offsets)
    assert np.array_equal(back.track_offsets, kinked_batch.track_offsets)
    for name in kinked_batch.hits:
        assert back.hits[name].dtype == kinked_batch.hits[name].dtype
        assert np.array_equal(back.hits[name], kinked_batch.hits[name]), name
    for name in TRACK_FIELDS:
        assert np.array_equal(back.tracks[name], kinked_batch.tracks[name]), name


@pytest.mark.parametrize("arguments, message", [
    (dict(n_events=-1), "n_events"), (dict(n_tracks=0), "n_tracks"), (dict(rng=7), "rng"),
    (dict(min_hits=0), "min_hits"), (dict(min_hits=10), "min_hits"), (dict(kink_prob=1.5), "kink_prob"),
    (dict(noise_hits=-1.0), "noise_hits"), (dict(noise_hits=2000.0), "noise_hits"),
    (dict(radius_sigma=float("nan")), "radius_sigma"), (dict(missing_z_fraction=2.0), "missing_z_fraction")])
def test_bad_arguments_raise_value_error(arguments, message):
    call = dict(n_events=10, n_tracks=2, rng=np.random.default_rng(0)) | arguments
    with pytest.raises(ValueError, match=message):
        generate(call.pop("n_events"), call.pop("n_tracks"), call.pop("rng"), **call)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def test_cli_writes_the_layout_and_refuses_to_overwrite(tmp_path, capsys):
    argv = ["--events", "20", "--tracks", "1", "2", "--files", "2", "--seed", "3", "--out", str(tmp_path),
            "--quiet", "--kink-prob", "0.2", "--noise-hits", "1", "--radius-sigma", "0.5",
            "--missing-z-fraction", "0.1", "--common-vertex", "--min-hits", "4"]
    assert toyhaystack.main(argv) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.root"))
    assert written == [f"{n}/toyhaystack_t{n}_{i}.root" for n in (1, 2) for i in (0, 1)]
    batch = read_events(tmp_path / "2")
    assert len(batch) == 40 and np.all(batch.n_tracks == 2)
    assert toyhaystack.main(argv) == 2
    assert "exist" in capsys.readouterr().err
    assert toyhaystack.main(argv + ["--overwrite"]) == 0
    assert toyhaystack.main(["--out", str(tmp_path / "bad"), "--kink-prob", "3", "--quiet"]) == 2


def test_cli_runs_as_a_script_and_as_a_module(tmp_path):
    script = subprocess.run([sys.executable, str(REPO / "Generator" / "toyhaystack.py"), "--events", "5",
                             "--tracks", "3", "--out", str(tmp_path), "--quiet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    assert (tmp_path / "3" / "toyhaystack_t3_0.root").exists()
    check = ("import sys, runpy; sys.argv = ['toyhaystack', '--help']\n"
             "try:\n    runpy.run_module('Generator.toyhaystack', run_name='__main__')\n"
             "except SystemExit as stop:\n    assert stop.code == 0\n"
             "assert 'tensorflow' not in sys.modules\n")
    module = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert module.returncode == 0, module.stderr
    assert "--kink-prob" in module.stdout
