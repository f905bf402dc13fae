"""Clustering task code (clustering.py): iterative full-event clustering, baselines, scoring, table."""

from __future__ import annotations

import numpy as np
import pytest

import clustering as clu
from datasets.clustering import canonical_hit_track_ids, top_pixel_index
from my_generator.my_generator import generate
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts


def oracle_inputs(batch, remaining):
    """Channel 0: the remaining hits; channel 1: the truth answer (the next track's cells)."""
    return np.stack([clu.event_inputs(batch, remaining)[..., 0], clu.first_remaining_track_image(batch, remaining)],
                    axis=-1)  # (m, 18, 113, 2)


def oracle(images):
    return images[..., 1]


def with_noise(batch: EventBatch, per_event: int, rng) -> EventBatch:
    """``batch`` with ``per_event`` noise hits appended to each event, on cells none of its hits uses."""
    n = len(batch)
    cells = rng.integers(0, geo.N_CELLS, (n, per_event))
    side, layer, column = geo.cell_from_id(cells.reshape(-1))
    taken = batch.hit_event_index() * geo.N_CELLS + geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column)
    keys = np.repeat(np.arange(n), per_event) * geo.N_CELLS + cells.reshape(-1)
    free = ~np.isin(keys, taken) & np.r_[True, keys[1:] != keys[:-1]]
    counts = free.reshape(n, per_event).sum(axis=1)
    at = np.repeat(batch.hit_offsets[1:], counts)  # insert before each event's end
    noise = {"grid_side": side[free], "grid_layer": layer[free], "grid_column": column[free],
             "wirez": rng.uniform(-1400, 1400, free.sum()), "radius": rng.uniform(0, 20, free.sum())}
    hits = {k: np.insert(v, at, noise[k].astype(v.dtype)) for k, v in batch.hits.items()}
    return EventBatch(offsets_from_counts(batch.n_hits + counts), hits, batch.track_offsets, batch.tracks)


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(11)
    return {k: generate(150, k, rng) for k in (1, 2, 4)}


def assert_valid(batch, labels, max_tracks, one_listing_per_cell=True):
    """Labels: one per hit, -1 or 0..k-1 with every id below k used, (optionally) no cell twice in a cluster."""
    assert labels.dtype == np.int16 and labels.shape == (int(batch.hit_offsets[-1]),)
    assert labels.min() >= -1 and labels.max() < max_tracks
    event = batch.hit_event_index()
    on = labels >= 0
    used = np.zeros((len(batch), max_tracks), dtype=bool)
    used[event[on], labels[on]] = True
    assert np.all(used[:, :-1] | ~used[:, 1:])  # contiguous ids
    key = (event[on] * max_tracks + labels[on]) * geo.N_CELLS + top_pixel_index(batch)[on]
    assert len(np.unique(key)) == len(key) or not one_listing_per_cell


@pytest.mark.parametrize("n_tracks", [2, 4])
def test_oracle_clusters_clean_events_perfectly(events, n_tracks):
    batch = events[n_tracks]
    for counts in (batch.n_tracks, None):  # from a counter, and until the extractor finds nothing
        labels = clu.cluster_events(batch, oracle, counts, make_inputs=oracle_inputs)
        assert_valid(batch, labels, clu.DEFAULT_MAX_TRACKS)
        np.testing.assert_array_equal(labels, canonical_hit_track_ids(batch))  # canonical order too
    result = clu.score(batch, labels)["by_n_tracks"][str(n_tracks)]
    assert result["perfect_events"] == 1.0 and result["efficiency"] == 1.0
    # Shared cells exist in these events, so the one-label-per-cell ceiling is below 1.
    if n_tracks == 4:
        assert result["ceiling"]["perfect_events"] < 1.0


def test_oracle_leaves_noise_as_noise(events):
    batch = with_noise(events[2], 3, np.random.default_rng(2))
    labels = clu.cluster_events(batch, oracle, batch.n_tracks, make_inputs=oracle_inputs)
    result = clu.score(batch, labels)["all"]
    assert result["perfect_events"] == 1.0 and result["noise_as_noise"] == 1.0


def test_bad_extractors_still_label_every_hit_once(events):
    batch = events[4]
    everything = clu.cluster_events(batch, lambda images: np.ones(images.shape[:3]), batch.n_tracks)
    assert_valid(batch, everything, 4)
    # All cells go to track 0 at once, one listing each; only second listings of shared cells are left.
    keys = batch.hit_event_index() * geo.N_CELLS + top_pixel_index(batch)
    assert (everything == 0).sum() == len(np.unique(keys))
    assert np.isin(keys[everything != 0], keys[everything == 0]).all()
    rng = np.random.default_rng(0)
    noisy = clu.cluster_events(batch, lambda images: rng.uniform(size=images.shape[:3]), max_tracks=4)
    assert_valid(batch, noisy, 4)
    nothing = clu.cluster_events(batch, lambda images: np.zeros(images.shape[:3]), batch.n_tracks)
    assert np.all(nothing == -1)
    with pytest.raises(ValueError, match="extract must return"):
        clu.cluster_events(batch, lambda images: np.ones((1, 18, 113)), batch.n_tracks)
    with pytest.raises(ValueError, match="n_tracks"):
        clu.cluster_events(batch, oracle, [1, 2])


def test_event_inputs_channels(events):
    batch = events[1][:5]
    images = clu.event_inputs(batch, z_channel=True, radius_channel=True)
    assert images.shape == (5, 18, 113, 3) and images.dtype == np.float32
    event, pixel = batch.hit_event_index(), top_pixel_index(batch)
    flat = images.reshape(5, geo.N_CELLS, 3)
    np.testing.assert_allclose(flat[event, pixel, 0], 1.0)
    np.testing.assert_allclose(flat[event, pixel, 1], batch.wirez / 1500.0, rtol=1e-6)
    np.testing.assert_allclose(flat[event, pixel, 2], batch.radius / 22.0, rtol=1e-6)
    assert flat[..., 0].sum() == len(np.unique(event * geo.N_CELLS + pixel))  # nothing on empty cells


def test_canonical_labels_undo_any_relabelling(events):
    batch = events[4]
    truth = canonical_hit_track_ids(batch)
    shuffled = np.where(truth >= 0, (3 - truth) * 7 + 2, -1)  # another id for every track
    np.testing.assert_array_equal(clu.canonical_labels(batch, shuffled), truth)


@pytest.mark.parametrize("method", [clu.dbscan_cluster, clu.hough_cluster])
def test_baselines_are_sane_on_clean_two_track_events(events, method):
    batch = events[2]
    labels = method(batch, batch.n_tracks, progress=False)
    assert_valid(batch, labels, 2, one_listing_per_cell=method is clu.hough_cluster)  # DBSCAN: by coordinates
    result = clu.score(batch, labels)["all"]
    assert result["efficiency"] > 0.8 and result["hit_purity"] > 0.9 and result["perfect_events"] > 0.5
    one = clu.score(events[1], method(events[1], progress=False))["all"]
    assert one["efficiency"] > 0.95 and one["fake_rate"] < 0.1


def test_tune_and_table(events):
    batch = events[2][:40]
    best, scores = clu.tune(clu.hough_cluster, batch, {"distance": [0.1, 0.85]}, n_tracks=batch.n_tracks)
    assert best == {"distance": 0.85} and len(scores) == 2  # 0.1 cell misses most hits
    results = {"Hough": clu.score(batch, clu.hough_cluster(batch, batch.n_tracks, progress=False)),
               "nothing": clu.score(batch, np.full(int(batch.hit_offsets[-1]), -1, dtype=np.int16))}
    table = clu.format_table(results, "2")
    lines = table.splitlines()
    assert lines[0].startswith("2 tracks") and "DM eff." in lines[0]
    assert lines[1].startswith("Hough") and lines[3].startswith("ceiling")
    assert "0.00%" in lines[2] and "-" in lines[2].split()  # no noise hits: NaN shown as "-"


def test_refining_by_lines_mends_hits_given_to_the_other_track_or_left_as_noise(events):
    """Truth clusters with the mistakes a line finder makes: the last hits of a track given to the
    other track, track hits left as noise. The refit lines put them back; truth stays truth."""
    from clustering_baselines import refine_by_lines

    rng = np.random.default_rng(5)
    batch = with_noise(events[2], 2, rng)
    truth = canonical_hit_track_ids(batch).astype(np.int16)
    kept = refine_by_lines(batch, truth)
    assert_valid(batch, kept, 2)
    assert clu.score(batch, kept)["all"]["perfect_events"] >= 0.98
    on = np.flatnonzero(truth >= 0)
    event_end = np.r_[np.flatnonzero(np.diff(batch.hit_event_index()[on])), len(on) - 1]
    swapped = truth.copy()
    for back in (0, 1):  # the last two hits of each event's second track
        swapped[on[event_end - 2 * back]] = 1 - truth[on[event_end - 2 * back]]
    dropped = truth.copy()
    dropped[rng.choice(on, len(on) // 10, replace=False)] = -1  # a tenth of the track hits left as noise
    for broken in (swapped, dropped):
        mended = refine_by_lines(batch, broken)
        assert_valid(batch, mended, 2)
        before, after = clu.score(batch, broken)["all"], clu.score(batch, mended)["all"]
        assert before["perfect_events"] < 0.1 and after["perfect_events"] > 0.85
        assert after["hit_purity"] > 0.99 and after["efficiency"] > 0.97 and after["noise_as_noise"] > 0.95


def test_hough_clusters_refined_by_their_lines_are_purer_and_as_efficient():
    """Realistic events (noise, lost hits, smeared radii): the refined Hough clusters (the default)
    beat the raw ones on perfect events and noise, and lose no efficiency worth the name."""
    rng = np.random.default_rng(8)
    batch = generate(120, 3, rng, noise_hits=2.0, inefficiency=0.02, radius_sigma=1.0)
    raw = clu.hough_cluster(batch, batch.n_tracks, progress=False, refine=False)
    refined = clu.hough_cluster(batch, batch.n_tracks, progress=False)
    assert_valid(batch, refined, 3)
    before, after = clu.score(batch, raw)["all"], clu.score(batch, refined)["all"]
    assert after["perfect_events"] > before["perfect_events"] + 0.1
    assert after["noise_as_noise"] > before["noise_as_noise"] and after["hit_purity"] > before["hit_purity"]
    assert after["efficiency"] > before["efficiency"] - 0.01


def test_refining_a_batch_without_any_cluster_leaves_every_hit_noise(events):
    from clustering_baselines import refine_by_lines

    batch = events[2][:5]
    out = refine_by_lines(batch, np.full(int(batch.hit_offsets[-1]), -1, np.int16))
    assert out.dtype == np.int16 and np.all(out == -1)


def test_refining_keeps_a_cluster_that_holds_two_tracks_and_an_event_without_clusters(events):
    from clustering_baselines import refine_by_lines

    batch = events[2][:20]
    one = np.zeros(int(batch.hit_offsets[-1]), np.int16)  # every hit of an event in one cluster
    one[batch.hit_event_index() >= 10] = -1  # and ten events of noise only
    out = refine_by_lines(batch, one)
    assert_valid(batch, out, 2)
    event = batch.hit_event_index()
    assert np.all(out[event >= 10] == -1)
    assert np.all(np.bincount(event[out >= 0], minlength=20)[:10] >= np.bincount(event, minlength=20)[:10] // 2)


def test_refining_keeps_every_hit_of_a_track_curved_by_a_magnetic_field(monkeypatch):
    """An arc of radius 15 cells (a low-energy electron in 25 G) bends 30 mm off its chord across
    the tracker, far beyond the straight-line tolerance: its line's tolerance widens with its own
    spread, and without that rule the refit would drop its hits."""
    import clustering_refit
    from clustering_baselines import REFINE_DEFAULTS, refine_by_lines

    radius_of_arc, centre_u, centre_c = 15.0, 4.5, 60.5 + 15.0  # the arc passes column 60 at mid-depth
    layers, columns, radii = [], [], []
    for layer in range(9):
        u = layer + 0.5
        c = centre_c - np.sqrt(radius_of_arc ** 2 - (u - centre_u) ** 2)
        for column in (int(np.floor(c)) - 1, int(np.floor(c)), int(np.floor(c)) + 1):
            distance = abs(np.hypot(u - centre_u, column + 0.5 - centre_c) - radius_of_arc)
            if distance < 0.5:  # the cell the arc crosses near its wire
                layers.append(layer), columns.append(column), radii.append(distance * geo.CELL_PITCH)
    n = len(layers)
    sagitta = radius_of_arc - np.sqrt(radius_of_arc ** 2 - 4.5 ** 2)
    assert sagitta / 2 > REFINE_DEFAULTS["top_tolerance"]  # a straight line leaves the middle and the ends far off
    hits = {"grid_side": np.ones(n, np.int8), "grid_layer": np.array(layers, np.int8),
            "grid_column": np.array(columns, np.int16), "wirez": np.linspace(-300.0, 200.0, n).astype(np.float32),
            "radius": np.array(radii, np.float32)}
    batch = EventBatch(offsets_from_counts([n]), hits, np.array([0, 1]), {"track_split": np.array([n], np.int32)})
    out = refine_by_lines(batch, np.zeros(n, np.int16))
    assert np.all(out == 0), out
    monkeypatch.setattr(clustering_refit, "SPREAD_TOLERANCE", 0.0)  # the fixed tolerances alone
    assert np.any(refine_by_lines(batch, np.zeros(n, np.int16)) == -1)


def _line_event(u0, c0, slope, columns, side=0, extra=()):
    """One event whose hits are the cells that the top-view line u = u0 + slope (c - c0) crosses at
    ``columns`` (cell units, each cell's drift radius its wire's distance from the line, z along the
    line), plus ``extra`` (layer, column) cells on the same line's side with their own radii."""
    layers, cols, radii = [], [], []
    norm = np.hypot(1.0, slope)
    for column in columns:
        low, high = sorted((u0 + slope * (column - c0), u0 + slope * (column + 1 - c0)))
        for layer in range(int(np.floor(low)), int(np.floor(high)) + 1):
            if 0 <= layer < geo.N_LAYERS:
                distance = abs(layer + 0.5 - (u0 + slope * (column + 0.5 - c0))) / norm
                if distance < 0.5:
                    layers.append(layer), cols.append(column), radii.append(distance * geo.CELL_PITCH)
    for layer, column in extra:
        distance = abs(layer + 0.5 - (u0 + slope * (column + 0.5 - c0))) / norm
        layers.append(layer), cols.append(column), radii.append(distance * geo.CELL_PITCH)
    n = len(layers)
    hits = {"grid_side": np.full(n, side, np.int8), "grid_layer": np.array(layers, np.int8),
            "grid_column": np.array(cols, np.int16),
            "wirez": (100.0 + 5.0 * np.array(cols, np.float64)).astype(np.float32),
            "radius": np.array(radii, np.float32)}
    return EventBatch(offsets_from_counts([n]), hits, np.array([0, 1]), {"track_split": np.array([n], np.int32)})


def test_refining_takes_the_mirror_image_that_meets_the_last_hits_of_a_track_along_a_layer(monkeypatch):
    """A track leaving the foil at a grazing angle runs along layer 0, crosses its wire row and ends in
    layer 1 at the X-wall; a line finder through the cells keeps only its layer-0 hits, whose drift
    circles fit the track and its mirror image about the wire row alike. The refit keeps the image
    that meets the layer-1 hits and gives them back; with the image the one-layer rule picks, they
    stay noise."""
    import datasets.line_fit as line_fit
    from clustering_baselines import refine_by_lines

    batch = _line_event(0.05, 80.0, 1.35 / 32, range(80, geo.N_COLUMNS))
    layer = batch.hits["grid_layer"]
    assert np.any(layer == 1) and np.any(layer == 0)
    found = np.where(layer == 0, 0, -1).astype(np.int16)  # the layer-1 tail left as noise
    assert np.all(refine_by_lines(batch, found) == 0)
    monkeypatch.setattr(line_fit, "mirror_lines", lambda lines, *args: lines)  # no mirror image
    assert np.all(refine_by_lines(batch, found)[layer == 1] == -1)


def test_refining_leaves_a_hit_far_along_the_line_beyond_a_gap_as_noise(monkeypatch):
    """A noise cell that a short track's line meets 20 columns beyond its last hit, with its z on
    the z line: within both tolerances, it stays noise because no hit bridges the gap; hits of the
    track that the finder left out, next to it, join."""
    import clustering_refit
    from clustering_baselines import refine_by_lines

    batch = _line_event(0.0, 20.0, 0.25, range(20, 30), extra=[(7, 49)])
    n = len(batch.hits["radius"])
    truth = np.r_[np.zeros(n - 1, np.int16), -1]
    given = np.zeros(n, np.int16)  # the far cell in the cluster, and the track's last hit left out
    given[n - 2] = -1
    assert np.array_equal(refine_by_lines(batch, given), truth)
    monkeypatch.setattr(clustering_refit, "MAX_GAP", 1e9)  # no gap rule: the far cell joins
    assert np.all(refine_by_lines(batch, given) == 0)
