"""Iterative Hough-transform line finder on the top view, vectorised over events.

Each side of an event is a (9 layers, 113 columns) binary image, isotropic in cell units (44 mm).
The accumulator is scikit-image's ``hough_line`` (same angles, 1-cell distance bins, the same
rounding and peak order; ``tests/test_clustering_hough.py`` checks the peaks against it), computed
for blocks of images at once (one ``np.bincount`` of the votes per block of about 190 images,
32 MB of counts): no loop over events or hits, only over those blocks and over the rounds of the
iteration (one track per round). :mod:`clustering_baselines` re-exports
:func:`hough_cluster`, the clusterer built on it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from clustering import DEFAULT_MAX_TRACKS, _one_listing_per_cell, _z_or_nan, canonical_labels
from clustering_refit import refine_by_lines
from snemo import geometry as geo
from snemo.events import EventBatch

__all__ = ["HOUGH_DEFAULTS", "RHO_OFFSET", "hough_angles", "hough_cluster", "hough_peaks"]

# Chosen once by clustering_baselines.tune on validation events (my_generator, 300 clean events of each
# count 1..4, seeds 1001..1004), given the true count: distance {0.75, 0.85, 1.0, 1.2} cells x
# min_votes {3, 4, 5}, then distance {0.8, 0.85, 0.9, 0.95}.
HOUGH_DEFAULTS = {"distance": 0.85, "min_votes": 3}
RHO_OFFSET = math.ceil(math.hypot(geo.N_LAYERS, geo.N_COLUMNS))  # hough_line's distance offset, cells
_IMAGE = geo.N_LAYERS * geo.N_COLUMNS
_ACCUMULATOR_BINS = 1 << 22  # accumulator bins filled at once (32 MB of counts): images go in blocks of this


def hough_angles(n_angles: int = 180) -> np.ndarray:
    """``n_angles`` line-normal angles over [-pi/2, pi/2), radians (scikit-image's default set)."""
    return np.linspace(-np.pi / 2, np.pi / 2, n_angles, endpoint=False)


def _bin_table(angles: np.ndarray) -> np.ndarray:
    """(1017, A) int64: the accumulator bin (distance bin x A + angle index) of each top-view pixel
    (layer x 113 + column) at each angle, distances rounded half away from zero as hough_line does."""
    row, col = np.divmod(np.arange(_IMAGE), geo.N_COLUMNS)
    rho = col[:, None] * np.cos(angles) + row[:, None] * np.sin(angles)  # (pixels, A) cells
    bins = np.trunc(rho + np.where(rho > 0.0, 0.5, -0.5)).astype(np.int64) + RHO_OFFSET
    return bins * len(angles) + np.arange(len(angles))


@functools.lru_cache(maxsize=8)
def _accumulator_table(angles: tuple) -> tuple[np.ndarray, int, int]:
    """(table, low, bins) of :func:`_bin_table` for ``angles`` (a tuple, radians), made once per angle set:
    ``table`` (1017, A) int64 the bin minus ``low`` (the lowest distance bin any pixel reaches, x A),
    ``bins`` the (distance, angle) bins a top view can reach."""
    table = _bin_table(np.asarray(angles, dtype=np.float64))
    low = int(table.min() - table.min() % len(angles))
    table = table - low
    table.flags.writeable = False
    return table, low, int(table.max()) + 1


def hough_peaks(group, layer, column, n_groups: int, angles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The strongest line of each image: (votes int64, angle index int64, distance int64), each (n_groups,).

    ``group`` (n,): the image of each pixel, 0..n_groups-1; ``layer``, ``column`` (n,): its row and
    column in the (9, 113) top view (a pixel listed twice counts once, as in a binary image).
    ``angles`` (A,) radians. A line is column cos(angle) + layer sin(angle) = distance (cells); its
    votes are the pixels whose rounded distance equals it. Ties go to the smallest distance, then
    the smallest angle index (``np.argmax`` on hough_line's (distance, angle) accumulator). An
    image without pixels gets 0 votes, angle 0 and distance 0.
    """
    angles = np.asarray(angles, dtype=np.float64)
    n_angles = len(angles)
    votes = np.zeros(n_groups, dtype=np.int64)
    angle = np.zeros(n_groups, dtype=np.int64)
    distance = np.zeros(n_groups, dtype=np.int64)
    pixel = np.unique((np.asarray(group, dtype=np.int64) * geo.N_LAYERS + layer) * geo.N_COLUMNS + column)
    if len(pixel) == 0:
        return votes, angle, distance
    image, cell = np.divmod(pixel, _IMAGE)
    table, low, per_image = _accumulator_table(tuple(angles.tolist()))  # (1017, A) bins from low
    present, rank = np.unique(image, return_inverse=True)  # the images with pixels, in order
    block = max(1, _ACCUMULATOR_BINS // per_image)
    starts = np.arange(0, len(present), block)
    bounds = np.searchsorted(rank, np.r_[starts, len(present)])
    for first, lo, hi in zip(starts, bounds[:-1], bounds[1:]):  # blocks of images, not events
        n_block = min(block, len(present) - first)
        key = (rank[lo:hi] - first)[:, None] * per_image + table[cell[lo:hi]]  # (pixels, A)
        accumulator = np.bincount(key.ravel(), minlength=n_block * per_image).reshape(n_block, per_image)
        best = accumulator.argmax(axis=1)  # the first maximum: smallest distance, then angle
        images = present[first:first + n_block]
        votes[images] = accumulator[np.arange(n_block), best]
        best += low
        angle[images] = best % n_angles
        distance[images] = best // n_angles - RHO_OFFSET
    return votes, angle, distance


def _near_line(event, layer, column, on, theta, rho, distance: float, n_events: int) -> np.ndarray:
    """Hits of ``on`` within ``distance`` cells of their event's line (``theta``, ``rho`` per event),
    then of that line refitted once by total least squares to those hits (events with >= 2)."""
    c, l = column.astype(np.float64), layer.astype(np.float64)
    near = on & (np.abs(c * np.cos(theta[event]) + l * np.sin(theta[event]) - rho[event]) <= distance)
    where = event[near]
    count = np.bincount(where, minlength=n_events)
    refit = count >= 2
    n = np.maximum(count, 1)
    mean_c = np.bincount(where, c[near], n_events) / n
    mean_l = np.bincount(where, l[near], n_events) / n
    dc, dl = c[near] - mean_c[where], l[near] - mean_l[where]
    scatter = np.empty((n_events, 2, 2))
    scatter[:, 0, 0] = np.bincount(where, dc * dc, n_events)
    scatter[:, 1, 1] = np.bincount(where, dl * dl, n_events)
    scatter[:, 0, 1] = scatter[:, 1, 0] = np.bincount(where, dc * dl, n_events)
    normal = np.linalg.eigh(scatter)[1][:, :, 0]  # (n_events, 2): the direction of least spread
    refitted = on & (np.abs((c - mean_c[event]) * normal[event, 0] + (l - mean_l[event]) * normal[event, 1])
                     <= distance)
    return np.where(refit[event], refitted, near)


def _cluster_chunk(batch: EventBatch, targets: np.ndarray, *, distance: float, min_votes: int, min_hits: int,
                   angles: np.ndarray) -> np.ndarray:
    """Raw Hough labels (int64 (n_hits,), -1 unassigned) of one chunk of events, all events at once."""
    n = len(batch)
    event = batch.hit_event_index()
    side = batch.hits["grid_side"].astype(np.int64)
    layer = batch.hits["grid_layer"].astype(np.int64)
    column = batch.hits["grid_column"].astype(np.int64)
    cell = geo.cell_id(side, layer, column)
    z = _z_or_nan(batch)
    out = np.full(len(event), -1, dtype=np.int64)
    remaining = np.ones(len(event), dtype=bool)
    active = (targets > 0) & (batch.n_hits > 0)
    votes = np.zeros((n, 2), dtype=np.int64)
    angle = np.zeros((n, 2), dtype=np.int64)
    rho = np.zeros((n, 2), dtype=np.int64)
    stale = np.ones((n, 2), dtype=bool)  # the side's peak must be recomputed (it lost hits)
    rows = np.arange(n)
    for track in range(int(targets.max(initial=0))):
        active &= targets > track
        if not active.any():
            break
        need = stale & active[:, None]
        pick = remaining & need[event, side]
        found = hough_peaks(event[pick] * 2 + side[pick], layer[pick], column[pick], 2 * n, angles)
        for store, value in zip((votes, angle, rho), found):
            store[need] = value.reshape(n, 2)[need]
        stale &= ~need
        chosen = (votes[:, 1] > votes[:, 0]).astype(np.int64)  # side 0 unless side 1 has more votes
        active &= votes[rows, chosen] >= min_votes
        on = remaining & active[event] & (side == chosen[event])
        near = _near_line(event, layer, column, on, angles[angle[rows, chosen]], rho[rows, chosen].astype(np.float64),
                          distance, n)
        near = _one_listing_per_cell(near, event, cell, z)
        active &= np.bincount(event[near], minlength=n) >= min_hits
        take = near & active[event]
        out[take] = track
        remaining &= ~take
        stale[rows[active], chosen[active]] = True
    return out


def hough_cluster(batch: EventBatch, n_tracks=None, *, distance: float = HOUGH_DEFAULTS["distance"],
                  min_votes: int = HOUGH_DEFAULTS["min_votes"], min_hits: int = 3,
                  max_tracks: int = DEFAULT_MAX_TRACKS, n_angles: int = 180, chunk: int = 1024,
                  progress: bool = True, refine: bool = True) -> np.ndarray:
    """Iterative Hough-transform line finder on the top view: labels int16 (n_hits,), canonical order.

    Each round takes the strongest line of both sides' accumulators (:func:`hough_peaks`, ``n_angles``
    angles over [-90, 90) degrees, 1-cell distance bins; side 0 on a tie), gives it the remaining
    hits of that side within ``distance`` cells of it (refitted once by least squares), one listing
    per cell, removes them and repeats: up to ``n_tracks`` (n,) lines when given, else
    ``max_tracks``; an event stops when the peak has fewer than ``min_votes`` cells or a line fewer
    than ``min_hits`` hits. All events of a ``chunk`` go through each round together (progress bar on
    standard error, per chunk). With ``refine`` (default), the clusters then go through
    :func:`clustering_refit.refine_by_lines`: fitted to their drift circles and z, every hit
    re-associated with the nearest line or made noise. Labels: 0..k-1 per event, -1 noise.
    """
    from tqdm import tqdm

    angles = hough_angles(n_angles)
    targets = np.full(len(batch), max_tracks) if n_tracks is None else np.asarray(n_tracks, dtype=np.int64)
    offsets = batch.hit_offsets - batch.hit_offsets[0]
    out = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for start in tqdm(range(0, len(batch), chunk), desc="Hough", unit="chunk", disable=not progress):
        stop = min(start + chunk, len(batch))
        out[offsets[start]:offsets[stop]] = _cluster_chunk(batch[start:stop], targets[start:stop], distance=distance,
                                                           min_votes=min_votes, min_hits=min_hits, angles=angles)
    return refine_by_lines(batch, out) if refine else canonical_labels(batch, out)
