"""The ROOT macro my_generator.cxx compiled with ACLiC: its files read with our reader, and its
distributions agree with the Python twin's. Needs CERN ROOT (PyPI package `root`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from my_generator.my_generator import generate
from snemo import geometry as geo
from snemo.events import read_events

pytestmark = pytest.mark.root
ROOT = pytest.importorskip("ROOT")

REPO = Path(__file__).resolve().parent.parent
MACRO_EVENTS = 10000


def call_macro(build: Path, *args) -> subprocess.CompletedProcess:
    """Run (compiling on first use) build/my_generator.cxx with ROOT in batch mode, in ``build``; any outcome."""
    root = Path(sys.executable).parent / "root"
    if not root.exists():
        root = shutil.which("root")
    if root is None:
        pytest.fail("PyROOT imports but the `root` executable is missing: reinstall the `root` package")
    call = "my_generator.cxx+(" + ", ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args) + ")"
    return subprocess.run([str(root), "-b", "-q", "-l", call], cwd=build, capture_output=True, text=True, timeout=300)


def run_macro(build: Path, *args) -> subprocess.CompletedProcess:
    """:func:`call_macro` that must succeed."""
    run = call_macro(build, *args)
    assert run.returncode == 0 and "my_generator: wrote" in run.stdout, run.stdout + run.stderr
    return run


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A folder holding a copy of the macro, so that ACLiC's build products stay out of the repository."""
    folder = tmp_path_factory.mktemp("macro")
    shutil.copy(REPO / "my_generator" / "my_generator.cxx", folder)
    return folder


@pytest.fixture(scope="module")
def macro_file(build):
    run_macro(build, 2, MACRO_EVENTS, str(build / "out" / "my_generator"), 0, 3)
    return build / "out" / "my_generator_t2_0.root"


def _hits_per_track(batch):
    return np.diff(batch.track_split.reshape(-1, 2).astype(np.int64), axis=1, prepend=0).ravel()


def _last_layer(batch):
    """Outermost layer reached by each track (tracks are independent; hits within one are not)."""
    track = batch.track_offsets[batch.hit_event_index()] + batch.hit_track_index()
    last = np.zeros(len(batch.track_split), dtype=np.int64)
    np.maximum.at(last, track, batch.grid_layer.astype(np.int64))
    return last


def _chi2_two_sample(first, second, bins):
    """p-value of the two-sample chi2 test that two integer samples share one distribution."""
    from scipy import stats

    a = np.bincount(np.clip(first, 0, bins - 1), minlength=bins).astype(float)
    b = np.bincount(np.clip(second, 0, bins - 1), minlength=bins).astype(float)
    used = (a + b) > 0
    a, b = a[used], b[used]
    ratio = np.sqrt(b.sum() / a.sum())
    chi2 = np.sum((ratio * a - b / ratio) ** 2 / (a + b))
    return stats.chi2.sf(chi2, used.sum() - 1)


def test_macro_file_reads_with_the_twin_branches(macro_file):
    import uproot

    assert macro_file.exists() and not list(macro_file.parent.glob("*.tmp"))
    with uproot.open(macro_file) as file:
        assert "vector" in file["hit_tree"]["grid_layer"].typename
    batch = read_events(macro_file)
    twin = generate(10, 2, np.random.default_rng(0))
    assert len(batch) == MACRO_EVENTS and np.all(batch.n_tracks == 2)
    assert set(batch.hits) == set(twin.hits) and set(batch.tracks) == set(twin.tracks)
    assert np.all(batch.track_split.reshape(-1, 2)[:, 1] == batch.n_hits)
    assert _hits_per_track(batch).min() >= 5
    track = batch.track_offsets[batch.hit_event_index()] + batch.hit_track_index()
    assert np.all(batch.grid_side == batch.calo_side[track])
    assert 0.45 < batch.calo_side.mean() < 0.55


def test_macro_and_twin_distributions_agree(macro_file):
    macro = read_events(macro_file)
    twin = generate(20000, 2, np.random.default_rng(2024))
    p_hits = _chi2_two_sample(_hits_per_track(macro), _hits_per_track(twin), 41)
    p_columns = _chi2_two_sample(macro.calo_column, twin.calo_column, geo.CALO_GRID_COLUMNS)
    p_rows = _chi2_two_sample(macro.calo_row, twin.calo_row, geo.CALO_GRID_ROWS)
    p_types = _chi2_two_sample(macro.calo_type, twin.calo_type, 3)
    p_layers = _chi2_two_sample(_last_layer(macro), _last_layer(twin), geo.N_LAYERS)
    for name, p in (("hits per track", p_hits), ("calo columns", p_columns), ("calo rows", p_rows),
                    ("calo types", p_types), ("last layer", p_layers)):
        assert p > 1e-3, f"{name}: p = {p:.2g}"
    # Sensitivity: the same test separates min_hits 5 from min_hits 7.
    shifted = generate(20000, 2, np.random.default_rng(2024), min_hits=7)
    assert _chi2_two_sample(_hits_per_track(macro), _hits_per_track(shifted), 41) < 1e-6


def test_macro_sides_option(build, macro_file):
    run_macro(build, 1, 200, str(build / "one" / "my_generator"), 3, 11, 1)
    batch = read_events(build / "one" / "my_generator_t1_3.root")
    assert len(batch) == 200 and np.all(batch.grid_side == 1) and np.all(batch.calo_side == 1)


def test_macro_errors_give_a_non_zero_exit_status(build, macro_file):
    regular = build / "regular"
    regular.write_text("not a folder")
    bad_calls = [(2, "bad argument", (0, 10, str(build / "bad" / "my_generator"), 0, 1)),  # 0 tracks
                 (2, "bad argument", (2, 10, str(build / "bad" / "my_generator"), 0, 1, 3)),  # 3 sides
                 (1, "cannot create", (2, 10, str(regular / "sub" / "my_generator"), 0, 1))]
    for status, message, args in bad_calls:
        run = call_macro(build, *args)
        assert run.returncode == status, (args, run.stdout, run.stderr)
        assert message in run.stderr and "my_generator: wrote" not in run.stdout
    assert not (build / "bad").exists() and regular.read_text() == "not a folder"


def test_file_written_like_the_original_macro_reads_as_side_1(tmp_path):
    path = str(tmp_path / "original_t2_0.root")
    file = ROOT.TFile(path, "RECREATE")
    tree = ROOT.TTree("hit_tree", "hit_tree")
    ints = {name: ROOT.std.vector("int")() for name in
            ("grid_side", "grid_layer", "grid_column", "track_split", "calo_side", "calo_column", "calo_row")}
    doubles = {name: ROOT.std.vector("double")() for name in ("wirez", "radius")}
    for name, vector in {**ints, **doubles}.items():
        tree.Branch(name, vector)
    events = [([0, 1, 2, 2, 3], [5, 5, 6, 9, 9], [2, 5], [3, 4], [7, 8]),
              ([0, 1, 2, 3, 4, 5], [1, 1, 1, 2, 2, 2], [6], [21], [14])]
    for layers, columns, split, calo_column, calo_row in events:
        for vector in (*ints.values(), *doubles.values()):
            vector.clear()
        for layer, column in zip(layers, columns):
            ints["grid_layer"].push_back(layer)
            ints["grid_column"].push_back(column)
            doubles["wirez"].push_back(10.0 * layer)
            doubles["radius"].push_back(1.5)
        for values, name in ((split, "track_split"), (calo_column, "calo_column"), (calo_row, "calo_row")):
            for value in values:
                ints[name].push_back(value)
        tree.Fill()
    file.Write()
    file.Close()

    batch = read_events(path)
    assert len(batch) == 2 and batch.n_tracks.tolist() == [2, 1]
    assert np.all(batch.grid_side == 1) and np.all(batch.calo_side == 1)
    assert batch.grid_column.tolist() == [5, 5, 6, 9, 9, 1, 1, 1, 2, 2, 2]
    assert batch.calo_column.tolist() == [3, 4, 21] and batch.calo_row.tolist() == [7, 8, 14]
