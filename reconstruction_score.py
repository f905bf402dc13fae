"""``reconstruct.py --score``: the reconstruction of files with truth scored against it, chunk by chunk.

A :class:`Scorer` takes every reconstructed chunk with its truth (:meth:`Scorer.add`), keeps small
per-event and per-track arrays (never the hits), and :meth:`Scorer.result` gives, overall
(``"all"``) and by the TRUE number of tracks (``"by_tracks"``, keys "1", "2", ...):

* ``counting_accuracy``: predicted ``n_tracks`` == ``len(track_split)``;
* clustering (:mod:`snemo.clustering_metrics`, truth in canonical order): ``efficiency`` (true
  tracks found with double majority: > 50 % of the track's hits in its matched cluster and > 50 %
  of that cluster's hits from the track), ``hit_purity`` (mean over matched tracks),
  ``perfect_events`` (every hit right up to relabelling, noise -1 on both sides), ``noise_as_noise``
  (truth-noise hits labelled -1);
* calorimeter: ``calo_cell_accuracy``, per true track: clustered mode, the cell predicted for its
  double-majority matched cluster equals its true (side, column, row) (a track without a found
  cluster is wrong); multilabel mode, its true cell is among the event's predicted cells;
  ``calo_exact_set``, per event: the predicted cells, one per predicted track, equal the true
  cells, one per true track, as multisets (so the number of tracks must be right too);
* pre-filter: ``noise_dropped`` and ``track_hits_dropped``: fractions of the truth-noise hits and
  of the track hits that the isolated-hit filter removed (0 with ``--isolated keep``).

Empty denominators give NaN (``null`` in JSON). Groups of a step that did not run are left out.
"""

from __future__ import annotations

import numpy as np

from snemo.calorimeter_metrics import N_CELLS, cell_index
from snemo.clustering_metrics import event_statistics, summarise

CALO_TRUTH = ("calo_side", "calo_column", "calo_row")
COLUMNS = (("counting_accuracy", "count"), ("efficiency", "DM eff."), ("hit_purity", "purity"),
           ("perfect_events", "perfect"), ("noise_as_noise", "noise->-1"), ("calo_cell_accuracy", "calo cell"),
           ("calo_exact_set", "calo set"))


def _divide(numerator, denominator) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def matched_clusters(truth, pred, offsets):
    """Each true track's double-majority match: (event, truth id, matched cluster id, found), per track.

    ``truth``, ``pred`` (n_hits,) int, -1 noise; ``offsets`` (n_events + 1,) from 0. Tracks are
    ordered by (event, truth id); the matched cluster is the one holding most of the track's hits
    (ties: the smallest id), -1 when every hit of the track is predicted noise.
    """
    truth, pred = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    event = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    base = int(max(truth.max(initial=-1), pred.max(initial=-1))) + 2
    t_key, p_key = event * base + truth + 1, event * base + pred + 1
    tracks, track_size = np.unique(t_key[truth >= 0], return_counts=True)
    clusters, cluster_size = np.unique(p_key, return_counts=True)
    both = (truth >= 0) & (pred >= 0)
    pairs, shared = np.unique(t_key[both] * base + pred[both] + 1, return_counts=True)
    pair_track, pair_cluster = pairs // base, pairs % base
    order = np.lexsort((pair_cluster, -shared, pair_track))
    first = order[np.r_[True, pair_track[order][1:] != pair_track[order][:-1]]] if len(order) else order
    matched = np.full(len(tracks), -1, np.int64)
    found = np.zeros(len(tracks), bool)
    where = np.searchsorted(tracks, pair_track[first])
    matched[where] = pair_cluster[first] - 1
    size_of_match = cluster_size[np.searchsorted(clusters, (pair_track[first] // base) * base + pair_cluster[first])]
    found[where] = (2 * shared[first] > track_size[where]) & (2 * shared[first] > size_of_match)
    return tracks // base, tracks % base - 1, matched, found


def _lookup(keys_sorted, values, wanted, missing):
    """values[i] where keys_sorted[i] == wanted, else ``missing`` (vectorised dictionary look-up)."""
    if len(keys_sorted) == 0:
        return np.full(len(wanted), missing, dtype=np.int64)
    where = np.minimum(np.searchsorted(keys_sorted, wanted), len(keys_sorted) - 1)
    return np.where(keys_sorted[where] == wanted, values[where], missing)


def _multiset_equal(event_a, cell_a, event_b, cell_b, n_events) -> np.ndarray:
    """Per event (n_events,) bool: the multisets of cells of a and of b are equal."""
    count_a = np.bincount(event_a, minlength=n_events)
    count_b = np.bincount(event_b, minlength=n_events)
    same_size = count_a == count_b
    a = np.sort(event_a * N_CELLS + cell_a)
    b = np.sort(event_b * N_CELLS + cell_b)
    keep_a, keep_b = same_size[a // N_CELLS], same_size[b // N_CELLS]
    differs = a[keep_a] != b[keep_b]  # same sizes per kept event: the sorted arrays line up
    return same_size & (np.bincount((a[keep_a] // N_CELLS)[differs], minlength=n_events) == 0)


class Scorer:
    """Accumulates the scores of one or more files' chunks; see the module docstring."""

    def __init__(self, *, clustering: bool, calorimeter: str):
        self.clustering, self.calorimeter = clustering, calorimeter
        self.parts: list[dict] = []
        self.calo_truth = calorimeter != "none"

    def add(self, chunk, n_tracks, dropped, labels=None, cells=None) -> None:
        """Score one chunk: ``chunk`` the input events with truth, ``n_tracks`` (n,) predicted counts,
        ``dropped`` (n_hits,) bool hits removed by the pre-filter, ``labels`` (n_hits,) predicted
        clusters (None without clustering), ``cells`` a :class:`reconstruction.Cells` (None without
        the calorimeter step)."""
        from datasets.clustering import canonical_hit_track_ids, canonical_track_rank

        n_events = len(chunk)
        offsets = chunk.hit_offsets - chunk.hit_offsets[0]
        truth = canonical_hit_track_ids(chunk)
        event = chunk.hit_event_index()
        part = {"n_true": chunk.n_tracks.astype(np.int64), "n_pred": np.asarray(n_tracks, np.int64),
                "n_noise": np.bincount(event[truth < 0], minlength=n_events),
                "noise_dropped": np.bincount(event[(truth < 0) & dropped], minlength=n_events),
                "n_signal": np.bincount(event[truth >= 0], minlength=n_events),
                "signal_dropped": np.bincount(event[(truth >= 0) & dropped], minlength=n_events)}
        if labels is not None:
            part["stats"] = event_statistics(truth, labels, offsets)
        if cells is not None and all(name in chunk.tracks for name in CALO_TRUTH):
            track_event = chunk.track_event_index()
            true_cell = cell_index(chunk.calo_side, chunk.calo_column, chunk.calo_row)
            cell_event = np.repeat(np.arange(n_events, dtype=np.int64), cells.per_event)
            pred_cell = cell_index(cells.side, cells.column, cells.row)
            if self.calorimeter == "clustered":
                t_event, t_id, matched, found = matched_clusters(truth, labels, offsets)
                span = int(max(truth.max(initial=0), int(cells.cluster.max(initial=0)))) + 1
                cell_of_match = _lookup(cell_event * span + cells.cluster, pred_cell,
                                        t_event * span + matched, -1)  # cluster keys are sorted by (event, label)
                ok_match = found & (cell_of_match >= 0)
                rank = canonical_track_rank(chunk)
                right = _lookup(t_event * span + t_id, np.where(ok_match, cell_of_match, -1),
                                track_event * span + rank, -1)
                ok = (right >= 0) & (right == true_cell)
            else:
                predicted = np.unique(cell_event * N_CELLS + pred_cell)
                ok = _lookup(predicted, np.ones(len(predicted), np.int64), track_event * N_CELLS + true_cell, 0) > 0
            part["calo_ok"] = np.bincount(track_event[ok], minlength=n_events)
            part["calo_exact"] = _multiset_equal(track_event, true_cell, cell_event, pred_cell, n_events)
        elif cells is not None:
            self.calo_truth = False
        self.parts.append(part)

    def has_truth(self) -> bool:
        """True when the events scored so far have any truth track (``track_split`` not empty everywhere)."""
        return any(part["n_true"].sum() > 0 for part in self.parts)

    def _merged(self) -> dict:
        merged = {key: np.concatenate([part[key] for part in self.parts])
                  for key in self.parts[0] if key != "stats" and all(key in part for part in self.parts)}
        if self.clustering:
            shift = np.cumsum([0] + [len(part["n_true"]) for part in self.parts[:-1]])
            stats = [part["stats"] for part in self.parts]
            merged["stats"] = {key: np.concatenate([s[key] + (offset if key == "track_event" else 0)
                                                    for s, offset in zip(stats, shift)]) for key in stats[0]}
        return merged

    def result(self) -> dict:
        """The scores (module docstring) as a JSON-ready dict: {"all": {...}, "by_tracks": {"1": ...}, ...}."""
        merged = self._merged()

        def group(mask):
            out = {"n_events": int(mask.sum()), "n_true_tracks": int(merged["n_true"][mask].sum()),
                   "counting_accuracy": _divide((merged["n_true"] == merged["n_pred"])[mask].sum(), mask.sum()),
                   "noise_dropped": _divide(merged["noise_dropped"][mask].sum(), merged["n_noise"][mask].sum()),
                   "track_hits_dropped": _divide(merged["signal_dropped"][mask].sum(), merged["n_signal"][mask].sum())}
            if "stats" in merged:
                clustering = summarise(merged["stats"], mask)
                out.update({key: clustering[key] for key in ("efficiency", "hit_purity", "perfect_events",
                                                             "noise_as_noise", "fake_rate", "n_found")})
            if "calo_ok" in merged:
                out["calo_cell_accuracy"] = _divide(merged["calo_ok"][mask].sum(), merged["n_true"][mask].sum())
                out["calo_exact_set"] = _divide(merged["calo_exact"][mask].sum(), mask.sum())
            return out

        n_true = merged["n_true"]
        result = {"all": group(np.ones(len(n_true), bool)),
                  "by_tracks": {str(int(k)): group(n_true == k) for k in np.unique(n_true)},
                  "calorimeter_mode": self.calorimeter if "calo_ok" in merged else "none",
                  "clustering": bool(self.clustering)}
        return result


def format_table(result: dict) -> str:
    """The scores as a text table: one row per true number of tracks and "all", percentages."""
    present = [(key, label) for key, label in COLUMNS if key in result["all"]]
    lines = [f"{'tracks':>6} {'events':>7} " + " ".join(f"{label:>10}" for _, label in present)]
    rows = [(key, result["by_tracks"][key]) for key in sorted(result["by_tracks"], key=int)] + [("all", result["all"])]
    for name, values in rows:
        cells = ["-" if values[key] != values[key] else f"{100 * values[key]:.2f}%" for key, _ in present]
        lines.append(f"{name:>6} {values['n_events']:>7} " + " ".join(f"{cell:>10}" for cell in cells))
    pre = result["all"]
    lines.append(f"pre-filter: {100 * pre['noise_dropped']:.2f}% of noise hits and "
                 f"{100 * pre['track_hits_dropped']:.2f}% of track hits dropped"
                 .replace("nan%", "-"))
    return "\n".join(lines)
