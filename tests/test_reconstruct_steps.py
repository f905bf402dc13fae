"""reconstruct.py steps: calorimeter branches, --clusterer none, the isolated-hit pre-filter, --score, killed runs."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from my_generator.my_generator import generate
from snemo.events import EventBatch, from_lists, write_events

pytest.importorskip("tensorflow")
uproot = pytest.importorskip("uproot")

CALO = {"calo_side": "int8_t[]", "calo_column": "int8_t[]", "calo_row": "int8_t[]", "calo_score": "float[]",
        "calo_cluster": "int16_t[]"}
TINY = dict(filters=(4, 4), squeeze=2, units=8, dense=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Events of 1-3 tracks with noise and missing z, an empty event (entry 2); untrained tiny calorimeter models."""
    from architectures import calorimeter

    folder = tmp_path_factory.mktemp("reco_steps")
    rng = np.random.default_rng(5)
    parts = [generate(4, n, rng, noise_hits=1.5, missing_z_fraction=0.1) for n in (1, 2, 3)]
    batch = EventBatch.concatenate(parts)
    empty = EventBatch(np.zeros(2, np.int64), {k: v[:0] for k, v in batch.hits.items()}, np.zeros(2, np.int64),
                       {k: v[:0] for k, v in batch.tracks.items()})
    write_events(folder / "events.root", EventBatch.concatenate([batch[:2], empty, batch[2:]]))
    calorimeter.build_single(("top", "side"), **TINY).save(folder / "single.keras")
    calorimeter.build_multi(("top",), max_tracks=4, **TINY).save(folder / "multi.keras")
    return folder


def run(files, out, *flags) -> int:
    import reconstruct

    return reconstruct.main([str(files / "events.root"), "--out", str(out), "--counter", "top", "--quiet",
                             "--calo-single", str(files / "single.keras"), "--calo-multi", str(files / "multi.keras"),
                             "--chunk-size", "7", "--batch-size", "8", *flags])


def read(path):
    with uproot.open(path) as file:
        tree = file["reco"]
        return {name: tree[name].typename for name in tree.keys()}, tree.arrays(library="np")


def test_calorimeter_branches_line_up_with_the_clusters(files, tmp_path):
    assert run(files, tmp_path / "c", "--clusterer", "hough", "--calorimeter", "clustered") == 0
    types, reco = read(tmp_path / "c" / "events.root")
    assert {k: types[k] for k in CALO} == CALO and types["ntrack"] == "int32_t" and types["cluster"] == "int16_t[]"
    np.testing.assert_array_equal(reco["source_entry"], np.arange(13))
    assert reco["ntrack"][2] == 0 and reco["nhit"][2] == 0  # the empty event is written
    for labels, ntrack, cluster, side, column, row, score in zip(
            reco["cluster"], reco["ntrack"], reco["calo_cluster"], reco["calo_side"], reco["calo_column"],
            reco["calo_row"], reco["calo_score"]):
        clusters = np.unique(labels[labels >= 0])
        assert ntrack == len(clusters) and list(cluster) == list(clusters)  # one cell per cluster, by label
        assert set(side) <= {0, 1} and np.all((column >= 0) & (column < 22)) and np.all((row >= 0) & (row < 15))
        assert side.dtype == np.int8 and score.dtype == np.float32 and np.all((score > 0) & (score <= 1))
    with uproot.open(files / "events.root") as file:
        hit_side = file["hit_tree"]["grid_side"].array(library="np")
    for labels, sides, cluster, side in zip(reco["cluster"], hit_side, reco["calo_cluster"], reco["calo_side"]):
        for label, cell_side in zip(cluster, side):
            assert np.all(sides[labels == label] == cell_side)  # the cell lies on its cluster's side

    assert run(files, tmp_path / "m", "--clusterer", "none", "--calorimeter", "multilabel") == 0
    types, reco = read(tmp_path / "m" / "events.root")
    assert "cluster" not in types and types["nhit"] == "int32_t" and {k: types[k] for k in CALO} == CALO
    np.testing.assert_array_equal(reco["ntrack"], reco["n_tracks"])  # k = the predicted number of tracks
    assert all(np.all(c == -1) for c in reco["calo_cluster"])
    for side, column, row in zip(reco["calo_side"], reco["calo_column"], reco["calo_row"]):
        assert len(set(zip(side, column, row))) == len(side)  # top k: each cell once


def test_clusterer_none_and_the_refused_combination(files, tmp_path, capsys):
    assert run(files, tmp_path / "n", "--clusterer", "none", "--calorimeter", "none", "--isolated", "keep") == 0
    types, reco = read(tmp_path / "n" / "events.root")
    assert types == {"source_entry": "int64_t", "n_tracks": "int8_t", "n_tracks_score": "float[4]", "nhit": "int32_t"}
    with uproot.open(files / "events.root") as file:
        np.testing.assert_array_equal(reco["nhit"], file["hit_tree"]["nhit"].array(library="np"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run(files, tmp_path / "refused", "--clusterer", "none", "--calorimeter", "clustered")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calorimeter clustered" in err[0] and not (tmp_path / "refused").exists()
    assert run(files, tmp_path / "bad", "--clusterer", "none", "--calorimeter", "multilabel",
               "--calo-multi", str(files / "single.keras")) == 2  # a single-label model where a multi-label one goes
    assert "--calo-multi" in capsys.readouterr().err and not (tmp_path / "bad" / "events.root").exists()


def test_isolated_hits_and_missing_z():
    import reconstruction
    from datasets import views

    # A track in column 10 (layers 0-5), a hit touching it diagonally, a lonely hit, and two hits in
    # layer 0 facing each other across the foil (side 0 and 1): not neighbours.
    event = {"grid_side": [1] * 6 + [1, 1, 0, 1], "grid_layer": [0, 1, 2, 3, 4, 5, 6, 3, 0, 0],
             "grid_column": [10] * 6 + [11, 60, 90, 90], "wirez": [100.0] * 10, "radius": [5.0] * 10,
             "wirez_missing": [0] * 9 + [1], "track_split": [7]}
    batch = from_lists([event, {**event, "grid_column": [c + 1 for c in event["grid_column"]]}])
    isolated = reconstruction.isolated_hits(batch)
    expected = [False] * 7 + [True, True, True]
    np.testing.assert_array_equal(isolated, expected * 2)  # event 1's lonely hit is next to event 0's: not a neighbour
    np.testing.assert_array_equal(reconstruction.isolated_hits(batch, block_events=1), expected * 2)
    kept = reconstruction.keep_hits(batch, ~isolated)
    np.testing.assert_array_equal(kept.n_hits, [7, 7])
    np.testing.assert_array_equal(kept.entry, batch.entry)
    # The hit without z (the last) is in the top view, not in the z views.
    last = from_lists([{k: v[-1:] for k, v in event.items() if k != "track_split"} | {"track_split": [1]}])
    assert views.make_view(last, "top").sum() == 1
    for name in ("side", "front"):
        assert views.make_view(last, name).sum() == 0


def test_isolated_drop_labels_noise(files, tmp_path):
    import reconstruction
    from snemo.events import read_events

    batch = read_events(files / "events.root")
    isolated = reconstruction.isolated_hits(batch)
    assert isolated.any()
    assert run(files, tmp_path / "d", "--clusterer", "hough", "--calorimeter", "none") == 0
    _, reco = read(tmp_path / "d" / "events.root")
    labels = np.concatenate(list(reco["cluster"]))
    assert np.all(labels[isolated] == -1)


def truth_cells(batch):
    """reconstruction.Cells equal to the truth, one per true track in canonical order."""
    import reconstruction
    from datasets.clustering import canonical_track_rank

    order = np.lexsort((canonical_track_rank(batch), batch.track_event_index()))
    return reconstruction.Cells(batch.calo_side[order], batch.calo_column[order], batch.calo_row[order],
                                np.ones(len(order), np.float32), canonical_track_rank(batch)[order].astype(np.int16),
                                batch.n_tracks.copy())


def test_score_from_truth_is_perfect(files):
    from datasets.clustering import canonical_hit_track_ids
    from reconstruction_score import Scorer
    from snemo.events import read_events

    batch = read_events(files / "events.root")
    for mode in ("clustered", "multilabel"):
        scorer = Scorer(clustering=True, calorimeter=mode)
        for part in (batch[:6], batch[6:]):  # two chunks
            scorer.add(part, part.n_tracks, np.zeros(int(part.n_hits.sum()), bool), canonical_hit_track_ids(part),
                       truth_cells(part))
        result = scorer.result()
        for name, group in [("all", result["all"])] + list(result["by_tracks"].items()):
            keys = ("counting_accuracy", "perfect_events", "calo_exact_set") if name == "0" else \
                ("counting_accuracy", "efficiency", "hit_purity", "perfect_events", "noise_as_noise",
                 "calo_cell_accuracy", "calo_exact_set")
            for key in keys:  # the empty event ("0") has no track and no noise hit to score
                assert group[key] == 1.0, (mode, name, key, group)
        assert result["all"]["n_events"] == 13 and sorted(result["by_tracks"]) == ["0", "1", "2", "3"]


def test_score_of_a_hand_made_wrong_case():
    import reconstruction
    from reconstruction_score import Scorer

    # Event A: tracks at columns 10 (cell c3 r4) and 50 (c8 r9) and a noise hit; event B: one track (c5 r5).
    a = {"grid_layer": [0, 1, 2, 0, 1, 2, 8], "grid_column": [10, 10, 10, 50, 50, 50, 100], "track_split": [3, 6],
         "calo_column": [3, 8], "calo_row": [4, 9]}
    b = {"grid_layer": [0, 1, 2, 3], "grid_column": [30] * 4, "track_split": [4], "calo_column": [5], "calo_row": [5]}
    batch = from_lists([a, b])
    labels = np.array([0, 0, 0, 0, 1, 1, -1, -1, -1, -1, -1])  # A: one hit of track 1 in cluster 0; B: all noise
    n_tracks = np.array([2, 2])  # A right, B wrong
    clustered = reconstruction.Cells(np.array([1, 1], np.int8), np.array([3, 7], np.int8), np.array([4, 9], np.int8),
                                     np.ones(2, np.float32), np.array([0, 1], np.int16), np.array([2, 0]))
    scorer = Scorer(clustering=True, calorimeter="clustered")
    scorer.add(batch, n_tracks, np.zeros(11, bool), labels, clustered)
    result = scorer.result()
    assert result["all"]["counting_accuracy"] == 0.5 and result["by_tracks"]["1"]["counting_accuracy"] == 0.0
    assert result["all"]["efficiency"] == pytest.approx(2 / 3)  # A's two tracks found (3/4 and 2/2 pure), B's not
    assert result["by_tracks"]["2"]["hit_purity"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["all"]["perfect_events"] == 0.0 and result["all"]["noise_as_noise"] == 1.0
    assert result["all"]["calo_cell_accuracy"] == pytest.approx(1 / 3)  # A track 0 right; A track 1, B wrong
    assert result["by_tracks"]["2"]["calo_cell_accuracy"] == 0.5 and result["all"]["calo_exact_set"] == 0.0

    multi = reconstruction.Cells(np.ones(4, np.int8), np.array([3, 7, 5, 0], np.int8), np.array([4, 9, 5, 0], np.int8),
                                 np.ones(4, np.float32), np.full(4, -1, np.int16), np.array([2, 2]))
    scorer = Scorer(clustering=False, calorimeter="multilabel")
    scorer.add(batch, n_tracks, np.array([False] * 6 + [True] + [False] * 4), None, multi)
    result = scorer.result()
    assert "efficiency" not in result["all"] and result["all"]["noise_dropped"] == 1.0
    assert result["all"]["track_hits_dropped"] == 0.0
    assert result["all"]["calo_cell_accuracy"] == pytest.approx(2 / 3)  # B's cell is in its (too large) set
    assert result["all"]["calo_exact_set"] == 0.0
    exact = reconstruction.Cells(np.ones(3, np.int8), np.array([8, 3, 5], np.int8), np.array([9, 4, 5], np.int8),
                                 np.ones(3, np.float32), np.full(3, -1, np.int16), np.array([2, 1]))
    scorer = Scorer(clustering=False, calorimeter="multilabel")
    scorer.add(batch, np.array([2, 1]), np.zeros(11, bool), None, exact)
    assert scorer.result()["all"]["calo_exact_set"] == 1.0  # sets, in any order


def test_score_end_to_end_and_without_truth(files, tmp_path, capsys):
    from snemo.jsonfile import read_json

    out = tmp_path / "s"
    assert run(files, out, "--clusterer", "hough", "--calorimeter", "multilabel", "--score") == 0
    assert sorted(p.name for p in out.iterdir()) == ["events.root", "events.score.json", "score.json"]
    score = read_json(out / "events.score.json")
    assert score["all"]["n_events"] == 13 and set(score["by_tracks"]) == {"0", "1", "2", "3"}
    assert 0 <= score["all"]["calo_exact_set"] <= 1 and score["all"]["counting_accuracy"] is not None
    assert read_json(out / "score.json")["all"] == score["all"]
    assert "calo set" in capsys.readouterr().out

    bare = tmp_path / "bare"
    batch = generate(3, 1, np.random.default_rng(1))
    batch = EventBatch(batch.hit_offsets, batch.hits, np.zeros(4, np.int64), {"track_split": np.zeros(0, np.int32)})
    write_events(bare / "notruth.root", batch)
    import reconstruct

    capsys.readouterr()
    assert reconstruct.main([str(bare / "notruth.root"), "--out", str(tmp_path / "nt"), "--counter", "top", "--quiet",
                             "--clusterer", "none", "--calorimeter", "none", "--score"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "no truth" in lines[0]
    assert sorted(p.name for p in (tmp_path / "nt").iterdir()) == ["notruth.root"]


def test_an_exception_in_the_second_chunk_leaves_nothing(files, tmp_path, monkeypatch):
    import reconstruction

    calls = {"n": 0}
    original = reconstruction.multilabel_cells

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure in the second chunk")
        return original(*args, **kwargs)

    monkeypatch.setattr(reconstruction, "multilabel_cells", failing)
    with pytest.raises(RuntimeError, match="injected"):
        run(files, tmp_path / "k", "--clusterer", "none", "--calorimeter", "multilabel")
    assert calls["n"] == 2 and list((tmp_path / "k").iterdir()) == []


def test_a_terminated_run_leaves_nothing(files, tmp_path, monkeypatch):
    """SIGTERM (what Slurm sends before killing a job) arriving in the second chunk: no output, no .tmp."""
    import reconstruction

    calls = []
    original = reconstruction.keep_hits

    def keep_hits(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to reconstruct.main's handler
        return original(*args)

    monkeypatch.setattr(reconstruction, "keep_hits", keep_hits)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        run(files, tmp_path / "t", "--clusterer", "none", "--calorimeter", "none")
    assert stop.value.code == 128 + signal.SIGTERM and len(calls) == 2
    assert list((tmp_path / "t").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
