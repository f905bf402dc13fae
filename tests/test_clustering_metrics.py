"""Clustering metrics on tiny hand-computed clusterings (snemo.clustering_metrics, via snemo.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from snemo import metrics as snm


def one_event(truth, pred):
    return snm.clustering_metrics(truth, pred, [0, len(truth)])["all"]


def test_one_hit_in_a_cluster_rest_noise():
    result = one_event([0, 0, 0, 0], [1, -1, -1, -1])
    assert result["hit_efficiency"] == pytest.approx(0.25)
    assert result["hit_purity"] == pytest.approx(1.0)
    assert result["efficiency"] == 0.0 and result["n_found"] == 0
    assert result["fake_rate"] == pytest.approx(1.0)
    assert result["perfect_events"] == 0.0
    assert result["ari"] == pytest.approx(0.0)
    assert result["signal_as_noise"] == pytest.approx(0.75)
    assert math.isnan(result["noise_as_noise"])  # no truth-noise hit: NaN, not 0


def test_perfect_with_noise():
    result = one_event([0, 0, 1, 1, -1], [0, 0, 1, 1, -1])
    for key in ("efficiency", "hit_efficiency", "hit_purity", "perfect_events", "ari", "noise_as_noise"):
        assert result[key] == pytest.approx(1.0), key
    assert result["fake_rate"] == 0.0 and result["signal_as_noise"] == 0.0
    assert (result["n_true_tracks"], result["n_predicted_clusters"], result["n_found"]) == (2, 2, 2)


def test_two_labels_swapped_is_perfect():
    result = one_event([0, 0, 1, 1, 1], [1, 1, 0, 0, 0])
    assert result["perfect_events"] == 1.0 and result["ari"] == pytest.approx(1.0)
    assert result["efficiency"] == 1.0 and result["fake_rate"] == 0.0


def test_all_in_one_cluster():
    even = one_event([0, 0, 1, 1], [0, 0, 0, 0])
    assert even["hit_efficiency"] == 1.0 and even["hit_purity"] == pytest.approx(0.5)
    assert even["efficiency"] == 0.0  # purity must EXCEED 50 %
    assert even["fake_rate"] == 1.0 and even["perfect_events"] == 0.0
    assert even["ari"] == pytest.approx(adjusted_rand_score([0, 0, 1, 1], [0, 0, 0, 0]))
    uneven = one_event([0, 0, 0, 1], [0, 0, 0, 0])
    assert uneven["hit_purity"] == pytest.approx((0.75 + 0.25) / 2)
    assert uneven["efficiency"] == pytest.approx(0.5)  # the 3-hit track is found, the other is not
    assert uneven["fake_rate"] == 0.0  # the one cluster is the match of a found track


def test_all_noise():
    result = one_event([0, 0, 1, 1], [-1, -1, -1, -1])
    assert result["efficiency"] == 0.0 and result["hit_efficiency"] == 0.0
    assert math.isnan(result["hit_purity"]) and math.isnan(result["fake_rate"])  # no cluster at all
    assert result["signal_as_noise"] == 1.0 and result["perfect_events"] == 0.0
    assert result["ari"] == pytest.approx(adjusted_rand_score([0, 0, 1, 1], [-1, -1, -1, -1]))


def test_track_split_in_two():
    result = one_event([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1])
    assert result["hit_efficiency"] == pytest.approx(4 / 6) and result["hit_purity"] == 1.0
    assert result["efficiency"] == 1.0 and result["fake_rate"] == pytest.approx(0.5)
    assert result["perfect_events"] == 0.0
    halves = one_event([0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    assert halves["hit_efficiency"] == pytest.approx(0.5) and halves["efficiency"] == 0.0  # ties: not found


def test_noise_hits_in_a_cluster():
    result = one_event([0, 0, 0, -1, -1], [0, 0, 0, -1, 0])
    assert result["noise_as_noise"] == pytest.approx(0.5)
    assert result["hit_purity"] == pytest.approx(0.75) and result["efficiency"] == 1.0
    assert result["perfect_events"] == 0.0
    # Noise labelled as a cluster of its own is not perfect either: noise must be -1 on both sides.
    assert one_event([0, 0, -1], [0, 0, 1])["perfect_events"] == 0.0


def test_batched_equals_one_event_at_a_time_and_breakdown():
    events = [([0, 0, 0, 0], [1, -1, -1, -1]), ([0, 0, 1, 1, -1], [0, 0, 1, 1, -1]),
              ([0, 0, 1, 1], [0, 0, 0, 0]), ([], []), ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1])]
    truth = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in events])
    pred = np.concatenate([np.asarray(p, dtype=np.int64) for _, p in events])
    offsets = np.r_[0, np.cumsum([len(t) for t, _ in events])]
    stats = snm.event_statistics(truth, pred, offsets)
    assert stats["perfect"].tolist() == [False, True, False, True, False]  # an empty event is perfect
    assert stats["n_true_tracks"].tolist() == [1, 2, 2, 0, 1]
    assert stats["n_found"].tolist() == [0, 2, 0, 0, 1]
    result = snm.clustering_metrics(truth, pred, offsets)
    assert sorted(result["by_n_tracks"]) == ["0", "1", "2"]
    one = result["by_n_tracks"]["1"]
    assert one["n_events"] == 2 and one["efficiency"] == pytest.approx(0.5)
    assert one["hit_efficiency"] == pytest.approx((0.25 + 4 / 6) / 2)
    assert result["all"]["n_true_tracks"] == 6 and result["all"]["n_found"] == 3
    assert result["all"]["n_predicted_clusters"] == 6  # 1 + 2 + 1 + 0 + 2
    assert result["all"]["fake_rate"] == pytest.approx((6 - 3) / 6)
    explicit = snm.clustering_metrics(truth, pred, offsets, n_tracks=[1, 2, 2, 1, 1])
    assert explicit["by_n_tracks"]["1"]["n_events"] == 3


def test_ari_matches_sklearn_per_event():
    rng = np.random.default_rng(3)
    sizes = np.array([0, 1, 2, 3, 7, 20, 50] * 20)
    offsets = np.r_[0, np.cumsum(sizes)]
    truth = rng.integers(-1, 4, offsets[-1])
    pred = rng.integers(-1, 5, offsets[-1])
    pred[: offsets[40]] = truth[: offsets[40]]  # some identical events
    ari = snm.event_statistics(truth, pred, offsets)["ari"]
    expected = [adjusted_rand_score(truth[a:b], pred[a:b]) if b > a else 1.0 for a, b in zip(offsets, offsets[1:])]
    np.testing.assert_allclose(ari, expected, atol=1e-12)


def test_ceiling_one_label_per_cell():
    # Event 0: track 0 and track 1 both list cell 7. Event 1: no shared cell.
    truth = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    cells = [5, 6, 7, 7, 8, 9, 1, 2, 3, 4]
    offsets = [0, 6, 10]
    assert snm.shared_cell_mask(truth, cells, offsets).tolist() == [False, False, True, True] + [False] * 6
    assert snm.ceiling_labels(truth, cells, offsets).tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 1, 1]
    result = snm.clustering_metrics(truth, truth, offsets, cells=cells)
    assert result["all"]["perfect_events"] == 1.0  # listings may go to both tracks: the truth is reachable
    ceiling = result["all"]["ceiling"]
    assert ceiling["perfect_events"] == pytest.approx(0.5)
    assert ceiling["efficiency"] == 1.0  # 2 of 3 hits and purity 3/4 still pass the double majority
    assert ceiling["hit_efficiency"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert result["all"]["events_with_shared_cell"] == pytest.approx(0.5)
    assert "one label per distinct cell" in result["ceiling_rule"]


def test_bad_input_and_empty_batch():
    with pytest.raises(ValueError, match="different lengths"):
        snm.clustering_metrics([0, 0], [0], [0, 2])
    with pytest.raises(ValueError, match="offsets"):
        snm.clustering_metrics([0, 0], [0, 0], [0, 3])
    with pytest.raises(ValueError, match=">= -1"):
        snm.clustering_metrics([0, -2], [0, 0], [0, 2])
    with pytest.raises(ValueError, match="n_tracks"):
        snm.clustering_metrics([0, 0], [0, 0], [0, 2], n_tracks=[1, 1])
    empty = snm.clustering_metrics([], [], [0])["all"]
    assert empty["n_events"] == 0 and math.isnan(empty["efficiency"]) and math.isnan(empty["ari"])
