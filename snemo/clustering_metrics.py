"""Clustering metrics, defined once (DESIGN.md, Metrics), re-exported by :mod:`snemo.metrics`.

A clustering gives every hit of an event a predicted cluster id (int, -1 = noise); the truth gives
every hit its track id (int, -1 = noise hit). Ids are local to an event. Everything is vectorised
over whole batches (flat per-hit arrays plus event offsets; one ``np.unique`` over (event, truth,
prediction) keys, no loop per event or per hit).

Each true track is matched to the predicted cluster (id >= 0) holding most of its hits (ties: the
smallest cluster id); a track whose hits are all predicted noise has no match.

* ``hit_efficiency`` of a track: fraction of its hits in the matched cluster (0 without a match);
* ``hit_purity`` of a track: fraction of the matched cluster's hits (truth-noise hits included)
  that belong to the track (no value without a match);
* a track is *found* when both exceed 50 % (double majority, as in the TrackML score); a cluster
  can then be the match of at most one found track.

Aggregated fields (:func:`clustering_metrics`), over all events (``"all"``) and per number of true
tracks (``"by_n_tracks"``, keys "1", "2", ...):

* ``n_events``, ``n_true_tracks``, ``n_predicted_clusters``, ``n_found``: counts;
* ``efficiency``: found tracks / true tracks (track-finding, double-majority efficiency);
* ``hit_efficiency``: mean per-track hit efficiency over true tracks;
* ``hit_purity``: mean per-track hit purity over true tracks that have a match;
* ``fake_rate``: predicted clusters that are the match of no found track / predicted clusters;
* ``perfect_events``: fraction of events clustered perfectly: every hit's label equals the truth up
  to a relabelling of the clusters, noise being -1 in both;
* ``ari``: adjusted Rand index of each event (noise -1 counted as one more label, as
  ``sklearn.metrics.adjusted_rand_score`` of the two label arrays does; 1.0 for an event whose two
  labellings agree, including events with 0 or 1 hit), averaged over events;
* ``noise_as_noise``: fraction of truth-noise hits predicted -1;
* ``signal_as_noise``: fraction of track hits predicted -1.

Empty denominators give NaN (``null`` in JSON), never a crash or a zero.

Ceiling from truth (``"ceiling"`` in each group, when per-hit cell ids are given): a cell that the
input lists twice in one event, under two tracks, is ONE cell of an image. A clusterer that gives
each distinct cell one label cannot be right for both listings. The ceiling is the metrics of the
best such labelling we construct: the truth, except that every listing of a shared cell takes the
label of the cell's first listing. It is exact for ``perfect_events`` (an event with a cell shared
by two tracks cannot be perfect) and an achievable lower bound of the optimum for the others. A
clusterer that may give the two listings of a cell to two tracks (as DESIGN.md allows, and as
:func:`clustering.cluster_events` does) has the trivial ceiling 1.0: the truth itself.
``events_with_shared_cell`` gives the fraction of such events.
"""

from __future__ import annotations

import numpy as np

FIELDS = ("n_events", "n_true_tracks", "n_predicted_clusters", "n_found", "efficiency", "hit_efficiency",
          "hit_purity", "fake_rate", "perfect_events", "ari", "noise_as_noise", "signal_as_noise")
CEILING_RULE = ("one label per distinct cell: the truth, every listing of a cell shared by two tracks "
                "taking the label of the cell's first listing")


def _divide(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _check(truth, pred, offsets):
    truth = np.asarray(truth, dtype=np.int64).reshape(-1)
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction have different lengths: {truth.shape[0]} and {pred.shape[0]}")
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(truth) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"offsets must rise from 0 to the number of hits ({len(truth)}), "
                         f"got {offsets[:3].tolist()}...{offsets[-2:].tolist()}")
    for name, values in (("truth", truth), ("prediction", pred)):
        if values.size and values.min() < -1:
            raise ValueError(f"{name} ids must be >= -1 (-1 = noise), got {int(values.min())}")
    return truth, pred, offsets


def event_statistics(truth, pred, offsets) -> dict:
    """Per-track and per-event clustering statistics of a batch (see the module docstring).

    ``truth``, ``pred``: per-hit ids (n_hits,) int, -1 = noise; ``offsets``: (n_events + 1,) hit
    offsets starting at 0. Returns a dict of arrays: per true track ``track_event``,
    ``track_efficiency``, ``track_purity`` (NaN without a match), ``track_found``, ``track_id`` (its
    truth id) and ``track_match`` (the predicted id of the cluster it is found in, -1 if not found); per event
    ``n_true_tracks``, ``n_predicted_clusters``, ``n_found``, ``perfect`` (bool), ``ari``,
    ``n_noise``, ``n_noise_as_noise``, ``n_signal``, ``n_signal_as_noise``.
    """
    truth, pred, offsets = _check(truth, pred, offsets)
    n_events = len(offsets) - 1
    event = np.repeat(np.arange(n_events, dtype=np.int64), np.diff(offsets))
    base = int(max(truth.max(initial=-1), pred.max(initial=-1))) + 2  # ids shifted by one: -1 -> 0
    t_key = event * base + (truth + 1)
    p_key = event * base + (pred + 1)
    pair, pair_count = np.unique(t_key * base + (pred + 1), return_counts=True)
    pair_t, pair_p = pair // base, pair % base  # (event, truth) key and shifted prediction of each pair
    tracks, track_size = np.unique(t_key, return_counts=True)
    clusters, cluster_size = np.unique(p_key, return_counts=True)

    true_track = tracks % base > 0
    tracks, track_size = tracks[true_track], track_size[true_track]
    real_cluster = clusters % base > 0
    # Best cluster of each true track: most shared hits, then the smallest id.
    candidate = (pair_t % base > 0) & (pair_p > 0)
    c_t, c_p, c_n = pair_t[candidate], pair_p[candidate], pair_count[candidate]
    order = np.lexsort((c_p, -c_n, c_t))
    c_t, c_p, c_n = c_t[order], c_p[order], c_n[order]
    first = np.ones(len(c_t), dtype=bool)
    first[1:] = c_t[1:] != c_t[:-1]
    matched_track, matched_cluster, shared = c_t[first], c_p[first], c_n[first]
    where = np.searchsorted(tracks, matched_track)  # every matched track is a true track
    efficiency = np.zeros(len(tracks))
    purity = np.full(len(tracks), np.nan)
    efficiency[where] = shared / track_size[where]
    matched_size = cluster_size[np.searchsorted(clusters, (matched_track // base) * base + matched_cluster)]
    purity[where] = shared / matched_size
    found = (efficiency > 0.5) & (np.nan_to_num(purity) > 0.5)
    match = np.full(len(tracks), -1, dtype=np.int64)
    match[where] = matched_cluster - 1
    track_event = tracks // base

    n_true = np.bincount(track_event, minlength=n_events)
    n_pred = np.bincount(clusters[real_cluster] // base, minlength=n_events)
    n_found = np.bincount(track_event[found], minlength=n_events)

    # Perfect: as many distinct (truth, prediction) pairs as distinct truth ids and as distinct
    # predicted ids (a bijection), and noise -1 on both sides.
    n_pairs = np.bincount(pair // (base * base), minlength=n_events)
    n_t_ids = np.bincount(np.unique(t_key) // base, minlength=n_events)
    n_p_ids = np.bincount(clusters // base, minlength=n_events)
    noise_mismatch = np.bincount(event[(truth < 0) != (pred < 0)], minlength=n_events)
    perfect = (n_pairs == n_t_ids) & (n_pairs == n_p_ids) & (noise_mismatch == 0)

    # Adjusted Rand index from the contingency counts, as sklearn's pair-confusion formulation.
    n = np.diff(offsets).astype(np.float64)
    sum_pairs = np.bincount(pair // (base * base), weights=pair_count.astype(np.float64) ** 2, minlength=n_events)
    all_tracks, all_track_size = np.unique(t_key, return_counts=True)
    sum_rows = np.bincount(all_tracks // base, weights=all_track_size.astype(np.float64) ** 2, minlength=n_events)
    sum_cols = np.bincount(clusters // base, weights=cluster_size.astype(np.float64) ** 2, minlength=n_events)
    tp = sum_pairs - n
    fp = sum_cols - sum_pairs
    fn = sum_rows - sum_pairs
    tn = n * n - fp - fn - sum_pairs
    with np.errstate(divide="ignore", invalid="ignore"):
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    ari = np.where((fn == 0) & (fp == 0), 1.0, ari)

    noise = truth < 0
    return {
        "track_event": track_event, "track_efficiency": efficiency, "track_purity": purity, "track_found": found,
        "track_id": tracks % base - 1, "track_match": np.where(found, match, -1),
        "n_true_tracks": n_true, "n_predicted_clusters": n_pred, "n_found": n_found, "perfect": perfect,
        "ari": ari,
        "n_noise": np.bincount(event[noise], minlength=n_events),
        "n_noise_as_noise": np.bincount(event[noise & (pred < 0)], minlength=n_events),
        "n_signal": np.bincount(event[~noise], minlength=n_events),
        "n_signal_as_noise": np.bincount(event[~noise & (pred < 0)], minlength=n_events),
    }


def summarise(stats: dict, events=None) -> dict:
    """Aggregated metrics (:data:`FIELDS`, see the module docstring) of the events ``events``.

    ``stats``: from :func:`event_statistics`; ``events``: (n_events,) bool mask, default all.
    Returns a dict of Python ints and floats (NaN where a denominator is empty).
    """
    n_events = len(stats["perfect"])
    events = np.ones(n_events, dtype=bool) if events is None else np.asarray(events, dtype=bool)
    on_track = events[stats["track_event"]]
    efficiency = stats["track_efficiency"][on_track]
    purity = stats["track_purity"][on_track]
    total = {k: int(stats[k][events].sum()) for k in ("n_true_tracks", "n_predicted_clusters", "n_found", "n_noise",
                                                      "n_noise_as_noise", "n_signal", "n_signal_as_noise")}
    has_purity = ~np.isnan(purity)
    return {
        "n_events": int(events.sum()),
        "n_true_tracks": total["n_true_tracks"],
        "n_predicted_clusters": total["n_predicted_clusters"],
        "n_found": total["n_found"],
        "efficiency": float(_divide(total["n_found"], total["n_true_tracks"])),
        "hit_efficiency": float(_divide(efficiency.sum(), len(efficiency))),
        "hit_purity": float(_divide(purity[has_purity].sum(), has_purity.sum())),
        "fake_rate": float(_divide(total["n_predicted_clusters"] - total["n_found"], total["n_predicted_clusters"])),
        "perfect_events": float(_divide(stats["perfect"][events].sum(), events.sum())),
        "ari": float(_divide(stats["ari"][events].sum(), events.sum())),
        "noise_as_noise": float(_divide(total["n_noise_as_noise"], total["n_noise"])),
        "signal_as_noise": float(_divide(total["n_signal_as_noise"], total["n_signal"])),
    }


def shared_cell_mask(truth, cells, offsets) -> np.ndarray:
    """Per hit (n_hits,) bool: True on every listing of a cell that one event lists under two or more truth ids.

    ``cells``: per-hit cell id (n_hits,) int >= 0 (e.g. the top-view pixel), unique within an event
    per distinct cell.
    """
    truth, _, offsets = _check(truth, truth, offsets)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1)
    if cells.shape != truth.shape:
        raise ValueError(f"cells must have one entry per hit ({len(truth)}), got {cells.shape[0]}")
    event = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    cell_key = event * (int(cells.max(initial=0)) + 1) + cells
    order = np.lexsort((truth, cell_key))
    key_sorted, truth_sorted = cell_key[order], truth[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    group = np.cumsum(np.r_[True, key_sorted[1:] != key_sorted[:-1]]) - 1
    lowest = truth_sorted[starts][group]
    highest = truth_sorted[np.r_[starts[1:], len(key_sorted)] - 1][group]
    mask = np.zeros(len(truth), dtype=bool)
    mask[order] = lowest != highest
    return mask


def ceiling_labels(truth, cells, offsets) -> np.ndarray:
    """The ceiling labelling (int64 (n_hits,)): ``truth`` with one label per distinct cell of an event.

    Every listing of a cell takes the truth id of the cell's first listing in input order (see the
    module docstring). ``cells``: per-hit cell id as in :func:`shared_cell_mask`.
    """
    truth, _, offsets = _check(truth, truth, offsets)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1)
    if cells.shape != truth.shape:
        raise ValueError(f"cells must have one entry per hit ({len(truth)}), got {cells.shape[0]}")
    event = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    cell_key = event * (int(cells.max(initial=0)) + 1) + cells
    _, first, inverse = np.unique(cell_key, return_index=True, return_inverse=True)
    return truth[first][inverse.reshape(-1)]


def clustering_metrics(truth, pred, offsets, n_tracks=None, cells=None) -> dict:
    """Clustering metrics of a batch (module docstring): overall, by number of true tracks, and the ceiling.

    ``truth``, ``pred``: per-hit ids (n_hits,) int, -1 = noise; ``offsets``: (n_events + 1,) hit
    offsets from 0. ``n_tracks``: per event (n_events,) number of true tracks used for the breakdown
    (default: the distinct truth ids >= 0 of the event). ``cells``: per-hit cell ids; when given,
    each group also gets ``"ceiling"`` (the same fields for :func:`ceiling_labels`) and
    ``events_with_shared_cell``. Returns ``{"all": {...}, "by_n_tracks": {"2": {...}, ...},
    "ceiling_rule": str}``.

    Example: truth [0, 0, 0, 0], prediction [1, -1, -1, -1], offsets [0, 4] -> hit_efficiency
    0.25, hit_purity 1.0, efficiency 0.0, fake_rate 1.0, perfect_events 0.0, signal_as_noise 0.75.
    """
    stats = event_statistics(truth, pred, offsets)
    n_events = len(stats["perfect"])
    if n_tracks is None:
        n_tracks = stats["n_true_tracks"]
    n_tracks = np.asarray(n_tracks, dtype=np.int64).reshape(-1)
    if n_tracks.shape != (n_events,):
        raise ValueError(f"n_tracks must have one entry per event ({n_events}), got shape {n_tracks.shape}")
    ceiling = shared = None
    if cells is not None:
        truth_arr = np.asarray(truth, dtype=np.int64).reshape(-1)
        ceiling = event_statistics(truth_arr, ceiling_labels(truth_arr, cells, offsets), offsets)
        hit_shared = shared_cell_mask(truth_arr, cells, offsets)
        shared = np.bincount(np.repeat(np.arange(n_events), np.diff(np.asarray(offsets))), weights=hit_shared,
                             minlength=n_events) > 0

    def group(mask):
        out = summarise(stats, mask)
        if ceiling is not None:
            out["ceiling"] = summarise(ceiling, mask)
            out["events_with_shared_cell"] = float(_divide(shared[mask].sum(), mask.sum()))
        return out

    result = {"all": group(np.ones(n_events, dtype=bool)),
              "by_n_tracks": {str(int(k)): group(n_tracks == k) for k in np.unique(n_tracks)}}
    if cells is not None:
        result["ceiling_rule"] = CEILING_RULE
    return result
