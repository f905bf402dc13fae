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
  clusters (:mod:`clustering_refit`); the Hough finder ends with it.
* :func:`tune`: grid search of a baseline's settings on validation events.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from clustering import canonical_labels, score
from clustering_hough import HOUGH_DEFAULTS, hough_cluster
from clustering_refit import REFINE_DEFAULTS, group_middles, refine_by_lines
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts

__all__ = ["DBSCAN_DEFAULTS", "HOUGH_DEFAULTS", "REFINE_DEFAULTS", "dbscan_cluster", "hough_cluster", "refine_by_lines",
           "tune"]

# Chosen once by :func:`tune` on validation events: my_generator, 300 clean events of each count
# 1..4 (seeds 1001..1004). DBSCAN (no count), two grids: eps {50, 65, 80, 100} mm x z_scale {0, 0.02,
# 0.05, 0.1} x min_samples {1, 2}, then eps {65, 80, 100, 120} x z_scale {0.1, 0.2, 0.3, 0.5}. Hough
# (given the true count): see clustering_hough.HOUGH_DEFAULTS.
DBSCAN_DEFAULTS = {"eps": 100.0, "min_samples": 1, "z_scale": 0.2}
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
        low, high, measured = group_middles(event[~missing], z[~missing], len(batch))
        median = np.where(measured > 0, 0.5 * (low + high), 0.0)  # the event's median measured z
        z = np.where(missing, median[event], z)
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
