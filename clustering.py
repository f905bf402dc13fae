"""Clustering task, shared code: full-event iterative clustering, classical baselines, scoring.

Every clusterer takes an :class:`~snemo.events.EventBatch` and returns per-hit labels, int16
(n_hits_total,), in the input's hit order: 0..n-1 for the event's predicted tracks, -1 for noise.

* :func:`cluster_events`: the full-event clustering of DESIGN.md. A per-cell extractor gives the
  probability that each cell belongs to the canonical first track of what is left; its hits are
  taken, removed, and the extractor runs again, for all still-active events of the batch together.
  Labels come out in extraction order (canonical order when the extractor is right).
* :func:`dbscan_cluster`, :func:`hough_cluster`, :func:`tune`: the classical baselines (DBSCAN
  on hit coordinates, an iterative Hough-transform line finder on the top view) and their tuning,
  defined in :mod:`clustering_baselines` and re-exported here.
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
_Z_TOLERANCE = 20.0  # mm: listings whose z residuals differ by less are told apart by input order


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
def cluster_offsets(event: np.ndarray, labels: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of canonical ``labels`` (n_hits,) (0..k-1 per event, -1 noise; ``event`` each hit's
    event): (per_event, first), int64 (n_events,) each: how many clusters each event has, and the flat
    index of its first cluster (cluster ``label`` of event ``e`` is ``first[e] + label``)."""
    per_event = np.zeros(n_events, np.int64)
    np.maximum.at(per_event, event, np.asarray(labels, dtype=np.int64) + 1)
    return per_event, offsets_from_counts(per_event)[:-1]


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


# The classical baselines live in clustering_baselines.py (which imports this module); their public
# names are served from here on first use, so ``clustering.dbscan_cluster`` and
# ``from clustering import hough_cluster`` keep working without an import cycle.
_BASELINE_NAMES = ("DBSCAN_DEFAULTS", "HOUGH_DEFAULTS", "REFINE_DEFAULTS", "dbscan_cluster", "hough_cluster",
                   "refine_by_lines", "tune")


def __getattr__(name):
    """Module attribute hook: the baseline names of :mod:`clustering_baselines`, imported on first use."""
    if name in _BASELINE_NAMES:
        import clustering_baselines

        return getattr(clustering_baselines, name)
    raise AttributeError(f"module 'clustering' has no attribute '{name}'")
