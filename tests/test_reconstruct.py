"""reconstruct.py: the reco tree's branches, types and counters, alignment with the input, refusals, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from my_generator.my_generator import generate
from snemo.events import EventBatch, write_events

pytest.importorskip("tensorflow")
uproot = pytest.importorskip("uproot")

BRANCHES = {"source_entry": "int64_t", "n_tracks": "int8_t", "n_tracks_score": "float[4]", "nhit": "int32_t",
            "cluster": "int16_t[]"}


def with_empty_event(batch: EventBatch, at: int) -> EventBatch:
    """``batch`` with an event without hits or tracks inserted before event ``at``."""
    empty = EventBatch(np.zeros(2, np.int64), {k: v[:0] for k, v in batch.hits.items()}, np.zeros(2, np.int64),
                       {k: v[:0] for k, v in batch.tracks.items()})
    return EventBatch.concatenate([batch[:at], empty, batch[at:]])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two files: 2-track events with noise and an empty event (entry 3); 5-track events (more than the counter knows)."""
    folder = tmp_path_factory.mktemp("reco_inputs")
    rng = np.random.default_rng(21)
    write_events(folder / "two.root", with_empty_event(generate(12, 2, rng, noise_hits=2.0), 3))
    write_events(folder / "five.root", generate(6, 5, rng))
    return folder


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    from architectures import generator

    path = tmp_path_factory.mktemp("reco_model") / "generator.keras"
    generator.build(z_channel=True).save(path)
    return path


def check_reco(reco_path, input_path):
    """The reco tree of ``reco_path`` against the hit_tree of ``input_path``; returns its arrays."""
    with uproot.open(reco_path) as file:
        assert [key.split(";")[0] for key in file.keys()] == ["reco"]
        tree = file["reco"]
        assert {name: tree[name].typename for name in tree.keys()} == BRANCHES
        assert tree["cluster"].count_branch.name == "nhit"
        reco = tree.arrays(library="np")
    with uproot.open(input_path) as file:
        source = file["hit_tree"]
        assert tree.num_entries == source.num_entries
        nhit = source["nhit"].array(library="np")
    assert reco["source_entry"].dtype == np.int64
    np.testing.assert_array_equal(reco["source_entry"], np.arange(len(nhit)))
    np.testing.assert_array_equal(reco["nhit"], nhit)
    np.testing.assert_array_equal([len(labels) for labels in reco["cluster"]], nhit)  # hit by hit
    assert reco["n_tracks_score"].shape == (len(nhit), 4) and reco["n_tracks_score"].dtype == np.float32
    for count, scores, labels, hits in zip(reco["n_tracks"], reco["n_tracks_score"], reco["cluster"], nhit):
        assert labels.dtype == np.int16 and np.all(labels >= -1) and np.all(labels < count)
        if hits == 0:
            assert count == 0 and not scores.any()
        else:
            assert 1 <= count <= 4 and count == np.argmax(scores) + 1 and abs(scores.sum() - 1) < 1e-4
    return reco


def test_reco_tree_with_hough_and_the_generator(inputs, generator_file, tmp_path):
    import reconstruct

    out = tmp_path / "hough"
    assert reconstruct.main([str(inputs / "*.root"), "--out", str(out), "--clusterer", "hough", "--quiet",
                             "--calorimeter", "none", "--counter", "top", "--chunk-size", "5"]) == 0  # a glob, several chunks per file
    assert sorted(p.name for p in out.iterdir()) == ["five.root", "two.root"]
    two = check_reco(out / "two.root", inputs / "two.root")
    assert two["n_tracks"][3] == 0 and len(two["cluster"][3]) == 0  # the empty event is written, not dropped
    assert (two["n_tracks"][:3] >= 1).all() and all((labels >= 0).any() for labels in two["cluster"][:3])
    five = check_reco(out / "five.root", inputs / "five.root")
    assert (five["n_tracks"] == 4).all()  # its best guess for 5 tracks: 4, the most it knows
    assert all(set(labels.tolist()) <= {-1, 0, 1, 2, 3} for labels in five["cluster"])
    generated = tmp_path / "generator"
    assert reconstruct.main([str(inputs / "two.root"), str(inputs / "five.root"), "--out", str(generated),
                             "--clusterer", str(generator_file), "--batch-size", "4", "--quiet",
                             "--calorimeter", "none", "--counter", "top"]) == 0
    check_reco(generated / "two.root", inputs / "two.root")
    check_reco(generated / "five.root", inputs / "five.root")


def test_refuses_to_overwrite_and_bad_input_writes_nothing(inputs, tmp_path, capsys):
    import reconstruct

    out = tmp_path / "reco"
    argv = [str(inputs / "two.root"), "--out", str(out), "--clusterer", "dbscan", "--calorimeter", "none", "--quiet"]
    assert reconstruct.main(argv) == 0
    check_reco(out / "two.root", inputs / "two.root")
    before = (out / "two.root").stat().st_mtime_ns
    capsys.readouterr()
    assert reconstruct.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert (out / "two.root").stat().st_mtime_ns == before
    assert reconstruct.main(argv + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["two.root"]  # no .tmp left

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.root").write_text("not a ROOT file")
    fresh = tmp_path / "fresh"
    capsys.readouterr()
    assert reconstruct.main([str(inputs / "two.root"), str(bad / "broken.root"), "--out", str(fresh),
                             "--clusterer", "hough", "--calorimeter", "none", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.root" in err[0]
    assert not fresh.exists() or not any(fresh.iterdir())  # nothing written, not even the good file
    assert reconstruct.main([str(inputs / "two.root"), "--out", str(fresh), "--clusterer",
                             str(tmp_path / "missing.keras"), "--quiet"]) == 2
    assert "--clusterer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        reconstruct.main([str(inputs / "two.root"), "--out", str(fresh), "--batch-size", "0"])
    assert stop.value.code == 2
