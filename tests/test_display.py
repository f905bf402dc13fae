"""display.py: an event of every file kind drawn with its truth and a reco prediction; galleries; bad input."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import display
from datasets.clustering import canonical_hit_track_ids, canonical_track_rank
from Generator.toyhaystack import generate as toyhaystack_generate
from my_generator.my_generator import generate
from snemo.events import read_events, write_events

N_EVENTS = 6


def write_reco(path, batch, *, cluster=None, entries=None, source_entry=None, calo=True, n_hits=None):
    """A tiny ``reco`` tree as reconstruct.py writes it: source_entry int64, n_tracks int8, cluster int16
    per hit (counter nhit) and, with ``calo``, the truth calorimeter cells per track (counter ntrack).

    ``cluster`` (default: the truth track of each hit in canonical order), ``entries``, ``source_entry`` and ``n_hits``
    (per-event label counts) may be given wrong on purpose."""
    entries = len(batch) if entries is None else entries
    labels = canonical_hit_track_ids(batch) if cluster is None else np.asarray(cluster)
    n_hits = batch.n_hits if n_hits is None else np.asarray(n_hits)
    source = np.arange(entries, dtype=np.int64) if source_entry is None else np.asarray(source_entry, np.int64)
    n_tracks = np.resize(batch.n_tracks, entries).astype(np.int8)
    data = {"source_entry": source, "n_tracks": n_tracks,
            "hit": ak.zip({"cluster": ak.unflatten(labels[:int(n_hits[:entries].sum())].astype(np.int16),
                                                   n_hits[:entries])}, depth_limit=2)}
    types = {"source_entry": np.int64, "n_tracks": np.int8, "hit": data["hit"].type.content}
    if calo:
        keep = batch.track_offsets[entries] if entries <= len(batch) else len(batch.tracks["track_split"])
        per_track = {name: ak.unflatten(batch.tracks[name][:keep].astype(np.int8), batch.n_tracks[:entries])
                     for name in ("calo_side", "calo_column", "calo_row")}
        per_track["calo_cluster"] = ak.unflatten(np.zeros(keep, np.int16), batch.n_tracks[:entries])
        data["track"] = ak.zip(per_track, depth_limit=2)
        types["track"] = data["track"].type.content
    with uproot.recreate(path) as file:
        tree = file.mktree("reco", types, counter_name=lambda name: "n" + name, field_name=lambda outer, inner: inner)
        tree.extend(data)
    return str(path)


def legacy_layout(batch, *, sn_iegenerator: bool):
    """Branches as the original tools lay them out (one jagged branch each, own counters): the macro's
    (grid_side and calo_side declared but left empty, int32/double) or SN-IEgenerator's (calo_type,
    calo_wall, module column/row; kink branches empty, charge 0)."""
    n_hits, n_tracks = batch.n_hits, batch.n_tracks
    none_hits, none_tracks = np.zeros(len(batch), np.int64), np.zeros(len(batch), np.int64)
    hits = {"grid_layer": batch.grid_layer.astype(np.int32), "grid_column": batch.grid_column.astype(np.int32),
            "wirez": batch.wirez.astype(np.float64), "radius": batch.radius.astype(np.float64)}
    data = {k: ak.unflatten(v, n_hits) for k, v in hits.items()}
    data["track_split"] = ak.unflatten(batch.track_split.astype(np.int32), n_tracks)
    if sn_iegenerator:
        data["grid_side"] = ak.unflatten(batch.grid_side.astype(np.int32), n_hits)
        data["charge"] = ak.unflatten(np.zeros(int(n_hits.sum()), np.int32), n_hits)
        n = len(batch.track_split)
        main = {"calo_type": np.zeros(n, np.int32), "calo_side": batch.calo_side.astype(np.int32),
                "calo_wall": np.full(n, -1, np.int32), "calo_column": np.clip(batch.calo_column - 1, 0, 19),
                "calo_row": np.clip(batch.calo_row - 1, 0, 12)}
        data.update({k: ak.unflatten(v.astype(np.int32), n_tracks) for k, v in main.items()})
        for name in ("break_layer", "breakpointx", "bpangle"):
            data[name] = ak.unflatten(np.zeros(0, np.float64), none_tracks)
    else:
        data["grid_side"] = ak.unflatten(np.zeros(0, np.int32), none_hits)
        data["calo_side"] = ak.unflatten(np.zeros(0, np.int32), none_tracks)
        data["calo_column"] = ak.unflatten(batch.calo_column.astype(np.int32), n_tracks)
        data["calo_row"] = ak.unflatten(batch.calo_row.astype(np.int32), n_tracks)
    return data


def write_raw(path, data):
    with uproot.recreate(path) as file:
        file.mktree("hit_tree", {k: v.type.content for k, v in data.items()}).extend(data)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One small file of every kind: name -> path."""
    folder = tmp_path_factory.mktemp("display_inputs")
    rng = np.random.default_rng(3)
    twin = generate(N_EVENTS, 2, rng, noise_hits=2.0, missing_z_fraction=0.1)
    one_sided = generate(N_EVENTS, 3, rng, sides=1)
    return {
        "my_generator": write_events(folder / "twin.root", twin),
        "toyhaystack": write_events(folder / "toy.root", toyhaystack_generate(N_EVENTS, 3, rng, kink_prob=0.5,
                                                                              noise_hits=1.0)),
        "macro layout": write_raw(folder / "macro.root", legacy_layout(one_sided, sn_iegenerator=False)),
        "SN-IEgenerator layout": write_raw(folder / "snie.root", legacy_layout(twin, sn_iegenerator=True)),
    }


def png_pixels(path) -> np.ndarray:
    """The RGB pixels (h, w, 3) of a PNG, checked to be a real, non-trivial picture."""
    from matplotlib import image

    path = Path(path)
    assert path.stat().st_size > 20_000, f"{path} is only {path.stat().st_size} bytes"
    pixels = image.imread(path)[..., :3]
    coloured = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25  # not white, grey or black
    assert pixels.std() > 0.05 and coloured.mean() > 0.001, f"{path} looks blank"
    assert len(np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 20
    return pixels


def run(argv, capsys):
    """display.main in this process: (exit status, captured output); argparse's exit is a status too."""
    try:
        status = display.main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("kind", ["my_generator", "toyhaystack", "macro layout", "SN-IEgenerator layout"])
def test_each_file_kind_is_drawn_with_and_without_reco(files, kind, tmp_path, capsys):
    path = files[kind]
    status, _ = run([path, "--event", 2, "--out", tmp_path / "truth.png"], capsys)
    assert status == 0
    alone = png_pixels(tmp_path / "truth.png")
    reco = write_reco(tmp_path / "reco.root", read_events(path))
    status, out = run([path, "--event", 2, "--reco", reco, "--out", tmp_path / "both.png"], capsys)
    assert status == 0 and out.out.split() == [str(tmp_path / "both.png")]
    beside = png_pixels(tmp_path / "both.png")
    assert 1.7 < beside.shape[1] / alone.shape[1] < 2.3  # truth | prediction: two columns
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.root
@pytest.mark.parametrize("sn_iegenerator", [False, True], ids=["macro", "SN-IEgenerator"])
def test_files_written_by_root_with_std_vector_branches(tmp_path, capsys, sn_iegenerator):
    """The macro's and SN-IEgenerator's files are std::vector branches filled by ROOT itself."""
    ROOT = pytest.importorskip("ROOT")
    batch = generate(4, 2, np.random.default_rng(8), sides=1 if not sn_iegenerator else 2)
    path = str(tmp_path / "vectors.root")
    data = legacy_layout(batch, sn_iegenerator=sn_iegenerator)
    file = ROOT.TFile(path, "RECREATE")
    tree = ROOT.TTree("hit_tree", "std::vector layout")
    kinds = {name: "double" if ak.type(array).content.content.primitive == "float64" else "int"
             for name, array in data.items()}
    vectors = {name: ROOT.std.vector[kind]() for name, kind in kinds.items()}
    for name, vector in vectors.items():
        tree.Branch(name, vector)
    for event in range(len(batch)):
        for name, vector in vectors.items():
            vector.clear()
            for value in ak.to_list(data[name][event]):
                vector.push_back(value)
        tree.Fill()
    file.Write()
    file.Close()
    reco = write_reco(tmp_path / "reco.root", batch)
    status, _ = run([path, "--event", 1, "--reco", reco, "--out", tmp_path / "event.png"], capsys)
    assert status == 0
    png_pixels(tmp_path / "event.png")


def test_prediction_panel_shows_the_reco_clusters(files, tmp_path):
    """The right column is coloured by the reco ``cluster`` branch, not by the truth."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import EllipseCollection

    from snemo import display as drawing
    from snemo.recofile import read_reco

    batch = read_events(files["my_generator"])
    all_noise = write_reco(tmp_path / "noise.root", batch, cluster=np.full(int(batch.n_hits.sum()), -1), calo=False)
    reco = read_reco(all_noise, batch, n_input_entries=len(batch))
    noisy = int(np.flatnonzero(np.bincount(batch.hit_event_index()[batch.hit_track_index() < 0],
                                           minlength=len(batch)))[0])
    figure = drawing.draw_event(batch, noisy, reco=reco)
    top_truth, top_reco = figure.axes[0], figure.axes[1]

    def hit_colours(ax):
        (hits,) = [c for c in ax.collections if isinstance(c, EllipseCollection)]
        return np.unique(hits.get_facecolors()[:, :3].round(3), axis=0)

    assert len(hit_colours(top_truth)) == 3  # two tracks and the noise
    without_z = int(batch[noisy].z_missing().sum())
    side_truth = figure.axes[2]
    assert len(side_truth.collections[0].get_offsets()) == batch.n_hits[noisy] - without_z  # no z: not in the side view
    assert (f"({without_z} hit(s) without z not shown)" in side_truth.get_title()) == (without_z > 0)
    np.testing.assert_allclose(hit_colours(top_reco), [[0.55, 0.55, 0.55]])
    assert "n_tracks 2" in top_reco.get_title() and "0 cluster(s)" in top_reco.get_title()
    assert not any(isinstance(c, matplotlib.collections.PatchCollection) for c in top_reco.collections)
    assert any(isinstance(c, matplotlib.collections.PatchCollection) for c in top_truth.collections)  # calo truth


def test_truth_in_canonical_order_takes_the_colours_of_the_reco_clusters(files, tmp_path):
    """A perfect reco (clusters in canonical order) and the truth drawn in canonical order look the same."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import EllipseCollection

    from snemo import display as drawing
    from snemo.recofile import read_reco

    batch = read_events(files["toyhaystack"])
    reco = read_reco(write_reco(tmp_path / "perfect.root", batch), batch, n_input_entries=len(batch))
    hit_track = batch.hit_track_index()
    rank = canonical_track_rank(batch)
    reordered = [i for i in range(len(batch))
                 if np.any(rank[batch.track_offsets[i]:batch.track_offsets[i + 1]] != np.arange(batch.n_tracks[i]))]
    assert reordered and hit_track.size  # the file order differs from the canonical order in some event

    def colours(figure, ax):
        (hits,) = [c for c in figure.axes[ax].collections if isinstance(c, EllipseCollection)]
        return hits.get_facecolors()

    canonical = drawing.draw_event(batch, reordered[0], reco=reco, track_rank=rank)
    np.testing.assert_array_equal(colours(canonical, 0), colours(canonical, 1))
    file_order = drawing.draw_event(batch, reordered[0], reco=reco)
    assert not np.array_equal(colours(file_order, 0), colours(file_order, 1))


def test_gallery_and_folder_outputs(files, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from snemo import display as drawing
    from snemo.recofile import read_reco

    path = files["toyhaystack"]
    batch = read_events(path)
    reco = write_reco(tmp_path / "reco.root", batch)
    figure = drawing.draw_gallery(batch, range(3), reco=read_reco(reco, batch, n_input_entries=len(batch)))
    assert len(figure.axes) == 3 * 4 and len(figure.subfigs) == 4  # 3 events of 2 x 2 views, 2 per row
    status, out = run([path, "--first", 3, "--reco", reco, "--out", tmp_path / "gallery.pdf", tmp_path / "plots"],
                      capsys)
    assert status == 0 and out.out.split() == [str(tmp_path / "gallery.pdf"), str(tmp_path / "plots" / "toy_first3.png")]
    assert (tmp_path / "gallery.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "gallery.pdf").stat().st_size > 20_000
    png_pixels(tmp_path / "plots" / "toy_first3.png")
    status, out = run([path, "--events", 2, "--start", 1, "--out", tmp_path / "each"], capsys)
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["event_00001_t3.png", "event_00002_t3.png"]
    for name in out.out.split():
        png_pixels(name)


def bad_reco(kind, batch, folder):
    path = folder / f"{kind.replace(' ', '_')}.root"
    if kind == "fewer entries":
        return write_reco(path, batch, entries=len(batch) - 1)
    if kind == "source_entry shifted":
        return write_reco(path, batch, source_entry=np.arange(len(batch)) + (np.arange(len(batch)) >= 2))
    if kind == "cluster one label short":
        n_hits = batch.n_hits.copy()
        n_hits[2] -= 1
        return write_reco(path, batch, n_hits=n_hits)
    if kind == "cluster below -1":
        return write_reco(path, batch, cluster=np.full(int(batch.n_hits.sum()), -3))
    if kind == "no reco tree":
        return write_events(path, batch)
    if kind == "no source_entry":
        with uproot.recreate(path) as file:
            file.mktree("reco", {"n_tracks": np.int8}).extend({"n_tracks": np.ones(len(batch), np.int8)})
        return str(path)
    if kind == "not ROOT":
        path.write_text("not a ROOT file\n")
        return str(path)
    return str(path)  # "missing"


RECO_ERRORS = {
    "fewer entries": ("has 5 entries but input", "has 6"),
    "source_entry shifted": ("entry 2", "branch 'source_entry'"),
    "cluster one label short": ("entry 2", "branch 'cluster'", "labels but the input event has"),
    "cluster below -1": ("entry 2", "branch 'cluster'", "below -1"),
    "no reco tree": ("tree 'reco' not found", "hit_tree"),
    "no source_entry": ("branch 'source_entry'", "not found"),
    "not ROOT": ("not a readable ROOT file",),
    "missing": ("no such reco file",),
}


@pytest.mark.parametrize("kind", list(RECO_ERRORS))
def test_bad_reco_file_is_one_line_exit_2_nothing_written(files, kind, tmp_path, capsys):
    path = files["my_generator"]
    batch = read_events(path)
    reco = bad_reco(kind, batch, tmp_path)
    out = tmp_path / "out"
    status, captured = run([path, "--event", 2, "--reco", reco, "--out", out / "e.png", out / "e.pdf"], capsys)
    lines = captured.err.strip().splitlines()
    assert status == 2 and len(lines) == 1, captured.err
    assert Path(reco).name in lines[0]
    for token in RECO_ERRORS[kind]:
        assert token in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("argv, tokens", [
    (lambda f, t: [t / "absent.root", "--event", 0], ("absent.root", "no such file")),
    (lambda f, t: [f["my_generator"], "--event", N_EVENTS], ("--event 6", "entry 6", "twin.root", "6 event(s)")),
    (lambda f, t: [f["my_generator"], f["toyhaystack"], "--event", 0, "--reco", t / "r.root"], ("--reco", "2 files")),
    (lambda f, t: [f["my_generator"], "--event", 1, "--first", 2], ("--event", "--first")),
    (lambda f, t: [f["my_generator"], "--first", 0], ("--first",)),
    (lambda f, t: [f["my_generator"], "--event", 0, "--out", t / "a", t / "b"], ("--out", "one folder")),
])
def test_bad_input_is_one_line_exit_2_nothing_written(files, argv, tokens, tmp_path, capsys):
    out = tmp_path / "out"
    status, captured = run(argv(files, tmp_path) + ["--out", out / "e.png"], capsys)
    lines = captured.err.strip().splitlines()
    assert status == 2 and len(lines) == 1, captured.err
    for token in tokens:
        assert token in lines[0], lines[0]
    assert not out.exists()
