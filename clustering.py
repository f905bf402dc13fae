"""Clustering task, shared code: full-event iterative clustering, classical baselines, scoring.

Every clusterer takes an :class:`~snemo.events.EventBatch` and returns per-hit labels, int16
(n_hits_total,), in the input's hit order: 0..n-1 for the event's predicted tracks, -1 for noise.

* :func:`cluster_events`: the full-event clustering of DESIGN.md. A per-cell extractor gives the
  probability that each cell belongs to the canonical first track of what is left; its hits are
  taken, removed, and the extractor runs again, for all still-active events of the batch together.
  Labels come out in extraction order (canonical order when the extractor is right).
* :func:`dbscan_cluster`: DBSCAN (scikit-learn) on the hits' wire (x, y) and scaled z, mm.
* :func:`hough_cluster`: an iterative Hough-transform line finder (scikit-image ``hough_line``) on
  each side's (9 layers, 113 columns) top view.
* :func:`score` and :func:`format_table`: the metrics of :mod:`snemo.clustering_metrics` against
  the canonical truth, and a small text table.

A cell that the input lists twice (once per track, as the original macro writes a cell crossed by
two tracks) may go to both tracks: a track takes one listing of a cell per extraction; of several
listings it takes the one whose wirez lies nearest (in 20 mm steps) the plane z(row, column)
fitted to the other hits it takes (a straight track's z is linear along it); among listings equally
near, or without a fit (fewer than 3 such hits with z), the one nearest in input order to their
mean position (a track's hits are contiguous in the generators' files); the first listing on a tie.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from datasets.clustering import canonical_hit_track_ids, canonical_track_rank, top_pixel_index
from datasets import views
from snemo import geometry as geo
from snemo.clustering_metrics import clustering_metrics
from snemo.events import EventBatch, offsets_from_counts, ranges

DEFAULT_MAX_TRACKS = 4  # rounds of cluster_events when no count is given (the counters know 1..4)
# Chosen once by :func:`tune` on validation events: my_generator, 300 clean events of each count
# 1..4 (seeds 1001..1004). DBSCAN (no count), two grids: eps {50, 65, 80, 100} mm x z_scale {0, 0.02,
# 0.05, 0.1} x min_samples {1, 2}, then eps {65, 80, 100, 120} x z_scale {0.1, 0.2, 0.3, 0.5}. Hough
# (given the true count): distance {0.75, 0.85, 1.0, 1.2} cells x min_votes {3, 4, 5}, then
# distance {0.8, 0.85, 0.9, 0.95}.
DBSCAN_DEFAULTS = {"eps": 100.0, "min_samples": 1, "z_scale": 0.2}
HOUGH_DEFAULTS = {"distance": 0.85, "min_votes": 3}
_Z_TOLERANCE = 20.0  # mm: listings whose z residuals differ by less are told apart by input order
_EVENT_GAP = 1.0e6  # mm between events in the single DBSCAN call (far beyond any eps)


# ------------------------------------------------------------------------------------------------
# Inputs of an extractor
# ------------------------------------------------------------------------------------------------
def event_inputs(batch: EventBatch, remaining=None, *, z_channel: bool = False, radius_channel: bool = False):
    """Top views of the hits still to cluster, (n, 18, 113, C) float32.

    ``remaining``: (n_hits,) bool, hits to draw (default all). Channels, in this order: 1.0 where a
    hit lies; with ``z_channel`` wirez / 1500 mm (0 where z is missing); with ``radius_channel``
    drift radius / 22 mm. Where a cell is listed twice the larger value is kept.
    """
    n_hits = int(batch.hit_offsets[-1] - batch.hit_offsets[0])
    remaining = np.ones(n_hits, dtype=bool) if remaining is None else np.asarray(remaining, dtype=bool)
    if remaining.shape != (n_hits,):
        raise ValueError(f"remaining must have one entry per hit ({n_hits}), got shape {remaining.shape}")
    pixels, offsets, size = top_pixel_index(batch), batch.hit_offsets, views.view_size("top")
    channels = [views.scatter(pixels, offsets, size, mask=remaining)]
    if z_channel:
        z = np.where(batch.z_missing(), 0.0, batch.hits["wirez"]) / geo.TRACKER_HALF_Z
        channels.append(views.scatter(pixels, offsets, size, values=z.astype(np.float32), mask=remaining))
    if radius_channel:
        radius = batch.hits["radius"] / np.float32(geo.MAX_DRIFT_RADIUS)
        channels.append(views.scatter(pixels, offsets, size, values=radius.astype(np.float32), mask=remaining))
    return np.stack(channels, axis=-1).reshape((len(batch),) + geo.TOP_SHAPE + (len(channels),))


def first_remaining_track_image(batch: EventBatch, remaining=None) -> np.ndarray:
    """Target image (n, 18, 113) float32: 1.0 on the remaining hits of the canonical first truth track
    that still has remaining hits (a training target for every round, and the oracle of the tests)."""
    n_hits = int(batch.hit_offsets[-1] - batch.hit_offsets[0])
    remaining = np.ones(n_hits, dtype=bool) if remaining is None else np.asarray(remaining, dtype=bool)
    truth = canonical_hit_track_ids(batch)
    event = batch.hit_event_index()
    big = np.iinfo(np.int64).max
    first = np.full(len(batch), big, dtype=np.int64)
    on = remaining & (truth >= 0)
    np.minimum.at(first, event[on], truth[on])
    mask = on & (truth == first[event])
    image = views.scatter(top_pixel_index(batch), batch.hit_offsets, views.view_size("top"), mask=mask)
    return image.reshape((len(batch),) + geo.TOP_SHAPE)


def _one_listing_per_cell(claim: np.ndarray, event: np.ndarray, pixel: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``claim`` (n_hits,) bool reduced to one claimed listing per (event, cell) (module docstring rule).

    ``pixel``: per-hit cell (top-view pixel); ``z``: per-hit wirez in mm, NaN where missing.
    """
    idx = np.flatnonzero(claim)
    if len(idx) == 0:
        return claim
    key = event[idx] * geo.N_CELLS + pixel[idx]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    if counts.max() == 1:
        return claim
    single = counts[inverse.reshape(-1)] == 1
    n_events = int(event.max()) + 1
    hit_event = event[idx]
    # z expected from a plane z = a + b row + c column through the singly listed claimed hits (ridge fit).
    row, column = (pixel[idx] // geo.N_COLUMNS).astype(np.float64), (pixel[idx] % geo.N_COLUMNS).astype(np.float64)
    fit = single & np.isfinite(z[idx])
    features = np.stack([np.ones(len(idx)), row, column], axis=1)  # (k, 3)
    products = features[:, :, None] * features[:, None, :]  # (k, 3, 3)
    normal = np.zeros((n_events, 3, 3))
    np.add.at(normal, hit_event[fit], products[fit])
    rhs = np.zeros((n_events, 3))
    np.add.at(rhs, hit_event[fit], features[fit] * z[idx][fit, None])
    coefficients = np.linalg.solve(normal + 1e-3 * np.eye(3), rhs[:, :, None])[:, :, 0]  # (n_events, 3)
    usable = np.bincount(hit_event[fit], minlength=n_events) >= 3
    residual = np.abs(z[idx] - (features * coefficients[hit_event]).sum(axis=1))
    residual = np.where(usable[hit_event] & np.isfinite(residual), residual // _Z_TOLERANCE, np.inf)
    # Fallback: input position nearest the mean position of the singly listed claimed hits.
    position = idx.astype(np.float64)
    number = np.bincount(hit_event[single], minlength=n_events)
    centre = np.bincount(hit_event[single], weights=position[single], minlength=n_events) / np.maximum(number, 1)
    order = np.lexsort((idx, np.abs(position - centre[hit_event]), residual, key))
    chosen = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    out = np.zeros_like(claim)
    out[idx[chosen]] = True
    return out


def _z_or_nan(batch: EventBatch) -> np.ndarray:
    """wirez (mm) of every hit, float64, NaN where it was not measured."""
    return np.where(batch.z_missing(), np.nan, batch.hits["wirez"].astype(np.float64))


# ------------------------------------------------------------------------------------------------
# Full-event iterative clustering
# ------------------------------------------------------------------------------------------------
def cluster_events(batch: EventBatch, extract: Callable, n_tracks=None, *, threshold: float = 0.5,
                   min_hits: int = 3, max_tracks: int | None = None, make_inputs: Callable | None = None) -> np.ndarray:
    """Full-event clustering: extract the first track, remove its hits, repeat. Labels int16 (n_hits,).

    ``extract(images)``: images (m, 18, 113, C) -> (m, 18, 113) or (m, 18, 113, 1) per-cell
    probability that the cell belongs to the first remaining track in canonical order (e.g. a
    generator's ``predict``). ``make_inputs(batch_subset, remaining)``: the images of the still-active
    events' remaining hits (default :func:`event_inputs`, one channel). ``n_tracks``: (n,) predicted
    number of tracks per event (a counter's output); without it each event runs until the extractor
    finds no track. An extraction is the remaining hits whose cell probability exceeds ``threshold``,
    one listing per cell; one with fewer than ``min_hits`` hits means "no track": the event stops.
    At most ``max_tracks`` rounds (default: the largest ``n_tracks``, else 4); each round sends all
    still-active events through ``extract`` together. Hits no track takes are noise (-1); labels are
    0..k-1 in extraction order.
    """
    n_events = len(batch)
    n_hits = int(batch.hit_offsets[-1] - batch.hit_offsets[0])
    if n_tracks is None:
        rounds = DEFAULT_MAX_TRACKS if max_tracks is None else int(max_tracks)
        target = np.full(n_events, rounds, dtype=np.int64)
    else:
        target = np.asarray(n_tracks, dtype=np.int64).reshape(-1)
        if target.shape != (n_events,) or (target.size and target.min() < 0):
            raise ValueError(f"n_tracks must be {n_events} counts >= 0, got shape {target.shape}")
        rounds = int(target.max(initial=0)) if max_tracks is None else int(max_tracks)
    if min_hits < 1:
        raise ValueError(f"min_hits must be >= 1, got {min_hits}")
    make_inputs = event_inputs if make_inputs is None else make_inputs
    pixel = top_pixel_index(batch).astype(np.int64)
    z = _z_or_nan(batch)
    labels = np.full(n_hits, -1, dtype=np.int16)
    remaining = np.ones(n_hits, dtype=bool)
    active = (target > 0) & (batch.n_hits > 0)
    starts = batch.hit_offsets[:-1] - batch.hit_offsets[0]
    for round_index in range(rounds):
        sub = np.flatnonzero(active)
        if len(sub) == 0:
            break
        subset = batch.take(sub)
        hit_index = ranges(starts[sub], batch.n_hits[sub])  # (m_hits,) hit of the full batch
        local_event = subset.hit_event_index()
        sub_remaining = remaining[hit_index]
        probability = np.asarray(extract(make_inputs(subset, sub_remaining)), dtype=np.float32)
        if probability.size != len(sub) * geo.N_CELLS:
            raise ValueError(f"extract must return ({len(sub)}, 18, 113) probabilities, got shape {probability.shape}")
        hit_probability = probability.reshape(len(sub), geo.N_CELLS)[local_event, pixel[hit_index]]
        claim = _one_listing_per_cell(sub_remaining & (hit_probability > threshold), local_event, pixel[hit_index],
                                      z[hit_index])
        found = np.bincount(local_event[claim], minlength=len(sub)) >= min_hits
        take = claim & found[local_event]
        labels[hit_index[take]] = round_index
        remaining[hit_index[take]] = False
        active[sub[~found]] = False
        left = np.bincount(batch.hit_event_index()[remaining], minlength=n_events)
        active &= (round_index + 1 < target) & (left > 0)
    return labels


# ------------------------------------------------------------------------------------------------
# Label bookkeeping
# ------------------------------------------------------------------------------------------------
def canonical_labels(batch: EventBatch, labels) -> np.ndarray:
    """``labels`` (n_hits,) with each event's clusters renumbered 0..k-1 in canonical order, int16.

    Canonical order as for truth tracks (datasets.clustering): column of the cluster's hit nearest
    the foil, then its side, then mean column. -1 stays -1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    event = batch.hit_event_index()
    on = labels >= 0
    order = np.flatnonzero(on)[np.lexsort((labels[on], event[on]))]  # cluster hits grouped by (event, label)
    key = event[order] * (int(labels.max(initial=0)) + 1) + labels[order]
    new_cluster = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    cluster_event = event[order][new_cluster]
    cluster_size = np.diff(np.r_[np.flatnonzero(new_cluster), len(key)])
    hit_offsets = offsets_from_counts(np.bincount(event[on], minlength=len(batch)))
    ends = np.cumsum(cluster_size) - hit_offsets[cluster_event]  # track_split of each cluster
    grouped = EventBatch(hit_offsets, {k: batch.hits[k][order] for k in ("grid_side", "grid_layer", "grid_column")},
                         offsets_from_counts(np.bincount(cluster_event, minlength=len(batch))),
                         {"track_split": ends.astype(np.int32)})
    rank = canonical_track_rank(grouped)  # (n_clusters,)
    out = np.full(len(labels), -1, dtype=np.int16)
    out[order] = np.repeat(rank, cluster_size)
    return out


def _keep_largest(labels: np.ndarray, event: np.ndarray, n_events: int, n_tracks) -> np.ndarray:
    """Per event, the ``n_tracks`` largest clusters kept (ids 0..k-1 by size), the others noise."""
    on = labels >= 0
    key = event * (int(labels.max(initial=0)) + 1) + np.where(on, labels, 0)
    clusters, inverse, size = np.unique(key[on], return_inverse=True, return_counts=True)
    cluster_event = clusters // (int(labels.max(initial=0)) + 1)
    order = np.lexsort((clusters, -size, cluster_event))
    rank = np.empty(len(clusters), dtype=np.int64)
    first = offsets_from_counts(np.bincount(cluster_event, minlength=n_events))
    rank[order] = np.arange(len(order)) - first[cluster_event[order]]
    limit = np.full(n_events, np.iinfo(np.int64).max) if n_tracks is None else np.asarray(n_tracks, dtype=np.int64)
    cluster_rank = rank[inverse.reshape(-1)]
    out = np.full(len(labels), -1, dtype=np.int16)
    out[np.flatnonzero(on)] = np.where(cluster_rank < limit[event[on]], cluster_rank, -1)
    return out


# ------------------------------------------------------------------------------------------------
# Classical baselines
# ------------------------------------------------------------------------------------------------
def dbscan_cluster(batch: EventBatch, n_tracks=None, *, eps: float = DBSCAN_DEFAULTS["eps"],
                   min_samples: int = DBSCAN_DEFAULTS["min_samples"], z_scale: float = DBSCAN_DEFAULTS["z_scale"],
                   min_hits: int = 3, chunk: int = 2000, progress: bool = True) -> np.ndarray:
    """DBSCAN (scikit-learn) on hit coordinates: labels int16 (n_hits,), canonical order, -1 noise.

    Features, mm: the wire's x and y, and ``z_scale`` * wirez (a hit without z takes its event's
    median measured z). ``eps`` (mm) and ``min_samples`` as in ``sklearn.cluster.DBSCAN``. Clusters
    with fewer than ``min_hits`` hits become noise; with ``n_tracks`` (n,) only the event's
    ``n_tracks`` largest clusters are kept. Events are separated by far more than ``eps`` and run
    through one DBSCAN call per ``chunk`` events (progress bar on standard error).
    """
    from sklearn.cluster import DBSCAN
    from tqdm import tqdm

    event = batch.hit_event_index()
    hits = batch.hits
    z = hits["wirez"].astype(np.float64)
    missing = batch.z_missing()
    if missing.any():
        z = z.copy()
        for position in np.flatnonzero(np.bincount(event[missing], minlength=len(batch))):
            in_event = event == position
            measured = in_event & ~missing
            z[in_event & missing] = np.median(z[measured]) if measured.any() else 0.0
    features = np.stack([geo.wire_x(hits["grid_side"], hits["grid_layer"]) + event * _EVENT_GAP,
                         geo.wire_y(hits["grid_column"]), z * z_scale], axis=1)  # (n_hits, 3) mm
    raw = np.full(len(event), -1, dtype=np.int64)
    offsets = batch.hit_offsets - batch.hit_offsets[0]
    for start in tqdm(range(0, len(batch), chunk), desc="DBSCAN", unit="chunk", disable=not progress):
        a, b = int(offsets[start]), int(offsets[min(start + chunk, len(batch))])
        if b > a:
            found = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(features[a:b])
            raw[a:b] = np.where(found >= 0, found + a, -1)  # unique over the batch
    sizes = np.bincount(np.where(raw >= 0, raw, len(raw)), minlength=len(raw) + 1)
    raw = np.where((raw >= 0) & (sizes[np.where(raw >= 0, raw, len(raw))] >= min_hits), raw, -1)
    return canonical_labels(batch, _keep_largest(raw, event, len(batch), n_tracks))


def _line_hits(layer, column, theta, rho, distance):
    """Distance-mask of pixels (layer, column) near the line column cos + layer sin = rho, refit once."""
    near = np.abs(column * np.cos(theta) + layer * np.sin(theta) - rho) <= distance
    if near.sum() >= 2:
        points = np.stack([column[near], layer[near]], axis=1).astype(np.float64)
        centre = points.mean(axis=0)
        _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
        normal = vt[-1]  # unit normal of the total-least-squares line
        near = np.abs((np.stack([column, layer], axis=1) - centre) @ normal) <= distance
    return near


def hough_cluster(batch: EventBatch, n_tracks=None, *, distance: float = HOUGH_DEFAULTS["distance"],
                  min_votes: int = HOUGH_DEFAULTS["min_votes"], min_hits: int = 3,
                  max_tracks: int = DEFAULT_MAX_TRACKS, n_angles: int = 180, progress: bool = True) -> np.ndarray:
    """Iterative Hough-transform line finder on the top view: labels int16 (n_hits,), canonical order.

    Each side's top view is a (9 layers, 113 columns) image, isotropic in cell units (44 mm). Each
    round takes the strongest line of both sides' accumulators (scikit-image ``hough_line``,
    ``n_angles`` angles over [-90, 90) degrees, 1-cell distance bins), gives it the remaining hits of
    that side within ``distance`` cells of it (refitted once by least squares), one listing per
    cell, removes them and repeats: up to ``n_tracks`` (n,) lines when given, else ``max_tracks``;
    an event stops when the peak has fewer than ``min_votes`` cells or a line fewer than
    ``min_hits`` hits. Loops over events (a baseline), with a progress bar on standard error.
    """
    from skimage.transform import hough_line
    from tqdm import tqdm

    angles = np.linspace(-np.pi / 2, np.pi / 2, n_angles, endpoint=False)
    targets = (np.full(len(batch), max_tracks) if n_tracks is None else np.asarray(n_tracks, dtype=np.int64))
    offsets = batch.hit_offsets - batch.hit_offsets[0]
    side_all = batch.hits["grid_side"].astype(np.int64)
    layer_all = batch.hits["grid_layer"].astype(np.int64)
    column_all = batch.hits["grid_column"].astype(np.int64)
    z_all = _z_or_nan(batch)
    out = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for position in tqdm(range(len(batch)), desc="Hough", unit="event", disable=not progress, mininterval=1.0):
        a, b = int(offsets[position]), int(offsets[position + 1])
        side, layer, column = side_all[a:b], layer_all[a:b], column_all[a:b]
        remaining = np.ones(b - a, dtype=bool)
        cache = {}
        for track in range(int(targets[position])):
            best = None
            for s in (0, 1):
                if s not in cache:
                    on = remaining & (side == s)
                    cache[s] = (0, 0.0, 0.0)
                    if on.any():
                        image = np.zeros((geo.N_LAYERS, geo.N_COLUMNS), dtype=bool)
                        image[layer[on], column[on]] = True
                        space, _, dists = hough_line(image, theta=angles)  # (n_dists, n_angles) votes
                        peak = np.unravel_index(int(np.argmax(space)), space.shape)
                        cache[s] = (int(space[peak]), angles[peak[1]], dists[peak[0]])
                if best is None or cache[s][0] > best[0]:
                    best = cache[s] + (s,)
            votes, theta, rho, s = best
            if votes < min_votes:
                break
            on = remaining & (side == s)
            near = np.zeros(b - a, dtype=bool)
            near[on] = _line_hits(layer[on], column[on], theta, rho, distance)
            near = _one_listing_per_cell(near, np.zeros(b - a, dtype=np.int64), geo.cell_id(side, layer, column),
                                         z_all[a:b])
            if near.sum() < min_hits:
                break
            out[a:b][near] = track
            remaining &= ~near
            cache.pop(s)
    return canonical_labels(batch, out)


def tune(method: Callable, batch: EventBatch, grid: dict, n_tracks=None) -> tuple[dict, list]:
    """Choose ``method``'s keyword arguments on validation events ``batch``: every combination of ``grid``.

    ``grid``: name -> list of values; ``method(batch, n_tracks, progress=False, **values)`` -> labels.
    The best combination has the highest mean of double-majority efficiency and perfect-event
    fraction, each averaged over the numbers of tracks (efficiency alone saturates near 1 and
    cannot tell settings apart). Returns (best values, [(values, efficiency, perfect)...]).
    """
    import itertools

    names = list(grid)
    scores = []
    for combination in itertools.product(*(grid[name] for name in names)):
        values = dict(zip(names, combination))
        metrics = score(batch, method(batch, n_tracks, progress=False, **values))["by_n_tracks"]
        efficiency = float(np.nanmean([group["efficiency"] for group in metrics.values()]))
        perfect = float(np.nanmean([group["perfect_events"] for group in metrics.values()]))
        scores.append((values, efficiency, perfect))
    best = max(scores, key=lambda item: item[1] + item[2])
    return best[0], scores


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
def score(batch: EventBatch, labels) -> dict:
    """Clustering metrics (:func:`snemo.clustering_metrics.clustering_metrics`) of ``labels`` (n_hits,).

    Truth: :func:`datasets.clustering.canonical_hit_track_ids`; breakdown by ``len(track_split)``;
    the ceiling uses the top-view cell of each hit.
    """
    return clustering_metrics(canonical_hit_track_ids(batch), labels, batch.hit_offsets - batch.hit_offsets[0],
                              n_tracks=batch.n_tracks, cells=top_pixel_index(batch).astype(np.int64))


_COLUMNS = (("efficiency", "DM eff."), ("hit_purity", "purity"), ("perfect_events", "perfect"), ("ari", "ARI"),
            ("noise_as_noise", "noise->noise"))


def format_table(results: dict, group: str = "all", ceiling: bool = True) -> str:
    """Text table, rows = method, columns = double-majority efficiency, mean hit purity, perfect events,
    ARI, noise hits labelled noise (percent; "-" for NaN), for one group ("all" or a track count "2").

    ``results``: method name -> :func:`score` output. With ``ceiling`` a last row gives the ceiling
    from truth (one label per cell) of the first method's events.
    """
    rows = []
    for name, metrics in results.items():
        values = metrics["all"] if group == "all" else metrics["by_n_tracks"].get(group)
        if values is not None:
            rows.append((name, values))
    if ceiling and rows and "ceiling" in rows[0][1]:
        rows.append(("ceiling (1 label/cell)", rows[0][1]["ceiling"]))
    width = max([len(name) for name, _ in rows] + [8])
    title = "all events" if group == "all" else f"{group} tracks"
    lines = [f"{title:<{width}} " + " ".join(f"{label:>12}" for _, label in _COLUMNS) + f"{'events':>8}"]
    for name, values in rows:
        cells = ["-" if values[key] is None or np.isnan(values[key]) else f"{100 * values[key]:.2f}%"
                 for key, _ in _COLUMNS]
        lines.append(f"{name:<{width}} " + " ".join(f"{cell:>12}" for cell in cells) + f"{values['n_events']:>8}")
    return "\n".join(lines)
