"""Clusters refined by their fitted lines: any clustering's hits re-associated with the 3D lines of its clusters.

:func:`refine_by_lines` fits each cluster's line to its drift circles and z
(:func:`datasets.line_fit.fit_lines`) and gives every hit of the event, noise included, to the
nearest line on its side within tolerance, else to noise. The Hough finder
(:mod:`clustering_hough`) ends with it, and ``reconstruct.py`` applies it to a generator's
clusters; :mod:`clustering_baselines` and :mod:`clustering` re-export it.
"""

from __future__ import annotations

import numpy as np

from clustering import _one_listing_per_cell, _z_or_nan, canonical_labels, cluster_offsets
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts

__all__ = ["REFINE_DEFAULTS", "SPREAD_TOLERANCE", "group_middles", "refine_by_lines"]

# A hit joins a cluster's line within these distances, cell units (11 mm between its drift circle and the
# top-view line, 44 mm between its z and the z line: the line fit's own outlier limits); two rounds.
REFINE_DEFAULTS = {"top_tolerance": 0.25, "z_tolerance": 1.0, "rounds": 2}
SPREAD_TOLERANCE = 4.0  # a line's tolerance is at least this many times the robust spread of its own hits
MAX_GAP = 3.5  # cells along a line between successive hits of one track (two missing hits and slack)


def group_middles(group: np.ndarray, values: np.ndarray, n_groups: int):
    """Per group, the lower and upper middle of its sorted ``values`` and its size: (low, high, counts),
    float64, float64, int64, each (n_groups,); low = high = 0 for an empty group (the median is
    (low + high) / 2)."""
    counts = np.bincount(group, minlength=n_groups)
    if len(values) == 0:
        return np.zeros(n_groups), np.zeros(n_groups), counts
    ordered = np.asarray(values, dtype=np.float64)[np.lexsort((values, group))]
    start = offsets_from_counts(counts)[:-1]
    low = ordered[np.minimum(start + (counts - 1) // 2, len(ordered) - 1)]
    high = ordered[np.minimum(start + counts // 2, len(ordered) - 1)]
    return np.where(counts > 0, low, 0.0), np.where(counts > 0, high, 0.0), counts


def _robust_sigma(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, 1.4826 x the (lower) median of ``values`` (absolute residuals): their spread, blind to a
    few outliers. float64 (n_groups,), 0 for an empty group."""
    return 1.4826 * group_middles(group, values, n_groups)[0]


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
    not straight (curved by a magnetic field, kinked) keeps its hits; one listing per cell and cluster.
    A hit must also lie in the line's run of fitting hits (whoever holds them) with no step above
    :data:`MAX_GAP` cells, the run that holds most of its own: a cell that the line meets far beyond
    the track's end is not the track's. Where a cluster's wires lie on one line (a track along a
    layer, a column, a diagonal), the line and its mirror image about the wires
    (:func:`datasets.line_fit.mirror_lines`) fit them alike: the one that meets more hits is kept, so
    a track that leaves its layer at the end gets its last hits back. A cluster whose line keeps
    fewer than half its hits (two tracks in one cluster) keeps those of its hits that no other took.
    ``rounds`` times. Vectorised.
    """
    from datasets.line_fit import fit_lines, hit_coordinates, mirror_lines
    from snemo.events import ranges

    labels = np.asarray(canonical_labels(batch, labels), dtype=np.int64)
    event = batch.hit_event_index()
    n_hits = len(labels)
    u, c, z, radius, with_z = hit_coordinates(batch)
    side = batch.hits["grid_side"].astype(np.int64)
    cell = geo.cell_id(side, batch.hits["grid_layer"].astype(np.int64), batch.hits["grid_column"].astype(np.int64))
    z_mm = _z_or_nan(batch)
    for _ in range(rounds):
        per_event, first = cluster_offsets(event, labels, len(batch))
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
        candidate = (size[pair_line] >= 2) & (line_side[pair_line] == side[pair_hit])
        pairs = (pair_line, u[pair_hit], c[pair_hit], radius[pair_hit], z[pair_hit], with_z[pair_hit],
                 labels[pair_hit] == pair_label)
        owned = (line_of[on], u[on], c[on], radius[on], z[on], with_z[on])
        limits = _line_limits(lines, owned, top_tolerance, z_tolerance, n_lines)
        near, cost = _near_pairs(lines, pairs, limits, candidate)
        # wires on one line fit the track and its mirror image alike: keep the image that meets more hits
        mirror = mirror_lines(lines, *owned[:3], *owned[4:], n_lines)
        mirror_near, mirror_cost = _near_pairs(mirror, pairs, limits, candidate)
        flip = (np.bincount(pair_line[mirror_near], minlength=n_lines)
                > np.bincount(pair_line[near], minlength=n_lines))[pair_line]
        near, cost = np.where(flip, mirror_near, near), np.where(flip, mirror_cost, cost)
        cost = np.where(near, cost, np.inf)
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


def _line_limits(lines: dict, owned: tuple, top_tolerance: float, z_tolerance: float, n_lines: int):
    """Each line's (top, z) tolerances, cell units, float64 (n_lines,) each: the given ones, or
    :data:`SPREAD_TOLERANCE` times the robust spread of its own hits' distances if larger. ``owned`` =
    (line, u, c, radius, z, with_z) of the lines' own hits."""
    from datasets.line_fit import hit_residuals

    own_line, own_u, own_c, own_radius, own_z, own_with_z = owned
    own_top, own_dz = hit_residuals(lines, own_line, own_u, own_c, own_radius, own_z)
    top_limit = np.maximum(top_tolerance, SPREAD_TOLERANCE * _robust_sigma(own_line, own_top, n_lines))
    z_limit = np.maximum(z_tolerance, SPREAD_TOLERANCE * _robust_sigma(own_line[own_with_z], own_dz[own_with_z],
                                                                       n_lines))
    return top_limit, z_limit


def _near_pairs(lines: dict, pairs: tuple, limits: tuple, candidate) -> tuple[np.ndarray, np.ndarray]:
    """Which (hit, line) pairs are near, and their cost: bool and float64 arrays (n_pairs,).

    ``pairs`` = (line, u, c, radius, z, with_z, own) of every pair (``own``: the hit is the line's
    own), ``limits`` = (top, z) tolerances per line (:func:`_line_limits`), cell units,
    ``candidate`` (n_pairs,) the pairs that may be near at all. Near: a candidate within both
    limits, and in the run of such hits along the line (no step above :data:`MAX_GAP`, whoever holds
    them) that holds most of the line's own hits. Cost: top distance over its limit, plus z distance
    over its limit where both have z.
    """
    from datasets.line_fit import hit_residuals

    top_limit, z_limit = limits
    line, u, c, radius, z, with_z, own = pairs
    top, dz = hit_residuals(lines, line, u, c, radius, z)
    use_z = with_z & lines["posed_z"][line]
    near = candidate & (top <= top_limit[line]) & (~use_z | (dz <= z_limit[line]))
    near &= _in_main_run(line, _along(lines, line, u, c), near, own, len(top_limit))
    return near, top / top_limit[line] + np.where(use_z, dz / z_limit[line], 0.0)


def _along(lines: dict, line, u, c) -> np.ndarray:
    """Position of each wire's foot along its line (cell units), float64 (n,)."""
    return (u - lines["mean_u"][line]) * lines["dir_u"][line] + (c - lines["mean_c"][line]) * lines["dir_c"][line]


def _in_main_run(group, along, use, weight, n_groups: int) -> np.ndarray:
    """Per element: is it a ``use`` element of its group's main run? bool (n,).

    The ``use`` elements of each group, sorted by position ``along`` (cell units), split into runs
    wherever a step exceeds :data:`MAX_GAP`; the main run of a group holds most ``weight`` (bool)
    elements (the first on a tie, none without any).
    """
    inside = np.zeros(len(group), dtype=bool)
    picked = np.flatnonzero(use)
    if len(picked) == 0:
        return inside
    order = picked[np.lexsort((along[picked], group[picked]))]
    ordered_group, ordered_along = group[order], along[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ordered_group[1:] != ordered_group[:-1]) | (np.diff(ordered_along) > MAX_GAP)
    run = np.cumsum(starts) - 1
    run_weight = np.bincount(run, weight[order].astype(np.int64))
    run_group = ordered_group[starts]
    most = np.zeros(n_groups, np.int64)
    np.maximum.at(most, run_group, run_weight)
    main = np.full(n_groups, len(run_group), np.int64)
    best = (run_weight == most[run_group]) & (run_weight > 0)
    np.minimum.at(main, run_group[best], np.flatnonzero(best))
    inside[order] = run == main[ordered_group]
    return inside
