"""models/evaluate.py on tiny held-out folders and tiny untrained models: clustering, calorimeter, heldout."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
SHIPPED_COUNTER = REPO / "models" / "top_my_generator.keras"
COLUMN_FLAGS = {"clean": [], "realistic": ["--realistic"], "onesided": ["--sides", "1"],
                "onesided_realistic": ["--sides", "1", "--realistic"]}

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(not SHIPPED_COUNTER.is_file(), reason="needs the shipped counter")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """<tmp>/my_generator/<column>/<N>/: 8 events per number of tracks, each column with its flags."""
    from my_generator import my_generator

    data = tmp_path_factory.mktemp("heldout")
    for seed, (column, flags) in enumerate(COLUMN_FLAGS.items(), start=900):
        assert my_generator.main(["--events", "8", "--seed", str(seed), "--out", str(data / "my_generator" / column),
                                  "--quiet", *flags]) == 0
    return data


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny untrained generator (z and radius channels), single-label and multi-label (count head) models."""
    from architectures import calorimeter, generator

    folder = tmp_path_factory.mktemp("models")
    small = dict(filters=(4, 4), squeeze=2, units=8, dense=8)
    paths = {"generator": folder / "gen.keras", "single": folder / "single.keras", "multi": folder / "multi.keras"}
    generator.build(True, True, filters=(4, 4, 4, 4, 4)).save(paths["generator"])
    calorimeter.build_single(**small).save(paths["single"])
    calorimeter.build_multi(max_tracks=4, **small).save(paths["multi"])
    return paths


def fractions(tree, names):
    """Every value under a key in ``names``, anywhere in the JSON tree ``tree`` (None for NaN)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in names and not isinstance(value, dict):
                yield value
            else:
                yield from fractions(value, names)
    elif isinstance(tree, list):
        for item in tree:
            yield from fractions(item, names)


def assert_fractions(tree, names):
    values = [value for value in fractions(tree, names) if value is not None]
    assert values, f"none of {names} found"
    assert all(0.0 <= value <= 1.0 for value in values), [v for v in values if not 0.0 <= v <= 1.0][:5]


def test_event_statistics_name_the_cluster_each_track_is_found_in():
    from snemo.clustering_metrics import event_statistics

    # Event 0: track 0 all in cluster 1, track 1 split 1 / 2 between cluster 0 and noise; event 1: one track, cluster 0.
    stats = event_statistics([0, 0, 0, 1, 1, 1, 0, 0, -1], [1, 1, 1, 0, -1, -1, 0, 0, 0], [0, 6, 9])
    np.testing.assert_array_equal(stats["track_event"], [0, 0, 1])
    np.testing.assert_array_equal(stats["track_id"], [0, 1, 0])
    np.testing.assert_array_equal(stats["track_match"], [1, -1, 0])


def test_clustering_scores_every_method_and_keeps_other_entries(heldout, models, tmp_path, capsys):
    import evaluate

    out = tmp_path / "json"
    out.mkdir()
    kept = {"kind": "generator", "model": "elsewhere.keras",
            "columns": {"clean": {"all": {"efficiency": 0.5}, "by_n_tracks": {"2": {"efficiency": 0.25}}}}}
    (out / "clustering.json").write_text(json.dumps({"methods": {"kept": kept}}))
    assert evaluate.main(["clustering", "--data", str(heldout), "--out", str(out), "--generator",
                          str(models["generator"]), "--name", "GAN", "--columns", "clean", "realistic"]) == 0
    printed = capsys.readouterr().out
    content = json.loads((out / "clustering.json").read_text())
    methods = content["methods"]
    assert set(methods) == {"kept", "GAN", "GAN + line refit", "DBSCAN", "Hough", "Hough, no line refit",
                            "ceiling (1 label/cell)"}
    assert methods["kept"] == kept
    for label in ("GAN", "GAN + line refit", "DBSCAN", "Hough", "Hough, no line refit"):
        assert set(methods[label]["columns"]) == {"clean", "realistic"}
        for result in methods[label]["columns"].values():
            assert set(result["by_n_tracks"]) == {"1", "2", "3", "4"} and result["all"]["n_events"] == 32
            assert result["events_per_second"] > 0
    ceiling = methods["ceiling (1 label/cell)"]["columns"]["clean"]
    assert ceiling["all"]["efficiency"] == 1.0
    assert all(group["efficiency"] == 1.0 for group in ceiling["by_n_tracks"].values())
    assert methods["Hough"]["columns"]["clean"]["all"]["efficiency"] > 0.8  # the baseline finds straight tracks
    refined, raw = (methods[m]["columns"]["clean"]["all"] for m in ("Hough", "Hough, no line refit"))
    assert refined["hit_purity"] >= raw["hit_purity"]  # the refit only re-associates hits to better lines
    assert methods["Hough"]["columns"]["clean"]["seconds"] >= methods["Hough, no line refit"]["columns"]["clean"]["seconds"]
    assert methods["GAN"]["columns"]["clean"]["all"]["noise_as_noise"] is None  # clean events have no noise hit
    assert_fractions(methods, {"efficiency", "hit_purity", "perfect_events", "noise_as_noise", "fake_rate"})
    assert all(-1.0 <= value <= 1.0 for value in fractions(methods, {"ari"}))  # adjusted: may fall below 0
    assert 0.0 <= content["columns"]["realistic"]["counter_accuracy"] <= 1.0
    assert set(content["targets"]["GAN"]) == {"clean", "realistic"}
    assert len(content["targets"]["Hough"]["clean"]) == 4 and len(content["targets"]["Hough"]["realistic"]) == 3
    assert all(check["met"] in (True, False) for check in content["targets"]["Hough"]["clean"].values())
    assert "### clean" in printed and "### realistic" in printed and "| `GAN` |" in printed
    assert "| clean: DM eff. >= 99.0 % (2 tracks) |" in printed and ("met" in printed or "missed" in printed)


def test_calorimeter_scores_both_models_and_the_truth_as_clustering_equals_truth_clusters(heldout, models, tmp_path,
                                                                                        capsys):
    import evaluate
    import evaluate_calorimeter as task
    from datasets.clustering import canonical_hit_track_ids
    from evaluate_common import read_column
    from snemo.modelfile import load_keras_model

    out = tmp_path / "json"
    out.mkdir()
    (out / "calorimeter.json").write_text(json.dumps({"single": {"kept": {"model": "x", "columns": {}}}}))
    assert evaluate.main(["calorimeter", "--data", str(heldout), "--out", str(out), "--single", str(models["single"]),
                          "--multi", str(models["multi"]), "--clusterer", "hough", "--columns", "clean",
                          "realistic"]) == 0
    printed = capsys.readouterr().out
    content = json.loads((out / "calorimeter.json").read_text())
    assert set(content["single"]) == {"kept", "single"} and set(content["multi"]) == {"multi"}
    single = content["single"]["single"]["columns"]["realistic"]
    assert set(single["truth_clusters"]["by_tracks"]) == {"1", "2", "3", "4"}
    assert single["truth_clusters"]["n_tracks"] == 8 * (1 + 2 + 3 + 4)
    assert single["clustered"]["hough"]["n_tracks"] == 8 * (1 + 2 + 3 + 4)
    assert single["truth_clusters"]["tracks_2_4"]["n_tracks"] == 8 * (2 + 3 + 4)
    assert 0.5 < single["clustered"]["hough"]["tracks_found"] <= 1.0
    multi = content["multi"]["multi"]["columns"]["clean"]
    assert set(multi) == {"k_true", "k_predicted", "count"} and multi["k_true"]["n_events"] == 32
    assert_fractions(content, {"cell_accuracy", "column_accuracy", "row_accuracy", "exact_set_match", "cell_precision",
                               "cell_recall", "jaccard", "column_top_k", "tracks_found"})
    rows = content["targets"]
    assert {row["model"] for row in rows} == {"single", "multi"}
    assert all(row["clean"]["met"] in (True, False) and row["realistic"]["met"] in (True, False) for row in rows)
    assert "### Single label" in printed and "### Multi label" in printed and "### Targets" in printed

    # The truth given as the clustering: every track found, the same predictions as truth clusters.
    batch = read_column(heldout, "realistic", 8)
    model = load_keras_model(models["single"], flag="--single")
    truth = task.single_truth_clusters(model, batch)
    as_clusters = task.single_clustered(model, batch, canonical_hit_track_ids(batch))
    assert as_clusters["tracks_found"] == 1.0
    for key in ("n_tracks", "cell_accuracy", "column_accuracy", "row_accuracy"):
        assert as_clusters[key] == truth[key]
        assert as_clusters["by_tracks"]["3"][key] == truth["by_tracks"]["3"][key]
    nothing = task.single_clustered(model, batch, np.full(int(batch.n_hits.sum()), -1))
    assert nothing["tracks_found"] == 0.0 and nothing["cell_accuracy"] == 0.0


def test_calorimeter_scores_the_line_fit_alone(heldout, tmp_path):
    """--single line: no model, the cell where the fitted line meets the wall; on clean toy tracks it is
    nearly always right, and the truth cell of each track comes out of its own line."""
    import evaluate

    out = tmp_path / "json"
    out.mkdir()
    assert evaluate.main(["calorimeter", "--data", str(heldout), "--out", str(out), "--single", "line",
                          "--multi", "none", "--clusterer", "none", "--columns", "clean"]) == 0
    content = json.loads((out / "calorimeter.json").read_text())
    line = content["single"]["line fit alone"]
    assert line["model"] == "datasets.line_fit (no model)"
    assert line["columns"]["clean"]["truth_clusters"]["cell_accuracy"] > 0.95


def test_a_folder_under_the_data_is_a_column(tmp_path, capsys):
    """--columns takes a set made with other generator flags (a folder DATA/my_generator/NAME); an
    absent name is still refused with status 2."""
    import evaluate
    from my_generator import my_generator

    data = tmp_path / "effects"
    assert my_generator.main(["--events", "8", "--seed", "5", "--radius-sigma", "1", "--out",
                              str(data / "my_generator" / "smeared"), "--quiet"]) == 0
    out = tmp_path / "json"
    out.mkdir()
    assert evaluate.main(["calorimeter", "--data", str(data), "--out", str(out), "--single", "line",
                          "--multi", "none", "--clusterer", "none", "--columns", "smeared"]) == 0
    line = json.loads((out / "calorimeter.json").read_text())["single"]["line fit alone"]["columns"]
    assert set(line) == {"smeared"}
    assert 0.5 < line["smeared"]["truth_clusters"]["cell_accuracy"] <= 1.0
    assert evaluate.main(["calorimeter", "--data", str(data), "--out", str(out), "--single", "line",
                          "--multi", "none", "--clusterer", "none", "--columns", "missing"]) == 2
    assert "--columns" in capsys.readouterr().err


def test_calorimeter_scores_the_hough_lines_cells_alone(heldout, tmp_path):
    """--multi lines: no model, the cells where the event's Hough lines meet the wall ranked first; on
    clean toy events they are the tracks' cells for most events."""
    import evaluate

    out = tmp_path / "json"
    out.mkdir()
    assert evaluate.main(["calorimeter", "--data", str(heldout), "--out", str(out), "--single", "none",
                          "--multi", "lines", "--clusterer", "none", "--columns", "clean"]) == 0
    lines = json.loads((out / "calorimeter.json").read_text())["multi"]["Hough lines' cells alone"]
    assert lines["model"] == "calorimeter_prior.line_prior_cells (no model)"
    clean = lines["columns"]["clean"]
    assert "k_predicted" not in clean and clean["k_true"]["exact_set_match"] > 0.85


def test_heldout_scores_a_model_outside_models_and_keeps_other_entries(heldout, tmp_path, capsys):
    import evaluate

    out = tmp_path / "json"
    out.mkdir()
    (out / "heldout.json").write_text(json.dumps({"other": {"clean": {"accuracy": 0.5}}}))
    assert evaluate.main(["heldout", "candidate", "--model", str(SHIPPED_COUNTER), "--data", str(heldout),
                          "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    content = json.loads((out / "heldout.json").read_text())
    assert content["other"] == {"clean": {"accuracy": 0.5}}
    candidate = content["candidate"]
    assert all(0.0 <= candidate[column]["accuracy"] <= 1.0 for column in COLUMN_FLAGS)
    assert candidate["clean"]["n_events"] == 32
    assert candidate["inference"]["events_per_second"] > 0 and candidate["inference"]["events"] == 32
    assert "| `candidate` |" in printed and "| `other` | 50.00% |" in printed
    run = tmp_path / "runs" / "capsnet_top_my_generator"
    run.mkdir(parents=True)
    shutil.copy(SHIPPED_COUNTER, run / "model.keras")
    assert evaluate.counter_paths([], None, str(run)) == {"capsnet_top_my_generator": run / "model.keras"}


@pytest.mark.parametrize("flags, message", [
    (["clustering", "--generator", "missing.keras"], "--generator missing.keras: file not found"),
    (["clustering", "--generator", "a.keras", "b.keras", "--name", "one"], "--name needs one label per --generator"),
    (["clustering", "--no-baselines", "--columns", "clean", "nowhere"], "--columns"),
    (["calorimeter", "--single", "missing.keras"], "--single missing.keras: file not found"),
    (["heldout", "a", "b", "--model", str(SHIPPED_COUNTER)], "--model scores one model"),
    (["heldout", "no_such_model"], "no shipped model no_such_model"),
])
def test_bad_input_exits_2_and_writes_nothing(heldout, tmp_path, capsys, flags, message):
    import evaluate

    out = tmp_path / "json"
    assert evaluate.main(flags + ["--data", str(heldout), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_column_folder_exits_2(tmp_path, capsys):
    import evaluate

    assert evaluate.main(["clustering", "--generator", str(SHIPPED_COUNTER), "--data", str(tmp_path),
                          "--out", str(tmp_path / "json")]) == 2
    assert "no held-out folder" in capsys.readouterr().err and not (tmp_path / "json").exists()


def test_counting_behind_the_isolated_hit_filter_recovers_noisy_events(tmp_path):
    """score_filtered counts as reconstruct.py does (isolated hits dropped): on very noisy events it
    must beat the same counter fed every hit, and stay high."""
    import evaluate
    from my_generator import my_generator

    folder = tmp_path / "noisy"
    assert my_generator.main(["--events", "30", "--seed", "31", "--out", str(folder), "--quiet",
                              "--noise-hits", "10"]) == 0
    import clustering_inference as inference

    counter = inference.load_counter(SHIPPED_COUNTER, flag="--model")
    alone = evaluate.score(counter.model, str(folder))["accuracy"]
    filtered = evaluate.score_filtered(counter, str(folder))
    assert filtered >= 0.9 and filtered > alone
