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
    assert f.shape == (1, N_FEATURES) == (1, len(FEATURE_NAMES) + len(COLUMN_CENTRES) + len(Z_CENTRES))
    assert f.dtype == np.float32
    np.testing.assert_allclose(f[0, 0], (39.5 + 2 * 9) / 113, rtol=1e-5)  # column at u = 9
    np.testing.assert_allclose(f[0, 1], (-3.0 + 1.5 * 9) / HALF, rtol=1e-5)  # z at u = 9
    np.testing.assert_allclose(f[0, 2], np.arctan(2.0) / (np.pi / 2), rtol=1e-5)
    np.testing.assert_allclose(f[0, 3], np.arctan(1.5) / (np.pi / 2), rtol=1e-5)
    np.testing.assert_allclose(f[0, 4:8], [1.0, 8 / 9, 39.5 / 113, -3.0 / HALF], rtol=1e-5)
    # the wall positions on their radial-basis grids: the bump peaks at the centre nearest the fit
    column_bumps, z_bumps = f[0, 8:8 + len(COLUMN_CENTRES)], f[0, 8 + len(COLUMN_CENTRES):]
    assert COLUMN_CENTRES[np.argmax(column_bumps)] == 57.5 and np.isclose(column_bumps.max(), 1.0)
    assert np.argmax(z_bumps) == np.argmin(np.abs(Z_CENTRES - (-3.0 + 1.5 * 9) / HALF))
    assert np.all((f[0, 8:] >= 0) & (f[0, 8:] <= 1))


def test_tracks_along_one_layer_empty_events_and_far_extrapolations():
    along = (np.full(4, 3), np.array([10, 11, 12, 13]), np.full(4, 100.0), np.zeros(4))
    empty = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    steep = (np.array([0, 1]), np.array([0, 100]), np.array([0.0, 1400.0]), np.zeros(2))
    f = line_features(batch_of([along, empty, steep]))
    assert f[0, 2] == 1.0 and np.isclose(f[0, 4], 1 / 9) and np.isclose(f[0, 0], 12.0 / 113)
    np.testing.assert_array_equal(f[1], np.zeros(N_FEATURES))
    assert f[2, 0] == 1.5 and f[2, 1] == 1.5  # clipped far beyond the grid
    assert np.all(np.abs(f[:, :8]) <= 1.5)
