"""The straight-line fit that calorimeter models read beside their views (datasets/line_fit.py)."""

from __future__ import annotations

import numpy as np

from datasets.line_fit import COLUMN_CENTRES, FEATURE_NAMES, N_FEATURES, Z_CENTRES, line_features
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts

HALF = geo.TRACKER_HALF_Z / geo.CELL_PITCH


def batch_of(events):
    """EventBatch from [(layers, columns, wirez, missing)] per event (no truth tracks)."""
    counts = [len(e[0]) for e in events]
    hits = {"grid_side": np.ones(sum(counts), np.int8),
            "grid_layer": np.concatenate([e[0] for e in events]).astype(np.int8),
            "grid_column": np.concatenate([e[1] for e in events]).astype(np.int16),
            "wirez": np.concatenate([e[2] for e in events]).astype(np.float32),
            "radius": np.zeros(sum(counts), np.float32),
            "wirez_missing": np.concatenate([e[3] for e in events]).astype(np.int8)}
    offsets = offsets_from_counts(counts)
    return EventBatch(offsets, hits, np.zeros(len(events) + 1, np.int64), {})


def test_a_straight_track_is_extrapolated_to_the_wall_and_the_foil():
    layers = np.arange(9)
    columns = 40 + 2 * layers  # column + 0.5 = 40.5 + 2 (u - 0.5): 2 columns per layer
    z_cells = -3.0 + 1.5 * (layers + 0.5)  # z in cell units, linear in u
    missing = np.zeros(9, np.int8)
    missing[4] = 1
    wirez = np.where(missing == 1, 999.0, z_cells * geo.CELL_PITCH)  # a hit without z does not enter the z fit
    f = line_features(batch_of([(layers, columns, wirez, missing)]))
    assert f.shape == (1, N_FEATURES) == (1, len(FEATURE_NAMES) + len(COLUMN_CENTRES) + len(Z_CENTRES) + 22 + 15)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f[0, 0], (39.5 + 2 * 9) / 113, rtol=1e-5)  # column at u = 9
    np.testing.assert_allclose(f[0, 1], (-3.0 + 1.5 * 9) / HALF, rtol=1e-5)  # z at u = 9
    np.testing.assert_allclose(f[0, 2], np.arctan(2.0) / (np.pi / 2), rtol=1e-5)
    np.testing.assert_allclose(f[0, 3], np.arctan(1.5) / (np.pi / 2), rtol=1e-5)
    np.testing.assert_allclose(f[0, 4:8], [1.0, 8 / 9, 39.5 / 113, -3.0 / HALF], rtol=1e-5)
    # the wall positions on their radial-basis grids: the bump peaks at the centre nearest the fit
    column_bumps, z_bumps = f[0, 8:8 + len(COLUMN_CENTRES)], f[0, 8 + len(COLUMN_CENTRES):264]
    assert COLUMN_CENTRES[np.argmax(column_bumps)] == 57.5 and np.isclose(column_bumps.max(), 1.0)
    assert np.argmax(z_bumps) == np.argmin(np.abs(Z_CENTRES - (-3.0 + 1.5 * 9) / HALF))
    assert np.all((f[0, 8:] >= 0) & (f[0, 8:] <= 1))
    # then the grid cell where the line meets the wall, one-hot: column 57.5 -> 11, z 10.5 cells -> row 10
    grid_column, grid_row = f[0, 264:286], f[0, 286:]
    assert grid_column.sum() == 1 and np.argmax(grid_column) == int(57.5 / 113 * 20 + 1)
    assert grid_row.sum() == 1 and np.argmax(grid_row) == int((1 + 10.5 / HALF) / 2 * 13 + 1)


def test_tracks_along_one_layer_empty_events_and_far_extrapolations():
    along = (np.full(4, 3), np.array([10, 11, 12, 13]), np.full(4, 100.0), np.zeros(4))
    empty = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    steep = (np.array([0, 1]), np.array([0, 100]), np.array([0.0, 1400.0]), np.zeros(2))
    f = line_features(batch_of([along, empty, steep]))
    # along one layer, parallel to the foil: it never reaches the wall (its column is clipped far beyond)
    assert f[0, 2] == 1.0 and np.isclose(f[0, 4], 1 / 9) and f[0, 0] == 1.5
    np.testing.assert_array_equal(f[1], np.zeros(N_FEATURES))
    assert f[2, 0] == 1.5 and f[2, 1] == 1.5  # clipped far beyond the grid
    assert np.all(np.abs(f[:, :8]) <= 1.5)


def test_the_top_line_is_fitted_to_the_drift_circles_and_z_at_the_foot_of_each_wire():
    """Lines of the my_generator toy (hits at the drift radius from each wire, wirez the z of the
    closest point): the fit to the circles finds the line itself, the fit through the wires does not."""
    from my_generator import my_generator as mg

    x = np.array([20.3, 70.8, 55.1])
    slope_top = np.array([0.7, -1.9, 0.35])
    z0, slope_front = np.array([-10.0, 5.0, 0.0]), np.array([1.3, -0.4, 2.2])
    track, layer, column, wirez, distance = mg._track_hits(x, z0, slope_top, slope_front)
    counts = np.bincount(track, minlength=3)
    assert np.all(counts >= 5)
    hits = {"grid_side": np.ones(len(track), np.int8), "grid_layer": layer.astype(np.int8),
            "grid_column": column.astype(np.int16), "wirez": (wirez * geo.CELL_PITCH).astype(np.float32),
            "radius": (distance * geo.CELL_PITCH).astype(np.float32), "wirez_missing": np.zeros(len(track), np.int8)}
    batch = EventBatch(offsets_from_counts(counts), hits, np.zeros(4, np.int64), {})
    f = line_features(batch)
    np.testing.assert_allclose(f[:, 0] * 113, x + 9 * slope_top, atol=1e-3)  # column at the wall
    np.testing.assert_allclose(f[:, 1] * HALF, z0 + 9 * slope_front, atol=1e-3)  # z at the wall
    np.testing.assert_allclose(f[:, 6] * 113, x, atol=1e-3)  # the foil
    through_wires = line_features(EventBatch(batch.hit_offsets, dict(hits, radius=np.zeros(len(track), np.float32)),
                                             batch.track_offsets, {}))
    assert np.max(np.abs(through_wires[:, 0] - f[:, 0]) * 113) > 0.05


def test_a_track_that_never_leaves_its_first_layer_starts_at_the_foil_and_goes_the_way_it_leaves():
    """Nearly parallel to the foil, all hits in layer 0: towards the first or last column (it leaves
    through that X-wall), crossing the wire row or not, the line and its z are found exactly."""
    from my_generator import my_generator as mg

    x = np.array([100.3, 20.2, 99.6, 10.4])
    slope_top = np.array([40.0, -30.0, 15.0, -25.0])  # leaves the columns at u = 0.32, 0.67, 0.89, 0.42
    z0, slope_front = np.array([-5.0, 3.0, 10.0, 0.0]), np.array([0.5, -0.8, 0.3, 0.2])
    track, layer, column, wirez, distance = mg._track_hits(x, z0, slope_top, slope_front)
    assert np.all(layer == 0) and np.all(np.bincount(track, minlength=4) >= 5)
    hits = {"grid_side": np.ones(len(track), np.int8), "grid_layer": layer.astype(np.int8),
            "grid_column": column.astype(np.int16), "wirez": (wirez * geo.CELL_PITCH).astype(np.float32),
            "radius": (distance * geo.CELL_PITCH).astype(np.float32), "wirez_missing": np.zeros(len(track), np.int8)}
    batch = EventBatch(offsets_from_counts(np.bincount(track, minlength=4)), hits, np.zeros(5, np.int64), {})
    f = line_features(batch)
    np.testing.assert_allclose(f[:, 2], np.arctan2(slope_top, 1.0) / (np.pi / 2), atol=1e-4)  # direction, its sign
    np.testing.assert_allclose(f[:, 6] * 113, x, atol=1e-3)  # starts on the foil
    np.testing.assert_allclose(f[:, 1] * HALF, z0 + 9 * slope_front, atol=1e-2)  # z at the wall
    assert list(np.sign(f[:, 0] - 0.5)) == [1, -1, 1, -1]  # beyond the last / first column
    through_wires = line_features(EventBatch(batch.hit_offsets, dict(hits, radius=np.zeros(len(track), np.float32)),
                                             batch.track_offsets, {}))
    assert np.max(np.abs(through_wires[:, 1] - f[:, 1]) * HALF) > 1.0  # the wires alone do not give z at the wall


def test_grid_binning_maps_the_features_onto_the_cell_the_line_predicts():
    from datasets.line_fit import grid_binning
    from my_generator import my_generator as mg

    rng = np.random.default_rng(3)
    batch = mg.generate(200, 1, rng)
    f = line_features(batch)
    columns, rows = grid_binning()
    assert columns.shape == (N_FEATURES, 22) and rows.shape == (N_FEATURES, 15)
    right = (np.argmax(f @ columns, 1) == batch.calo_column) & (np.argmax(f @ rows, 1) == batch.calo_row)
    assert right.mean() > 0.97  # clean one-track events: the line alone
    first_columns, first_rows = grid_binning(264)  # the bumps of the first 264 features: a softer reading
    assert first_columns.shape == (264, 22) and np.all(first_columns[8:133].sum(axis=1) == 1)
    assert np.mean(np.argmax(f[:, :264] @ first_columns, 1) == batch.calo_column) > 0.8


def test_the_mirror_image_of_a_track_along_a_layer_fits_its_drift_circles_as_well_and_mirrors_back():
    from datasets.line_fit import fit_lines, hit_residuals, mirror_lines

    c = np.arange(40.5, 60.5)  # wires of layer 0, columns 40-59
    u = np.full(len(c), 0.5)
    slope = 0.8 / 20  # crosses the wire row half way
    distance = np.abs(0.5 - (0.1 + slope * (c - 40.0))) / np.hypot(1.0, slope)
    event, z, with_z = np.zeros(len(c), np.int64), c * 0.1, np.ones(len(c), bool)
    lines = fit_lines(event, u, c, distance, z, with_z, 1)
    mirror = mirror_lines(lines, event, u, c, z, with_z, 1)
    slope_of = lambda line: line["dir_u"] / line["dir_c"]  # noqa: E731  (du / dc)
    np.testing.assert_allclose(slope_of(lines), slope, rtol=1e-6)  # the track itself
    np.testing.assert_allclose(slope_of(mirror), -slope, rtol=1e-6)  # its image about the wire row
    np.testing.assert_allclose(hit_residuals(mirror, event, u, c, distance, z)[0],
                               hit_residuals(lines, event, u, c, distance, z)[0], atol=1e-9)
    back = mirror_lines(mirror, event, u, c, z, with_z, 1)
    for name in ("mean_u", "mean_c", "dir_u", "dir_c"):
        np.testing.assert_allclose(back[name], lines[name], atol=1e-9)
