"""Classical clustering baselines: DBSCAN on hit coordinates and an iterative Hough-transform line finder.

Both take an :class:`~snemo.events.EventBatch` and return per-hit labels, int16 (n_hits_total,), in
the input's hit order: 0..n-1 for the event's clusters in canonical order, -1 for noise, as every
clusterer of :mod:`clustering`, which re-exports the public names below (``clustering.dbscan_cluster``
and friends keep working).

* :func:`dbscan_cluster`: DBSCAN (scikit-learn) on the hits' wire (x, y) and scaled z, mm.
* :func:`hough_cluster`: an iterative Hough-transform line finder on each side's (9 layers, 113
  columns) top view, vectorised over events (:mod:`clustering_hough`, scikit-image's ``hough_line``
  accumulator), its clusters then refined by their fitted lines.
* :func:`refine_by_lines`: any clustering's hits re-associated with the 3D lines fitted to its
  clusters (drift circles and z, :mod:`datasets.line_fit`); the Hough finder ends with it.
* :func:`tune`: grid search of a baseline's settings on validation events.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from clustering import _one_listing_per_cell, _z_or_nan, canonical_labels, score
from clustering_hough import HOUGH_DEFAULTS, hough_cluster
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts

__all__ = ["DBSCAN_DEFAULTS", "HOUGH_DEFAULTS", "REFINE_DEFAULTS", "dbscan_cluster", "hough_cluster", "refine_by_lines",
           "tune"]

# Chosen once by :func:`tune` on validation events: my_generator, 300 clean events of each count
# 1..4 (seeds 1001..1004). DBSCAN (no count), two grids: eps {50, 65, 80, 100} mm x z_scale {0, 0.02,
# 0.05, 0.1} x min_samples {1, 2}, then eps {65, 80, 100, 120} x z_scale {0.1, 0.2, 0.3, 0.5}. Hough
# (given the true count): see clustering_hough.HOUGH_DEFAULTS.
DBSCAN_DEFAULTS = {"eps": 100.0, "min_samples": 1, "z_scale": 0.2}
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



def _event_median(event: np.ndarray, values: np.ndarray, use: np.ndarray, n_events: int) -> np.ndarray:
    """Per event, the median of ``values`` over the hits where ``use`` (0.0 for an event without any)."""
    order = np.lexsort((values[use], event[use]))
    ordered = values[use][order]
    counts = np.bincount(event[use], minlength=n_events)
    start = offsets_from_counts(counts)[:-1]
    low = ordered[np.minimum(start + (counts - 1) // 2, len(ordered) - 1)] if len(ordered) else np.zeros(n_events)
    high = ordered[np.minimum(start + counts // 2, len(ordered) - 1)] if len(ordered) else np.zeros(n_events)
    return np.where(counts > 0, 0.5 * (low + high), 0.0)


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
        z = np.where(missing, _event_median(event, z, ~missing, len(batch))[event], z)
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
        if n_lines == 0:  # no cluster anywhere: every hit stays noise
            break
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
