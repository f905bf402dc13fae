"""Bad input never costs a run: every command line on every bad input exits with status 2, prints ONE line
on standard error naming the file (or the flag), and writes or changes no file.

Table-driven: each row is (command, bad input). The commands run in-process through ``main(argv)``
(TensorFlow is imported once for the whole table; its own C++ start-up lines go to the file
descriptor, not to ``sys.stderr``, and are no part of the one line); the first row of each generator
runs it as a real command line, to show that the script's entry point gives the same status and line. The whole temporary tree is snapshot (paths, sizes,
hashes) before and after each row. The loaders read only the branches a task needs (the top view
never reads wirez): the training rows use the front view with --radius-channel, which reads
grid_side, grid_layer, wirez, radius and track_split, so every damaged branch below is read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

REPO = Path(__file__).resolve().parent.parent
TF_NOISE = ("WARNING: All log messages", "I0000", "E0000", "W0000")


def write_raw(path, hits: dict, tracks: dict) -> str:
    """A hit_tree from jagged lists, bypassing our writer's checks (to make bad files)."""
    data = {key: ak.Array(value) for key, value in {**hits, **tracks}.items()}
    with uproot.recreate(path) as file:
        file.mktree("hit_tree", {key: value.type.content for key, value in data.items()}).extend(data)
    return str(path)


HITS = dict(grid_side=[[1, 1, 0], [0, 0]], grid_layer=[[0, 1, 2], [2, 3]], grid_column=[[3, 4, 5], [5, 6]],
            wirez=[[0.0, 1.0, 2.0], [2.0, 3.0]], radius=[[1.0, 2.0, 3.0], [3.0, 4.0]])
TRACKS = dict(track_split=[[3], [1, 2]])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every bad input of the table in one folder, plus good models and a good file where a row needs them."""
    pytest.importorskip("tensorflow")
    from architectures import front, side, top
    from my_generator.my_generator import generate
    from snemo import geometry as geo
    from snemo.events import write_events

    root = tmp_path_factory.mktemp("bad_input")
    files = root / "files"
    files.mkdir()
    good = write_events(files / "good.root", generate(40, 2, np.random.default_rng(1)))
    paths = {"good": str(good), "missing": str(files / "missing.root")}
    (files / "not_root.root").write_bytes(b"this is not a ROOT file\n" * 20)
    paths["not ROOT"] = str(files / "not_root.root")
    raw = Path(good).read_bytes()
    (files / "truncated.root").write_bytes(raw[: len(raw) // 2])
    paths["truncated"] = str(files / "truncated.root")
    with uproot.recreate(files / "no_entries.root") as file:
        file.mktree("hit_tree", {"grid_layer": "var * int8", "grid_column": "var * int16", "track_split": "var * int32"})
    paths["0 entries"] = str(files / "no_entries.root")
    for name, branch, values in (("nan_wirez", "wirez", [[0.0, float("nan"), 2.0], [2.0, 3.0]]),
                                 ("wirez_5000", "wirez", [[0.0, 5000.0, 2.0], [2.0, 3.0]]),
                                 ("negative_radius", "radius", [[1.0, 2.0, 3.0], [-3.0, 4.0]]),
                                 ("side_2", "grid_side", [[1, 2, 0], [0, 0]])):
        paths[name.replace("_", " ")] = write_raw(files / f"{name}.root", dict(HITS, **{branch: values}), TRACKS)
    paths["track_split beyond hits"] = write_raw(files / "split_beyond.root", HITS, dict(track_split=[[3], [1, 9]]))
    killed = files / "killed"
    killed.mkdir()
    shutil.copy(good, killed / "half_written.root.tmp")
    paths["*.tmp by glob"] = str(killed / "*")
    models = root / "models"
    models.mkdir()
    for module, view, shape in ((top, "top", geo.TOP_SHAPE), (side, "side", geo.SIDE_SHAPE),
                                (front, "front", geo.FRONT_SHAPE)):
        module.build(input_shape=(*shape, 2), n_classes=4).save(models / f"{view}.keras")  # drift radius channel
    (models / "fake.keras").write_text("not a keras archive")
    (root / "a_file").write_text("a regular file")
    return dict(root=root, files=paths, models=models, out=root / "out", a_file=root / "a_file")


def snapshot(root: Path) -> dict:
    """{relative path: (size, sha1)} of every file and {path: None} of every folder under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        state[rel] = (path.stat().st_size, hashlib.sha1(path.read_bytes()).hexdigest()) if path.is_file() else None
    return state


def in_process(module_name):
    def call(argv, capsys):
        import importlib

        main = importlib.import_module(module_name).main
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse errors
            status = stop.code
        return status, capsys.readouterr().err

    return call


def command_line(script):
    def call(argv, capsys):
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run([sys.executable, script] + argv, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
        return result.returncode, result.stderr

    return call


def view_models(inputs):
    return [item for view in ("top", "side", "front") for item in (f"--{view}", str(inputs["models"] / f"{view}.keras"))]


COMMANDS = {
    "train": (in_process("number_of_tracks_classification"),
              lambda i, data: ["--data", data, "--out", str(i["out"]), "--epochs", "1", "--quiet", "--view", "front",
                               "--radius-channel"]),
    "combined": (in_process("combined"),
                 lambda i, data: ["--data", data, "--out", str(i["out"]), "--epochs", "1", "--quiet",
                                  "--radius-channel"] + view_models(i)),
    "plot_confusion": (in_process("plot_confusion"),
                       lambda i, data: ["--model", str(i["models"] / "top.keras"), "--data", data, "--out",
                                        str(i["out"]), "--quiet", "--radius-channel"]),
    "display": (in_process("display"), lambda i, data: [data, "--out", str(i["out"])]),
}
BAD_FILES = ("missing", "not ROOT", "truncated", "0 entries", "nan wirez", "wirez 5000", "negative radius",
             "side 2", "track_split beyond hits", "*.tmp by glob")
FILE_TOKEN = {"*.tmp by glob": "killed"}  # the pattern, since the only match is an unfinished write


def out_under_file(i):
    return str(i["a_file"] / "run")


GENERATORS = {"my_generator/my_generator.py": "my_generator.my_generator",
              "Generator/toyhaystack.py": "Generator.toyhaystack"}
FLAG_ROWS = [
    # (command, flags builder, token the one line must hold, or a tuple of tokens of which one)
    ("train", lambda i: ["--data", i["files"]["good"], "--seed", "-3", "--out", str(i["out"])], "--seed"),
    ("train", lambda i: ["--data", i["files"]["good"], "--epochs", "0", "--out", str(i["out"])], "--epochs"),
    ("train", lambda i: ["--data", i["files"]["good"], "--out", out_under_file(i)], "--out"),
    ("train", lambda i: ["--data", i["files"]["good"], "--out", "/proc/snemo_run"], "--out"),
    ("train", lambda i: ["--data", i["files"]["good"], "--out", str(i["out"]), "--init-model",
                         str(i["models"] / "fake.keras")], "--init-model"),
    ("train", lambda i: ["--data", i["files"]["good"], "--out", str(i["out"]), "--init-model",
                         str(i["models"] / "side.keras"), "--quiet"], "--init-model"),
    ("combined", lambda i: ["--data", i["files"]["good"], "--seed", "-3", "--out", str(i["out"])] + view_models(i),
     "--seed"),
    ("combined", lambda i: ["--data", i["files"]["good"], "--epochs", "0", "--out", str(i["out"])] + view_models(i),
     "--epochs"),
    ("combined", lambda i: ["--data", i["files"]["good"], "--out", out_under_file(i)] + view_models(i), "--out"),
    ("combined", lambda i: ["--data", i["files"]["good"], "--out", str(i["out"])] + view_models(i)
     + ["--top", str(i["models"] / "fake.keras")], "--top"),
    ("plot_confusion", lambda i: ["--model", str(i["models"] / "top.keras"), "--data", i["files"]["good"],
                                  "--seed", "-3", "--out", str(i["out"])], "--seed"),
    ("plot_confusion", lambda i: ["--model", str(i["models"] / "top.keras"), "--data", i["files"]["good"],
                                  "--out", out_under_file(i)], "--out"),
    ("plot_confusion", lambda i: ["--model", str(i["models"] / "fake.keras"), "--data", i["files"]["good"],
                                  "--out", str(i["out"])], "--model"),
    ("plot_confusion", lambda i: ["--model", str(i["models"] / "none.keras"), "--data", i["files"]["good"],
                                  "--out", str(i["out"])], "--model"),
    ("plot_confusion", lambda i: ["--model", str(i["models"] / "top.keras"), "--data", i["files"]["good"],
                                  "--max-tracks", "3", "--out", str(i["out"]), "--quiet"], "--max-tracks"),
    ("display", lambda i: [i["files"]["good"], "--events", "-3", "--out", str(i["out"])], "--events"),
    ("display", lambda i: [i["files"]["good"], "--start", "5000", "--out", str(i["out"])], "--start"),
    ("display", lambda i: [i["files"]["good"], "--out", out_under_file(i)], "--out"),
    ("display", lambda i: [i["files"]["good"], "--out", "/proc/snemo_displays"], ("--out", "/proc/snemo_displays")),
]
GENERATOR_CALLS = {}
for script in GENERATORS:
    GENERATOR_CALLS[script] = in_process(GENERATORS[script])
    GENERATOR_CALLS[f"{script} (command line)"] = command_line(script)
    FLAG_ROWS += [
        (f"{script} (command line)", lambda i: ["--events", "10", "--seed", "-3", "--out", str(i["out"]), "--quiet"],
         "--seed"),
        (script, lambda i: ["--events", "0", "--out", str(i["out"]), "--quiet"], "--events"),
        (script, lambda i: ["--events", "10", "--first-file", "-1", "--out", str(i["out"]), "--quiet"], "--first-file"),
        (script, lambda i: ["--events", "10", "--out", out_under_file(i), "--quiet"], "--out"),
        (script, lambda i: ["--events", "10", "--out", "/proc/snemo_generated", "--quiet"],
         ("--out", "/proc/snemo_generated")),
    ]


def run_row(call, argv, inputs, capsys):
    before = snapshot(inputs["root"])
    status, err = call(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(TF_NOISE)]
    assert snapshot(inputs["root"]) == before, "a file was written or changed"
    assert not inputs["out"].exists()
    return status, lines


@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_file(command, bad, inputs, capsys):
    call, flags = COMMANDS[command]
    status, lines = run_row(call, flags(inputs, inputs["files"][bad]), inputs, capsys)
    token = FILE_TOKEN.get(bad, Path(inputs["files"][bad]).name)
    assert status == 2 and len(lines) == 1 and token in lines[0], (status, lines)


@pytest.mark.parametrize("command, flags, token", FLAG_ROWS,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(FLAG_ROWS)])
def test_bad_flag(command, flags, token, inputs, capsys):
    call = COMMANDS[command][0] if command in COMMANDS else GENERATOR_CALLS[command]
    status, lines = run_row(call, flags(inputs), inputs, capsys)
    tokens = token if isinstance(token, tuple) else (token,)
    assert status == 2 and len(lines) == 1 and any(item in lines[0] for item in tokens), (status, lines)
