"""Detector effects of both generators (snemo/detector.py), the --realistic preset, and the command-line traps."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets import views
from Generator import toyhaystack
from my_generator import my_generator
from snemo import detector
from snemo import geometry as geo
from snemo.events import EventBatch, offsets_from_counts, read_events

REPO = Path(__file__).resolve().parent.parent
GENERATORS = {
    "my_generator": dict(module=my_generator, min_hits=5, max_radius=geo.MAX_HIT_RADIUS,
                         script=REPO / "my_generator" / "my_generator.py"),
    "toyhaystack": dict(module=toyhaystack, min_hits=3, max_radius=geo.MAX_DRIFT_RADIUS,
                        script=REPO / "Generator" / "toyhaystack.py"),
}
# Fingerprints (see :func:`fingerprint`) of generate(300, n, default_rng(100 + n)) with default options:
# clean events must not change with the detector effects. They were first sha256 digests of every
# array, computed with the generators as they were before the effects were added; the float arrays
# differ in their last bits between CPUs (NumPy's AVX-512 sin / cos / exp), so the float fields now
# enter as sums checked to 1e-6 relative, recomputed on an AVX-512 machine from the same code (whose
# toyhaystack events still matched the old all-array digests there, bit for bit).
CLEAN_FINGERPRINTS = {
    "my_generator": {1: ("058bf328fad98361", 4884027.02, 4749786730.0), 2: ("9c0f5a8159eb6ac5", 10567769.9, 10820307100.0),
                     3: ("03ebbbe1d4374db4", 14086378.9, 14032703800.0), 4: ("c82c7f6b579c1172", 18927415.4, 18783411300.0)},
    "toyhaystack": {1: ("d35a82fa1c9601c8", 3827709.15, 3815557250.0), 2: ("7ee1e316a0d208f1", 7219562.5, 7121552020.0),
                    3: ("71945e357b5eac3a", 11028190.4, 10925948000.0), 4: ("9b0562f738cd0cc8", 14978836.8, 14827797500.0)},
}
# toyhaystack noise_hits=2, kink_prob=0.2, common vertex, seed 7
NOISE_FINGERPRINT_TOYHAYSTACK = ("78421d553d03d341", 7759691.12, 7690733620.0)


@pytest.fixture(params=sorted(GENERATORS))
def gen(request):
    return dict(GENERATORS[request.param], name=request.param, generate=GENERATORS[request.param]["module"].generate)


def fingerprint(batch: EventBatch) -> tuple[str, float, float]:
    """(digest of the offsets and integer fields, sum of |x| and sum of x^2 over every float field)."""
    sha = hashlib.sha256()
    sha.update(np.ascontiguousarray(batch.hit_offsets).tobytes())
    sha.update(np.ascontiguousarray(batch.track_offsets).tobytes())
    absolute = square = 0.0
    for group in (batch.hits, batch.tracks):
        for name in sorted(group):
            values = np.asarray(group[name])
            if np.issubdtype(values.dtype, np.floating):
                values = values.astype(np.float64)
                absolute += float(np.abs(values).sum())
                square += float((values * values).sum())
            else:
                sha.update(name.encode())
                sha.update(np.ascontiguousarray(values).tobytes())
    return sha.hexdigest()[:16], absolute, square


def assert_fingerprint(batch: EventBatch, expected, what) -> None:
    found = fingerprint(batch)
    assert found[0] == expected[0], (what, "integer fields")
    assert found[1:] == pytest.approx(expected[1:], rel=1e-6), (what, "float fields")


def hits_per_track(batch: EventBatch) -> np.ndarray:
    """Number of hits of every track (n_tracks_total,), from track_split."""
    split = batch.track_split.astype(np.int64)
    first = np.zeros(len(split), dtype=bool)
    first[batch.track_offsets[:-1][batch.n_tracks > 0]] = True
    start = np.where(first, 0, np.concatenate([[0], split[:-1]]))
    return split - start


def cell_keys(batch: EventBatch) -> np.ndarray:
    """event * 2034 + cell id of every hit."""
    return batch.hit_event_index() * geo.N_CELLS + geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column)


def read_all(folder: Path) -> dict:
    """Every ROOT file under ``folder``, read: {relative path: EventBatch}."""
    return {p.relative_to(folder).as_posix(): read_events(p) for p in sorted(folder.rglob("*.root"))}


def assert_same_arrays(first: EventBatch, second: EventBatch) -> None:
    assert set(first.hits) == set(second.hits) and set(first.tracks) == set(second.tracks)
    assert first.hit_offsets.tobytes() == second.hit_offsets.tobytes()
    for group in ("hits", "tracks"):
        for name, values in getattr(first, group).items():
            assert values.tobytes() == getattr(second, group)[name].tobytes(), name


# ------------------------------------------------------------------------------------------------
# Each effect
# ------------------------------------------------------------------------------------------------
def test_clean_defaults_give_the_events_of_before(gen):
    for n_tracks, expected in CLEAN_FINGERPRINTS[gen["name"]].items():
        batch = gen["generate"](300, n_tracks, np.random.default_rng(100 + n_tracks))
        assert "wirez_missing" not in batch.hits
        assert_fingerprint(batch, expected, n_tracks)
    if gen["name"] == "toyhaystack":
        noisy = gen["generate"](300, 2, np.random.default_rng(7), noise_hits=2.0, kink_prob=0.2, common_vertex=True)
        assert_fingerprint(noisy, NOISE_FINGERPRINT_TOYHAYSTACK, "noise")


def test_noise_hits_follow_the_tracks_in_free_live_cells(gen):
    batch = gen["generate"](300, 2, np.random.default_rng(1), noise_hits=3.0, dead_cells=0.05, dead_cell_seed=4)
    batch.validate()
    event = batch.hit_event_index()
    noise = batch.hit_track_index() < 0
    position = np.arange(len(event)) - batch.hit_offsets[event]
    last_split = batch.track_split[batch.track_offsets[1:] - 1].astype(np.int64)  # per event
    assert np.array_equal(noise, position >= last_split[event])  # noise is exactly what follows the last offset
    assert abs(noise.sum() / len(batch) - 3.0) < 0.4  # Poisson(3) mean over 300 events: sigma 0.1
    keys = cell_keys(batch)
    assert len(np.unique(keys[noise])) == noise.sum()
    assert not np.isin(keys[noise], keys[~noise]).any()  # never in a cell a track hit in that event
    assert not np.isin(geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column),
                       detector.dead_cell_ids(0.05, 4)).any()
    assert set(np.unique(batch.grid_side[noise])) == {0, 1}
    assert np.all((batch.radius[noise] >= 0) & (batch.radius[noise] <= geo.MAX_DRIFT_RADIUS))
    assert np.all(np.abs(batch.wirez[noise]) <= geo.TRACKER_HALF_Z)
    assert np.all(hits_per_track(batch) >= gen["min_hits"])


def test_inefficiency_removes_hits_but_never_a_visible_track(gen):
    clean = gen["generate"](400, 2, np.random.default_rng(2))
    lossy = gen["generate"](400, 2, np.random.default_rng(2), inefficiency=0.3)
    assert hits_per_track(lossy).mean() < 0.85 * hits_per_track(clean).mean()
    assert hits_per_track(lossy).min() >= gen["min_hits"]
    assert np.all(lossy.n_tracks == 2) and np.all(lossy.track_split[1::2] == lossy.n_hits)
    harsh = gen["generate"](200, 4, np.random.default_rng(3), inefficiency=0.2, dead_cells=0.1, dead_cell_seed=1)
    assert np.all(harsh.n_tracks == 4) and hits_per_track(harsh).min() >= gen["min_hits"]


def test_dead_cells_never_fire_and_keep_tracks_visible(gen):
    batch = gen["generate"](300, 3, np.random.default_rng(5), dead_cells=0.2, dead_cell_seed=9, noise_hits=5.0)
    dead = detector.dead_cell_ids(0.2, 9)
    assert len(dead) == round(0.2 * geo.N_CELLS)
    assert not np.isin(geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column), dead).any()
    assert hits_per_track(batch).min() >= gen["min_hits"] and np.all(batch.n_tracks == 3)


def test_dead_cell_sets_depend_on_the_seed_only():
    small, large = detector.dead_cell_ids(0.01, 5), detector.dead_cell_ids(0.05, 5)
    assert set(small) <= set(large) and len(large) == round(0.05 * geo.N_CELLS)
    assert np.array_equal(large, detector.dead_cell_ids(0.05, 5))
    assert not np.array_equal(large, detector.dead_cell_ids(0.05, 6))
    assert len(detector.dead_cell_ids(0.0, 5)) == 0


def test_dead_cells_are_one_set_per_dataset_seed(gen, tmp_path):
    # 60 noise hits per event fill every live cell somewhere in the dataset; the dead ones never.
    flags = ["--events", "150", "--tracks", "1", "3", "--files", "2", "--seed", "5", "--quiet",
             "--dead-cells", "0.05", "--noise-hits", "60"]
    assert gen["module"].main(flags + ["--out", str(tmp_path)]) == 0
    files = read_all(tmp_path)
    assert len(files) == 4
    dead = set(detector.dead_cell_ids(0.05, 5).tolist())
    fired = set()
    for batch in files.values():
        cells = set(np.unique(geo.cell_id(batch.grid_side, batch.grid_layer, batch.grid_column)).tolist())
        assert not cells & dead
        fired |= cells
    assert fired == set(range(geo.N_CELLS)) - dead


def test_missing_z_hits_carry_the_flag_and_only_the_top_view_sees_them(gen):
    batch = gen["generate"](300, 3, np.random.default_rng(6), missing_z_fraction=0.3, noise_hits=2.0)
    assert batch.hits["wirez_missing"].dtype == np.int8
    missing = batch.z_missing()
    assert abs(missing.mean() - 0.3) < 0.03
    assert np.all(batch.wirez[missing] == 0.0) and np.all(batch.wirez[~missing] != 0.0)
    assert missing[batch.hit_track_index() < 0].any()  # noise hits lose z too
    measured = EventBatch(offsets_from_counts(np.bincount(batch.hit_event_index()[~missing], minlength=len(batch))),
                          {k: v[~missing] for k, v in batch.hits.items()}, batch.track_offsets, batch.tracks)
    for name in ("side", "front", "voxel"):
        np.testing.assert_array_equal(views.make_view(batch, name), views.make_view(measured, name), err_msg=name)
    without_flag = EventBatch(batch.hit_offsets, {k: v for k, v in batch.hits.items() if k != "wirez_missing"},
                              batch.track_offsets, batch.tracks)
    np.testing.assert_array_equal(views.top(batch), views.top(without_flag))
    assert views.top(batch).sum() > views.top(measured).sum()


def test_radius_smearing_moves_radii_by_sigma_within_the_valid_range(gen):
    exact = gen["generate"](400, 2, np.random.default_rng(4))
    smeared = gen["generate"](400, 2, np.random.default_rng(4), radius_sigma=1.0)
    for name in ("grid_side", "grid_layer", "grid_column", "wirez"):
        assert np.array_equal(smeared.hits[name], exact.hits[name]), name
    inside = (exact.radius > 4.0) & (exact.radius < gen["max_radius"] - 4.0)
    difference = (smeared.radius - exact.radius)[inside]
    assert 0.9 < difference.std() < 1.1 and abs(difference.mean()) < 0.05
    wide = gen["generate"](400, 2, np.random.default_rng(4), radius_sigma=8.0)
    assert wide.radius.min() == 0.0 and np.isclose(wide.radius.max(), gen["max_radius"])
    wide.validate()


def test_bad_effect_arguments_raise_value_errors_naming_them(gen):
    for name, value in (("noise_hits", -1.0), ("inefficiency", 1.0), ("dead_cells", 1.0),
                        ("missing_z_fraction", 1.5), ("radius_sigma", float("nan")), ("dead_cell_seed", -1)):
        with pytest.raises(ValueError, match=name):
            gen["generate"](5, 1, np.random.default_rng(0), **{name: value})


# ------------------------------------------------------------------------------------------------
# The preset and reproducibility, through the command line
# ------------------------------------------------------------------------------------------------
def explicit_preset(gen, **override) -> list[str]:
    values = {k: v for k, v in detector.REALISTIC.items() if gen["name"] == "toyhaystack" or k != "kink_prob"}
    values.update(override)
    return [item for k, v in values.items() for item in (f"--{k.replace('_', '-')}", str(v))]


def test_realistic_is_its_documented_flags_and_explicit_flags_override_it(gen, tmp_path):
    base = ["--events", "60", "--tracks", "2", "4", "--seed", "3", "--quiet"]
    runs = {"preset": ["--realistic"], "explicit": explicit_preset(gen),
            "preset_quiet": ["--realistic", "--noise-hits", "0"], "explicit_quiet": explicit_preset(gen, noise_hits=0)}
    for name, flags in runs.items():
        assert gen["module"].main(base + flags + ["--out", str(tmp_path / name)]) == 0
    files = {name: read_all(tmp_path / name) for name in runs}
    for path in files["preset"]:
        assert_same_arrays(files["preset"][path], files["explicit"][path])
        assert_same_arrays(files["preset_quiet"][path], files["explicit_quiet"][path])
        assert "wirez_missing" in files["preset"][path].hits
        assert files["preset"][path].n_hits.sum() != files["preset_quiet"][path].n_hits.sum()
    args = gen["module"].build_parser().parse_args(["--realistic", "--seed", "8"])
    expected = {k: v for k, v in detector.REALISTIC.items() if gen["name"] == "toyhaystack" or k != "kink_prob"}
    assert detector.detector_options(args, kinks=gen["name"] == "toyhaystack") == dict(expected, dead_cell_seed=8)
    clean = gen["module"].build_parser().parse_args([])
    assert all(v == 0 for k, v in detector.detector_options(clean).items())


def test_same_seed_gives_identical_files_and_clean_files_have_no_missing_z_branch(gen, tmp_path):
    import uproot

    flags = ["--events", "50", "--tracks", "1", "3", "--files", "2", "--quiet", "--realistic"]
    for folder, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        assert gen["module"].main(flags + ["--seed", seed, "--out", str(tmp_path / folder)]) == 0
    first, second, other = (read_all(tmp_path / folder) for folder in "abc")
    assert set(first) == set(second) and len(first) == 4
    for path in first:
        assert_same_arrays(first[path], second[path])
        assert first[path].hits["radius"].tobytes() != other[path].hits["radius"].tobytes()
    assert gen["module"].main(["--events", "20", "--tracks", "2", "--quiet", "--out", str(tmp_path / "clean")]) == 0
    with uproot.open(next((tmp_path / "clean").rglob("*.root"))) as file:
        assert "wirez_missing" not in file["hit_tree"].keys()
        assert "wirez" in file["hit_tree"].keys()


# ------------------------------------------------------------------------------------------------
# Command-line traps: one line on standard error, status 2, nothing written
# ------------------------------------------------------------------------------------------------
def test_more_than_four_tracks_are_accepted(gen, tmp_path):
    assert gen["module"].main(["--events", "5", "--tracks", "5", "7", "--quiet", "--out", str(tmp_path)]) == 0
    assert np.all(read_events(tmp_path / "5").n_tracks == 5) and np.all(read_events(tmp_path / "7").n_tracks == 7)


@pytest.mark.parametrize("flag, value", [("--seed", "-3"), ("--first-file", "-1"), ("--events", "0"),
                                         ("--tracks", "0"), ("--files", "0"), ("--noise-hits", "-1"),
                                         ("--inefficiency", "1"), ("--dead-cells", "1.5"),
                                         ("--missing-z-fraction", "2"), ("--radius-sigma", "nan"),
                                         ("--min-hits", "0")])
def test_bad_flags_give_one_line_naming_the_flag(gen, tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    assert gen["module"].main(["--events", "5", "--quiet", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "usage" not in err
    assert not out.exists()


def test_output_under_a_regular_file_is_refused_before_generating(gen, tmp_path, capsys):
    regular = tmp_path / "regular"
    regular.write_text("not a folder")
    for out in (regular / "sub", regular):
        assert gen["module"].main(["--events", "5", "--tracks", "2", "--quiet", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "regular file" in err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "2").write_text("in the way")
    assert gen["module"].main(["--events", "5", "--tracks", "1", "2", "--quiet", "--out", str(tmp_path / "data")]) == 2
    assert "regular file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["2", "data", "regular"]


def test_unwritable_output_is_refused(gen, capsys):
    # /proc refuses new folders even to root (CI runs as root, so a chmod-ed folder would not do).
    out = "/proc/snemo_generator_test/d"
    assert gen["module"].main(["--events", "5", "--tracks", "2", "--quiet", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/proc/snemo_generator_test" in err
    assert not os.path.exists("/proc/snemo_generator_test")


def test_impossible_track_counts_are_refused_in_one_line(tmp_path, capsys):
    assert toyhaystack.main(["--events", "5", "--tracks", "700", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "700 tracks" in err and not (tmp_path / "o").exists()


def test_scripts_exit_with_status_2_and_one_line(gen, tmp_path):
    run = subprocess.run([sys.executable, str(gen["script"]), "--seed", "-3", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "--seed" in run.stderr
    assert not (tmp_path / "o").exists()


def test_builtin_dataset_help():
    run = subprocess.run([sys.executable, "-m", "Generator.builtin", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 0 and "--data-dir" in run.stdout and "--kind" in run.stdout
