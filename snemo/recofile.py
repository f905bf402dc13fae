"""Reading the ``reco`` tree that ``reconstruct.py`` writes, checked entry by entry against its input.

The tree (DESIGN.md "Reconstruction output") has one entry per input event: ``source_entry``
(int64, the input entry: the alignment check), ``n_tracks`` and ``n_tracks_score`` per event,
``cluster`` per hit (counter ``nhit``) and the calorimeter cells per predicted track (counter
``ntrack``). Steps that did not run leave their branches out, so every branch but
``source_entry`` is optional here. Bad input raises :class:`~snemo.events.EventFileError`
naming the reco file, the entry and the branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snemo import geometry as geo
from snemo.events import EventBatch, EventFileError, offsets_from_counts, open_tree

RECO_TREE = "reco"
EVENT_BRANCHES = ("n_tracks", "n_tracks_score")
HIT_BRANCH = "cluster"
TRACK_BRANCHES = ("calo_side", "calo_column", "calo_row", "calo_score", "calo_cluster")
_TRACK_RANGES = {"calo_side": (0, geo.N_SIDES - 1), "calo_column": (0, geo.CALO_GRID_COLUMNS - 1),
                 "calo_row": (0, geo.CALO_GRID_ROWS - 1), "calo_cluster": (-1, np.iinfo(np.int16).max)}


@dataclass
class RecoEvents:
    """Predictions for the events of one :class:`EventBatch`, event i of the batch = entry ``entry[i]``.

    ``n_tracks`` (n,) int64 and ``n_tracks_score`` (n, K) float32, or None when the branch is
    absent. ``cluster`` (n_hits_total,) int16 in the batch's hit order (0..k-1, -1 noise), or None.
    ``calo``: name -> flat per-predicted-track array (event i owns ``calo_offsets[i]:calo_offsets[i+1]``),
    empty when the calorimeter step did not run.
    """

    path: str
    entry: np.ndarray
    n_tracks: np.ndarray | None
    n_tracks_score: np.ndarray | None
    cluster: np.ndarray | None
    calo: dict
    calo_offsets: np.ndarray

    def calo_of(self, index: int) -> dict:
        """The calorimeter cells predicted for event ``index``: name -> (n_predicted,) array (empty dict if none)."""
        a, b = int(self.calo_offsets[index]), int(self.calo_offsets[index + 1])
        return {name: values[a:b] for name, values in self.calo.items()}


def read_reco(path, batch: EventBatch, *, n_input_entries: int, input_name: str = "the input") -> RecoEvents:
    """The ``reco`` entries of the events of ``batch`` (consecutive entries of one input file), checked.

    ``n_input_entries``: the number of entries of the input's ``hit_tree``, which the reco tree must
    have too. Each shown entry must have ``source_entry`` equal to its entry and, when ``cluster``
    is present, one label >= -1 per input hit. Returns a :class:`RecoEvents`; raises
    :class:`EventFileError` (reco file, entry, branch) otherwise.
    """
    import awkward as ak

    path = str(path)
    file, tree = open_tree(path, RECO_TREE, what="reco file")
    try:
        if tree.num_entries != n_input_entries:
            raise EventFileError(f"tree '{RECO_TREE}' has {tree.num_entries} entries but {input_name} has "
                                 f"{n_input_entries}: not the reco file of that input", file=path)
        names = set(tree.keys())
        if "source_entry" not in names:
            raise EventFileError("branch not found: the entries cannot be checked against the input",
                                 file=path, branch="source_entry")
        entry = np.asarray(batch.entry, dtype=np.int64)
        start, stop = int(entry.min(initial=0)), int(entry.max(initial=-1)) + 1
        wanted = ["source_entry"] + [n for n in EVENT_BRANCHES + (HIT_BRANCH,) + TRACK_BRANCHES if n in names]
        try:
            arrays = tree.arrays(wanted, entry_start=start, entry_stop=stop, library="ak", how=dict, array_cache=None)
        except Exception as err:
            raise EventFileError(f"cannot read entries {start}..{stop - 1} ({type(err).__name__}: {err})",
                                 file=path, entry=start) from None
    finally:
        file.close()
    rows = entry - start
    source = ak.to_numpy(arrays["source_entry"]).astype(np.int64)[rows]
    _first_bad(source != entry, path, entry, "source_entry",
               lambda i: f"is {source[i]}: the reco entry does not belong to this input entry")
    n_tracks = score = cluster = None
    if "n_tracks" in arrays:
        n_tracks = ak.to_numpy(arrays["n_tracks"]).astype(np.int64)[rows]
        _first_bad(n_tracks < 0, path, entry, "n_tracks", lambda i: f"is {n_tracks[i]}, negative")
    if "n_tracks_score" in arrays:
        score = ak.to_numpy(arrays["n_tracks_score"]).astype(np.float32)[rows]
    if HIT_BRANCH in arrays:
        jagged = arrays[HIT_BRANCH][rows]
        counts = ak.to_numpy(ak.num(jagged, axis=1)).astype(np.int64)
        _first_bad(counts != batch.n_hits, path, entry, HIT_BRANCH,
                   lambda i: f"has {counts[i]} labels but the input event has {batch.n_hits[i]} hits")
        cluster = ak.to_numpy(ak.flatten(jagged, axis=1)).astype(np.int16)
        per_event = np.zeros(len(batch), dtype=bool)
        np.logical_or.at(per_event, batch.hit_event_index(), cluster < -1)
        _first_bad(per_event, path, entry, HIT_BRANCH, lambda i: "holds a label below -1")
    calo, calo_counts = {}, np.zeros(len(batch), dtype=np.int64)
    for name in (n for n in TRACK_BRANCHES if n in arrays):
        jagged = arrays[name][rows]
        calo_counts = ak.to_numpy(ak.num(jagged, axis=1)).astype(np.int64)
        calo[name] = ak.to_numpy(ak.flatten(jagged, axis=1))
    calo_offsets = offsets_from_counts(calo_counts)
    for name, (low, high) in _TRACK_RANGES.items():
        if name in calo:
            bad = (calo[name] < low) | (calo[name] > high)
            per_event = np.zeros(len(batch), dtype=bool)
            np.logical_or.at(per_event, np.repeat(np.arange(len(batch)), calo_counts), bad)
            _first_bad(per_event, path, entry, name, lambda i: f"holds a value outside {low}..{high}")
    return RecoEvents(path, entry, n_tracks, score, cluster, calo, calo_offsets)


def _first_bad(bad: np.ndarray, path: str, entry: np.ndarray, branch: str, message) -> None:
    """Raise EventFileError for the first event where ``bad`` (n,) is set; ``message(i)`` says what is wrong."""
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise EventFileError(message(i), file=path, entry=int(entry[i]), branch=branch)
