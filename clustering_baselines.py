"""Classical clustering baselines: DBSCAN on hit coordinates and an iterative Hough-transform line finder.

Both take an :class:`~snemo.events.EventBatch` and return per-hit labels, int16 (n_hits_total,), in
the input's hit order: 0..n-1 for the event's clusters in canonical order, -1 for noise, as every
clusterer of :mod:`clustering`, which re-exports the public names below (``clustering.dbscan_cluster``
and friends keep working).

* :func:`dbscan_cluster`: DBSCAN (scikit-learn) on the hits' wire (x, y) and scaled z, mm.
* :func:`hough_cluster`: an iterative Hough-transform line finder (scikit-image ``hough_line``) on
  each side's (9 layers, 113 columns) top view, its clusters then refined by their fitted lines.
* :func:`refine_by_lines`: any clustering's hits re-associated with the 3D lines fitted to its
  clusters (drift circles and z, :mod:`datasets.line_fit`); the Hough finder ends with it.
* :func:`tune`: grid search of a baseline's settings on validation events.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from clustering import DEFAULT_MAX_TRACKS, _one_listing_per_cell, _z_or_nan, canonical_labels, score
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts

__all__ = ["DBSCAN_DEFAULTS", "HOUGH_DEFAULTS", "REFINE_DEFAULTS", "dbscan_cluster", "hough_cluster", "refine_by_lines",
           "tune"]

# Chosen once by :func:`tune` on validation events: my_generator, 300 clean events of each count
# 1..4 (seeds 1001..1004). DBSCAN (no count), two grids: eps {50, 65, 80, 100} mm x z_scale {0, 0.02,
# 0.05, 0.1} x min_samples {1, 2}, then eps {65, 80, 100, 120} x z_scale {0.1, 0.2, 0.3, 0.5}. Hough
# (given the true count): distance {0.75, 0.85, 1.0, 1.2} cells x min_votes {3, 4, 5}, then
# distance {0.8, 0.85, 0.9, 0.95}.
DBSCAN_DEFAULTS = {"eps": 100.0, "min_samples": 1, "z_scale": 0.2}
HOUGH_DEFAULTS = {"distance": 0.85, "min_votes": 3}
# A hit joins a cluster's line within these distances, cell units (11 mm between its drift circle and the
# top-view line, 44 mm between its z and the z line: the line fit's own outlier limits); two rounds.
REFINE_DEFAULTS = {"top_tolerance": 0.25, "z_tolerance": 1.0, "rounds": 2}
SPREAD_TOLERANCE = 4.0  # a line's tolerance is at least this many times the robust spread of its own hits
_EVENT_GAP = 1.0e6  # mm between events in the single DBSCAN call (far beyond any eps)


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
                  max_tracks: int = DEFAULT_MAX_TRACKS, n_angles: int = 180, progress: bool = True,
                  refine: bool = True) -> np.ndarray:
    """Iterative Hough-transform line finder on the top view: labels int16 (n_hits,), canonical order.

    Each side's top view is a (9 layers, 113 columns) image, isotropic in cell units (44 mm). Each
    round takes the strongest line of both sides' accumulators (scikit-image ``hough_line``,
    ``n_angles`` angles over [-90, 90) degrees, 1-cell distance bins), gives it the remaining hits of
    that side within ``distance`` cells of it (refitted once by least squares), one listing per
    cell, removes them and repeats: up to ``n_tracks`` (n,) lines when given, else ``max_tracks``;
    an event stops when the peak has fewer than ``min_votes`` cells or a line fewer than
    ``min_hits`` hits. Loops over events (a baseline), with a progress bar on standard error.
    With ``refine`` (default), the clusters then go through :func:`refine_by_lines`: fitted to
    their drift circles and z, every hit re-associated with the nearest line or made noise.
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
    return refine_by_lines(batch, out) if refine else canonical_labels(batch, out)


def _robust_sigma(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, 1.4826 x the median of ``values`` (absolute residuals): their spread, blind to a
    few outliers. float64 (n_groups,), 0 for an empty group."""
    if len(values) == 0:
        return np.zeros(n_groups)
    order = np.lexsort((values, group))
    counts = np.bincount(group, minlength=n_groups)
    middle = offsets_from_counts(counts)[:-1] + (counts - 1) // 2
    return np.where(counts > 0, 1.4826 * values[order][np.minimum(middle, len(values) - 1)], 0.0)


def refine_by_lines(batch: EventBatch, labels, *, top_tolerance: float = REFINE_DEFAULTS["top_tolerance"],
                    z_tolerance: float = REFINE_DEFAULTS["z_tolerance"],
                    rounds: int = REFINE_DEFAULTS["rounds"]) -> np.ndarray:
    """Clusters refitted and hits re-associated: labels int16 (n_hits,), canonical order, -1 noise.

    ``labels`` (n_hits,): any clustering of ``batch`` (-1 noise). Each cluster of 2 or more hits
    gets the 3D line of :func:`datasets.line_fit.fit_lines` (drift circles, z; robust to a few
    foreign hits); every hit of the event, noise included, then goes to the cluster on its side
    whose line passes nearest (distances in cell units: drift circle to top-view line over its
    tolerance, plus z to z line over its tolerance when both exist) if it is within both, else to
    noise. A line's tolerances are ``top_tolerance`` and ``z_tolerance``, or :data:`SPREAD_TOLERANCE`
    times the robust spread (1.4826 x median) of its own hits' distances if larger: a track that is
    not straight (curved by a magnetic field, kinked) keeps its hits; one listing per cell and cluster. A cluster whose line keeps fewer
    than half its hits (two tracks in one cluster) keeps those of its hits that no other took.
    ``rounds`` times. Vectorised.
    """
    from datasets.line_fit import fit_lines, hit_coordinates, hit_residuals
    from snemo.events import ranges

    labels = np.asarray(canonical_labels(batch, labels), dtype=np.int64)
    event = batch.hit_event_index()
    n_hits = len(labels)
    u, c, z, radius, with_z = hit_coordinates(batch)
    side = batch.hits["grid_side"].astype(np.int64)
    cell = geo.cell_id(side, batch.hits["grid_layer"].astype(np.int64), batch.hits["grid_column"].astype(np.int64))
    z_mm = _z_or_nan(batch)
    for _ in range(rounds):
        per_event = np.zeros(len(batch), np.int64)
        np.maximum.at(per_event, event, labels + 1)  # clusters 0..k-1 of each event
        first = offsets_from_counts(per_event)[:-1]
        n_lines = int(per_event.sum())
        on = labels >= 0
        line_of = first[event] + labels
        size = np.bincount(line_of[on], minlength=n_lines)
        lines = fit_lines(line_of[on], u[on], c[on], radius[on], z[on], with_z[on], n_lines, cross_collinear=True)
        line_side = (2 * np.bincount(line_of[on], side[on], n_lines) >= size).astype(np.int64)
        pair_hit = np.repeat(np.arange(n_hits), per_event[event])  # every hit against every cluster of its event
        pair_label = ranges(np.zeros(n_hits, np.int64), per_event[event])
        pair_line = first[event[pair_hit]] + pair_label
        # each line's own tolerances: wider for a track that is not straight (curved in a magnetic field)
        own_top, own_z = hit_residuals(lines, line_of[on], u[on], c[on], radius[on], z[on])
        own_z_ok = with_z[on]
        top_limit = np.maximum(top_tolerance, SPREAD_TOLERANCE * _robust_sigma(line_of[on], own_top, n_lines))
        z_limit = np.maximum(z_tolerance, SPREAD_TOLERANCE * _robust_sigma(line_of[on][own_z_ok], own_z[own_z_ok],
                                                                           n_lines))
        top, dz = hit_residuals(lines, pair_line, u[pair_hit], c[pair_hit], radius[pair_hit], z[pair_hit])
        use_z = with_z[pair_hit] & lines["posed_z"][pair_line]
        top_limit, z_limit = top_limit[pair_line], z_limit[pair_line]
        near = ((size[pair_line] >= 2) & (line_side[pair_line] == side[pair_hit]) & (top <= top_limit)
                & (~use_z | (dz <= z_limit)))
        cost = np.where(near, top / top_limit + np.where(use_z, dz / z_limit, 0.0), np.inf)
        best = np.full(n_hits, np.inf)
        np.minimum.at(best, pair_hit, cost)
        chosen = near & (cost == best[pair_hit])
        new = np.full(n_hits, -1, np.int64)
        new[pair_hit[chosen]] = pair_label[chosen]  # ties: either cluster
        # a cluster whose line fits few of its hits (two tracks in one) keeps its free hits
        left = np.bincount(first[event[new >= 0]] + new[new >= 0], minlength=n_lines)
        own = np.maximum(line_of, 0)
        lost = on & (new < 0) & (2 * left[own] < size[own])
        new[lost] = labels[lost]
        keep = _one_listing_per_cell(new >= 0, first[event] + np.maximum(new, 0), cell, z_mm)
        labels = np.asarray(canonical_labels(batch, np.where(keep, new, -1)), dtype=np.int64)
    return labels.astype(np.int16)


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
