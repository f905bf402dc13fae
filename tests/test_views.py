"""Views (hits -> images) against a slow per-hit reference, on random events."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import views
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts


def random_events(n_events: int, rng: np.random.Generator, *, max_tracks: int = 4, min_tracks: int = 1,
                  noise: int = 2) -> EventBatch:
    """Random events: 1..max_tracks tracks of 0..12 hits on a random side, plus 0..noise noise hits.

    Cells repeat on purpose (two hits in one cell, or in one pixel of the side view), so the views'
    handling of shared pixels is exercised. Per-track calorimeter truth is random on the grid.
    """
    n_tracks = rng.integers(min_tracks, max_tracks + 1, n_events)
    track_hits = rng.integers(0, 13, int(n_tracks.sum()))
    track_side = rng.integers(0, 2, len(track_hits))
    n_noise = rng.integers(0, noise + 1, n_events)
    track_event = np.repeat(np.arange(n_events), n_tracks)
    hits_in_tracks = np.bincount(track_event, weights=track_hits, minlength=n_events).astype(np.int64)
    n_hits = hits_in_tracks + n_noise
    split = np.concatenate([np.cumsum(track_hits[track_event == i]) for i in range(n_events)]).astype(np.int32)
    total = int(n_hits.sum())
    side = rng.integers(0, 2, total).astype(np.int8)
    # hits of a track share its side
    offsets = offsets_from_counts(n_hits)
    track_first = offsets[track_event] + np.concatenate(
        [np.concatenate([[0], np.cumsum(track_hits[track_event == i])[:-1]]) for i in range(n_events)]).astype(np.int64)
    for first, count, s in zip(track_first, track_hits, track_side):
        side[first:first + count] = s
    hits = {
        "grid_side": side,
        "grid_layer": rng.integers(0, geo.N_LAYERS, total).astype(np.int8),
        "grid_column": rng.integers(0, 12, total).astype(np.int16) * 9,  # few columns: shared cells
        "wirez": rng.uniform(-1549, 1549, total).astype(np.float32),  # past the wire ends: clipped by the views
        "radius": rng.uniform(0, geo.MAX_DRIFT_RADIUS, total).astype(np.float32),
    }
    tracks = {
        "track_split": split,
        "calo_side": track_side.astype(np.int8),
        "calo_column": rng.integers(0, geo.CALO_GRID_COLUMNS, len(split)).astype(np.int8),
        "calo_row": rng.integers(0, geo.CALO_GRID_ROWS, len(split)).astype(np.int8),
    }
    return EventBatch(offsets, hits, offsets_from_counts(n_tracks), tracks)


def reference_view(batch: EventBatch, name: str, radius_channel: bool = False) -> np.ndarray:
    """Slow, obviously correct: one hit at a time, straight from DESIGN.md's table of views."""
    shape = views.VIEW_SHAPES[name]
    out = np.zeros((len(batch),) + shape + (2 if radius_channel else 1,), dtype=np.float32)
    for event in range(len(batch)):
        for hit in range(int(batch.hit_offsets[event]), int(batch.hit_offsets[event + 1])):
            side, layer = int(batch.grid_side[hit]), int(batch.grid_layer[hit])
            column = int(batch.grid_column[hit])
            row = 8 - layer if side == 0 else 9 + layer
            z = min(max(float(batch.wirez[hit]), -1500.0), 1499.9)
            zbin = int(np.floor((z + 1500.0) / 100.0))
            pixel = {"top": (row, column), "side": (zbin, column), "front": (zbin, row),
                     "voxel": (row, column, zbin)}[name]
            if name == "side":  # the side view counts hits per pixel
                out[(event,) + pixel + (0,)] += 1.0
            else:
                out[(event,) + pixel + (0,)] = 1.0
            if radius_channel:
                index = (event,) + pixel + (1,)
                out[index] = max(out[index], np.float32(batch.radius[hit]) / np.float32(22.0))
    return out


@pytest.fixture(scope="module")
def events():
    return random_events(60, np.random.default_rng(7))


@pytest.mark.parametrize("name", ["top", "side", "front", "voxel"])
@pytest.mark.parametrize("radius_channel", [False, True])
def test_view_matches_reference(events, name, radius_channel):
    image = views.make_view(events, name, radius_channel)
    assert image.dtype == np.float32
    assert image.shape == (len(events),) + views.VIEW_SHAPES[name] + (2 if radius_channel else 1,)
    np.testing.assert_array_equal(image, reference_view(events, name, radius_channel))


def test_plain_views_and_shapes(events):
    assert views.VIEW_SHAPES == {"top": (18, 113), "side": (30, 113), "front": (30, 18), "voxel": (18, 113, 30)}
    for name, function in (("top", views.top), ("side", views.side), ("front", views.front),
                           ("voxel", views.voxel)):
        np.testing.assert_array_equal(function(events), reference_view(events, name)[..., 0])


def test_top_pixel_count_is_number_of_distinct_cells(events):
    top = views.top(events)
    event = events.hit_event_index()
    cells = geo.cell_id(events.grid_side, events.grid_layer, events.grid_column)
    for i in range(len(events)):
        assert top[i].sum() == len(np.unique(cells[event == i]))
    voxel = views.voxel(events)
    keys = cells * geo.N_Z_BINS + geo.z_bin(events.wirez)
    assert voxel.sum() == len(np.unique(event * 10**6 + keys))


def test_side_pixels_count_hits(events):
    side = views.side(events)
    np.testing.assert_array_equal(side.sum(axis=(1, 2)), events.n_hits)  # every hit counted once
    assert side.max() > 1  # the fixture stacks hits in one side pixel, so a count shows
    front = views.front(events)
    assert set(np.unique(front)) <= {0.0, 1.0}
    uint8 = views.view_from_pixels(views.pixel_index(events, "side"), events.hit_offsets, "side", dtype=np.uint8)
    np.testing.assert_array_equal(uint8[..., 0], side)


def test_counts_are_capped():
    pixels = np.zeros(300, dtype=np.int16)  # 300 hits in pixel 0 of one event
    image = views.scatter(pixels, np.array([0, 300]), 4, count=True, dtype=np.uint8)
    assert image.tolist() == [[views.MAX_PIXEL_COUNT, 0, 0, 0]]


def test_top_pixel_index_locates_hits(events):
    pixels = views.top_pixel_index(events)
    top = views.top(events).reshape(len(events), -1)  # (n, 2034)
    assert np.all(top[events.hit_event_index(), pixels] == 1.0)
    rows, columns = np.divmod(pixels, geo.N_COLUMNS)
    np.testing.assert_array_equal(rows, geo.top_row(events.grid_side, events.grid_layer))
    np.testing.assert_array_equal(columns, events.grid_column)


def test_track_image_draws_only_masked_hits(events):
    mask = events.hit_track_index() == 0
    image = views.track_image(events, mask)
    assert image.shape == (len(events), 18, 113, 1)
    np.testing.assert_array_equal(image, _reference_masked(events, mask))
    with pytest.raises(ValueError, match="one entry per hit"):
        views.track_image(events, mask[:-1])


def _reference_masked(batch, mask):
    out = np.zeros((len(batch), 18, 113, 1), np.float32)
    event = batch.hit_event_index()
    for hit in np.flatnonzero(mask):
        out[event[hit], geo.top_row(batch.grid_side[hit], batch.grid_layer[hit]), batch.grid_column[hit], 0] = 1.0
    return out


def test_empty_batch_and_unknown_view(events):
    empty = events.take(np.zeros(0, dtype=np.int64))
    assert views.make_view(empty, "top").shape == (0, 18, 113, 1)
    no_hits = EventBatch(np.zeros(3, np.int64), {k: v[:0] for k, v in events.hits.items()},
                         np.arange(3, dtype=np.int64), {k: v[:2] for k, v in events.tracks.items()})
    assert views.make_view(no_hits, "side", radius_channel=True).sum() == 0
    with pytest.raises(ValueError, match="unknown view"):
        views.make_view(events, "bottom")
    assert views.fields_for(("top", "side"), radius_channel=True) == (
        "grid_column", "grid_layer", "grid_side", "radius", "wirez", "wirez_missing")


def test_z_channel_on_the_top_view_only(events):
    """Channels [hit, z, radius]: z = wirez / 1500 mm at hit cells (the larger of two listings), 0 without z."""
    missing = np.zeros(int(events.hit_offsets[-1]), np.int8)
    missing[::5] = 1
    batch = EventBatch(events.hit_offsets, {**events.hits, "wirez_missing": missing}, events.track_offsets,
                       events.tracks)
    image = views.make_view(batch, "top", radius_channel=True, z_channel=True)
    assert image.shape == (len(batch), 18, 113, 3) and views.n_channels("top", True, True) == 3
    plain = reference_view(batch, "top", radius_channel=True)
    np.testing.assert_array_equal(image[..., [0, 2]], plain)
    expected = np.zeros((len(batch), 18, 113), np.float32)
    touched = np.zeros((len(batch), 18, 113), bool)
    event = batch.hit_event_index()
    for hit in range(len(missing)):
        pixel = (event[hit], geo.top_row(batch.grid_side[hit], batch.grid_layer[hit]), batch.grid_column[hit])
        value = 0.0 if missing[hit] else np.float32(batch.wirez[hit] / 1500.0)
        expected[pixel] = value if not touched[pixel] else max(expected[pixel], value)
        touched[pixel] = True
    np.testing.assert_allclose(image[..., 1], expected, rtol=1e-6)
    assert np.abs(image[..., 1]).max() <= 1.04 and (image[..., 1] < 0).any()
    # views with a z axis get no z channel; the compact path gives the same images
    assert views.make_view(batch, "side", z_channel=True).shape[-1] == 1 and views.n_channels("front", False, True) == 1
    small = views.compact(batch, ("top", "side"), radius_channel=True, z_channel=True)
    inputs = views.view_inputs(small, ("top", "side"), True, z_channel=True)
    np.testing.assert_array_equal(inputs["top"], image)
    assert inputs["side"].shape[-1] == 2
    specs = views.view_specs(("top", "side"), False, 8, z_channel=True)
    assert specs["top"].shape[-1] == 2 and specs["top"].dtype.name == "float32" and specs["side"].dtype.name == "uint8"
    assert views.fields_for("top", z_channel=True) == ("grid_column", "grid_layer", "grid_side", "wirez",
                                                       "wirez_missing")
