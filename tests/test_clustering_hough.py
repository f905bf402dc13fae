"""The vectorised Hough line finder (clustering_hough.py) against scikit-image, event by event."""

from __future__ import annotations

import numpy as np
import pytest

import clustering_hough as hough
from clustering import _one_listing_per_cell, _z_or_nan, canonical_labels
from my_generator.my_generator import generate
from snemo import detector
from snemo import geometry as geo
from snemo.events import EventBatch


def _skimage_peak(layer, column, angles):
    """(votes, angle index, distance) of scikit-image's hough_line on one binary (9, 113) image."""
    from skimage.transform import hough_line

    image = np.zeros((geo.N_LAYERS, geo.N_COLUMNS), dtype=bool)
    image[layer, column] = True
    space, _, distances = hough_line(image, theta=angles)
    peak = np.unravel_index(int(np.argmax(space)), space.shape)
    return int(space[peak]), int(peak[1]), int(round(distances[peak[0]]))


def test_peaks_equal_scikit_image_on_random_images():
    rng = np.random.default_rng(3)
    angles = hough.hough_angles()
    groups, layers, columns, expected = [], [], [], []
    for image in range(60):
        n = int(rng.integers(1, 50))
        if image % 3 == 0:  # a straight track plus a few stray pixels, as in events
            column0, slope = rng.integers(0, geo.N_COLUMNS), rng.uniform(-4, 4)
            layer = np.arange(geo.N_LAYERS)
            column = np.clip(np.round(column0 + slope * layer), 0, geo.N_COLUMNS - 1).astype(int)
            layer, column = np.r_[layer, rng.integers(0, 9, 3)], np.r_[column, rng.integers(0, 113, 3)]
        else:
            layer, column = rng.integers(0, geo.N_LAYERS, n), rng.integers(0, geo.N_COLUMNS, n)
        layer, column = np.r_[layer, layer[:2]], np.r_[column, column[:2]]  # listed twice: counts once
        groups.append(np.full(len(layer), image)), layers.append(layer), columns.append(column)
        expected.append(_skimage_peak(layer, column, angles))
    n_groups = 61  # the last image has no pixel
    order = rng.permutation(sum(map(len, groups)))  # input order does not matter
    votes, angle, distance = hough.hough_peaks(np.concatenate(groups)[order], np.concatenate(layers)[order],
                                               np.concatenate(columns)[order], n_groups, angles)
    assert np.array_equal(np.stack([votes, angle, distance], axis=1)[:60], np.array(expected))
    assert (votes[60], angle[60], distance[60]) == (0, 0, 0)


def _reference_hough(batch: EventBatch, n_tracks, *, distance=0.85, min_votes=3, min_hits=3, n_angles=180):
    """The per-event loop the vectorised finder replaced: scikit-image on each image, round by round."""
    angles = hough.hough_angles(n_angles)
    offsets = batch.hit_offsets - batch.hit_offsets[0]
    side_all, layer_all, column_all = (batch.hits[k].astype(np.int64) for k in ("grid_side", "grid_layer",
                                                                                  "grid_column"))
    z_all = _z_or_nan(batch)
    out = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for position in range(len(batch)):
        a, b = int(offsets[position]), int(offsets[position + 1])
        side, layer, column = side_all[a:b], layer_all[a:b], column_all[a:b]
        remaining = np.ones(b - a, dtype=bool)
        for track in range(int(n_tracks[position])):
            peaks = [_skimage_peak(layer[remaining & (side == s)], column[remaining & (side == s)], angles)
                     if (remaining & (side == s)).any() else (0, 0, 0) for s in (0, 1)]
            s = int(peaks[1][0] > peaks[0][0])
            votes, angle, rho = peaks[s]
            if votes < min_votes:
                break
            theta = angles[angle]
            on = remaining & (side == s)
            near = on & (np.abs(column * np.cos(theta) + layer * np.sin(theta) - rho) <= distance)
            if near.sum() >= 2:
                points = np.stack([column[near], layer[near]], axis=1).astype(np.float64)
                centre = points.mean(axis=0)
                normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
                near = on & (np.abs((np.stack([column, layer], axis=1) - centre) @ normal) <= distance)
            near = _one_listing_per_cell(near, np.zeros(b - a, dtype=np.int64), geo.cell_id(side, layer, column),
                                         z_all[a:b])
            if near.sum() < min_hits:
                break
            out[a:b][near] = track
            remaining &= ~near
    return canonical_labels(batch, out)


@pytest.fixture(scope="module")
def realistic_events():
    rng = np.random.default_rng(21)
    effects = {k: v for k, v in detector.REALISTIC.items() if k != "kink_prob"}  # my_generator has no kinks
    parts = [generate(40, k, rng, **effects, dead_cell_seed=5) for k in (1, 2, 3, 4)]
    return EventBatch.concatenate(parts)


@pytest.mark.parametrize("given_count", [True, False])
def test_vectorised_finder_equals_the_per_event_loop(realistic_events, given_count):
    batch = realistic_events
    n_tracks = batch.n_tracks if given_count else np.full(len(batch), 4)
    expected = _reference_hough(batch, n_tracks)
    labels = hough.hough_cluster(batch, batch.n_tracks if given_count else None, refine=False, progress=False,
                                 chunk=37)  # chunks that do not divide the batch
    assert labels.dtype == np.int16
    assert np.array_equal(labels, expected)
    assert (labels >= 0).mean() > 0.9  # most hits are on found tracks


def test_an_event_stops_when_its_peak_is_too_weak():
    # two hits only: no line has min_votes = 3 cells, so nothing is found even when 2 tracks are asked for
    hits = {"grid_side": np.array([0, 1], np.int8), "grid_layer": np.array([0, 4], np.int8),
            "grid_column": np.array([10, 60], np.int16), "wirez": np.zeros(2, np.float32),
            "radius": np.ones(2, np.float32)}
    batch = EventBatch(np.array([0, 2]), hits, np.array([0, 0]), {})
    assert np.array_equal(hough.hough_cluster(batch, np.array([2]), progress=False, refine=False), [-1, -1])
